#include "core/merge/svd_compress.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <numeric>
#include <optional>
#include <queue>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/merge/merge_methods.h"  // AllFinite
#include "core/status_macros.h"

namespace twin {
namespace {

// ratio * min(m, n) and energy * total are compared with this relative slack, so that e.g.
// 0.3 * 10 counts as 3 and an energy target met exactly is met.
constexpr double kRoundingSlack = 1e-9;

struct KindName {
  RankPolicy::Kind kind;
  const char* name;
};
constexpr KindName kKindNames[] = {
    {RankPolicy::kRatio, "ratio"},
    {RankPolicy::kRank, "rank"},
    {RankPolicy::kEnergy, "energy"},
    {RankPolicy::kBudget, "budget"},
};

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

double SumSquares(const at::Tensor& values) {
  return values.to(at::kDouble).square().sum().item<double>();
}

// ||a||_F^2 summed in float64, or nullopt when `a` has NaN/Inf. For a contiguous float32 CPU
// tensor (every twin vector) one pass with no temporaries: squares of float32 values cannot
// overflow a double, so a non-finite sum means a non-finite entry.
std::optional<double> SquaredNorm(const at::Tensor& a) {
  if (a.scalar_type() == at::kFloat && a.device().is_cpu() && a.is_contiguous()) {
    const float* x = a.data_ptr<float>();
    const int64_t count = a.numel();
    constexpr int kLanes = 4;  // independent sums, so the additions pipeline
    double lane[kLanes] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + kLanes <= count; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) lane[j] += static_cast<double>(x[i + j]) * x[i + j];
    }
    for (; i < count; ++i) lane[0] += static_cast<double>(x[i]) * x[i];
    const double sum = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    if (!std::isfinite(sum)) return std::nullopt;
    return sum;
  }
  if (!AllFinite(a)) return std::nullopt;
  return SumSquares(a);
}

// Factors of one SVD-like decomposition: A ~= u diag(s) vt.
struct Svd {
  at::Tensor u, s, vt;
  // Randomized only: ||Q^T A||_F^2, the energy of A inside the range found.
  double captured_sq = 0.0;
};

bool SvdFinite(const Svd& svd) { return AllFinite(svd.u) && AllFinite(svd.s) && AllFinite(svd.vt); }

// LAPACK's divide-and-conquer SVD is markedly faster on a tall matrix than on its wide
// transpose (about 40% on the randomized solver's [rank + oversample, n] products), so a wide
// matrix is factored as its transpose: A^T = U S V^T gives A = V S U^T.
Svd FullSvd(const at::Tensor& a) {
  if (a.size(0) < a.size(1)) {
    auto [u, s, vt] = at::linalg_svd(a.t(), /*full_matrices=*/false);
    return {vt.t(), s, u.t()};
  }
  auto [u, s, vt] = at::linalg_svd(a, /*full_matrices=*/false);
  return {u, s, vt};
}

at::Tensor Orthonormalize(const at::Tensor& y) { return std::get<0>(at::linalg_qr(y, "reduced")); }

// Turns the packed LU factors of a [k, w] CPU matrix into P L in place: the unit lower
// trapezoid L, then LAPACK's row swaps (1-based, applied in order to get P^T y = L U) undone
// in reverse order. Column by column, as LAPACK's factors are column-major: each column is
// one contiguous run of memory.
template <typename T>
void PermutedLowerInPlace(at::Tensor& lu, const int32_t* swaps) {
  T* data = lu.data_ptr<T>();
  const int64_t rows = lu.size(0), cols = lu.size(1);
  const int64_t row_stride = lu.stride(0), col_stride = lu.stride(1);
  const int64_t num_swaps = std::min(rows, cols);
  for (int64_t j = 0; j < cols; ++j) {
    T* column = data + j * col_stride;
    for (int64_t i = 0; i < j; ++i) column[i * row_stride] = T(0);
    column[j * row_stride] = T(1);
    for (int64_t k = num_swaps - 1; k >= 0; --k) {
      std::swap(column[k * row_stride], column[(swaps[k] - 1) * row_stride]);
    }
  }
}

