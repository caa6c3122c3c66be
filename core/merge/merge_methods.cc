#include "core/merge/merge_methods.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>

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

// Entries with |x| <= max are finite; NaN fails every comparison. Blocks let a bad tensor
// stop early while the inner loop stays branch-free.
template <typename T>
bool AllFiniteValues(const T* values, int64_t count) {
  constexpr int64_t kBlock = 1 << 14;
  const T largest = std::numeric_limits<T>::max();
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    int bad = 0;
    for (int64_t i = begin; i < end; ++i) bad |= !(std::abs(values[i]) <= largest);
    if (bad) return false;
  }
  return true;
}

absl::Status CheckBaseType(const at::Tensor& base) {
  if (!base.defined()) return absl::InvalidArgumentError("base tensor is undefined");
  if (!at::isFloatingType(base.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("base has non-floating dtype ", c10::toString(base.scalar_type())));
  }
  return absl::OkStatus();
}

// Shapes and dtypes of all inputs first, then their values.
absl::Status CheckInputs(const at::Tensor& base, const std::vector<at::Tensor>& experts) {
  RETURN_IF_ERROR(CheckBaseType(base));
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
  if (!AllFinite(base)) return absl::InvalidArgumentError("base has NaN/Inf");
  for (size_t i = 0; i < experts.size(); ++i) {
    if (!AllFinite(experts[i])) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", i, " has NaN/Inf"));
    }
  }
  return absl::OkStatus();
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
    TensorMergerOptions merger_options;
    merger_options.check_finite = false;  // CheckInputs did
    for (const at::Tensor& e : experts) {
      merger_options.float64_math |= e.scalar_type() == at::kDouble;
    }
    ASSIGN_OR_RETURN(auto merger, TensorMerger::Create(base, options, tensor_index,
                                                       experts.size(), merger_options));
    for (int pass = 0; pass < merger->passes(); ++pass) {
      for (size_t t = 0; t < experts.size(); ++t) RETURN_IF_ERROR(merger->Add(t, experts[t]));
    }
    return merger->Finish();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(MergeMethodName(options.method), " merge of tensor ",
                                            tensor_index, " (shape ", ShapeString(base),
                                            ") failed: ", e.what()));
  }
}

bool AllFinite(const at::Tensor& t) {
  if (!t.defined() || !at::isFloatingType(t.scalar_type())) return true;
  if (t.device().is_cpu() && t.is_contiguous()) {
    if (t.scalar_type() == at::kFloat) return AllFiniteValues(t.data_ptr<float>(), t.numel());
    if (t.scalar_type() == at::kDouble) return AllFiniteValues(t.data_ptr<double>(), t.numel());
  }
  return t.isfinite().all().item<bool>();
}

// ---------------------------------------------------------------------------------------------
// TensorMerger

absl::StatusOr<std::unique_ptr<TensorMerger>> TensorMerger::Create(
    const at::Tensor& base, const MergeOptions& options, uint64_t tensor_index,
    size_t num_experts, const TensorMergerOptions& merger_options) {
  RETURN_IF_ERROR(ValidateMergeOptions(options, num_experts));
  RETURN_IF_ERROR(CheckBaseType(base));
  std::unique_ptr<TensorMerger> m(new TensorMerger());
  m->options_ = options;
  m->tensor_index_ = tensor_index;
  m->num_experts_ = num_experts;
  m->check_finite_ = merger_options.check_finite;
  m->passes_ = UsesTies(options.method) ? 2 : 1;
  m->added_.assign(num_experts, false);
  for (size_t t = 0; t < num_experts; ++t) {
    m->weights_.push_back(ValueOr(options.weights, t, kDefaultWeight));
  }
  m->base_ = base;
  m->compute_ =
      merger_options.float64_math || base.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  try {
    at::NoGradGuard no_grad;
    if (m->check_finite_ && !AllFinite(base)) {
      return absl::InvalidArgumentError("base has NaN/Inf");
    }
    if (base.numel() > 0) {
      m->theta0_ = base.to(m->compute_);
      m->sum_ = at::zeros_like(m->theta0_);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(m->Describe(), " failed: ", e.what()));
  }
  return m;
}

std::string TensorMerger::Describe() const {
  return absl::StrCat(MergeMethodName(options_.method), " merge of tensor ", tensor_index_,
                      " (shape ", ShapeString(base_), ")");
}

