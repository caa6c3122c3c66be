// The model-independent router input (router.features: ngram): hashed token n-gram counts,
// computed from the token ids alone, with no forward of the model.
//
// For every n in [1, max_order] and every window of n consecutive unmasked tokens of a row, the
// n-gram's ids are hashed (64-bit FNV-style fold, then a multiplicative mix with n) into one of
// `buckets` buckets; the feature is log(1 + count) per bucket. A window that contains a masked
// position is skipped, so padding never changes a row's features. The result is float32 [B,
// buckets] on the CPU. Cost: O(B * L * max_order), a few microseconds per request, against a
// model forward of O(L * parameters).
//
//   NgramSpec spec{.max_order = 3, .buckets = 2048};
//   ASSIGN_OR_RETURN(at::Tensor f, NgramFeatures(ids, mask, spec));   // [B, 2048]
//
// Thread-safety: pure function.
#ifndef TWIN_CORE_ROUTER_NGRAM_FEATURES_H_
#define TWIN_CORE_ROUTER_NGRAM_FEATURES_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/store/ngram_spec.h"

namespace twin {

// INVALID_ARGUMENT naming the field when max_order is outside [1, kMaxNgramOrder] or buckets
// outside [1, kMaxNgramBuckets].
absl::Status ValidateNgramSpec(const NgramSpec& spec);

// `input_ids`, `attention_mask`: int64 [B, L] (any device; read on the CPU), mask 0/1.
absl::StatusOr<at::Tensor> NgramFeatures(const at::Tensor& input_ids,
                                         const at::Tensor& attention_mask, const NgramSpec& spec);

}  // namespace twin

#endif  // TWIN_CORE_ROUTER_NGRAM_FEATURES_H_
