// Choosing the next token from a causal LM's logits: greedy, or sampling with temperature,
// top-k and top-p (nucleus), reproducible from a seed.
//
// Sampling applies, in transformers' order: logits / temperature; top-k (tokens below the k-th
// largest logit are dropped; ties at the k-th value stay); top-p (the most probable tokens are
// kept, in order of probability and then of id, until their probability reaches top_p; at
// least one); then one draw from the renormalised distribution. The draw uses the sampler's own
// std::mt19937_64 (a generator the C++ standard specifies bit for bit) seeded with `seed`, and
// a uniform number made from its top 53 bits, so a seed gives the same tokens on every machine
// for the same logits, whatever else shares the batch.
//
//   ASSIGN_OR_RETURN(TokenSampler sampler, TokenSampler::Create({.temperature = 0.8, .seed = 7}));
//   int64_t next = sampler.Next(logits);  // logits [vocab]
//
// Thread-safety: a TokenSampler belongs to one sequence (Next advances its generator).
#ifndef TWIN_CORE_MODEL_SAMPLING_H_
#define TWIN_CORE_MODEL_SAMPLING_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>

#include "absl/status/statusor.h"

namespace twin {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (the first largest logit); else > 0
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;        // in (0, 1]; 1: no limit
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field for a negative or non-finite temperature, a negative top_k
// or a top_p outside (0, 1].
absl::Status ValidateSampling(const SamplingOptions& options);

class TokenSampler {
 public:
  static absl::StatusOr<TokenSampler> Create(const SamplingOptions& options);

  // The next token for logits [vocab] (any floating dtype). Non-finite logits: NaN is never
  // chosen, +inf wins. INVALID_ARGUMENT when the logits are not a non-empty vector or every
  // value is NaN or -inf.
  absl::StatusOr<int64_t> Next(const at::Tensor& logits);

  const SamplingOptions& options() const { return options_; }
  bool greedy() const { return options_.temperature == 0.0; }

 private:
  explicit TokenSampler(const SamplingOptions& options);
  // A uniform number in [0, 1) from the generator's top 53 bits.
  double Uniform();

  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace twin

#endif  // TWIN_CORE_MODEL_SAMPLING_H_
