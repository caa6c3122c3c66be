#include "server/twin_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/artifact_set.h"
#include "core/object_store.h"
#include "core/status_macros.h"
#include "core/tokenizer.h"
#include <ATen/ATen.h>
#include "server/batch_workers.h"
#include "server/kserve_service.h"
#include "server/request_queue.h"
#include "server/twin_service.h"

namespace twin {
namespace {

constexpr char kServiceName[] = "twinmerge.v1.TwinMerge";

}  // namespace

TwinServer::TwinServer(const ServerConfig& config) : config_(config) {}

TwinServer::~TwinServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<TwinServer>> TwinServer::Start(const ServerConfig& config) {
  RETURN_IF_ERROR(ValidateServerConfig(config));
  std::unique_ptr<TwinServer> server(new TwinServer(config));
  ASSIGN_OR_RETURN(server->metrics_, ServerMetrics::Create(config.metrics_address));
  server->queue_ = std::make_unique<RequestQueue>(config.queue);
  server->processor_ = std::make_unique<InferProcessor>(server->config_, server->metrics_.get());
  BatchWorkersOptions worker_options;
  worker_options.num_threads = config.workers;
  worker_options.max_route_batch = config.max_route_batch;
  server->workers_ = std::make_unique<BatchWorkers>(server->queue_.get(),
                                                    server->processor_.get(), worker_options);
  server->workers_->Start();
  server->service_ = std::make_unique<TwinService>(server.get());
  KServeOptions kserve_options;
  kserve_options.model_name = config.kserve_model_name;
  kserve_options.max_rows = config.queue.max_queue_size;  // every row is queued
  server->kserve_service_ = std::make_unique<KServeService>(server.get(), kserve_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen_address, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->kserve_service_.get());
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
  {
    absl::MutexLock lock(&mu_);
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

absl::Status TwinServer::LoadVersion(const std::string& requested) {
  absl::MutexLock load_lock(&load_mu_);
  const std::string version = requested.empty() ? config_.artifact_version : requested;
  ASSIGN_OR_RETURN(auto store, OpenObjectStore(config_.artifact_uri));
  ASSIGN_OR_RETURN(LocalArtifactSet set, FetchArtifactSet(store.get(), version, config_.cache_dir));
  if (set.version == this->version()) return absl::OkStatus();
  auto servable = std::make_shared<Servable>();
  EngineOptions engine_options;
  engine_options.device = config_.device;
  ASSIGN_OR_RETURN(servable->engine, Engine::Load(set, engine_options));
  servable->cache = std::make_unique<FusedWeightCache>(config_.cache);
  RETURN_IF_ERROR(ValidateClusterKeyOptions(config_.cluster_key, servable->engine->num_tasks()));
  for (int t = 0; t < servable->engine->num_tasks(); ++t) {
    servable->task_index[set.manifest.tasks[t].name] = t;
  }
  RETURN_IF_ERROR(Annotate(WarmUp(*servable), "warm-up"));
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("server is shutting down");
    servable_ = std::move(servable);
  }
  metrics_->SetVersion(set.version);
  SetServing(true);
  return absl::OkStatus();
}

absl::Status TwinServer::WarmUp(const Servable& servable) {
  // Route and fuse-forward a few inputs through every task head so that the first real
  // requests do not pay for lazy initialisation.
  const Engine& engine = *servable.engine;
  for (int i = 0; i < config_.warmup_requests; ++i) {
    // Token ids of the tokenizer's padding id are valid for any vocabulary.
    constexpr int64_t kWarmUpLength = 8;
    TokenBatch batch{at::full({1, kWarmUpLength}, engine.tokenizer().spec().pad_id, at::kLong),
                     at::ones({1, kWarmUpLength}, at::kLong)};
    ASSIGN_OR_RETURN(at::Tensor w, engine.RouterWeights(batch.input_ids, batch.attention_mask,
                                                        {config_.default_temperature}));
    if (i > 0) continue;
    std::vector<double> uniform(engine.num_tasks(), 1.0 / engine.num_tasks());
    ASSIGN_OR_RETURN(auto fused, engine.Fuse(uniform));
    for (int t = 0; t < engine.num_tasks(); ++t) {
      RETURN_IF_ERROR(engine.Forward(*fused, batch.input_ids, batch.attention_mask, t).status());
    }
  }
  return absl::OkStatus();
}

void TwinServer::Submit(const twinmerge::v1::InferRequest& request, absl::Time deadline,
                        std::shared_ptr<std::atomic<bool>> cancelled, InferReply reply) {
  const absl::Time now = absl::Now();
  std::shared_ptr<const Servable> servable;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      reply(absl::UnavailableError("server is shutting down"));
      return;
    }
    servable = servable_;
  }
  if (servable == nullptr) {
    reply(absl::UnavailableError("no artifact version is loaded yet"));
    return;
  }
  if (deadline <= now) {
    metrics_->RecordRequest("", "DEADLINE_EXCEEDED", {});
    reply(absl::DeadlineExceededError("deadline exceeded before the request was queued"));
    return;
  }
  auto payload = MakePayload(request, std::move(servable), config_);
  if (!payload.ok()) {
    metrics_->RecordRequest("", absl::StatusCodeToString(payload.status().code()), {});
    reply(payload.status());
    return;
  }
  const int64_t in_flight = ++in_flight_;
  metrics_->SetInFlight(in_flight);
  (*payload)->received = now;
  (*payload)->reply = [this, reply = std::move(reply)](
                          absl::StatusOr<twinmerge::v1::InferResponse> result) {
    metrics_->SetInFlight(--in_flight_);
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
  if (grpc_server_ != nullptr) SetServing(false);
  // Everything accepted so far is answered; new requests get UNAVAILABLE from Submit.
  if (workers_ != nullptr) workers_->Drain();
  if (queue_ != nullptr) queue_->Close(absl::UnavailableError("server is shutting down"));
  if (grpc_server_ != nullptr) {
    grpc_server_->Shutdown(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(config_.drain_timeout_ms));
  }
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
}

void TwinServer::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&shut_down_));
}

}  // namespace twin
