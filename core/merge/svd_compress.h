// Truncated-SVD compression of twin vectors v_t = theta_t - theta*, and rank policies.
//
// A tensor of 2 or more dimensions is viewed as [shape[0], prod(rest)] = [m, n] and stored as
// factors us = U_r * diag(S_r) [m, r] and v = V_r [n, r], so v_t ~= us @ v^T.
// SVD runs in float32; if it throws or returns non-finite values it is retried in float64.
// For ranks well below min(m, n) a randomized range finder (oversampling + power iterations,
// renormalised by LU in between and by QR at the end) replaces the full SVD; its error is
// computed exactly from the projection.
//
//   RankPolicy p; p.kind = RankPolicy::kRatio; p.ratio = 0.1;
//   ASSIGN_OR_RETURN(Factorization f, CompressDelta(delta, ChooseRank(...), SvdOptions{}));
//
// Thread-safety: pure functions.
#ifndef TWIN_CORE_MERGE_SVD_COMPRESS_H_
#define TWIN_CORE_MERGE_SVD_COMPRESS_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace twin {

struct RankPolicy {
  enum Kind { kRatio, kRank, kEnergy, kBudget };
  Kind kind = kRatio;
  double ratio = 0.1;         // kRatio: r = ceil(ratio * min(m, n)), at least 1
  int64_t rank = 0;           // kRank: r = min(rank, min(m, n))
  double energy = 0.9;        // kEnergy: smallest r with sum_{i<r} s_i^2 >= energy * sum s_i^2
  uint64_t budget_bytes = 0;  // kBudget: total factor bytes over all tasks and tensors
};

// "ratio" | "rank" | "energy" | "budget".
absl::StatusOr<RankPolicy::Kind> ParseRankPolicyKind(const std::string& name);
const char* RankPolicyKindName(RankPolicy::Kind kind);
absl::Status ValidateRankPolicy(const RankPolicy& policy);

// Whether the policy needs the full spectrum before choosing ranks (kEnergy, kBudget).
bool PolicyNeedsSpectrum(const RankPolicy& policy);

// Rank for one [m, n] tensor under kRatio / kRank / kEnergy (0 for kBudget, which
// AllocateBudgetRanks decides). `singular_values` (descending)
// is only read by kEnergy.
int64_t ChooseRank(const RankPolicy& policy, int64_t m, int64_t n,
                   const at::Tensor& singular_values);

// kBudget: spends `budget_bytes` on rank units across all tensors, greedily by the largest
// remaining s_i^2 per byte ((m + n) * bytes_per_element per unit of rank). Returns one rank
// per spectrum, in order.
std::vector<int64_t> AllocateBudgetRanks(const std::vector<at::Tensor>& spectra,
                                         const std::vector<std::pair<int64_t, int64_t>>& dims,
                                         uint64_t budget_bytes, size_t bytes_per_element);

struct SvdOptions {
  // Use the randomized solver when rank <= randomized_max_fraction * min(m, n).
  bool allow_randomized = true;
  double randomized_max_fraction = 0.25;
  int64_t oversample = 10;
  int64_t power_iterations = 2;
  uint64_t seed = 0;
};

struct Factorization {
  at::Tensor us;  // [m, r] float32
  at::Tensor v;   // [n, r] float32
  int64_t rank = 0;
  double rel_error = 0.0;   // ||A - us v^T||_F / ||A||_F, 0 for A == 0
  double norm = 0.0;        // ||A||_F
  bool randomized = false;
};

// Descending singular values of the 2-D view of `delta` (float32; float64 when the float32
// solver failed).
absl::StatusOr<at::Tensor> SingularValues(const at::Tensor& delta);

// Factors the 2-D view of `delta` at `rank` (0 <= rank <= min(m, n)). A zero delta gives
// rank 0 whatever `rank` asks, since there is nothing to store. NaN/Inf in `delta` or a 1-D
// delta is INVALID_ARGUMENT; a solver failure in both precisions is INTERNAL naming the shape.
absl::StatusOr<Factorization> CompressDelta(const at::Tensor& delta, int64_t rank,
                                            const SvdOptions& options);

// The [m, n] view used for a tensor of this shape (1-D -> error).
absl::StatusOr<std::pair<int64_t, int64_t>> MatrixDims(const std::vector<int64_t>& shape);

}  // namespace twin

#endif  // TWIN_CORE_MERGE_SVD_COMPRESS_H_
