#include "server/twin_server.h"

#include <ATen/ATen.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/model/generation.h"
#include "core/model/hf_decoder.h"
#include "core/status_macros.h"
#include "core/store/artifact_set.h"
#include "core/store/object_store.h"
#include "core/text/tokenizer.h"
#include "server/admin_service.h"
#include "server/batch_workers.h"
#include "server/kserve_service.h"
#include "server/log.h"
#include "server/request_queue.h"
#include "server/tls.h"
#include "server/twin_service.h"

namespace twin {
namespace {

constexpr char kServiceName[] = "twinmerge.v1.TwinMerge";

}  // namespace

TwinServer::TwinServer(const ServerConfig& config, ObjectStoreFactory open_store)
    : config_(config),
      open_store_(open_store ? std::move(open_store) : ObjectStoreFactory(OpenObjectStore)) {}

TwinServer::~TwinServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<TwinServer>> TwinServer::Start(const ServerConfig& config,
                                                              ObjectStoreFactory open_store) {
  RETURN_IF_ERROR(ValidateServerConfig(config));
  SetLogLevel(config.log_level);
  std::unique_ptr<TwinServer> server(new TwinServer(config, std::move(open_store)));
  ASSIGN_OR_RETURN(server->metrics_, ServerMetrics::Create(config.metrics_address));
  RequestQueueOptions queue_options = config.queue;
  queue_options.parallelism = config.workers;
  server->queue_ = std::make_unique<RequestQueue>(queue_options);
  server->processor_ = std::make_unique<InferProcessor>(server->config_, server->metrics_.get());
  BatchWorkersOptions worker_options;
  worker_options.num_threads = config.workers;
  worker_options.max_route_batch = config.max_route_batch;
  server->workers_ = std::make_unique<BatchWorkers>(server->queue_.get(), server->processor_.get(),
                                                    worker_options);
  server->workers_->Start();
  server->generator_ = std::make_unique<Generator>(server->config_, server->metrics_.get());
  server->generator_->Start();
  server->service_ = std::make_unique<TwinService>(server.get(), config.max_stream_in_flight);
  KServeOptions kserve_options;
  kserve_options.model_name = config.kserve_model_name;
  // Every row is queued like one request.
  kserve_options.max_rows = std::min(config.kserve_max_rows, config.queue.max_queue_size);
  server->kserve_service_ = std::make_unique<KServeService>(server.get(), kserve_options);
  server->admin_service_ =
      std::make_unique<AdminService>(server.get(), server->metrics_.get(), config.admin_token_file);
  VersionWatcherOptions watch;
  watch.target = config.artifact_version;
  watch.retry_interval = absl::Milliseconds(config.reload.retry_interval_ms);
  watch.poll_interval = absl::Milliseconds(config.reload.poll_interval_ms);
  TwinServer* raw = server.get();
  server->watcher_ = std::make_unique<VersionWatcher>(
      watch, [raw](const std::string& version) { return raw->Load(version); });

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   ServerCredentialsFor(config.tls));
  if (!config.admin_listen_address.empty()) {
    grpc::ServerBuilder admin;
    admin.AddListeningPort(config.admin_listen_address, credentials, &server->admin_port_);
    admin.RegisterService(server->admin_service_.get());
    server->admin_server_ = admin.BuildAndStart();
    if (server->admin_server_ == nullptr || server->admin_port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", config.admin_listen_address,
                                                 " (admin.listen_address in use?)"));
    }
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen_address, credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->kserve_service_.get());
  if (server->admin_server_ == nullptr) builder.RegisterService(server->admin_service_.get());
  builder.SetMaxReceiveMessageSize(config.max_message_bytes);
  builder.SetMaxSendMessageSize(config.max_message_bytes);
  if (config.max_connection_age_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(config.max_connection_age_ms));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(config.drain_timeout_ms));
  }
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config.listen_address, " (address in use?)"));
  }
  server->SetServing(false);
  return server;
}

