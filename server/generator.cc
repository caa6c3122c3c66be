#include "server/generator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/model/generation.h"
#include "core/model/hf_decoder.h"
#include "core/status_macros.h"
#include "core/text/tokenizer.h"
#include "server/cluster_key.h"
#include "server/infer_processor.h"
#include "server/log.h"

namespace twin {
namespace {

using twinmerge::v1::GenerateRequest;
using twinmerge::v1::GenerateResponse;

constexpr size_t kMaxStopBytes = 256;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

}  // namespace

size_t StopPrefixLength(const std::string& text, const std::vector<std::string>& stops) {
  size_t longest = 0;
  for (const std::string& stop : stops) {
    // Suffixes of text of length n < |stop| that equal stop's first n bytes.
    for (size_t n = std::min(text.size(), stop.size() - 1); n > longest; --n) {
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

absl::StatusOr<std::unique_ptr<GenerationJob>> MakeGenerationJob(
    const GenerateRequest& request, std::shared_ptr<const Servable> servable,
    const ServerConfig& config) {
  const Engine& engine = *servable->engine;
  if (!engine.generative()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", engine.version(), " is a classification model: use Infer, not Generate"));
  }
  const GenerationConfig& g = config.generation;
  auto job = std::make_unique<GenerationJob>();
  if (static_cast<int>(request.request_id().size()) > config.max_request_id_bytes) {
    return Invalid(
        absl::StrCat("request_id is longer than ", config.max_request_id_bytes, " bytes"));
  }
  job->request_id = request.request_id();
  const int64_t context = engine.decoder().max_positions();
  const int64_t max_prompt = config.max_input_length > 0
                                 ? std::min<int64_t>(config.max_input_length, context - 1)
                                 : context - 1;
  std::string prompt_field = "text's token ids";
  switch (request.prompt_case()) {
    case GenerateRequest::kText: {
      const std::string& text = request.text();
      if (text.empty()) return Invalid("text is empty");
      if (static_cast<int>(text.size()) > config.max_text_bytes) {
        return Invalid(
            absl::StrCat("text is ", text.size(), " bytes; the limit is ", config.max_text_bytes));
      }
      // One token past the limit tells a prompt that is too long from one that fits.
      ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                       engine.tokenizer().EncodeOne(text, max_prompt + 1));
      if (ids.empty()) return Invalid("text encodes to no tokens");
      if (static_cast<int64_t>(ids.size()) > max_prompt) {
        return Invalid(absl::StrCat("text is more than ", max_prompt,
                                    " tokens, the prompt limit (the model's context is ", context,
                                    " positions, prompt and new tokens)"));
      }
      job->request.prompt = std::move(ids);
      break;
    }
    case GenerateRequest::kTokens: {
      const twinmerge::v1::TokenInput& tokens = request.tokens();
      const int64_t n = tokens.input_ids_size();
      if (n == 0) return Invalid("tokens.input_ids is empty");
      if (n > max_prompt) {
        return Invalid(absl::StrCat("tokens.input_ids has ", n, " tokens; the prompt limit is ",
                                    max_prompt, " (the model's context is ", context,
                                    " positions, prompt and new tokens)"));
      }
      if (tokens.attention_mask_size() != 0) {
        if (tokens.attention_mask_size() != n) {
          return Invalid(absl::StrCat("tokens.attention_mask has ", tokens.attention_mask_size(),
                                      " entries but input_ids has ", n));
        }
        for (int64_t i = 0; i < n; ++i) {
          if (tokens.attention_mask(i) != 1) {
            return Invalid(absl::StrCat("tokens.attention_mask[", i, "] is ",
                                        tokens.attention_mask(i),
                                        "; a prompt has no padding: every entry must be 1"));
          }
        }
      }
      job->request.prompt.assign(tokens.input_ids().begin(), tokens.input_ids().end());
      prompt_field = "tokens.input_ids";
      break;
    }
    default:
      return Invalid("request has no prompt (set text or tokens)");
  }
  // The tokenizer may map some text beyond a small model's vocabulary.
  RETURN_IF_ERROR(
      CheckTokenIds(at::tensor(job->request.prompt, at::kLong), engine.vocab_size(), prompt_field));
  ASSIGN_OR_RETURN(job->task, TaskOf(*servable, request.task()));
  RETURN_IF_ERROR(
      ParseRouting(request.routing(), config, engine.num_tasks(), &job->top_k, &job->temperature));
  const int64_t max_new = request.max_new_tokens();
  if (max_new < 0 || max_new > g.max_new_tokens) {
    return Invalid(absl::StrCat("max_new_tokens is ", max_new, "; must be in [1, ",
                                g.max_new_tokens, "] (0: the default, ", g.default_max_new_tokens,
                                ")"));
  }
  job->request.max_new_tokens = max_new == 0 ? g.default_max_new_tokens : max_new;
  const twinmerge::v1::SamplingOptions& s = request.sampling();
  SamplingOptions& sampling = job->request.sampling;
  sampling.temperature = s.temperature();
  sampling.top_k = s.top_k();
  sampling.top_p = s.top_p() == 0 ? 1.0 : s.top_p();  // proto3's 0: unset
  if (absl::Status valid = ValidateSampling(sampling); !valid.ok()) {
    return Invalid(absl::StrCat("sampling.", valid.message()));
  }
  sampling.seed = s.seed();
  while (sampling.seed == 0) {
    thread_local std::mt19937_64 seeds(std::random_device{}());
    sampling.seed = seeds();
  }
  if (request.stop_size() > g.max_stop_sequences) {
    return Invalid(absl::StrCat("stop has ", request.stop_size(), " sequences; the limit is ",
                                g.max_stop_sequences));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& stop = request.stop(i);
    if (stop.empty()) return Invalid(absl::StrCat("stop[", i, "] is empty"));
    if (stop.size() > kMaxStopBytes) {
      return Invalid(
          absl::StrCat("stop[", i, "] is ", stop.size(), " bytes; the limit is ", kMaxStopBytes));
    }
    job->stop.push_back(stop);
  }
  if (!request.ignore_eos()) job->request.stop_token_ids = engine.decoder().config().eos_token_ids;
  job->servable = std::move(servable);
  return job;
}

// A version's sequences: one continuous batch over its decoder.
struct Generator::Lane {
  std::shared_ptr<const Servable> servable;
  std::unique_ptr<ContinuousBatch> batch;
  std::map<uint64_t, std::unique_ptr<Running>> running;  // by sequence id
  bool static_mode = false;
};

// An admitted job and its stream state.
struct Generator::Running {
  std::unique_ptr<GenerationJob> job;
  uint64_t id = 0;
  std::vector<double> weights;  // the sequence's mixture (empty in static mode)
  std::string task;             // reported task ("" in static mode without one)
  std::unique_ptr<TextStream> text;
  std::string held;  // decoded text not yet sent (a possible stop-sequence start)
  bool first_sent = false;
  int64_t generated = 0;
  absl::Time last_token;
  absl::Time first_token;
};

Generator::Generator(const ServerConfig& config, ServerMetrics* metrics)
    : config_(config), metrics_(metrics) {}

Generator::~Generator() { Stop(); }

void Generator::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  worker_ = std::thread([this] { Loop(); });
}

namespace {

// Whether `job`'s prompt needs the router (see GenerationJob::routed).
bool NeedsRouting(const GenerationJob& job, const ServerConfig& config) {
  const Engine& engine = *job.servable->engine;
  if (job.servable->mode == ServingMode::kStatic) return engine.task_lm_heads() && job.task < 0;
  return job.task < 0 || config.task_given != TaskGivenPolicy::kTask;
}

// The prompt routed once: the router's top_k weights, renormalised, not rounded.
absl::Status RouteJob(GenerationJob& job) {
  const Engine& engine = *job.servable->engine;
  at::Tensor ids = at::tensor(job.request.prompt, at::kLong).unsqueeze(0);
  ASSIGN_OR_RETURN(at::Tensor w, engine.RouterWeights(ids, at::ones_like(ids), {job.temperature}));
  const at::Tensor row = w.to(at::kDouble).contiguous();
  std::vector<double> router(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
  ClusterKeyOptions exact;
  exact.top_k = job.top_k;
  exact.grid = 0;
  const ClusterKey key = QuantizeWeights(router, exact);
  job.routed = true;
  job.routed_weights = key.weights;
  job.routed_top_task = key.top_task;
  return absl::OkStatus();
}

}  // namespace

void Generator::Submit(std::unique_ptr<GenerationJob> job) {
  const HfDecoder& decoder = job->servable->engine->decoder();
  const int64_t positions = ContinuousBatch::RequestPositions(decoder, job->request);
  const int64_t bytes = ContinuousBatch::RequestBytes(decoder, job->request);
  if (bytes > config_.generation.kv_cache_bytes) {
    job->callbacks.done(absl::ResourceExhaustedError(absl::StrCat(
        "the sequence's KV cache (", positions, " positions, ", bytes,
        " bytes) exceeds generation.kv_cache_bytes (", config_.generation.kv_cache_bytes,
        "); ask for fewer max_new_tokens or a shorter prompt")));
    return;
  }
  // Routed here, on the caller's thread, so that the decode loop does not wait for the router
  // (unless the queue is already full: that call is refused below without it).
  bool full = false;
  {
    absl::MutexLock lock(&mu_);
    full = static_cast<int64_t>(queue_.size()) >= config_.generation.max_queue;
  }
  if (!full && NeedsRouting(*job, config_)) {
    if (absl::Status routed = RouteJob(*job); !routed.ok()) {
      metrics_->RecordGeneration("", absl::StatusCodeToString(routed.code()), "");
      job->callbacks.done(routed);
      return;
    }
  }
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || !started_) {
      refused = absl::UnavailableError("server is shutting down");
    } else if (static_cast<int64_t>(queue_.size()) >= config_.generation.max_queue) {
      refused =
          absl::ResourceExhaustedError(absl::StrCat("generation queue is full (", queue_.size(),
                                                    " requests waiting for KV-cache memory; "
                                                    "generation.max_queue)"));
    } else {
      queue_.push_back(std::move(job));
      stats_.waiting = static_cast<int64_t>(queue_.size());
      return;
    }
  }
  metrics_->RecordGeneration("", absl::StatusCodeToString(refused.code()), "");
  job->callbacks.done(refused);
}

void Generator::Stop() {
  std::thread worker;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    worker.swap(worker_);  // one caller joins
  }
  if (worker.joinable()) worker.join();
  // The worker answered what it held; jobs queued after it ended (none: Submit refuses once
  // stopping_) or when it never started.
  std::deque<std::unique_ptr<GenerationJob>> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
    stats_ = GeneratorStats();
  }
  for (auto& job : left) job->callbacks.done(absl::UnavailableError("server is shutting down"));
}

