// Iteration-level (continuous) batching of generation over one HfDecoder: sequences join and
// leave between steps, and each Step() extends every active sequence: the prompts of sequences
// that joined (prefill, cut into chunks so that a step never holds more than max_step_tokens
// tokens) and one token for each of the others (decode), the decoding rows in one Extend and
// the prompt chunks in another (so decoding rows are not padded to a prompt's length). Each
// sequence keeps its own KvCache, sampler and mixture weights (its row of the LayerParams a step is
// given), so sequences with different router weights decode in one batch through the unfused path.
//
// KV memory is bounded: a sequence reserves its cache (prompt + max_new_tokens positions) when
// it is added, and Add refuses with RESOURCE_EXHAUSTED what would exceed kv_budget_bytes; a
// finished or cancelled sequence frees its cache at once (at the next Step for a cancel).
//
//   ContinuousBatch batch(decoder, {.max_step_tokens = 512, .kv_budget_bytes = 1 << 30});
//   ASSIGN_OR_RETURN(uint64_t id, batch.Add(std::move(request)));
//   while (batch.active() > 0) {
//     ASSIGN_OR_RETURN(std::vector<GenerationEvent> events, batch.Step(params_for_rows));
//     // each event: a sequence's new token and, when it ended, why
//   }
//
// Thread-safety: not thread-safe; one thread (a server's generation worker) owns a batch.
#ifndef TWIN_CORE_MODEL_GENERATION_H_
#define TWIN_CORE_MODEL_GENERATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/hf_decoder.h"
#include "core/model/layer_params.h"
#include "core/model/sampling.h"

namespace twin {

enum class FinishReason {
  kNone,       // still generating
  kStop,       // produced a stop token (eos) or a stop sequence of tokens
  kLength,     // reached max_new_tokens, or the end of the cache's positions
  kCancelled,  // Cancel()
};

// "", "stop", "length", "cancelled".
const char* FinishReasonName(FinishReason reason);

struct GenerationRequest {
  std::vector<int64_t> prompt;  // token ids, non-empty
  int64_t max_new_tokens = 16;  // >= 1
  SamplingOptions sampling;
  std::vector<int64_t> stop_token_ids;                     // e.g. the config's eos ids
  std::vector<std::vector<int64_t>> stop_token_sequences;  // ends generation when produced
  std::vector<double> weights;  // this sequence's row of the step's LayerParams (router weights)
  int task = -1;                // its task (the head it reads where heads are per task); -1: none
  uint64_t tag = 0;             // the caller's, returned in events
};

// A step's row: one sequence's weights and task (its GenerationRequest's).
struct StepRow {
  const std::vector<double>* weights = nullptr;
  int task = -1;
};

struct GenerationEvent {
  uint64_t id = 0;
  uint64_t tag = 0;
  int64_t token = -1;  // the new token; -1 for a cancellation (no token)
  FinishReason finish = FinishReason::kNone;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;  // including this one
  bool first = false;            // the sequence's first generated token
};

struct ContinuousBatchOptions {
  int64_t max_step_tokens = 512;  // prompt chunks and decode tokens per Step, >= 1
  int64_t max_sequences = 64;     // sequences decoded together, >= 1
  int64_t kv_budget_bytes = 1LL << 30;
  // Reuse the decoding rows' LayerParams while their weights and tasks are unchanged (same rows,
  // same order: a batch that no sequence joined or left), instead of calling ParamsFor every
  // step. Only for a ParamsFor whose result depends on the rows alone.
  bool reuse_decode_params = false;
};

class ContinuousBatch {
 public:
  // The weights of a step's rows, in order: row i is the i-th sequence of `rows`.
  using ParamsFor = std::function<absl::StatusOr<std::unique_ptr<LayerParams>>(
      const std::vector<StepRow>& rows)>;

  ContinuousBatch(const HfDecoder& decoder, ContinuousBatchOptions options);
  ~ContinuousBatch();

  // INVALID_ARGUMENT naming the field (empty prompt, a prompt of max_positions or more tokens,
  // max_new_tokens < 1, bad sampling values, an id outside the vocabulary);
  // RESOURCE_EXHAUSTED when its cache does not fit the KV budget now (retry when sequences
  // finish) or can never fit it.
  absl::StatusOr<uint64_t> Add(GenerationRequest request);
  // Ends the sequence; its event (finish kCancelled) comes with the next Step, which frees its
  // cache. Unknown ids are ignored.
  void Cancel(uint64_t id);

  // One iteration over the active sequences. Sequences whose prompt is not fully read produce
  // no event; every other one produces exactly one. A failed forward fails the step and every
  // sequence in it (they are removed; their caches freed).
  absl::StatusOr<std::vector<GenerationEvent>> Step(const ParamsFor& params_for);

  size_t active() const { return sequences_.size(); }
  int64_t kv_bytes() const { return kv_bytes_; }
  // Whether Add would find room for the request's cache beside the caches held now.
  bool FitsNow(const GenerationRequest& request) const;
  // The capacity (positions) a request's cache reserves on `decoder`: prompt + max_new_tokens,
  // at most the model's positions; and its bytes.
  static int64_t RequestPositions(const HfDecoder& decoder, const GenerationRequest& request);
  static int64_t RequestBytes(const HfDecoder& decoder, const GenerationRequest& request);

 private:
  struct Sequence;

  const HfDecoder& decoder_;
  ContinuousBatchOptions options_;
  std::map<uint64_t, std::unique_ptr<Sequence>> sequences_;  // by id: the order they joined
  // reuse_decode_params: the last decoding group's rows (weights, task) and params.
  std::vector<std::pair<std::vector<double>, int>> decode_rows_;
  std::shared_ptr<const LayerParams> decode_params_;
  uint64_t next_id_ = 1;
  int64_t kv_bytes_ = 0;
};

}  // namespace twin

#endif  // TWIN_CORE_MODEL_GENERATION_H_