void TwinServer::SetServing(bool serving) {
  // Serialised, and never SERVING once the shutdown began: a load finishing during the drain
  // must not flip health back.
  absl::MutexLock serving_lock(&serving_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (serving && shutting_down_) return;
    serving_ = serving;
  }
  if (grpc_server_ != nullptr) {
    grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
    if (health != nullptr) {
      health->SetServingStatus(serving);
      health->SetServingStatus(kServiceName, serving);
    }
  }
  metrics_->SetReady(serving);
}

std::shared_ptr<const Servable> TwinServer::Current() const {
  absl::MutexLock lock(&mu_);
  return servable_;
}

std::string TwinServer::version() const {
  auto s = Current();
  return s ? s->engine->version() : "";
}

bool TwinServer::serving() const {
  absl::MutexLock lock(&mu_);
  return serving_;
}

int TwinServer::metrics_port() const { return metrics_->port(); }

bool TwinServer::ShuttingDown() const {
  absl::MutexLock lock(&mu_);
  return shutting_down_;
}

absl::StatusOr<LoadOutcome> TwinServer::Load(const std::string& requested) {
  absl::MutexLock load_lock(&load_mu_);
  const std::string version = requested.empty() ? config_.artifact_version : requested;
  const absl::Time start = absl::Now();
  absl::StatusOr<LoadOutcome> outcome = LoadLocked(version);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!outcome.ok()) {
    metrics_->RecordReload("failed", seconds);
    const std::string serving = this->version();
    {
      absl::MutexLock lock(&mu_);
      ++reload_failures_;
      last_error_ = outcome.status().ToString();
    }
    LogLine(serving.empty() ? LogLevel::kWarning : LogLevel::kError,
            absl::StrCat("load of version ", version, " failed",
                         serving.empty() ? "" : absl::StrCat(" (still serving ", serving, ")"),
                         ": ", outcome.status().ToString()));
    return outcome.status();
  }
  outcome->seconds = seconds;
  {
    absl::MutexLock lock(&mu_);
    last_error_.clear();
    if (outcome->changed) {
      ++reloads_;
      last_reload_ = absl::Now();
    }
  }
  metrics_->RecordReload(outcome->changed ? "loaded" : "unchanged", seconds);
  if (outcome->changed) {
    LogLine(LogLevel::kInfo,
            absl::StrFormat("serving version %s%s after %.2f s", outcome->version,
                            outcome->previous_version.empty()
                                ? ""
                                : absl::StrCat(" (was ", outcome->previous_version, ")"),
                            seconds));
    PruneCache(outcome->version, outcome->previous_version);
  } else {
    LogLine(LogLevel::kDebug, absl::StrCat("version ", outcome->version, " is already serving"));
  }
  return outcome;
}

