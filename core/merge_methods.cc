#include "core/merge_methods.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"

namespace twin {
namespace {

constexpr double kDefaultWeight = 1.0;
constexpr double kDefaultDensity = 0.2;
constexpr double kDefaultDropRate = 0.9;
constexpr double kTaskArithmeticLambda = 0.3;
constexpr double kTiesLambda = 1.0;
constexpr size_t kMinExperts = 2;
// density * numel is rounded up, but a product such as 0.3 * 10 = 3.0000000000000004 must
// keep 3 entries, not 4.
constexpr double kCountSlack = 1e-9;

struct MethodName {
  MergeMethod method;
  const char* name;
};
constexpr MethodName kMethodNames[] = {
    {MergeMethod::kLinear, "linear"},
    {MergeMethod::kTaskArithmetic, "task_arithmetic"},
    {MergeMethod::kTies, "ties"},
    {MergeMethod::kDareTaskArithmetic, "dare_task_arithmetic"},
    {MergeMethod::kDareTies, "dare_ties"},
};

bool UsesTies(MergeMethod m) { return m == MergeMethod::kTies || m == MergeMethod::kDareTies; }
bool UsesDare(MergeMethod m) {
  return m == MergeMethod::kDareTaskArithmetic || m == MergeMethod::kDareTies;
}

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

double ValueOr(const std::vector<double>& values, size_t i, double fallback) {
  return values.empty() ? fallback : values[i];
}

// splitmix64's finaliser: a bijective mix, so distinct inputs give distinct seeds.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The DARE mask of one expert depends only on (seed, tensor, expert), never on the order in
// which tensors are merged.
uint64_t DareSeed(uint64_t seed, uint64_t tensor_index, uint64_t expert) {
  return Mix64(Mix64(Mix64(seed) ^ tensor_index) ^ expert);
}

// Number of entries TIES keeps: ceil(density * numel), in [1, numel].
int64_t KeepCount(double density, int64_t numel) {
  const double exact = density * static_cast<double>(numel);
  int64_t k = static_cast<int64_t>(std::ceil(exact - kCountSlack * std::max(1.0, exact)));
  return std::min(std::max<int64_t>(k, 1), numel);
}

// Zeroes all but the top-k magnitudes of `tau`. kthvalue gives the k-th largest magnitude in
// O(numel) with one extra copy; entries tied with it are all kept, so a few more than k may
// survive when magnitudes repeat.
at::Tensor Trim(const at::Tensor& tau, double density) {
  const int64_t numel = tau.numel();
  const int64_t keep = KeepCount(density, numel);
  if (keep >= numel) return tau;
  at::Tensor magnitude = tau.abs();
  at::Tensor threshold =
      std::get<0>(at::kthvalue(magnitude.reshape({-1}), numel - keep + 1, /*dim=*/0));
  return tau * magnitude.ge(threshold).to(tau.scalar_type());
}

at::Tensor DareMask(const at::Tensor& tau, double drop_rate, uint64_t seed) {
  if (drop_rate == 0.0) return tau;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  // Drawn on the CPU so the mask is the same whatever device the tensors live on.
  at::Tensor keep = at::empty(tau.sizes(), at::TensorOptions().dtype(tau.scalar_type()));
  keep.bernoulli_(1.0 - drop_rate, gen);
  return tau * keep.to(tau.device()) * (1.0 / (1.0 - drop_rate));
}

// Elects the sign of sum_t w_t tau_t per entry, then averages (weighted) the entries whose
// sign agrees; entries with no agreeing expert, or a zero sum, stay 0.
at::Tensor DisjointMean(const std::vector<at::Tensor>& taus, const std::vector<double>& w) {
  at::Tensor total = at::zeros_like(taus[0]);
  for (size_t t = 0; t < taus.size(); ++t) total.add_(taus[t], w[t]);
  const at::Tensor elected = total.sign();
  at::Tensor numerator = at::zeros_like(taus[0]);
  at::Tensor denominator = at::zeros_like(taus[0]);
  for (size_t t = 0; t < taus.size(); ++t) {
    at::Tensor agree = (taus[t].sign() == elected).logical_and_(elected != 0);
    at::Tensor agree_f = agree.to(taus[t].scalar_type());
    numerator.add_(taus[t] * agree_f, w[t]);
    denominator.add_(agree_f, w[t]);
  }
  return at::where(denominator > 0, numerator / denominator.clamp_min(1e-30),
                   at::zeros_like(numerator));
}

absl::Status CheckInputs(const at::Tensor& base, const std::vector<at::Tensor>& experts) {
  if (!base.defined()) return absl::InvalidArgumentError("base tensor is undefined");
  if (!at::isFloatingType(base.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("base has non-floating dtype ", c10::toString(base.scalar_type())));
  }
  for (size_t i = 0; i < experts.size(); ++i) {
    const at::Tensor& e = experts[i];
    if (!e.defined())
      return absl::InvalidArgumentError(absl::StrCat("expert ", i, " is undefined"));
    if (!e.sizes().equals(base.sizes())) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", i, " has shape ", ShapeString(e),
                                                     " but the base has shape ",
                                                     ShapeString(base)));
    }
    if (!at::isFloatingType(e.scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", i, " has non-floating dtype ", c10::toString(e.scalar_type())));
    }
  }
  if (!base.isfinite().all().item<bool>()) return absl::InvalidArgumentError("base has NaN/Inf");
  for (size_t i = 0; i < experts.size(); ++i) {
    if (!experts[i].isfinite().all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", i, " has NaN/Inf"));
    }
  }
  return absl::OkStatus();
}

