#include "core/merge/merge_methods.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "tests/testing/rounding.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::Float32Gamma;
using twin::testing::kFloat32Unit;

// A merge adds at most T weighted (and rescaled) deltas to the base, element by element, in
// float32: with the sign election and the mean, at most 2T + 2 roundings, each relative to the
// magnitudes combined, |base| + sum_t |w_t delta_t| / (1 - p_t).
at::Tensor MergeMagnitude(const at::Tensor& base, const std::vector<at::Tensor>& experts,
                          const MergeOptions& o) {
  at::Tensor magnitude = base.abs().to(at::kDouble);
  for (size_t t = 0; t < experts.size(); ++t) {
    const double w = o.weights.empty() ? 1.0 : std::abs(o.weights[t]);
    const double keep = o.drop_rates.empty() ? 1.0 : 1.0 - o.drop_rates[t];
    magnitude = magnitude + (experts[t] - base).abs().to(at::kDouble) * (w / keep);
  }
  return magnitude * std::max(1.0, o.lambda);
}

at::Tensor Vec(std::vector<float> values) {
  return at::tensor(at::ArrayRef<float>(values), at::kFloat);
}

std::vector<float> ToVector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

MergeOptions Options(MergeMethod method, double lambda) {
  MergeOptions o;
  o.method = method;
  o.lambda = lambda;
  return o;
}

TEST(MergeMethodsTest, ParsesAndNamesMethods) {
  for (MergeMethod m : {MergeMethod::kLinear, MergeMethod::kTaskArithmetic, MergeMethod::kTies,
                        MergeMethod::kDareTaskArithmetic, MergeMethod::kDareTies}) {
    auto parsed = ParseMergeMethod(MergeMethodName(m));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, m);
  }
  auto bad = ParseMergeMethod("slerp");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("slerp"));
  EXPECT_DOUBLE_EQ(DefaultLambda(MergeMethod::kTaskArithmetic), 0.3);
  EXPECT_DOUBLE_EQ(DefaultLambda(MergeMethod::kTies), 1.0);
  EXPECT_DOUBLE_EQ(DefaultLambda(MergeMethod::kDareTies), 1.0);
}