GeneratorStats Generator::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Generator::Loop() {
  while (true) {
    bool busy = false;
    for (const auto& lane : lanes_) busy |= !lane->running.empty() || lane->batch->active() > 0;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, busy]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_ || busy || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) break;
    }
    Admit();
    for (auto& lane : lanes_) {
      Expire(*lane);
      if (!lane->running.empty() || lane->batch->active() > 0) StepLane(*lane);
    }
    // A lane of a version no longer admitted to, with nothing left, is dropped.
    lanes_.erase(std::remove_if(lanes_.begin(), lanes_.end(),
                                [](const std::unique_ptr<Lane>& lane) {
                                  return lane->running.empty() && lane->batch->active() == 0 &&
                                         lane->servable.use_count() == 1;
                                }),
                 lanes_.end());
    PublishStats();
  }
  for (auto& lane : lanes_) {
    for (auto& [id, run] : lane->running) {
      Finish(*run, absl::UnavailableError(
                       absl::StrCat("server is shutting down after ", run->generated, " tokens")));
    }
    lane->running.clear();
  }
  lanes_.clear();
}

void Generator::Admit() {
  while (true) {
    std::unique_ptr<GenerationJob> job;
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      stats_.waiting = static_cast<int64_t>(queue_.size());
    }
    if (job->cancelled && job->cancelled->load()) {
      metrics_->RecordGeneration("", "CANCELLED", "");
      job->callbacks.done(absl::CancelledError("the call was cancelled before it started"));
      continue;
    }
    if (absl::Now() > job->deadline) {
      metrics_->RecordGeneration("", "DEADLINE_EXCEEDED", "");
      job->callbacks.done(absl::DeadlineExceededError(
          "the deadline passed while the request waited for KV-cache memory"));
      continue;
    }
    Lane* lane = nullptr;
    for (auto& l : lanes_) {
      if (l->servable == job->servable) lane = l.get();
    }
    const Engine& engine = *job->servable->engine;
    if (lane == nullptr) {
      auto fresh = std::make_unique<Lane>();
      fresh->servable = job->servable;
      fresh->static_mode = job->servable->mode == ServingMode::kStatic;
      ContinuousBatchOptions options;
      options.max_step_tokens = config_.generation.max_step_tokens;
      options.max_sequences = config_.generation.max_sequences;
      options.kv_budget_bytes = config_.generation.kv_cache_bytes;
      // GenerationParams depends on the rows' weights alone (and the lane's servable).
      options.reuse_decode_params = true;
      fresh->batch = std::make_unique<ContinuousBatch>(engine.decoder(), options);
      lanes_.push_back(std::move(fresh));
      lane = lanes_.back().get();
    }
    if (!lane->batch->FitsNow(job->request) && lane->batch->active() > 0) {
      // Waits, first in line, until running sequences free their caches.
      absl::MutexLock lock(&mu_);
      queue_.push_front(std::move(job));
      stats_.waiting = static_cast<int64_t>(queue_.size());
      return;
    }
    auto run = std::make_unique<Running>();
    // The prompt was routed once (Submit); the sequence keeps these weights to its end. In
    // static mode only a version with per-task LM heads is routed: for the sequence's head.
    const bool given = job->task >= 0 && config_.task_given == TaskGivenPolicy::kTask;
    if (!lane->static_mode && given) {
      run->weights.assign(engine.num_tasks(), 0.0);
      run->weights[job->task] = 1.0;
    } else if (job->routed || NeedsRouting(*job, config_)) {
      // Not routed yet only when Submit saw a full queue that had room by the time it locked.
      if (absl::Status routed = job->routed ? absl::OkStatus() : RouteJob(*job); !routed.ok()) {
        metrics_->RecordGeneration("", absl::StatusCodeToString(routed.code()), "");
        job->callbacks.done(routed);
        continue;
      }
      if (!lane->static_mode) run->weights = job->routed_weights;
      metrics_->RecordRoute(engine.manifest().tasks[job->routed_top_task].name);
      if (job->task < 0) job->task = job->routed_top_task;
    }
    if (job->task >= 0) run->task = engine.manifest().tasks[job->task].name;
    job->request.weights = run->weights;
    job->request.task = job->task;  // the LM head it reads, where heads are per task
    // The batch keeps its own copy: the job's request still reports the prompt and seed.
    absl::StatusOr<uint64_t> id = lane->batch->Add(job->request);
    if (!id.ok()) {
      metrics_->RecordGeneration(run->task, absl::StatusCodeToString(id.status().code()), "");
      job->callbacks.done(id.status());
      continue;
    }
    run->id = *id;
    run->text = engine.tokenizer().NewTextStream();
    run->job = std::move(job);
    lane->running[run->id] = std::move(run);
  }
}

