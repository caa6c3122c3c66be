// The merge job's rules for a Hugging Face causal-LM base (Llama, Qwen2, Mistral): the native
// engine runs it, so there is no TorchScript architecture to probe, no labels (its tasks
// generate text), and the router reads n-gram counts of the prompts. Its embeddings and LM
// head are merged like every other tensor unless merge.yaml's head_pattern keeps some per task.
//
// Thread-safety: plain functions.
#ifndef TWIN_MERGE_OFFLINE_INTERNAL_CAUSAL_LM_H_
#define TWIN_MERGE_OFFLINE_INTERNAL_CAUSAL_LM_H_

#include <string>

#include "absl/status/status.h"
#include "merge_offline/internal/inputs.h"
#include "merge_offline/merge_config.h"

namespace twin::merge_internal {

// A regular expression that matches no name, not even "".
inline constexpr char kNoHeadPattern[] = "(?!)";

// The pattern that splits the base's tensors into merged and per-task ones: merge.yaml's
// head_pattern, or kNoHeadPattern for a causal LM when merge.yaml gives none (generation reads
// the embeddings and the LM head from theta*).
std::string HeadPatternFor(const MergeJobConfig& config, const InputModel& base);

// Checks merge.yaml against a causal-LM base: no `architecture`, no `models[].labels`,
// `router.features` auto or ngram, and no head tensor that is the embedding table of a tied
// model (its LM head reads the same table, which must be merged). Errors name the key.
absl::Status CheckCausalLmJob(const MergeJobConfig& config, const InputModel& base,
                              const ModelLayout& layout);

// Checks that an expert's decoder config describes the base's body: family and every field
// that changes a tensor's shape or the forward (sizes, heads, key/value heads, head_dim,
// positions, activation, eps, rotary settings, tied embeddings, biases, sliding window).
// Errors name both config files and the field.
absl::Status CheckSameDecoder(const InputModel& base, const InputModel& expert);

}  // namespace twin::merge_internal

#endif  // TWIN_MERGE_OFFLINE_INTERNAL_CAUSAL_LM_H_
