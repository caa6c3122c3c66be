// The parameters of the n-gram router input (core/router/ngram_features.h), without LibTorch, for the
// manifest.
//
// Thread-safety: plain value type.
#ifndef TWIN_CORE_STORE_NGRAM_SPEC_H_
#define TWIN_CORE_STORE_NGRAM_SPEC_H_

#include <cstdint>

namespace twin {

inline constexpr int64_t kMaxNgramOrder = 8;
inline constexpr int64_t kMaxNgramBuckets = int64_t{1} << 20;

struct NgramSpec {
  int64_t max_order = 3;   // 1-grams up to max_order-grams
  int64_t buckets = 2048;  // feature width
};

}  // namespace twin

#endif  // TWIN_CORE_STORE_NGRAM_SPEC_H_
