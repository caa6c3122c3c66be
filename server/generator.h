// Generation for causal language model versions: twinmerge.v1.TwinMerge/Generate.
//
// MakeGenerationJob() validates a GenerateRequest against the servable and the limits (every
// error INVALID_ARGUMENT naming the field) and tokenizes its prompt. A Generator owns one
// worker thread that runs iteration-level (continuous) batching over every admitted sequence
// (core/model/generation.h): between two decode steps it admits waiting requests (routing each
// prompt once: the sequence keeps its weights to the end), cancels what was cancelled or ran
// past its deadline, then runs one step in which prompts are read and every other sequence
// decodes one token. Each step's weights come from the version (Engine::GenerationParams):
// theta* alone in static mode; theta* plus each row's own mixture of the task factors in every
// layer in twin mode, so sequences with different router weights share the batch.
//
// KV memory is bounded by generation.kv_cache_bytes: a sequence reserves its cache (prompt +
// max_new_tokens positions) when it is admitted. A request that can never fit is refused at
// once with RESOURCE_EXHAUSTED, one that does not fit now waits (FIFO) in a queue of
// generation.max_queue requests, beyond which requests are refused with RESOURCE_EXHAUSTED. A
// cancelled call (the client went away) or one past its deadline is ended before the next
// step, and that step frees its cache.
//
// Replies: every new token is written as it is produced (GenerateCallbacks::write), its text
// from the tokenizer's stream decoder, holding back only text that may be the start of a stop
// sequence; the last reply has the finish reason and the usage, then done(OK). On an error
// done(status) is the only call after the replies written so far.
//
//   Generator generator(config, &metrics);
//   generator.Start();
//   ASSIGN_OR_RETURN(auto job, MakeGenerationJob(request, servable, config));
//   generator.Submit(std::move(job));   // callbacks run on the worker thread
//   ...
//   generator.Stop();                   // what is still running ends UNAVAILABLE
//
// Thread-safety: Submit, Stop and the accessors are thread-safe; callbacks are called from the
// worker thread only (or from Submit's caller when it refuses the job).
#ifndef TWIN_SERVER_GENERATOR_H_
#define TWIN_SERVER_GENERATOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/model/generation.h"
#include "server/metrics.h"
#include "server/servable.h"
#include "server/server_config.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin {

struct GenerateCallbacks {
  // Zero or more replies, in order.
  std::function<void(twinmerge::v1::GenerateResponse)> write;
  // Exactly once, after the last write: OK when the last reply carried the finish reason.
  std::function<void(const absl::Status&)> done;
};

// One validated request.
struct GenerationJob {
  std::shared_ptr<const Servable> servable;
  std::string request_id;
  // What the continuous batch runs: prompt, max_new_tokens, sampling (its seed drawn when the
  // request gave 0), the eos ids unless ignore_eos; the weights are set when it is routed.
  GenerationRequest request;
  int task = -1;  // the named task, -1: the router's top task
  int top_k = 0;  // routing
  double temperature = 1.0;
  std::vector<std::string> stop;  // stop sequences (text)
  absl::Time received;
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<std::atomic<bool>> cancelled;
  GenerateCallbacks callbacks;
  // Set by Generator::Submit on the caller's thread when the prompt needs the router (no task
  // named, or a named task under routing.task_given: router; in static mode only for a
  // version with per-task LM heads): the router's top_k weights and its top task.
  bool routed = false;
  std::vector<double> routed_weights;
  int routed_top_task = -1;
};

// Validates `request` for `servable` (which must be generative) and tokenizes its prompt.
// INVALID_ARGUMENT naming the field; FAILED_PRECONDITION for a classification version.
absl::StatusOr<std::unique_ptr<GenerationJob>> MakeGenerationJob(
    const twinmerge::v1::GenerateRequest& request, std::shared_ptr<const Servable> servable,
    const ServerConfig& config);

// The longest suffix of `text` that is a proper prefix of one of `stops` (the text a stream
// must hold back because a stop sequence may start there). Exposed for tests.
size_t StopPrefixLength(const std::string& text, const std::vector<std::string>& stops);

struct GeneratorStats {
  int64_t waiting = 0;   // queued, not admitted
  int64_t active = 0;    // admitted sequences
  int64_t kv_bytes = 0;  // reserved by the admitted sequences
};

class Generator {
 public:
  Generator(const ServerConfig& config, ServerMetrics* metrics);
  ~Generator();  // Stop()

  void Start();
  // Queues `job`; its callbacks report the outcome. RESOURCE_EXHAUSTED (through done) when the
  // queue is full or its cache can never fit the budget; UNAVAILABLE once stopped.
  void Submit(std::unique_ptr<GenerationJob> job);
  // Ends every queued and running sequence with UNAVAILABLE and joins the worker. Idempotent.
  void Stop();
  GeneratorStats stats() const;

 private:
  struct Lane;
  struct Running;
  void Loop();
  // Moves queued jobs into their version's lane while their caches fit.
  void Admit();
  // Ends running sequences that were cancelled or ran past their deadline.
  void Expire(Lane& lane);
  void StepLane(Lane& lane);
  void Finish(Running& run, const absl::Status& status);
  void PublishStats();

  const ServerConfig& config_;
  ServerMetrics* metrics_;
  std::thread worker_;
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<GenerationJob>> queue_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  GeneratorStats stats_ ABSL_GUARDED_BY(mu_);
  // Worker thread only.
  std::vector<std::unique_ptr<Lane>> lanes_;
};

}  // namespace twin

#endif  // TWIN_SERVER_GENERATOR_H_
