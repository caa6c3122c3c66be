#include "core/merge_methods.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace twin {
namespace {

using ::testing::HasSubstr;

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
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-6) << i;

  // lambda scales the mean: theta0 + 0.5 * mean.
  o.lambda = 0.5;
  auto half = MergeTensor(base, experts, o, 0);
  ASSERT_TRUE(half.ok());
  EXPECT_NEAR(ToVector(*half)[0], 1 + 5.0f / 3, 1e-6);
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
  EXPECT_NEAR(values.min().item<double>(), 1.0 / (1.0 - kDrop), 1e-6);
  EXPECT_NEAR(values.max().item<double>(), 1.0 / (1.0 - kDrop), 1e-6);
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

}  // namespace
}  // namespace twin