TEST(MergeMethodsTest, LinearIsWeightedAverage) {
  MergeOptions o = Options(MergeMethod::kLinear, 0.3);  // lambda is not used by averaging
  o.weights = {1.0, 3.0};
  auto merged = MergeTensor(Vec({9, 9}), {Vec({1, 2}), Vec({3, 6})}, o, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  // (1*1 + 3*3) / 4 = 2.5, (1*2 + 3*6) / 4 = 5.
  EXPECT_THAT(ToVector(*merged), ::testing::ElementsAre(2.5f, 5.0f));
}

TEST(MergeMethodsTest, TaskArithmeticAddsScaledTaskVectors) {
  MergeOptions o = Options(MergeMethod::kTaskArithmetic, 0.5);
  o.weights = {1.0, 2.0};
  // tau = {1, 2} and {-1, 4}; sum w tau = {-1, 10}; theta0 + 0.5 * that = {0.5, 6}.
  auto merged = MergeTensor(Vec({1, 1}), {Vec({2, 3}), Vec({0, 5})}, o, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_THAT(ToVector(*merged), ::testing::ElementsAre(0.5f, 6.0f));
}

TEST(MergeMethodsTest, TiesTrimsElectsAndAveragesDisjointly) {
  // base = 1 everywhere, expert_t = base + tau_t, density 0.5 -> keep 3 of 6 entries each.
  //   tau1 = [ 4, -1,  2, -3,  0.5,  1  ]  trim -> [ 4,  0,  2, -3,  0, 0]
  //   tau2 = [-2,  5, -1,  1, -6,    0.2]  trim -> [-2,  5,  0,  0, -6, 0]
  //   tau3 = [ 3, -4, -5,  0.1, 2,  -0.3]  trim -> [ 3, -4, -5,  0,  0, 0]
  // weights (1, 1, 2): sum w trim = [8, -3, -8, -3, -6, 0], elected sign [+, -, -, -, -, 0].
  // Disjoint mean over agreeing experts:
  //   e0: (1*4 + 2*3) / (1 + 2) = 10/3    e1: t3 only -> -4   e2: t3 only (t1 is +) -> -5
  //   e3: t1 only -> -3                    e4: t2 only -> -6   e5: no sign -> 0
  const at::Tensor base = at::ones({6});
  const std::vector<at::Tensor> experts = {base + Vec({4, -1, 2, -3, 0.5, 1}),
                                           base + Vec({-2, 5, -1, 1, -6, 0.2}),
                                           base + Vec({3, -4, -5, 0.1, 2, -0.3})};
  MergeOptions o = Options(MergeMethod::kTies, 1.0);
  o.weights = {1.0, 1.0, 2.0};
  o.densities = {0.5, 0.5, 0.5};
  auto merged = MergeTensor(base, experts, o, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  const std::vector<float> expected = {1 + 10.0f / 3, 1 - 4, 1 - 5, 1 - 3, 1 - 6, 1};
  const std::vector<float> got = ToVector(*merged);
  ASSERT_EQ(got.size(), expected.size());
  const std::vector<float> magnitude = ToVector(MergeMagnitude(base, experts, o).to(at::kFloat));
  const double gamma = Float32Gamma(2 * static_cast<int64_t>(experts.size()) + 2);
  for (size_t i = 0; i < got.size(); ++i) {
    // The expected values are float32 roundings of exact fractions: one more u each.
    EXPECT_NEAR(got[i], expected[i], gamma * magnitude[i] + kFloat32Unit * std::abs(expected[i]))
        << i;
  }

  // lambda scales the mean: theta0 + 0.5 * mean.
  o.lambda = 0.5;
  auto half = MergeTensor(base, experts, o, 0);
  ASSERT_TRUE(half.ok());
  EXPECT_NEAR(ToVector(*half)[0], 1 + 5.0f / 3,
              gamma * magnitude[0] + kFloat32Unit * (1 + 5.0 / 3));
}

TEST(MergeMethodsTest, TiesKeepsEveryEntryTiedAtTheThreshold) {
  // density 0.25 of 4 entries keeps 1, but three entries share the top magnitude: all stay.
  // With the second expert contributing nothing, the merge is the first expert's trimmed tau.
  MergeOptions o = Options(MergeMethod::kTies, 1.0);
  o.densities = {0.25, 0.25};
  auto merged = MergeTensor(at::zeros({4}), {Vec({1, -1, 1, 0.5}), at::zeros({4})}, o, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_THAT(ToVector(*merged), ::testing::ElementsAre(1.0f, -1.0f, 1.0f, 0.0f));
}

TEST(MergeMethodsTest, TiesDensityRoundsUpWithoutFloatingPointCreep) {
  // 0.3 * 10 = 3.0000000000000004 in double: still 3 entries kept.
  MergeOptions o = Options(MergeMethod::kTies, 1.0);
  o.densities = {0.3, 0.3};
  const at::Tensor tau = at::arange(1, 11, at::kFloat);  // 1..10
  auto merged = MergeTensor(at::zeros({10}), {tau, at::zeros({10})}, o, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->ne(0).sum().item<int64_t>(), 3);
  EXPECT_EQ(ToVector(*merged)[7], 8.0f);
  // 0.25 * 10 = 2.5 rounds up to 3 as well.
  o.densities = {0.25, 0.25};
  auto up = MergeTensor(at::zeros({10}), {tau, at::zeros({10})}, o, 0);
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->ne(0).sum().item<int64_t>(), 3);
}

MergeOptions DareOptions(double drop_rate, uint64_t seed) {
  MergeOptions o = Options(MergeMethod::kDareTaskArithmetic, 1.0);
  o.drop_rates = {drop_rate, drop_rate};
  o.seed = seed;
  return o;
}

TEST(MergeMethodsTest, DareIsDeterministicPerSeedTensorAndExpert) {
  const at::Tensor base = at::zeros({1000});
  const std::vector<at::Tensor> experts = {at::ones({1000}), at::ones({1000})};
  MergeOptions o = DareOptions(0.5, 7);
  o.weights = {1.0, 0.0};
  auto a = MergeTensor(base, experts, o, 3);
  auto b = MergeTensor(base, experts, o, 3);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->equal(*b));

  MergeOptions other_seed = o;
  other_seed.seed = 8;
  auto c = MergeTensor(base, experts, other_seed, 3);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(a->equal(*c));

  auto other_tensor = MergeTensor(base, experts, o, 4);
  ASSERT_TRUE(other_tensor.ok());
  EXPECT_FALSE(a->equal(*other_tensor));

  // Same task vector, same seed and tensor: the second expert still gets its own mask.
  MergeOptions second = o;
  second.weights = {0.0, 1.0};
  auto d = MergeTensor(base, experts, second, 3);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(a->equal(*d));
}

TEST(MergeMethodsTest, DareKeepsAboutOneMinusPAndRescalesSurvivors) {
  constexpr int64_t kNumel = 200000;
  constexpr double kDrop = 0.3;
  auto merged = MergeTensor(at::zeros({kNumel}), {at::ones({kNumel}), at::zeros({kNumel})},
                            DareOptions(kDrop, 11), 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  const at::Tensor survivors = merged->ne(0);
  const double kept = survivors.to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 1.0 - kDrop, 0.01);  // 3 sigma is about 0.003
  const at::Tensor values = merged->masked_select(survivors);
  // 1 / (1 - p) in float32: p, 1 - p and the quotient each rounded once.
  const double rescale_error = 3 * kFloat32Unit / (1.0 - kDrop);
  EXPECT_NEAR(values.min().item<double>(), 1.0 / (1.0 - kDrop), rescale_error);
  EXPECT_NEAR(values.max().item<double>(), 1.0 / (1.0 - kDrop), rescale_error);
}

TEST(MergeMethodsTest, DareWithoutDropsEqualsPlainMethods) {
  const at::Tensor base = Vec({0.5, -1, 2, 0});
  const std::vector<at::Tensor> experts = {Vec({1, 2, 3, 4}), Vec({-1, 0, 5, -2})};
  auto plain = MergeTensor(base, experts, Options(MergeMethod::kTaskArithmetic, 0.7), 0);
  MergeOptions dare = DareOptions(0.0, 5);
  dare.lambda = 0.7;
  auto dropped = MergeTensor(base, experts, dare, 0);
  ASSERT_TRUE(plain.ok() && dropped.ok());
  EXPECT_TRUE(plain->equal(*dropped));

  MergeOptions ties = Options(MergeMethod::kTies, 1.0);
  ties.densities = {1.0, 1.0};
  MergeOptions dare_ties = Options(MergeMethod::kDareTies, 1.0);
  dare_ties.drop_rates = {0.0, 0.0};
  auto t1 = MergeTensor(base, experts, ties, 0);
  auto t2 = MergeTensor(base, experts, dare_ties, 0);
  ASSERT_TRUE(t1.ok() && t2.ok());
  EXPECT_TRUE(t1->equal(*t2));
  // tau = [0.5, 3, 1, 4] and [-1.5, 1, 3, -2]: signs [-, +, +, +]; means [-1.5, 2, 2, 4].
  EXPECT_THAT(ToVector(*t1), ::testing::ElementsAre(-1.0f, 1.0f, 4.0f, 4.0f));
}

TEST(MergeMethodsTest, KeepsBaseDtypeAndFloat64Precision) {
  auto half =
      MergeTensor(at::zeros({3}, at::kHalf), {at::ones({3}, at::kHalf), at::ones({3}, at::kHalf)},
                  Options(MergeMethod::kTaskArithmetic, 0.5), 0);
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->scalar_type(), at::kHalf);
  EXPECT_THAT(ToVector(*half), ::testing::ElementsAre(1.0f, 1.0f, 1.0f));

  const at::Tensor base = at::full({2}, 1.0, at::kDouble);
  const at::Tensor tiny = base + 1e-12;
  auto dbl = MergeTensor(base, {tiny, base}, Options(MergeMethod::kTaskArithmetic, 1.0), 0);
  ASSERT_TRUE(dbl.ok());
  EXPECT_EQ(dbl->scalar_type(), at::kDouble);
  EXPECT_NEAR(dbl->sub(base)[0].item<double>(), 1e-12, 1e-15);  // float32 would give 0
}

TEST(MergeMethodsTest, RejectsBadInputsNamingTheProblem) {
  const MergeOptions o = Options(MergeMethod::kTaskArithmetic, 0.3);
  auto one = MergeTensor(at::zeros({2}), {at::ones({2})}, o, 0);
  EXPECT_EQ(one.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(one.status().message()), HasSubstr("at least 2"));

  auto shape = MergeTensor(at::zeros({2, 3}), {at::zeros({2, 3}), at::zeros({3, 2})}, o, 0);
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(shape.status().message()), HasSubstr("expert 1"));
  EXPECT_THAT(std::string(shape.status().message()), HasSubstr("[3, 2]"));
  EXPECT_THAT(std::string(shape.status().message()), HasSubstr("[2, 3]"));

  at::Tensor nan = at::zeros({2});
  nan[1] = std::numeric_limits<float>::quiet_NaN();
  auto has_nan = MergeTensor(at::zeros({2}), {at::zeros({2}), nan}, o, 0);
  EXPECT_EQ(has_nan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(has_nan.status().message()), HasSubstr("expert 1 has NaN/Inf"));

  auto ints = MergeTensor(at::zeros({2}), {at::zeros({2}), at::zeros({2}, at::kLong)}, o, 0);
  EXPECT_EQ(ints.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ints.status().message()), HasSubstr("expert 1"));
}