absl::Status TensorMerger::CheckExpert(size_t expert, const at::Tensor& tensor) const {
  if (expert >= num_experts_) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert ", expert, " is out of range (", num_experts_, " experts)"));
  }
  if (added_[expert]) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert ", expert, " was already added in pass ", pass_ + 1));
  }
  if (!tensor.defined()) {
    return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " is undefined"));
  }
  if (!tensor.sizes().equals(base_.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " has shape ",
                                                   ShapeString(tensor), " but the base has shape ",
                                                   ShapeString(base_)));
  }
  if (!at::isFloatingType(tensor.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " has non-floating dtype ",
                                                   c10::toString(tensor.scalar_type())));
  }
  if (tensor.scalar_type() == at::kDouble && compute_ != at::kDouble) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert ", expert, " is float64 but the merger computes in float32 (set float64_math)"));
  }
  if (check_finite_ && pass_ == 0 && !AllFinite(tensor)) {
    return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " has NaN/Inf"));
  }
  return absl::OkStatus();
}

at::Tensor TensorMerger::TaskVector(size_t expert, const at::Tensor& theta) const {
  at::Tensor tau = theta - theta0_;
  if (UsesDare(options_.method)) {
    return DareMask(tau, ValueOr(options_.drop_rates, expert, kDefaultDropRate),
                    DareSeed(options_.seed, tensor_index_, expert));
  }
  if (options_.method == MergeMethod::kTies) {
    return Trim(tau, ValueOr(options_.densities, expert, kDefaultDensity));
  }
  return tau;
}

void TensorMerger::Accumulate(size_t expert, const at::Tensor& tensor) {
  const double w = weights_[expert];
  const at::Tensor theta = tensor.to(base_.device(), compute_);
  if (options_.method == MergeMethod::kLinear) {
    sum_.add_(theta, w);
    return;
  }
  const at::Tensor tau = TaskVector(expert, theta);
  if (pass_ == 0) {
    sum_.add_(tau, w);
    return;
  }
  // TIES, pass 2: sum_ holds the elected sign; entries with no sign take no votes.
  const at::Tensor agree = (tau.sign() == sum_).logical_and_(sum_ != 0).to(tau.scalar_type());
  numerator_.add_(tau * agree, w);
  denominator_.add_(agree, w);
}

absl::Status TensorMerger::Add(size_t expert, const at::Tensor& tensor) {
  if (finished_) return absl::FailedPreconditionError(Describe() + ": Add() after Finish()");
  RETURN_IF_ERROR(CheckExpert(expert, tensor));
  try {
    at::NoGradGuard no_grad;
    if (base_.numel() > 0) Accumulate(expert, tensor);
    added_[expert] = true;
    if (++added_count_ < num_experts_) return absl::OkStatus();
    // The pass is complete.
    if (base_.numel() > 0 && passes_ == 2 && pass_ == 0) {
      sum_ = sum_.sign();
      numerator_ = at::zeros_like(theta0_);
      denominator_ = at::zeros_like(theta0_);
    }
    ++pass_;
    added_.assign(num_experts_, false);
    added_count_ = 0;
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat(Describe(), " failed at expert ", expert, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> TensorMerger::Finish() {
  if (finished_) return absl::FailedPreconditionError(Describe() + ": Finish() called twice");
  if (pass_ < passes_) {
    return absl::FailedPreconditionError(absl::StrCat(Describe(), ": pass ", pass_ + 1, " of ",
                                                      passes_, " has ", added_count_, " of ",
                                                      num_experts_, " experts"));
  }
  finished_ = true;
  try {
    at::NoGradGuard no_grad;
    if (base_.numel() == 0) return base_.clone();
    at::Tensor merged;
    if (options_.method == MergeMethod::kLinear) {
      double weight_sum = 0.0;
      for (double w : weights_) weight_sum += w;
      merged = sum_.div_(weight_sum);
    } else if (passes_ == 2) {
      // Disjoint mean: entries with no agreeing expert, or no elected sign, stay 0.
      const at::Tensor mean =
          at::where(denominator_ > 0, numerator_ / denominator_.clamp_min(1e-30),
                    at::zeros_like(numerator_));
      merged = theta0_.add(mean, options_.lambda);
    } else {
      merged = theta0_.add(sum_, options_.lambda);
    }
    sum_ = numerator_ = denominator_ = theta0_ = at::Tensor();
    return merged.to(base_.scalar_type());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(Describe(), " failed: ", e.what()));
  }
}

}  // namespace twin
