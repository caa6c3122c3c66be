#include "core/router/ngram_features.h"

#include <ATen/ATen.h>

#include <cmath>
#include <exception>

#include "absl/strings/str_cat.h"

namespace twin {

absl::Status ValidateNgramSpec(const NgramSpec& spec) {
  if (spec.max_order < 1 || spec.max_order > kMaxNgramOrder) {
    return absl::InvalidArgumentError(absl::StrCat("ngram.max_order must be in [1, ",
                                                   kMaxNgramOrder, "], got ", spec.max_order));
  }
  if (spec.buckets < 1 || spec.buckets > kMaxNgramBuckets) {
    return absl::InvalidArgumentError(absl::StrCat("ngram.buckets must be in [1, ",
                                                   kMaxNgramBuckets, "], got ", spec.buckets));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> NgramFeatures(const at::Tensor& input_ids,
                                         const at::Tensor& attention_mask,
                                         const NgramSpec& spec) {
  if (absl::Status valid = ValidateNgramSpec(spec); !valid.ok()) return valid;
  if (input_ids.dim() != 2 || !attention_mask.sizes().equals(input_ids.sizes())) {
    return absl::InvalidArgumentError(
        "ngram features need input_ids and attention_mask of one shape [B, L]");
  }
  try {
    const at::Tensor ids = input_ids.to(at::kCPU, at::kLong).contiguous();
    const at::Tensor mask = attention_mask.to(at::kCPU, at::kLong).contiguous();
    const int64_t rows = ids.size(0);
    const int64_t length = ids.size(1);
    at::Tensor out = at::zeros({rows, spec.buckets}, at::kFloat);
    const int64_t* id = ids.data_ptr<int64_t>();
    const int64_t* m = mask.data_ptr<int64_t>();
    float* f = out.data_ptr<float>();
    const uint64_t buckets = static_cast<uint64_t>(spec.buckets);
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t* row = id + b * length;
      const int64_t* row_mask = m + b * length;
      float* counts = f + b * spec.buckets;
      for (int64_t start = 0; start < length; ++start) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (int64_t n = 1; n <= spec.max_order && start + n <= length; ++n) {
          const int64_t pos = start + n - 1;
          if (row_mask[pos] == 0) break;  // windows through padding are skipped
          h = (h ^ static_cast<uint64_t>(row[pos])) * 0x100000001b3ull;
          uint64_t x = (h + static_cast<uint64_t>(n) * 0x9E3779B97F4A7C15ull);
          x ^= x >> 31;
          x *= 0xBF58476D1CE4E5B9ull;
          x ^= x >> 29;
          counts[x % buckets] += 1.0f;
        }
      }
      for (int64_t k = 0; k < spec.buckets; ++k) counts[k] = std::log1p(counts[k]);
    }
    return out;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("ngram features: ", e.what()));
  }
}

}  // namespace twin
