#include "server/cluster_key.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace twin {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr double kTolerance = 1e-12;

ClusterKey Quantize(const std::vector<double>& weights, int top_k, int grid) {
  return QuantizeWeights(weights, ClusterKeyOptions{top_k, grid});
}

TEST(QuantizeWeightsTest, KeepsTopTwoAndRoundsRenormalisedWeights) {
  // Kept {0.62, 0.33} renormalise to {0.6526, 0.3474}: 6.53 and 3.47 tenths.
  ClusterKey key = Quantize({0.62, 0.05, 0.33}, 2, 10);
  EXPECT_EQ(key.text, "g10:0=7,2=3");
  EXPECT_THAT(key.weights,
              ElementsAre(DoubleNear(0.7, kTolerance), 0.0, DoubleNear(0.3, kTolerance)));
  EXPECT_EQ(key.top_task, 0);
}

TEST(QuantizeWeightsTest, LargestRemainderKeepsTheSumExact) {
  // 2.6, 3.7, 3.7 tenths: rounding each would give 3+4+4 = 11; floors give 2+3+3 and the two
  // leftover units go to the two largest remainders (0.7 each).
  ClusterKey key = Quantize({0.26, 0.37, 0.37}, 0, 10);
  EXPECT_EQ(key.text, "g10:0=2,1=4,2=4");
  EXPECT_THAT(key.weights, ElementsAre(DoubleNear(0.2, kTolerance), DoubleNear(0.4, kTolerance),
                                       DoubleNear(0.4, kTolerance)));
  EXPECT_NEAR(std::accumulate(key.weights.begin(), key.weights.end(), 0.0), 1.0, kTolerance);
  EXPECT_EQ(key.top_task, 1);  // tie between tasks 1 and 2: lower index
}

TEST(QuantizeWeightsTest, RemainderTiesGoToLowerIndex) {
  ClusterKey key = Quantize({0.25, 0.25, 0.25, 0.25}, 0, 10);
  EXPECT_EQ(key.text, "g10:0=3,1=3,2=2,3=2");
  EXPECT_EQ(key.top_task, 0);
}

TEST(QuantizeWeightsTest, TopKTiesKeepLowerIndex) {
  // Tasks 1 and 2 tie for second place: task 1 is kept. 0.4/0.7 = 5.71 tenths, 0.3/0.7 = 4.29.
  ClusterKey key = Quantize({0.4, 0.3, 0.3}, 2, 10);
  EXPECT_EQ(key.text, "g10:0=6,1=4");
  EXPECT_EQ(key.weights[2], 0.0);
}

TEST(QuantizeWeightsTest, TopOneIsOneHot) {
  ClusterKey key = Quantize({0.2, 0.5, 0.3}, 1, 10);
  EXPECT_EQ(key.text, "g10:1=10");
  EXPECT_THAT(key.weights, ElementsAre(0.0, 1.0, 0.0));
  EXPECT_EQ(key.top_task, 1);
}

TEST(QuantizeWeightsTest, GridZeroKeepsExactRenormalisedWeights) {
  ClusterKey key = Quantize({0.6, 0.1, 0.3}, 2, 0);
  EXPECT_EQ(key.text, "exact:0=0.666666667,2=0.333333333");
  EXPECT_THAT(key.weights, ElementsAre(DoubleNear(2.0 / 3.0, kTolerance), 0.0,
                                       DoubleNear(1.0 / 3.0, kTolerance)));
  EXPECT_EQ(key.top_task, 0);
  // Deterministic: the same input gives the same text.
  EXPECT_EQ(Quantize({0.6, 0.1, 0.3}, 2, 0).text, key.text);
}

TEST(QuantizeWeightsTest, GridZeroDropsZeroWeights) {
  EXPECT_EQ(Quantize({0.5, 0.5, 0.0}, 0, 0).text, "exact:0=0.5,1=0.5");
}

TEST(QuantizeWeightsTest, TaskRoundedToZeroIsDropped) {
  // 9.6 and 0.4 tenths: the leftover unit goes to task 0, task 1 ends at 0.
  ClusterKey key = Quantize({0.96, 0.04}, 2, 10);
  EXPECT_EQ(key.text, "g10:0=10");
  EXPECT_THAT(key.weights, ElementsAre(1.0, 0.0));
}

TEST(QuantizeWeightsTest, UnnormalisedInputGivesTheSameKey) {
  EXPECT_EQ(Quantize({1.24, 0.1, 0.66}, 2, 10).text, Quantize({0.62, 0.05, 0.33}, 2, 10).text);
}