absl::StatusOr<LoadOutcome> TwinServer::LoadLocked(const std::string& version) {
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, open_store_(config_.artifact_uri));
  ASSIGN_OR_RETURN(std::string resolved, ResolveVersion(store.get(), version));
  const std::shared_ptr<const Servable> previous = Current();
  LoadOutcome outcome;
  outcome.previous_version = previous ? previous->engine->version() : "";
  outcome.version = resolved;
  if (resolved == outcome.previous_version) return outcome;
  if (ShuttingDown()) return absl::UnavailableError("server is shutting down");
  LogLine(LogLevel::kInfo,
          absl::StrCat("loading version ", resolved,
                       outcome.previous_version.empty()
                           ? ""
                           : absl::StrCat(" (serving ", outcome.previous_version, ")")));

  FetchOptions fetch;
  fetch.cancelled = [this] { return ShuttingDown(); };
  ASSIGN_OR_RETURN(LocalArtifactSet set,
                   FetchArtifactSet(store.get(), resolved, config_.cache_dir, fetch));
  auto servable = std::make_shared<Servable>();
  EngineOptions engine_options;
  engine_options.device = config_.device;
  engine_options.model = config_.engine_model;
  engine_options.mix_strategy = config_.mix_strategy;
  engine_options.generation_mix_strategy = config_.generation.mix_strategy;
  ASSIGN_OR_RETURN(servable->engine, Engine::Load(set, engine_options));
  servable->cache = std::make_unique<FusedWeightCache>(config_.cache);
  RETURN_IF_ERROR(ValidateClusterKeyOptions(config_.cluster_key, servable->engine->num_tasks()));
  for (int t = 0; t < servable->engine->num_tasks(); ++t) {
    servable->task_index[set.manifest.tasks[t].name] = t;
  }
  RETURN_IF_ERROR(Annotate(LoadPinned(servable.get()), absl::StrCat("version ", resolved)));
  RETURN_IF_ERROR(Annotate(WarmUp(*servable), absl::StrCat("warm-up of version ", resolved)));
  WarmCache(previous.get(), *servable);
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("server is shutting down");
    servable_ = servable;
  }
  metrics_->SetVersion(set.version);
  const Engine& engine = *servable->engine;
  // Mixed-key batches where this version can run them (twin mode, a native model).
  const bool unfused = servable->mode == ServingMode::kTwin && engine.unfused_available() &&
                       config_.batches != "fused";
  queue_->SetModes(unfused, !(unfused && config_.batches == "unfused"));
  // The chooser charges a fused batch of a key without cached weights its fusion. Queue keys
  // are "<version>|<cluster key>"; another version's keys count as resident (they drain).
  queue_->SetResidency([weak = std::weak_ptr<Servable>(servable),
                        prefix = absl::StrCat(set.version, "|")](const std::string& key) {
    std::shared_ptr<Servable> s = weak.lock();
    if (s == nullptr || s->cache == nullptr || key.compare(0, prefix.size(), prefix) != 0) {
      return true;
    }
    return s->cache->Contains(key.substr(prefix.size()));
  });
  if (config_.batches == "unfused" && !unfused) {
    LogLine(LogLevel::kWarning,
            absl::StrCat("serving.batches is unfused but version ", set.version, " runs ",
                         engine.model_kind(), " in ", ServingModeName(servable->mode),
                         " mode: its batches are fused"));
  }
  LogLine(LogLevel::kInfo,
          absl::StrCat("version ", set.version, ": ", engine.model_kind(), " engine, ",
                       unfused ? "fused and unfused" : "fused", " batches"));
  metrics_->SetWeightBytes(engine.shared_bytes(), engine.twin_bytes(), engine.head_bytes(),
                           engine.router_bytes(), servable->pinned_bytes);
  metrics_->SetServingMode(ServingModeName(servable->mode));
  metrics_->UpdateCache(servable->cache.get(), servable->cache->stats());
  SetServing(true);
  outcome.changed = true;
  return outcome;
}

absl::Status TwinServer::LoadPinned(Servable* servable) const {
  const Engine& engine = *servable->engine;
  servable->mode = config_.mode;
  switch (config_.mode) {
    case ServingMode::kTwin:
      return absl::OkStatus();
    case ServingMode::kStatic: {
      ASSIGN_OR_RETURN(auto model, engine.SharedModel());
      servable->pinned.push_back(std::move(model));
      return absl::OkStatus();
    }
    case ServingMode::kExperts:
      break;
  }
  for (const auto& [task, path] : config_.experts) {
    if (!servable->task_index.count(task)) {
      return absl::InvalidArgumentError(
          absl::StrCat("serving.experts names task '", task, "', which the version does not have"));
    }
  }
  for (int t = 0; t < engine.num_tasks(); ++t) {
    const std::string& task = engine.manifest().tasks[t].name;
    auto it = config_.experts.find(task);
    if (it == config_.experts.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("serving.experts has no model for task '", task, "'"));
    }
    ASSIGN_OR_RETURN(auto model, engine.LoadExpert(t, it->second));
    servable->pinned_bytes += model->bytes();
    servable->pinned.push_back(std::move(model));
  }
  return absl::OkStatus();
}

