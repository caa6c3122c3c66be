// Twin-Merging's exclusive knowledge recomputed in-process from the experts: for each task and
// merged tensor, v_t = theta_t - theta* (theta* the published shared expert), a truncated SVD
// (core/merge/svd_compress.h) at the policy's rank for 2-D+ tensors, the dense delta for 1-D ones,
// as the merge job does (none for the tensors of a multi-stage version's shared prefix,
// EvalInputs::shared_prefix); then TwinWeights over theta* and those factors, with the
// experts' heads.
//
//   RankPolicy p; p.kind = RankPolicy::kRatio; p.ratio = 0.1;
//   ASSIGN_OR_RETURN(TwinBuild b, BuildTwin(inputs, p, SvdOptions{}));
//   b.weights->Fuse({0, 1, 0});
//
// Thread-safety: pure function.
#ifndef TWIN_BENCH_EVAL_TWIN_FACTORS_H_
#define TWIN_BENCH_EVAL_TWIN_FACTORS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bench/eval/eval_inputs.h"
#include "core/merge/svd_compress.h"
#include "core/merge/twin_weights.h"

namespace twin::eval {

struct TwinBuild {
  std::unique_ptr<TwinWeights> weights;
  std::string policy;              // "ratio=0.1", "energy=0.9"
  uint64_t factor_bytes = 0;       // all tasks' us, v and dense deltas as float32
  uint64_t factor_bytes_fp16 = 0;  // the same stored as float16
  double kept_rank_fraction = 0;   // sum of ranks / sum of min(m, n) over tasks and tensors
  double mean_rel_error = 0;       // mean over tasks and factored tensors
};

// "ratio=0.1", "rank=8", "energy=0.9", "budget=1000000".
std::string PolicyLabel(const RankPolicy& policy);

absl::StatusOr<TwinBuild> BuildTwin(const EvalInputs& inputs, const RankPolicy& policy,
                                    const SvdOptions& svd);

// Bytes of the tensors as stored.
uint64_t BytesOf(const NamedTensors& tensors);

}  // namespace twin::eval

#endif  // TWIN_BENCH_EVAL_TWIN_FACTORS_H_