void Generator::Expire(Lane& lane) {
  const absl::Time now = absl::Now();
  for (auto it = lane.running.begin(); it != lane.running.end();) {
    Running& run = *it->second;
    absl::Status status;
    if (run.job->cancelled && run.job->cancelled->load()) {
      status = absl::CancelledError(
          absl::StrCat("the call was cancelled after ", run.generated, " tokens"));
    } else if (now > run.job->deadline) {
      status = absl::DeadlineExceededError(
          absl::StrCat("the deadline passed after ", run.generated, " tokens"));
    }
    if (status.ok()) {
      ++it;
      continue;
    }
    lane.batch->Cancel(run.id);  // the next step frees its cache
    Finish(run, status);
    it = lane.running.erase(it);
  }
}

void Generator::StepLane(Lane& lane) {
  const Engine& engine = *lane.servable->engine;
  const bool static_mode = lane.static_mode;
  const std::string mode = static_mode ? "static" : "unfused";
  absl::StatusOr<std::vector<GenerationEvent>> events =
      lane.batch->Step([&engine, static_mode](const std::vector<StepRow>& rows) {
        return engine.GenerationParams(rows, static_mode);
      });
  const absl::Time now = absl::Now();
  if (!events.ok()) {
    LogLine(LogLevel::kError, absl::StrCat("generation step failed: ", events.status().ToString()));
    for (auto& [id, run] : lane.running) Finish(*run, events.status());
    lane.running.clear();
    return;
  }
  for (const GenerationEvent& event : *events) {
    auto it = lane.running.find(event.id);
    if (it == lane.running.end()) continue;  // ended already (cancel, stop sequence)
    Running& run = *it->second;
    GenerateResponse reply;
    reply.set_request_id(run.job->request_id);
    if (!run.first_sent) {
      run.first_sent = true;
      AddRouterWeights(run.weights, engine.manifest(), reply.mutable_router_weights());
      reply.set_task(run.task);
      reply.set_artifact_version(engine.version());
      reply.set_batch_mode(mode);
    }
    bool stopped = false;
    if (event.token >= 0) {
      ++run.generated;
      reply.add_token_ids(event.token);
      if (event.first) {
        run.first_token = now;
        metrics_->RecordFirstToken(mode, absl::ToDoubleSeconds(now - run.job->received));
      } else {
        metrics_->RecordInterToken(mode, absl::ToDoubleSeconds(now - run.last_token));
      }
      metrics_->RecordGeneratedTokens(mode, 1);
      run.last_token = now;
      run.held += run.text->Push(event.token);
    }
    if (event.finish != FinishReason::kNone) run.held += run.text->Finish();
    // A stop sequence ends the text where it starts.
    size_t cut = std::string::npos;
    for (const std::string& stop : run.job->stop) {
      cut = std::min(cut, run.held.find(stop));
    }
    std::string finish = FinishReasonName(event.finish);
    if (cut != std::string::npos) {
      reply.set_text(run.held.substr(0, cut));
      run.held.clear();
      finish = "stop";
      stopped = true;
    } else if (event.finish != FinishReason::kNone) {
      reply.set_text(std::move(run.held));
      run.held.clear();
    } else {
      const size_t keep = StopPrefixLength(run.held, run.job->stop);
      reply.set_text(run.held.substr(0, run.held.size() - keep));
      run.held.erase(0, run.held.size() - keep);
    }
    const bool last = stopped || event.finish != FinishReason::kNone;
    if (last) {
      reply.set_finish_reason(finish);
      twinmerge::v1::GenerateUsage* usage = reply.mutable_usage();
      usage->set_prompt_tokens(static_cast<int32_t>(run.job->request.prompt.size()));
      usage->set_generated_tokens(static_cast<int32_t>(run.generated));
      if (run.first_sent && run.generated > 0) {
        usage->set_time_to_first_token_us(Micros(run.first_token - run.job->received));
      }
      usage->set_total_us(Micros(now - run.job->received));
      usage->set_seed(run.job->request.sampling.seed);
    }
    run.job->callbacks.write(std::move(reply));
    if (last) {
      if (stopped && event.finish == FinishReason::kNone) lane.batch->Cancel(run.id);
      metrics_->RecordGeneration(run.task, "OK", finish);
      run.job->callbacks.done(absl::OkStatus());
      lane.running.erase(it);
    }
  }
}

void Generator::Finish(Running& run, const absl::Status& status) {
  metrics_->RecordGeneration(run.task, absl::StatusCodeToString(status.code()), "");
  run.job->callbacks.done(status);
}

void Generator::PublishStats() {
  int64_t active = 0, kv = 0;
  for (const auto& lane : lanes_) {
    active += static_cast<int64_t>(lane->batch->active());
    kv += lane->batch->kv_bytes();
  }
  {
    absl::MutexLock lock(&mu_);
    stats_.active = active;
    stats_.kv_bytes = kv;
  }
  metrics_->SetGenerationActive(active);
  metrics_->SetKvCacheBytes(kv);
}

}  // namespace twin