void TwinServer::WarmCache(const Servable* previous, const Servable& next) {
  if (next.mode != ServingMode::kTwin) return;
  if (previous == nullptr || config_.reload.warm_cache_keys <= 0) return;
  // Cluster keys are weights over task indices: they carry over only to the same task list.
  if (previous->engine->manifest().tasks.size() != next.engine->manifest().tasks.size()) return;
  for (size_t t = 0; t < next.engine->manifest().tasks.size(); ++t) {
    if (previous->engine->manifest().tasks[t].name != next.engine->manifest().tasks[t].name) {
      return;
    }
  }
  int warmed = 0;
  for (const ClusterKey& key : previous->cache->HotKeys(config_.reload.warm_cache_keys)) {
    if (ShuttingDown()) return;
    absl::StatusOr<CacheLookup> fused = next.cache->Lookup(key, FuserOf(next.engine.get()));
    if (fused.ok()) {
      ++warmed;
    } else {
      LogLine(LogLevel::kWarning,
              absl::StrCat("pre-fusing cluster ", key.text, " of version ", next.engine->version(),
                           " failed: ", fused.status().ToString()));
    }
  }
  LogLine(LogLevel::kDebug,
          absl::StrCat("pre-fused ", warmed, " cluster keys of version ", next.engine->version()));
}

void TwinServer::PruneCache(const std::string& serving, const std::string& previous) {
  if (config_.reload.keep_versions <= 0) return;
  std::vector<std::string> keep = {serving};
  if (config_.reload.keep_versions >= 2 && !previous.empty()) keep.push_back(previous);
  absl::StatusOr<CachePruneResult> pruned = PruneArtifactCache(config_.cache_dir, keep);
  if (!pruned.ok()) {
    LogLine(LogLevel::kWarning,
            absl::StrCat("pruning ", config_.cache_dir, " failed: ", pruned.status().ToString()));
  } else if (!pruned->removed_versions.empty()) {
    LogLine(LogLevel::kInfo,
            absl::StrCat("removed cached versions ", absl::StrJoin(pruned->removed_versions, ", "),
                         " (", pruned->removed_blobs, " blobs, ", pruned->freed_bytes, " bytes)"));
  }
}

void TwinServer::StartWatching() {
  if (watching_.exchange(true)) return;
  watcher_->Start();
}

void TwinServer::RequestReload(const std::string& version, VersionWatcher::Done done) {
  if (watching_) {
    watcher_->RequestReload(version, std::move(done));
    return;
  }
  if (ShuttingDown()) {
    done(absl::UnavailableError("server is shutting down"));
    return;
  }
  done(Load(version));
}

twinmerge::v1::ServingStatus TwinServer::ServingStatus() const {
  twinmerge::v1::ServingStatus status;
  status.set_version(version());
  status.set_target(watcher_->target());
  absl::MutexLock lock(&mu_);
  status.set_serving(serving_);
  status.set_reloads(reloads_);
  status.set_reload_failures(reload_failures_);
  status.set_last_error(last_error_);
  if (last_reload_ != absl::InfinitePast()) {
    status.set_last_reload_unix_ms(absl::ToUnixMillis(last_reload_));
  }
  return status;
}

absl::Status TwinServer::WarmUp(const Servable& servable) {
  // Route and fuse-forward a few inputs through every task head so that the first real
  // requests do not pay for lazy initialisation.
  const Engine& engine = *servable.engine;
  if (engine.generative()) return WarmUpGeneration(servable);
  for (int i = 0; i < config_.warmup_requests; ++i) {
    if (ShuttingDown()) return absl::CancelledError("server is shutting down");
    // Token ids of the tokenizer's padding id are valid for any vocabulary.
    constexpr int64_t kWarmUpLength = 8;
    TokenBatch batch{at::full({1, kWarmUpLength}, engine.tokenizer().spec().pad_id, at::kLong),
                     at::ones({1, kWarmUpLength}, at::kLong)};
    if (servable.mode != ServingMode::kStatic) {
      ASSIGN_OR_RETURN(at::Tensor w, engine.RouterWeights(batch.input_ids, batch.attention_mask,
                                                          {config_.default_temperature}));
    }
    if (i > 0) continue;
    std::shared_ptr<FusedModel> fused;
    if (servable.mode == ServingMode::kTwin) {
      std::vector<double> uniform(engine.num_tasks(), 1.0 / engine.num_tasks());
      ASSIGN_OR_RETURN(fused, engine.Fuse(uniform));
    }
    for (int t = 0; t < engine.num_tasks(); ++t) {
      FusedModel& model = servable.mode == ServingMode::kTwin     ? *fused
                          : servable.mode == ServingMode::kStatic ? *servable.pinned[0]
                                                                  : *servable.pinned[t];
      RETURN_IF_ERROR(engine.Forward(model, batch.input_ids, batch.attention_mask, t).status());
    }
  }
  return absl::OkStatus();
}