TEST(MergeMethodsTest, ValidatesOptionRanges) {
  MergeOptions o = Options(MergeMethod::kTies, 1.0);
  EXPECT_TRUE(ValidateMergeOptions(o, 3).ok());
  o.densities = {0.5, 0.0, 0.5};
  EXPECT_THAT(std::string(ValidateMergeOptions(o, 3).message()), HasSubstr("density of expert 1"));
  o.densities = {0.5, 0.5};
  EXPECT_THAT(std::string(ValidateMergeOptions(o, 3).message()), HasSubstr("densities has 2"));
  o.densities.clear();
  o.weights = {1.0, -1.0, 1.0};
  EXPECT_EQ(ValidateMergeOptions(o, 3).code(), absl::StatusCode::kInvalidArgument);
  o.method = MergeMethod::kTaskArithmetic;  // subtracting a task is allowed here
  EXPECT_TRUE(ValidateMergeOptions(o, 3).ok());
  o.weights.clear();
  o.method = MergeMethod::kDareTies;
  o.drop_rates = {0.1, 1.0, 0.1};
  EXPECT_THAT(std::string(ValidateMergeOptions(o, 3).message()),
              HasSubstr("drop_rate of expert 1"));
  o.drop_rates.clear();
  o.lambda = std::numeric_limits<double>::infinity();
  EXPECT_EQ(ValidateMergeOptions(o, 3).code(), absl::StatusCode::kInvalidArgument);
  MergeOptions linear = Options(MergeMethod::kLinear, 1.0);
  linear.weights = {0.0, 0.0};
  EXPECT_EQ(ValidateMergeOptions(linear, 2).code(), absl::StatusCode::kInvalidArgument);
}