// A basis of the column space of y [k, w] (k >= w) from its pivoted LU factorisation
// y = P L U: P L spans what y spans and, with every |l_ij| <= 1, stays well conditioned, which
// is all a power iteration's intermediate steps need. About a quarter of a Householder QR's
// work, as no Q is formed. A rank-deficient y (a delta with few nonzero rows) leaves zero
// pivots, which only add directions to the basis: P L keeps full column rank.
at::Tensor LuBasis(const at::Tensor& y) {
  auto [lu, pivots, info] = at::linalg_lu_factor_ex(y, /*pivot=*/true, /*check_errors=*/false);
  const at::Tensor swaps = pivots.to(at::kCPU, at::kInt).contiguous();
  if (lu.device().is_cpu() && lu.scalar_type() == at::kFloat) {
    PermutedLowerInPlace<float>(lu, swaps.data_ptr<int32_t>());
    return lu;
  }
  if (lu.device().is_cpu() && lu.scalar_type() == at::kDouble) {
    PermutedLowerInPlace<double>(lu, swaps.data_ptr<int32_t>());
    return lu;
  }
  at::Tensor l = lu.tril(-1);
  l.diagonal().fill_(1);
  // The swaps applied to the identity give the row of y that each row of L U stands for.
  std::vector<int64_t> rows(y.size(0));
  std::iota(rows.begin(), rows.end(), int64_t{0});
  const int32_t* swap = swaps.data_ptr<int32_t>();
  for (int64_t k = 0; k < swaps.numel(); ++k) std::swap(rows[k], rows[swap[k] - 1]);
  const at::Tensor index = at::tensor(rows, at::TensorOptions().dtype(at::kLong));
  return at::empty_like(l).index_copy_(0, index.to(l.device()), l);
}

// Randomized range finder: Q spans A's dominant column space (rank + oversample columns,
// sharpened by power iterations). Intermediate steps are renormalised by LU so that small
// singular directions are not lost to round-off; the last by Householder QR, whose exactly
// orthonormal Q makes the SVD of the small Q^T A give the factors (and the error formula in
// CompressDelta exact).
Svd RandomizedSvd(const at::Tensor& a, int64_t rank, const SvdOptions& options) {
  const int64_t n = a.size(1);
  const int64_t width = std::min(rank + options.oversample, std::min(a.size(0), n));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  // Drawn on the CPU so the result does not depend on the device.
  at::Tensor omega = at::randn({n, width}, gen, at::TensorOptions().dtype(a.scalar_type()));
  at::Tensor y = at::matmul(a, omega.to(a.device()));
  for (int64_t i = 0; i < options.power_iterations; ++i) {
    at::Tensor z = LuBasis(at::matmul(a.t(), LuBasis(y)));
    y = at::matmul(a, z);
  }
  const at::Tensor q = Orthonormalize(y);
  const at::Tensor b = at::matmul(q.t(), a);
  Svd small = FullSvd(b);
  return {at::matmul(q, small.u), small.s, small.vt, SquaredNorm(b).value_or(0.0)};
}

// Runs `solve` in float32, and again in float64 if that throws or yields NaN/Inf.
template <typename Solve>
absl::StatusOr<Svd> WithFallback(const at::Tensor& a, const std::string& what, Solve solve) {
  std::string first_error;
  try {
    Svd svd = solve(a.to(at::kFloat));
    if (SvdFinite(svd)) return svd;
    first_error = "non-finite output";
  } catch (const std::exception& e) {
    first_error = e.what();
  }
  try {
    Svd svd = solve(a.to(at::kDouble));
    if (SvdFinite(svd)) return svd;
    return absl::InternalError(
        absl::StrCat(what, " gave NaN/Inf in float64 (float32: ", first_error, ")"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, " failed in float32 (", first_error,
                                            ") and in float64 (", e.what(), ")"));
  }
}

absl::StatusOr<at::Tensor> MatrixView(const at::Tensor& delta) {
  if (!delta.defined()) return absl::InvalidArgumentError("delta tensor is undefined");
  ASSIGN_OR_RETURN(auto dims, MatrixDims(delta.sizes().vec()));
  if (!at::isFloatingType(delta.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat("delta of shape ", ShapeString(delta.sizes()),
                                                   " has non-floating dtype ",
                                                   c10::toString(delta.scalar_type())));
  }
  return delta.reshape({dims.first, dims.second});
}

absl::Status NonFiniteError(const at::Tensor& delta) {
  return absl::InvalidArgumentError(
      absl::StrCat("delta of shape ", ShapeString(delta.sizes()), " has NaN/Inf"));
}

Factorization EmptyFactorization(int64_t m, int64_t n, double norm, at::Device device) {
  Factorization f;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  f.us = at::zeros({m, 0}, opts);
  f.v = at::zeros({n, 0}, opts);
  f.rank = 0;
  f.norm = norm;
  f.rel_error = norm > 0.0 ? 1.0 : 0.0;
  return f;
}

}  // namespace