absl::Status TwinServer::WarmUpGeneration(const Servable& servable) {
  // A short prompt prefilled and a few tokens decoded through the serving mode's weights.
  const Engine& engine = *servable.engine;
  if (config_.warmup_requests == 0) return absl::OkStatus();
  constexpr int64_t kPrompt = 8, kNew = 4;
  GenerationRequest request;
  for (int64_t i = 0; i < kPrompt; ++i) request.prompt.push_back(i % engine.vocab_size());
  request.max_new_tokens = kNew;
  const bool shared_only = servable.mode == ServingMode::kStatic;
  if (!shared_only) request.weights.assign(engine.num_tasks(), 1.0 / engine.num_tasks());
  if (engine.task_lm_heads()) request.task = 0;  // the first task's LM head
  if (!shared_only) {
    at::Tensor ids = at::tensor(request.prompt, at::kLong).unsqueeze(0);
    RETURN_IF_ERROR(
        engine.RouterWeights(ids, at::ones_like(ids), {config_.default_temperature}).status());
  }
  ContinuousBatchOptions options;
  options.kv_budget_bytes = engine.decoder().CacheBytes(kPrompt + kNew);
  ContinuousBatch batch(engine.decoder(), options);
  RETURN_IF_ERROR(batch.Add(std::move(request)).status());
  while (batch.active() > 0) {
    if (ShuttingDown()) return absl::CancelledError("server is shutting down");
    RETURN_IF_ERROR(
        batch
            .Step([&engine, shared_only](const std::vector<StepRow>& rows) {
              return engine.GenerationParams(rows, shared_only);
            })
            .status());
  }
  return absl::OkStatus();
}

void TwinServer::SubmitGenerate(const twinmerge::v1::GenerateRequest& request, absl::Time deadline,
                                std::shared_ptr<std::atomic<bool>> cancelled,
                                const std::string& client, GenerateCallbacks callbacks) {
  const absl::Time now = absl::Now();
  std::shared_ptr<const Servable> servable;
  {
    absl::MutexLock lock(&mu_);
    if (!accepting_) {
      callbacks.done(absl::UnavailableError("server is shutting down"));
      return;
    }
    servable = servable_;
  }
  if (servable == nullptr) {
    callbacks.done(absl::UnavailableError("no artifact version is loaded yet"));
    return;
  }
  absl::StatusOr<std::unique_ptr<GenerationJob>> job =
      MakeGenerationJob(request, std::move(servable), config_);
  if (!job.ok()) {
    metrics_->RecordGeneration("", absl::StatusCodeToString(job.status().code()), "");
    callbacks.done(job.status());
    return;
  }
  absl::StatusOr<bool> slot = TakeClientSlot(client);
  if (!slot.ok()) {
    metrics_->RecordGeneration("", "RESOURCE_EXHAUSTED", "");
    callbacks.done(slot.status());
    return;
  }
  // The client's slot is held until the stream ends, however it ends.
  if (*slot) {
    callbacks.done = [this, client, done = std::move(callbacks.done)](const absl::Status& status) {
      ReleaseClientSlot(client);
      done(status);
    };
  }
  (*job)->received = now;
  (*job)->deadline = deadline;
  (*job)->cancelled = std::move(cancelled);
  (*job)->callbacks = std::move(callbacks);
  generator_->Submit(*std::move(job));
}

