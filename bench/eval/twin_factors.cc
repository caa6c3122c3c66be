#include "bench/eval/twin_factors.h"

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin::eval {
namespace {

constexpr uint64_t kFloat32Bytes = 4;
constexpr uint64_t kFloat16Bytes = 2;

// Rank of task t's factors of one [m, n] delta under `policy` (never kBudget here).
absl::StatusOr<int64_t> RankFor(const RankPolicy& policy, const at::Tensor& delta, int64_t m,
                                int64_t n) {
  if (policy.kind != RankPolicy::kEnergy) return ChooseRank(policy, m, n, at::Tensor());
  ASSIGN_OR_RETURN(at::Tensor s, SingularValues(delta));
  return ChooseRank(policy, m, n, s);
}

}  // namespace

std::string PolicyLabel(const RankPolicy& p) {
  switch (p.kind) {
    case RankPolicy::kRatio:
      return absl::StrCat("ratio=", p.ratio);
    case RankPolicy::kRank:
      return absl::StrCat("rank=", p.rank);
    case RankPolicy::kEnergy:
      return absl::StrCat("energy=", p.energy);
    case RankPolicy::kBudget:
      return absl::StrCat("budget=", p.budget_bytes);
  }
  return "?";
}

uint64_t BytesOf(const NamedTensors& tensors) {
  uint64_t bytes = 0;
  for (const auto& [name, t] : tensors) bytes += t.nbytes();
  return bytes;
}

absl::StatusOr<TwinBuild> BuildTwin(const EvalInputs& in, const RankPolicy& policy,
                                    const SvdOptions& svd) {
  RETURN_IF_ERROR(ValidateRankPolicy(policy));
  if (policy.kind == RankPolicy::kBudget) {
    return absl::InvalidArgumentError("twin-eval does not sweep the budget policy");
  }
  TwinBuild build;
  build.policy = PolicyLabel(policy);
  std::vector<TaskTwin> tasks;
  uint64_t elements = 0;
  int64_t rank_sum = 0, full_rank_sum = 0, factored = 0;
  double error_sum = 0;
  for (size_t t = 0; t < in.experts.size(); ++t) {
    TaskTwin twin;
    twin.task = in.tasks[t].name;
    twin.head = in.heads[t];
    for (size_t i = 0; i < in.shared.size(); ++i) {
      const auto& [name, shared] = in.shared[i];
      if (in.shared_prefix.count(name)) continue;  // theta* alone (twin.from_layer)
      try {
        at::NoGradGuard no_grad;
        at::Tensor delta = in.experts[t][i].second - shared;
        if (shared.dim() < 2) {
          if (delta.abs().max().item<double>() > 0) {
            elements += delta.numel();
            twin.dense[name] = delta;
          }
          continue;
        }
        ASSIGN_OR_RETURN(auto md, MatrixDims(shared.sizes().vec()));
        ASSIGN_OR_RETURN(int64_t rank, RankFor(policy, delta, md.first, md.second));
        ASSIGN_OR_RETURN(Factorization f, CompressDelta(delta, rank, svd));
        full_rank_sum += std::min(md.first, md.second);
        if (f.norm <= 0 || f.rank == 0) continue;
        rank_sum += f.rank;
        error_sum += f.rel_error;
        ++factored;
        elements += (md.first + md.second) * f.rank;
        twin.factors[name] = {f.us, f.v};
      } catch (const std::exception& e) {
        return absl::InternalError(
            absl::StrCat("twin of task ", twin.task, ", tensor '", name, "': ", e.what()));
      }
    }
    tasks.push_back(std::move(twin));
  }
  ASSIGN_OR_RETURN(build.weights, TwinWeights::Create(in.shared, std::move(tasks)));
  build.factor_bytes = elements * kFloat32Bytes;
  build.factor_bytes_fp16 = elements * kFloat16Bytes;
  build.kept_rank_fraction = full_rank_sum ? static_cast<double>(rank_sum) / full_rank_sum : 0;
  build.mean_rel_error = factored ? error_sum / factored : 0;
  return build;
}

}  // namespace twin::eval