TEST(QuantizeWeightsTest, AllZerosPutAllWeightOnTaskZero) {
  ClusterKey key = Quantize({0.0, 0.0, 0.0}, 2, 10);
  EXPECT_EQ(key.text, "g10:0=10");
  EXPECT_THAT(key.weights, ElementsAre(1.0, 0.0, 0.0));
  EXPECT_EQ(key.top_task, 0);
  EXPECT_EQ(Quantize({0.0, 0.0}, 0, 0).text, "exact:0=1");
}

TEST(QuantizeWeightsTest, NonFiniteOrNegativeInputFallsBackToArgmaxOfFiniteValues) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  ClusterKey key = Quantize({0.1, nan, 0.7, 0.2}, 2, 10);
  EXPECT_EQ(key.text, "g10:2=10");
  EXPECT_THAT(key.weights, ElementsAre(0.0, 0.0, 1.0, 0.0));
  EXPECT_EQ(key.top_task, 2);
  EXPECT_EQ(Quantize({inf, 0.2, 0.1}, 2, 10).text, "g10:1=10");
  EXPECT_EQ(Quantize({-0.1, 0.5, 0.6}, 2, 10).text, "g10:2=10");
  EXPECT_EQ(Quantize({nan, nan}, 2, 10).text, "g10:0=10");
}

TEST(QuantizeWeightsTest, EmptyInputDoesNotCrash) {
  ClusterKey key = Quantize({}, 2, 10);
  EXPECT_TRUE(key.weights.empty());
  EXPECT_EQ(key.top_task, 0);
  EXPECT_EQ(key.text, "g10:");
}

TEST(QuantizeWeightsTest, OutOfRangeOptionsAreClamped) {
  // top_k beyond the task count keeps all tasks; a negative grid means exact weights.
  EXPECT_EQ(Quantize({0.5, 0.5}, 5, 10).text, "g10:0=5,1=5");
  EXPECT_EQ(Quantize({0.5, 0.5}, 2, -3).text, "exact:0=0.5,1=0.5");
}

TEST(QuantizeWeightsTest, NearbyWeightsShareAKeyAndFarOnesDoNot) {
  // 0.714 / 0.286 and 0.742 / 0.258 both round to 7 / 3 tenths.
  const ClusterKey a = Quantize({0.70, 0.02, 0.28}, 2, 10);
  const ClusterKey b = Quantize({0.72, 0.03, 0.25}, 2, 10);
  const ClusterKey far = Quantize({0.2, 0.1, 0.7}, 2, 10);
  EXPECT_EQ(a.text, "g10:0=7,2=3");
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(far.text, "g10:0=2,2=8");
  EXPECT_NE(a.text, far.text);
}

TEST(WeightDistanceTest, IsL1) {
  EXPECT_NEAR(WeightDistance({0.7, 0.0, 0.3}, {0.6, 0.4, 0.0}), 0.8, kTolerance);
  EXPECT_EQ(WeightDistance({0.5, 0.5}, {0.5, 0.5}), 0.0);
  EXPECT_EQ(WeightDistance({}, {}), 0.0);
}

TEST(WeightDistanceTest, DifferentSizesAreInfinitelyFar) {
  EXPECT_TRUE(std::isinf(WeightDistance({1.0}, {1.0, 0.0})));
}

TEST(ValidateClusterKeyOptionsTest, AcceptsTheRange) {
  EXPECT_TRUE(ValidateClusterKeyOptions({0, 0}, 1).ok());
  EXPECT_TRUE(ValidateClusterKeyOptions({3, 1000}, 3).ok());
  EXPECT_TRUE(ValidateClusterKeyOptions({2, 10}, 5).ok());
}

TEST(ValidateClusterKeyOptionsTest, RejectsEachFieldByName) {
  struct Case {
    ClusterKeyOptions options;
    int num_tasks;
    const char* field;
  };
  const Case cases[] = {
      {{-1, 10}, 3, "top_k"}, {{4, 10}, 3, "top_k"},     {{2, -1}, 3, "grid"},
      {{2, 1001}, 3, "grid"}, {{0, 10}, 0, "num_tasks"},
  };
  for (const Case& c : cases) {
    absl::Status status = ValidateClusterKeyOptions(c.options, c.num_tasks);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.field));
  }
}

}  // namespace
}  // namespace twin
