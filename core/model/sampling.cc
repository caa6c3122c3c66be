#include "core/model/sampling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

namespace twin {

absl::Status ValidateSampling(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be 0 (greedy) or a positive number, not ", o.temperature));
  }
  if (o.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be 0 (no limit) or positive, not ", o.top_k));
  }
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], not ", o.top_p));
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenSampler> TokenSampler::Create(const SamplingOptions& options) {
  if (absl::Status s = ValidateSampling(options); !s.ok()) return s;
  return TokenSampler(options);
}

TokenSampler::TokenSampler(const SamplingOptions& options)
    : options_(options), rng_(options.seed) {}

double TokenSampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

absl::StatusOr<int64_t> TokenSampler::Next(const at::Tensor& logits) {
  if (!logits.defined() || logits.dim() != 1 || logits.numel() == 0 ||
      !at::isFloatingType(logits.scalar_type())) {
    return absl::InvalidArgumentError("logits must be a non-empty floating-point vector");
  }
  const at::Tensor values = logits.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* x = values.data_ptr<double>();
  const int64_t vocab = values.numel();
  // Candidates in id order; NaN and -inf can never be drawn.
  std::vector<int64_t> ids;
  ids.reserve(vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isnan(x[i]) && x[i] != -std::numeric_limits<double>::infinity()) ids.push_back(i);
  }
  if (ids.empty()) return absl::InvalidArgumentError("every logit is NaN or -inf");
  auto larger = [&](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  if (greedy()) return *std::min_element(ids.begin(), ids.end(), larger);
  // +inf logits share all the probability.
  std::vector<int64_t> infinite;
  for (int64_t i : ids) {
    if (x[i] == std::numeric_limits<double>::infinity()) infinite.push_back(i);
  }
  if (!infinite.empty()) ids = infinite;
  std::sort(ids.begin(), ids.end(), larger);  // most probable first
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < ids.size()) {
    const double kth = x[ids[options_.top_k - 1]];
    size_t keep = options_.top_k;
    while (keep < ids.size() && x[ids[keep]] == kth) ++keep;
    ids.resize(keep);
  }
  std::vector<double> p(ids.size());
  if (infinite.empty()) {
    const double top = x[ids[0]] / options_.temperature;
    for (size_t j = 0; j < ids.size(); ++j) p[j] = std::exp(x[ids[j]] / options_.temperature - top);
  } else {
    std::fill(p.begin(), p.end(), 1.0);
  }
  double total = std::accumulate(p.begin(), p.end(), 0.0);
  if (options_.top_p < 1) {
    double mass = 0;
    size_t keep = 0;
    while (keep < p.size() && (keep == 0 || mass < options_.top_p * total)) mass += p[keep++];
    p.resize(keep);
    ids.resize(keep);
    total = mass;
  }
  const double target = Uniform() * total;
  double cumulative = 0;
  for (size_t j = 0; j < p.size(); ++j) {
    cumulative += p[j];
    if (target < cumulative) return ids[j];
  }
  return ids.back();  // target within rounding of the total
}

}  // namespace twin