absl::StatusOr<bool> TwinServer::TakeClientSlot(const std::string& client) {
  if (config_.max_in_flight_per_client <= 0 || client.empty()) return false;
  absl::MutexLock lock(&clients_mu_);
  int& in_flight = client_in_flight_[client];
  if (in_flight >= config_.max_in_flight_per_client) {
    const int held = in_flight;
    if (held == 0) client_in_flight_.erase(client);
    return absl::ResourceExhaustedError(absl::StrCat(
        "client ", client, " has ", held, " requests in flight (Infer and Generate); the limit is ",
        config_.max_in_flight_per_client, " (limits.max_in_flight_per_client)"));
  }
  ++in_flight;
  return true;
}

void TwinServer::ReleaseClientSlot(const std::string& client) {
  if (client.empty()) return;
  absl::MutexLock lock(&clients_mu_);
  auto it = client_in_flight_.find(client);
  if (it != client_in_flight_.end() && --it->second <= 0) client_in_flight_.erase(it);
}

std::string ClientOfPeer(const std::string& peer) {
  if (!absl::StartsWith(peer, "ipv4:") && !absl::StartsWith(peer, "ipv6:")) return peer;
  const size_t colon = peer.rfind(':');
  const size_t bracket = peer.rfind(']');
  if (colon <= 4 || (bracket != std::string::npos && colon < bracket)) return peer;
  return peer.substr(0, colon);
}

void TwinServer::Submit(const twinmerge::v1::InferRequest& request, absl::Time deadline,
                        std::shared_ptr<std::atomic<bool>> cancelled, const std::string& client,
                        InferReply reply) {
  const absl::Time now = absl::Now();
  std::shared_ptr<const Servable> servable;
  {
    absl::MutexLock lock(&mu_);
    if (!accepting_) {
      reply(absl::UnavailableError("server is shutting down"));
      return;
    }
    servable = servable_;
  }
  if (servable == nullptr) {
    reply(absl::UnavailableError("no artifact version is loaded yet"));
    return;
  }
  // Admission first: a request the queue would refuse (full, expired, or past its deadline by
  // the expected wait) is refused before it is validated and tokenized, so that shedding
  // load under overload costs as little as possible. Enqueue decides again below.
  if (absl::Status admitted = queue_->Admit(deadline, now); !admitted.ok()) {
    metrics_->RecordRequest("", absl::StatusCodeToString(admitted.code()), {});
    reply(admitted);
    return;
  }
  auto payload = MakePayload(request, std::move(servable), config_);
  if (!payload.ok()) {
    metrics_->RecordRequest("", absl::StatusCodeToString(payload.status().code()), {});
    reply(payload.status());
    return;
  }
  absl::StatusOr<bool> slot = TakeClientSlot(client);
  if (!slot.ok()) {
    metrics_->RecordRequest("", "RESOURCE_EXHAUSTED", {});
    reply(slot.status());
    return;
  }
  metrics_->AddInFlight(1);
  (*payload)->received = now;
  (*payload)->reply = [this, reply = std::move(reply), client = *slot ? client : std::string()](
                          absl::StatusOr<twinmerge::v1::InferResponse> result) {
    metrics_->AddInFlight(-1);
    ReleaseClientSlot(client);
    // Requests leave the queue without passing here; each answer refreshes the gauge, so it
    // reads the queue as it is once traffic stops (it was set only on arrival).
    metrics_->SetQueueWaiting(queue_->stats().waiting);
    reply(std::move(result));
  };
  PendingRequest pending;
  pending.deadline = deadline;
  pending.cancelled = std::move(cancelled);
  InferPayload* raw = payload->get();
  pending.payload = *payload;
  pending.done = [this, raw](const absl::Status& status) { processor_->Fail(*raw, status); };
  absl::Status queued = queue_->Enqueue(std::move(pending), now);
  if (!queued.ok()) {
    processor_->Fail(*raw, queued);
    return;
  }
  metrics_->SetQueueWaiting(queue_->stats().waiting);
  workers_->Notify();
}

absl::StatusOr<std::vector<std::string>> TwinServer::TaskNames() const {
  auto servable = Current();
  if (servable == nullptr) return absl::UnavailableError("no artifact version is loaded yet");
  std::vector<std::string> names;
  for (const auto& task : servable->engine->manifest().tasks) names.push_back(task.name);
  return names;
}