absl::StatusOr<RankPolicy::Kind> ParseRankPolicyKind(const std::string& name) {
  for (const KindName& k : kKindNames) {
    if (name == k.name) return k.kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown rank policy '", name, "' (expected ratio, rank, energy or budget)"));
}

const char* RankPolicyKindName(RankPolicy::Kind kind) {
  for (const KindName& k : kKindNames) {
    if (k.kind == kind) return k.name;
  }
  return "unknown";
}

absl::Status ValidateRankPolicy(const RankPolicy& policy) {
  switch (policy.kind) {
    case RankPolicy::kRatio:
      if (!(policy.ratio > 0.0 && policy.ratio <= 1.0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank policy ratio must be in (0, 1], got ", policy.ratio));
      }
      return absl::OkStatus();
    case RankPolicy::kRank:
      if (policy.rank < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank policy rank must be >= 0, got ", policy.rank));
      }
      return absl::OkStatus();
    case RankPolicy::kEnergy:
      if (!(policy.energy > 0.0 && policy.energy <= 1.0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank policy energy must be in (0, 1], got ", policy.energy));
      }
      return absl::OkStatus();
    case RankPolicy::kBudget:
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown rank policy kind");
}

bool PolicyNeedsSpectrum(const RankPolicy& policy) {
  return policy.kind == RankPolicy::kEnergy || policy.kind == RankPolicy::kBudget;
}

int64_t ChooseRank(const RankPolicy& policy, int64_t m, int64_t n,
                   const at::Tensor& singular_values) {
  const int64_t full = std::max<int64_t>(0, std::min(m, n));
  if (full == 0) return 0;
  switch (policy.kind) {
    case RankPolicy::kRatio: {
      const double exact = policy.ratio * static_cast<double>(full);
      const int64_t r =
          static_cast<int64_t>(std::ceil(exact - kRoundingSlack * std::max(1.0, exact)));
      return std::clamp<int64_t>(r, 1, full);
    }
    case RankPolicy::kRank:
      return std::clamp<int64_t>(policy.rank, 0, full);
    case RankPolicy::kEnergy: {
      if (!singular_values.defined() || singular_values.numel() == 0) return 0;
      at::Tensor s2 = singular_values.to(at::kCPU, at::kDouble).reshape({-1}).square();
      const int64_t count = std::min<int64_t>(s2.numel(), full);
      const double* data = s2.data_ptr<double>();
      double total = 0.0;
      for (int64_t i = 0; i < s2.numel(); ++i) total += data[i];
      if (!(total > 0.0)) return 0;
      const double target = policy.energy * total * (1.0 - kRoundingSlack);
      double kept = 0.0;
      for (int64_t r = 0; r < count; ++r) {
        kept += data[r];
        if (kept >= target) return r + 1;
      }
      return count;
    }
    case RankPolicy::kBudget:
      // Budget ranks are decided jointly by AllocateBudgetRanks.
      return 0;
  }
  return 0;
}

std::vector<int64_t> AllocateBudgetRanks(const std::vector<at::Tensor>& spectra,
                                         const std::vector<std::pair<int64_t, int64_t>>& dims,
                                         uint64_t budget_bytes, size_t bytes_per_element) {
  const size_t count = std::min(spectra.size(), dims.size());
  std::vector<int64_t> ranks(spectra.size(), 0);
  std::vector<std::vector<double>> energy(count);  // s_i^2 per tensor
  std::vector<uint64_t> unit_bytes(count);
  // Max-heap of (s_i^2 per byte, -tensor) for each tensor's next unit; ties go to the lower
  // tensor index so the allocation is deterministic.
  using Entry = std::pair<double, int64_t>;
  std::priority_queue<Entry> next_unit;
  for (size_t j = 0; j < count; ++j) {
    const auto [m, n] = dims[j];
    unit_bytes[j] =
        static_cast<uint64_t>(std::max<int64_t>(0, m + n)) * std::max<size_t>(1, bytes_per_element);
    if (spectra[j].defined()) {
      at::Tensor s = spectra[j].to(at::kCPU, at::kDouble).reshape({-1}).contiguous();
      const int64_t usable = std::min<int64_t>(s.numel(), std::max<int64_t>(0, std::min(m, n)));
      energy[j].assign(s.data_ptr<double>(), s.data_ptr<double>() + usable);
      for (double& e : energy[j]) e *= e;
    }
    if (!energy[j].empty() && energy[j][0] > 0.0 && unit_bytes[j] > 0) {
      next_unit.push({energy[j][0] / unit_bytes[j], -static_cast<int64_t>(j)});
    }
  }
  uint64_t left_bytes = budget_bytes;
  while (!next_unit.empty()) {
    const size_t j = static_cast<size_t>(-next_unit.top().second);
    next_unit.pop();
    // Every unit of a tensor costs the same, so once one does not fit the tensor is done.
    if (unit_bytes[j] > left_bytes) continue;
    left_bytes -= unit_bytes[j];
    const size_t r = static_cast<size_t>(++ranks[j]);
    if (r < energy[j].size() && energy[j][r] > 0.0 && std::isfinite(energy[j][r])) {
      next_unit.push({energy[j][r] / unit_bytes[j], -static_cast<int64_t>(j)});
    }
  }
  return ranks;
}

absl::StatusOr<at::Tensor> SingularValues(const at::Tensor& delta) {
  try {
    at::NoGradGuard no_grad;
    ASSIGN_OR_RETURN(at::Tensor a, MatrixView(delta));
    if (!AllFinite(a)) return NonFiniteError(delta);
    const std::string what = absl::StrCat("singular values of ", ShapeString(a.sizes()));
    ASSIGN_OR_RETURN(Svd svd, WithFallback(a, what, [](const at::Tensor& x) {
                       return Svd{x.new_empty({0}), at::linalg_svdvals(x), x.new_empty({0})};
                     }));
    return svd.s;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("singular values of tensor of shape ",
                                            ShapeString(delta.sizes()), ": ", e.what()));
  }
}

absl::StatusOr<Factorization> CompressDelta(const at::Tensor& delta, int64_t rank,
                                            const SvdOptions& options) {
  try {
    at::NoGradGuard no_grad;
    ASSIGN_OR_RETURN(at::Tensor a, MatrixView(delta));
    const std::optional<double> squared_norm = SquaredNorm(a);
    if (!squared_norm) return NonFiniteError(delta);
    const double norm_sq = *squared_norm;
    const int64_t m = a.size(0), n = a.size(1);
    const int64_t full = std::min(m, n);
    if (rank < 0 || rank > full) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is outside [0, ", full,
                                                     "] for a delta viewed as [", m, ", ", n, "]"));
    }
    const double norm = std::sqrt(norm_sq);
    // A zero delta needs no factors at any rank.
    if (rank == 0 || norm == 0.0) return EmptyFactorization(m, n, norm, a.device());

    const bool randomized = options.allow_randomized && options.oversample >= 0 &&
                            options.power_iterations >= 0 &&
                            rank <= options.randomized_max_fraction * static_cast<double>(full) &&
                            rank + options.oversample < full;
    const std::string what =
        absl::StrCat(randomized ? "randomized SVD of " : "SVD of ", ShapeString(a.sizes()));
    ASSIGN_OR_RETURN(Svd svd, WithFallback(a, what, [&](const at::Tensor& x) {
                       return randomized ? RandomizedSvd(x, rank, options) : FullSvd(x);
                     }));

    Factorization f;
    const at::Tensor s_r = svd.s.slice(0, 0, rank);
    f.us = (svd.u.slice(1, 0, rank) * s_r.unsqueeze(0)).to(at::kFloat).contiguous();
    f.v = svd.vt.slice(0, 0, rank).t().to(at::kFloat).contiguous();
    if (!AllFinite(f.us)) {
      // Singular values can exceed a finite float32 delta's largest entry.
      return absl::OutOfRangeError(
          absl::StrCat("factors of ", ShapeString(a.sizes()), " overflow float32"));
    }
    f.rank = rank;
    f.norm = norm;
    f.randomized = randomized;
    // With the full spectrum the error is the norm of the dropped singular values. The
    // randomized factors are Q B_r with Q orthonormal and B_r the rank-r truncation of
    // B = Q^T A, so ||A - Q B_r||^2 = (||A||^2 - ||B||^2) + ||B - B_r||^2: the energy outside
    // Q's range plus B's dropped singular values. Summing B's own entries in float64 keeps the
    // float32 SVD's rounding of the kept values out of the cancellation.
    double residual_sq = SumSquares(svd.s.slice(0, rank));
    if (randomized) residual_sq += std::max(0.0, norm_sq - svd.captured_sq);
    f.rel_error = std::sqrt(residual_sq) / norm;
    return f;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("compressing tensor of shape ",
                                            ShapeString(delta.sizes()), " at rank ", rank, ": ",
                                            e.what()));
  }
}

absl::StatusOr<std::pair<int64_t, int64_t>> MatrixDims(const std::vector<int64_t>& shape) {
  if (shape.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor of shape ", ShapeString(shape), " has no 2-D view (needs >= 2 dims)"));
  }
  int64_t cols = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor shape ", ShapeString(shape), " has a negative dimension"));
    }
    if (i > 0) cols *= shape[i];
  }
  return std::make_pair(shape[0], cols);
}

}  // namespace twin