at::Tensor MergeChecked(const at::Tensor& base, const std::vector<at::Tensor>& experts,
                        const MergeOptions& options, uint64_t tensor_index) {
  bool any_double = base.scalar_type() == at::kDouble;
  for (const at::Tensor& e : experts) any_double |= e.scalar_type() == at::kDouble;
  const at::ScalarType compute = any_double ? at::kDouble : at::kFloat;
  const size_t n = experts.size();
  std::vector<double> w(n);
  for (size_t t = 0; t < n; ++t) w[t] = ValueOr(options.weights, t, kDefaultWeight);
  const at::Tensor theta0 = base.to(compute);

  if (options.method == MergeMethod::kLinear) {
    double weight_sum = 0.0;
    at::Tensor acc = at::zeros_like(theta0);
    for (size_t t = 0; t < n; ++t) {
      acc.add_(experts[t].to(base.device(), compute), w[t]);
      weight_sum += w[t];
    }
    return acc.div_(weight_sum).to(base.scalar_type());
  }

  // Task vectors, after DARE's drop-and-rescale or TIES' trim where the method asks for it.
  std::vector<at::Tensor> taus(n);
  for (size_t t = 0; t < n; ++t) {
    at::Tensor tau = experts[t].to(base.device(), compute) - theta0;
    if (UsesDare(options.method)) {
      tau = DareMask(tau, ValueOr(options.drop_rates, t, kDefaultDropRate),
                     DareSeed(options.seed, tensor_index, t));
    } else if (options.method == MergeMethod::kTies) {
      tau = Trim(tau, ValueOr(options.densities, t, kDefaultDensity));
    }
    taus[t] = tau;
  }
  at::Tensor delta;
  if (UsesTies(options.method)) {
    delta = DisjointMean(taus, w);
  } else {
    delta = at::zeros_like(theta0);
    for (size_t t = 0; t < n; ++t) delta.add_(taus[t], w[t]);
  }
  return theta0.add(delta, options.lambda).to(base.scalar_type());
}

}  // namespace

absl::StatusOr<MergeMethod> ParseMergeMethod(const std::string& name) {
  for (const MethodName& m : kMethodNames) {
    if (name == m.name) return m.method;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown merge method '", name,
      "' (expected linear, task_arithmetic, ties, dare_task_arithmetic or dare_ties)"));
}

const char* MergeMethodName(MergeMethod method) {
  for (const MethodName& m : kMethodNames) {
    if (m.method == method) return m.name;
  }
  return "unknown";
}

double DefaultLambda(MergeMethod method) {
  return UsesTies(method) ? kTiesLambda : kTaskArithmeticLambda;
}

absl::Status ValidateMergeOptions(const MergeOptions& options, size_t num_experts) {
  if (num_experts < kMinExperts) {
    return absl::InvalidArgumentError(
        absl::StrCat("merging needs at least ", kMinExperts, " experts, got ", num_experts));
  }
  if (!std::isfinite(options.lambda)) {
    return absl::InvalidArgumentError(absl::StrCat("lambda must be finite, got ", options.lambda));
  }
  auto check_length = [&](const std::vector<double>& v, const char* what) -> absl::Status {
    if (!v.empty() && v.size() != num_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has ", v.size(), " entries for ", num_experts, " experts"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check_length(options.weights, "weights"));
  RETURN_IF_ERROR(check_length(options.densities, "densities"));
  RETURN_IF_ERROR(check_length(options.drop_rates, "drop_rates"));

  // Task arithmetic may subtract a task (negative weight); averaging and the TIES mean divide
  // by a sum of weights, which needs them non-negative.
  const bool signed_weights_ok = options.method == MergeMethod::kTaskArithmetic ||
                                 options.method == MergeMethod::kDareTaskArithmetic;
  double weight_sum = 0.0;
  for (size_t i = 0; i < options.weights.size(); ++i) {
    const double w = options.weights[i];
    if (!std::isfinite(w) || (!signed_weights_ok && w < 0.0)) {
      return absl::InvalidArgumentError(absl::StrCat("weight of expert ", i, " must be finite",
                                                     signed_weights_ok ? "" : " and >= 0", ", got ",
                                                     w));
    }
    weight_sum += w;
  }
  if (options.method == MergeMethod::kLinear && !options.weights.empty() && weight_sum <= 0.0) {
    return absl::InvalidArgumentError("linear merge needs weights with a positive sum");
  }
  for (size_t i = 0; i < options.densities.size(); ++i) {
    const double d = options.densities[i];
    if (!(d > 0.0 && d <= 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("density of expert ", i, " must be in (0, 1], got ", d));
    }
  }
  for (size_t i = 0; i < options.drop_rates.size(); ++i) {
    const double p = options.drop_rates[i];
    if (!(p >= 0.0 && p < 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("drop_rate of expert ", i, " must be in [0, 1), got ", p));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> MergeTensor(const at::Tensor& base,
                                       const std::vector<at::Tensor>& experts,
                                       const MergeOptions& options, uint64_t tensor_index) {
  RETURN_IF_ERROR(ValidateMergeOptions(options, experts.size()));
  try {
    at::NoGradGuard no_grad;
    RETURN_IF_ERROR(CheckInputs(base, experts));
    if (base.numel() == 0) return base.clone();
    return MergeChecked(base, experts, options, tensor_index);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(MergeMethodName(options.method), " merge of tensor ",
                                            tensor_index, " (shape ", ShapeString(base),
                                            ") failed: ", e.what()));
  }
}

}  // namespace twin
