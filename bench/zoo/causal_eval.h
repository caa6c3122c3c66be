// Scoring a causal LM on (prompt, target) examples through the native engine, so that the
// same function scores an expert, the base, or any merged weight set (a DenseParams of theta*
// or a fused theta(w)):
//
//   exact match  the greedy continuation of the prompt equals the target token for token,
//                eos included (so it must also stop where the target stops);
//   mean loss    the cross-entropy (nats) of the target's tokens given the prompt, averaged
//                over every target token of the examples (eos included).
//
// Examples are text in files (the generative zoo's <task>.{validation,test}.jsonl: one JSON
// object a line, {"prompt": ..., "target": ...}) and ids when scored: the prompt as the
// tokenizer encodes it (special tokens added: the zoo's bos), the target without specials,
// followed by the model's eos.
//
//   ASSIGN_OR_RETURN(std::vector<CausalPair> pairs, ReadCausalPairsJsonl("zoo/spam.test.jsonl"));
//   ASSIGN_OR_RETURN(auto examples, EncodeCausalPairs(*tokenizer, pairs, eos, max_len));
//   ASSIGN_OR_RETURN(HfCausalLm lm, LoadHfCausalLm("zoo/spam"));
//   ASSIGN_OR_RETURN(CausalScores s, ScoreCausalLm(*lm.decoder, DenseParams(lm.weights),
//                                                  examples));
//
// Thread-safety: plain functions; ScoreCausalLm only reads the decoder and the params.
#ifndef TWIN_BENCH_ZOO_CAUSAL_EVAL_H_
#define TWIN_BENCH_ZOO_CAUSAL_EVAL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/hf_decoder.h"
#include "core/model/layer_params.h"
#include "core/text/hf_tokenizer.h"

namespace twin::zoo {

// One example as text: the model reads `prompt` and should continue it with `target`, then
// stop. Both are UTF-8.
struct CausalPair {
  std::string prompt;
  std::string target;
};

// One example as ids: `target` ends with the eos id.
struct CausalExample {
  std::vector<int64_t> prompt;
  std::vector<int64_t> target;
};

// The JSONL lines of `pairs` (one object a line, keys prompt and target); INVALID_ARGUMENT
// naming the pair when a text is not UTF-8.
absl::StatusOr<std::string> CausalPairsJsonl(const std::vector<CausalPair>& pairs);
// Reads such a file; errors name the file and line.
absl::StatusOr<std::vector<CausalPair>> ReadCausalPairsJsonl(const std::string& path);

// Encodes every pair; INVALID_ARGUMENT naming the pair when the prompt is empty or prompt and
// target (with eos) are longer than max_len ids.
absl::StatusOr<std::vector<CausalExample>> EncodeCausalPairs(const HfTokenizer& tokenizer,
                                                             const std::vector<CausalPair>& pairs,
                                                             int64_t eos_id, int64_t max_len);

struct CausalScores {
  int64_t examples = 0;
  int64_t target_tokens = 0;
  double exact_match = 0;  // share of examples
  double mean_loss = 0;    // nats per target token
};

struct CausalEvalOptions {
  int64_t batch_size = 64;  // sequences per forward
};

// Scores `examples` (non-empty; every target non-empty) with `params`, one weight set for every
// row (rows are not matched to examples). The forward runs under InferenceMode; errors are the
// decoder's.
absl::StatusOr<CausalScores> ScoreCausalLm(const HfDecoder& decoder, const LayerParams& params,
                                           const std::vector<CausalExample>& examples,
                                           const CausalEvalOptions& options = {});

// The weights of a batch whose row i is examples[rows[i]]: one weight set per example, e.g. a
// MixedParams of each example's own router weights (the server's unfused path). Called once
// per forward, with the examples still decoding.
using ExampleParams = std::function<absl::StatusOr<std::shared_ptr<const LayerParams>>(
    const std::vector<size_t>& rows)>;

// As above, each example with its own weights. Also returns, in *per_example (when not null),
// whether each example was matched exactly and its summed target loss.
struct ExampleScore {
  bool exact = false;
  double loss = 0;  // nats, summed over the target's tokens
};
absl::StatusOr<CausalScores> ScoreCausalLm(const HfDecoder& decoder, const ExampleParams& params,
                                           const std::vector<CausalExample>& examples,
                                           const CausalEvalOptions& options = {},
                                           std::vector<ExampleScore>* per_example = nullptr);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_CAUSAL_EVAL_H_