constexpr MergeMethod kAllMethods[] = {MergeMethod::kLinear, MergeMethod::kTaskArithmetic,
                                       MergeMethod::kTies, MergeMethod::kDareTaskArithmetic,
                                       MergeMethod::kDareTies};

at::Tensor Random(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

// Options with distinct per-expert weights, densities and drop rates.
MergeOptions RandomizedOptions(MergeMethod method, size_t experts) {
  MergeOptions o = Options(method, method == MergeMethod::kLinear ? 1.0 : 0.7);
  for (size_t t = 0; t < experts; ++t) {
    o.weights.push_back(0.5 + 0.25 * static_cast<double>(t));
    o.densities.push_back(0.2 + 0.15 * static_cast<double>(t));
    o.drop_rates.push_back(0.1 + 0.2 * static_cast<double>(t));
  }
  o.seed = 42;
  return o;
}

// Streams `experts` through a TensorMerger, pass by pass, in the order given by `order`.
absl::StatusOr<at::Tensor> Stream(const at::Tensor& base, const std::vector<at::Tensor>& experts,
                                  const MergeOptions& options, uint64_t tensor_index,
                                  const std::vector<std::vector<size_t>>& order_per_pass,
                                  const TensorMergerOptions& merger_options = {}) {
  auto merger =
      TensorMerger::Create(base, options, tensor_index, experts.size(), merger_options);
  if (!merger.ok()) return merger.status();
  for (int pass = 0; pass < (*merger)->passes(); ++pass) {
    for (size_t t : order_per_pass[pass]) {
      absl::Status added = (*merger)->Add(t, experts[t]);
      if (!added.ok()) return added;
    }
  }
  return (*merger)->Finish();
}

// All experts at once, the way MergeTensor computed before it streamed: the reference the
// streaming merge must match bit for bit (methods without DARE's random masks).
at::Tensor BatchReference(const at::Tensor& base, const std::vector<at::Tensor>& experts,
                          const MergeOptions& o) {
  const at::Tensor theta0 = base.to(at::kFloat);
  const size_t n = experts.size();
  if (o.method == MergeMethod::kLinear) {
    at::Tensor acc = at::zeros_like(theta0);
    double weight_sum = 0.0;
    for (size_t t = 0; t < n; ++t) {
      acc.add_(experts[t].to(at::kFloat), o.weights[t]);
      weight_sum += o.weights[t];
    }
    return acc.div_(weight_sum);
  }
  std::vector<at::Tensor> taus;
  for (size_t t = 0; t < n; ++t) {
    at::Tensor tau = experts[t].to(at::kFloat) - theta0;
    if (o.method == MergeMethod::kTies) {
      const int64_t keep = static_cast<int64_t>(std::ceil(o.densities[t] * tau.numel() - 1e-9));
      const at::Tensor magnitude = tau.abs();
      const at::Tensor threshold = std::get<0>(
          at::kthvalue(magnitude.reshape({-1}), tau.numel() - keep + 1, /*dim=*/0));
      tau = tau * magnitude.ge(threshold).to(at::kFloat);
    }
    taus.push_back(tau);
  }
  at::Tensor delta = at::zeros_like(theta0);
  if (o.method == MergeMethod::kTies) {
    for (size_t t = 0; t < n; ++t) delta.add_(taus[t], o.weights[t]);
    const at::Tensor elected = delta.sign();
    at::Tensor numerator = at::zeros_like(theta0), denominator = at::zeros_like(theta0);
    for (size_t t = 0; t < n; ++t) {
      const at::Tensor agree =
          (taus[t].sign() == elected).logical_and_(elected != 0).to(at::kFloat);
      numerator.add_(taus[t] * agree, o.weights[t]);
      denominator.add_(agree, o.weights[t]);
    }
    delta = at::where(denominator > 0, numerator / denominator.clamp_min(1e-30),
                      at::zeros_like(numerator));
  } else {
    for (size_t t = 0; t < n; ++t) delta.add_(taus[t], o.weights[t]);
  }
  return theta0.add(delta, o.lambda);
}

TEST(TensorMergerTest, EqualsMergeTensorForEveryMethod) {
  const at::Tensor base = Random({37, 23}, 1);
  std::vector<at::Tensor> experts;
  for (uint64_t t = 0; t < 3; ++t) experts.push_back(base + 0.1 * Random({37, 23}, 10 + t));
  const std::vector<size_t> in_order = {0, 1, 2};
  for (MergeMethod method : kAllMethods) {
    const MergeOptions o = RandomizedOptions(method, experts.size());
    auto merged = MergeTensor(base, experts, o, /*tensor_index=*/5);
    ASSERT_TRUE(merged.ok()) << merged.status();
    auto streamed = Stream(base, experts, o, 5, {in_order, in_order});
    ASSERT_TRUE(streamed.ok()) << MergeMethodName(method) << ": " << streamed.status();
    EXPECT_TRUE(streamed->equal(*merged)) << MergeMethodName(method);
    EXPECT_FALSE(streamed->equal(base)) << MergeMethodName(method);
    if (method != MergeMethod::kDareTaskArithmetic && method != MergeMethod::kDareTies) {
      EXPECT_TRUE(streamed->equal(BatchReference(base, experts, o))) << MergeMethodName(method);
    }
  }
  // DARE with nothing dropped is the plain method, mask for mask.
  for (auto [dare, plain] : {std::pair{MergeMethod::kDareTaskArithmetic,
                                       MergeMethod::kTaskArithmetic},
                             std::pair{MergeMethod::kDareTies, MergeMethod::kTies}}) {
    MergeOptions o = RandomizedOptions(dare, experts.size());
    o.drop_rates.assign(experts.size(), 0.0);
    MergeOptions reference = o;
    reference.method = plain;
    reference.densities.assign(experts.size(), 1.0);
    auto streamed = Stream(base, experts, o, 5, {in_order, in_order});
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    EXPECT_TRUE(streamed->equal(BatchReference(base, experts, reference)))
        << MergeMethodName(dare);
  }
}

TEST(TensorMergerTest, EqualsMergeTensorForFloat64AndHalfInputs) {
  const at::Tensor base = Random({16, 9}, 2);
  const std::vector<at::Tensor> experts = {(base + 0.1 * Random({16, 9}, 3)).to(at::kDouble),
                                           base + 0.1 * Random({16, 9}, 4)};
  const std::vector<size_t> in_order = {0, 1};
  TensorMergerOptions float64;
  float64.float64_math = true;
  for (MergeMethod method : kAllMethods) {
    const MergeOptions o = RandomizedOptions(method, experts.size());
    auto expected = MergeTensor(base, experts, o, 0);
    ASSERT_TRUE(expected.ok()) << expected.status();
    auto streamed = Stream(base, experts, o, 0, {in_order, in_order}, float64);
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    EXPECT_EQ(streamed->scalar_type(), at::kFloat);  // the base's dtype
    EXPECT_TRUE(streamed->equal(*expected)) << MergeMethodName(method);

    const std::vector<at::Tensor> halves = {experts[0].to(at::kHalf), experts[1].to(at::kHalf)};
    auto half_expected = MergeTensor(base.to(at::kHalf), halves, o, 0);
    auto half_streamed = Stream(base.to(at::kHalf), halves, o, 0, {in_order, in_order});
    ASSERT_TRUE(half_expected.ok() && half_streamed.ok());
    EXPECT_EQ(half_streamed->scalar_type(), at::kHalf);
    EXPECT_TRUE(half_streamed->equal(*half_expected)) << MergeMethodName(method);
  }
}

TEST(TensorMergerTest, ExpertOrderOnlyChangesRounding) {
  const at::Tensor base = Random({64, 32}, 5);
  std::vector<at::Tensor> experts;
  for (uint64_t t = 0; t < 4; ++t) experts.push_back(base + 0.1 * Random({64, 32}, 20 + t));
  for (MergeMethod method : kAllMethods) {
    const MergeOptions o = RandomizedOptions(method, experts.size());
    auto expected = MergeTensor(base, experts, o, 3);
    // A different order in each pass: the DARE masks and TIES trims follow the expert index.
    auto shuffled = Stream(base, experts, o, 3, {{2, 0, 3, 1}, {3, 1, 0, 2}});
    ASSERT_TRUE(expected.ok() && shuffled.ok()) << shuffled.status();
    // Another order of the same float32 additions: both sides within the merge's rounding.
    const at::Tensor bound =
        2 * Float32Gamma(2 * static_cast<int64_t>(experts.size()) + 2) *
        MergeMagnitude(base, experts, o);
    const at::Tensor difference = (*shuffled - *expected).abs().to(at::kDouble);
    EXPECT_TRUE((difference <= bound).all().item<bool>())
        << MergeMethodName(method) << ": max difference " << difference.max().item<double>()
        << ", max excess " << (difference - bound).max().item<double>();
  }
}

TEST(TensorMergerTest, TiesMethodsTakeTwoPasses) {
  for (MergeMethod method : kAllMethods) {
    auto merger = TensorMerger::Create(at::zeros({3}), Options(method, 1.0), 0, 2);
    ASSERT_TRUE(merger.ok()) << merger.status();
    const bool ties = method == MergeMethod::kTies || method == MergeMethod::kDareTies;
    EXPECT_EQ((*merger)->passes(), ties ? 2 : 1) << MergeMethodName(method);
    ASSERT_TRUE((*merger)->Add(1, at::ones({3})).ok());
    ASSERT_TRUE((*merger)->Add(0, at::ones({3})).ok());
    auto early = (*merger)->Finish();
    if (ties) {
      EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(std::string(early.status().message()), HasSubstr("pass 2 of 2"));
    } else {
      EXPECT_TRUE(early.ok()) << early.status();
      EXPECT_EQ((*merger)->Add(0, at::ones({3})).code(), absl::StatusCode::kFailedPrecondition);
    }
  }
}

TEST(TensorMergerTest, RejectsBadExpertsNamingThem) {
  const MergeOptions o = Options(MergeMethod::kTaskArithmetic, 0.3);
  auto merger = TensorMerger::Create(at::zeros({2, 3}), o, 0, 3);
  ASSERT_TRUE(merger.ok()) << merger.status();
  TensorMerger& m = **merger;
  auto message = [](const absl::Status& s) { return std::string(s.message()); };
  EXPECT_THAT(message(m.Add(3, at::zeros({2, 3}))), HasSubstr("expert 3 is out of range"));
  EXPECT_THAT(message(m.Add(1, at::zeros({3, 2}))), HasSubstr("expert 1 has shape [3, 2]"));
  EXPECT_THAT(message(m.Add(1, at::zeros({2, 3}, at::kLong))), HasSubstr("non-floating"));
  EXPECT_THAT(message(m.Add(1, at::zeros({2, 3}, at::kDouble))), HasSubstr("float64_math"));
  at::Tensor nan = at::zeros({2, 3});
  nan[1][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(message(m.Add(2, nan)), HasSubstr("expert 2 has NaN/Inf"));
  ASSERT_TRUE(m.Add(0, at::ones({2, 3})).ok());
  const absl::Status twice = m.Add(0, at::ones({2, 3}));
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(message(twice), HasSubstr("expert 0 was already added"));
  auto early = m.Finish();
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(early.status().message()), HasSubstr("1 of 3 experts"));

  // With the check off (the caller checked), non-finite values are the caller's business.
  TensorMergerOptions unchecked;
  unchecked.check_finite = false;
  auto trusting = TensorMerger::Create(at::zeros({2, 3}), o, 0, 2, unchecked);
  ASSERT_TRUE(trusting.ok());
  EXPECT_TRUE((*trusting)->Add(0, nan).ok());

  at::Tensor bad_base = at::zeros({2});
  bad_base[0] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(std::string(TensorMerger::Create(bad_base, o, 0, 2).status().message()),
              HasSubstr("base has NaN/Inf"));
  EXPECT_THAT(std::string(TensorMerger::Create(at::zeros({2}), o, 0, 1).status().message()),
              HasSubstr("at least 2"));
}

TEST(TensorMergerTest, EmptyTensorsMergeToAnEmptyTensor) {
  auto merged = Stream(at::zeros({0, 4}), {at::zeros({0, 4}), at::zeros({0, 4})},
                       Options(MergeMethod::kTies, 1.0), 0, {{0, 1}, {0, 1}});
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_THAT(merged->sizes().vec(), ::testing::ElementsAre(0, 4));
}

TEST(AllFiniteTest, FindsNanAndInfInEveryLayout) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Past the first block of the contiguous scan, and at its very end.
  for (int64_t at_index : {int64_t{0}, int64_t{40000}, int64_t{99999}}) {
    for (float bad : {inf, -inf, nan}) {
      at::Tensor t = at::ones({100000});
      t[at_index] = bad;
      EXPECT_FALSE(AllFinite(t)) << at_index << " " << bad;
      EXPECT_FALSE(AllFinite(t.to(at::kDouble)));
      EXPECT_FALSE(AllFinite(t.to(at::kHalf)));
      EXPECT_FALSE(AllFinite(t.reshape({1000, 100}).t()));  // not contiguous
    }
  }
  EXPECT_TRUE(AllFinite(at::full({1000}, std::numeric_limits<float>::max())));
  EXPECT_TRUE(AllFinite(at::full({10}, std::numeric_limits<double>::max(), at::kDouble)));
  EXPECT_TRUE(AllFinite(at::zeros({0})));
  EXPECT_TRUE(AllFinite(at::zeros({3}, at::kLong)));
}

}  // namespace
}  // namespace twin