absl::StatusOr<twinmerge::v1::ModelInfo> TwinServer::ModelInfo() const {
  auto servable = Current();
  if (servable == nullptr) return absl::UnavailableError("no artifact version is loaded yet");
  const Engine& engine = *servable->engine;
  const Manifest& m = engine.manifest();
  twinmerge::v1::ModelInfo info;
  info.set_artifact_version(m.version);
  for (const auto& t : m.tasks) {
    auto* task = info.add_tasks();
    task->set_name(t.name);
    for (const auto& l : t.labels) task->add_labels(l);
    double rank_sum = 0;
    int count = 0;
    for (const auto& e : m.twin_tensors) {
      if (e.task != t.name) continue;
      rank_sum += static_cast<double>(e.rank);
      ++count;
    }
    info.add_mean_rank(count ? rank_sum / count : 0.0);
  }
  info.set_merge_method(m.merge_method);
  info.set_rank_policy(m.rank_policy.dump());
  info.set_router_validation_accuracy(m.router.validation_accuracy);
  info.set_num_parameters(m.num_parameters);
  info.set_tokenizer(m.tokenizer.type);
  info.set_device(engine.device());
  info.set_model_kind(engine.generative() ? "generation" : "classification");
  if (engine.generative()) {
    info.set_max_context_tokens(static_cast<int32_t>(engine.decoder().max_positions()));
    info.set_max_new_tokens(static_cast<int32_t>(config_.generation.max_new_tokens));
  }
  auto* limits = info.mutable_limits();
  limits->set_max_batch_size(config_.queue.max_batch_size);
  limits->set_max_input_length(config_.max_input_length > 0
                                   ? config_.max_input_length
                                   : static_cast<int>(m.tokenizer.max_length));
  const int tasks = engine.num_tasks();
  limits->set_max_top_k(config_.max_top_k > 0 ? std::min(config_.max_top_k, tasks) : tasks);
  limits->set_default_top_k(config_.cluster_key.top_k);
  limits->set_default_temperature(static_cast<float>(config_.default_temperature));
  limits->set_max_queue_size(config_.queue.max_queue_size);
  return info;
}

void TwinServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      mu_.Await(absl::Condition(&shut_down_));
      return;
    }
    shutting_down_ = true;
  }
  // One limit for the whole shutdown, so that it ends within the pod's grace period.
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::milliseconds(config_.drain_timeout_ms);
  // 1. Load balancers and health checks see NOT_SERVING while everything still works.
  if (grpc_server_ != nullptr) SetServing(false);
  if (config_.drain_grace_ms > 0) absl::SleepFor(absl::Milliseconds(config_.drain_grace_ms));
  // 2. New requests get UNAVAILABLE from Submit; open streams stop reading and finish once
  //    their accepted requests are answered.
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
  }
  if (service_ != nullptr) service_->BeginDrain();
  // Nothing more can arrive to fill a partial batch: run every queued group now.
  if (queue_ != nullptr) queue_->Flush();
  if (workers_ != nullptr) workers_->Notify();
  // 3. GOAWAY: no new calls; the calls in flight finish while the workers keep answering
  //    (until the deadline, when gRPC cancels what is left).
  if (grpc_server_ != nullptr) grpc_server_->Shutdown(deadline);
  if (admin_server_ != nullptr) admin_server_->Shutdown(deadline);
  // 4. Nothing can arrive now. Requests still queued belong to calls that ended at the
  //    deadline: answered UNAVAILABLE, not run.
  if (queue_ != nullptr) queue_->Close(absl::UnavailableError("server is shutting down"));
  if (workers_ != nullptr) workers_->Stop();
  // Generations still running belong to calls that ended at the deadline.
  if (generator_ != nullptr) generator_->Stop();
  // A load in progress stops at its next blob (or is discarded before the swap); queued
  // operator reloads are answered UNAVAILABLE.
  if (watcher_ != nullptr) watcher_->Stop();
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
}

void TwinServer::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&shut_down_));
}

}  // namespace twin
