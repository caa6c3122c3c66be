#include "server/batch_mode.h"

#include <gtest/gtest.h>

#include <vector>

namespace twin {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

WaitingGroup Group(const std::string& key, int pending, int64_t age_us, bool resident = true) {
  return WaitingGroup{key, pending, kT0 - absl::Microseconds(age_us), resident};
}

// A chooser whose two modes have been measured: fused a batch of n rows costs 2 ms + 1 ms n,
// unfused 2 ms + 1.5 ms n (each mode measured at two batch sizes).
BatchModeChooser Measured(BatchModeOptions options) {
  options.unfused_available = true;
  BatchModeChooser c(options);
  for (int i = 0; i < 4; ++i) {
    c.RecordBatch(BatchMode::kFused, 1, 0.003);
    c.RecordBatch(BatchMode::kFused, 8, 0.010);
    c.RecordBatch(BatchMode::kUnfused, 1, 0.0035);
    c.RecordBatch(BatchMode::kUnfused, 8, 0.014);
  }
  return c;
}

TEST(LinearCostFitTest, RecoversInterceptAndSlope) {
  LinearCostFit fit(1.0);
  EXPECT_FALSE(fit.measured());
  fit.Add(2, 0.004);
  // One batch size: proportional.
  EXPECT_DOUBLE_EQ(fit.Predict(4), 0.008);
  fit.Add(6, 0.008);
  EXPECT_NEAR(fit.intercept(), 0.002, 1e-12);
  EXPECT_NEAR(fit.slope(), 0.001, 1e-12);
  EXPECT_NEAR(fit.Predict(10), 0.012, 1e-12);
}

TEST(LinearCostFitTest, ForgetsOldBatches) {
  LinearCostFit fit(0.5);
  for (int i = 0; i < 40; ++i) fit.Add(4, 0.004);
  for (int i = 0; i < 40; ++i) fit.Add(4, 0.008);  // the cost doubled
  EXPECT_NEAR(fit.Predict(4), 0.008, 1e-9);
}

TEST(LinearCostFitTest, NeverPredictsNegativeCosts) {
  LinearCostFit fit(1.0);
  fit.Add(1, 0.010);
  fit.Add(8, 0.002);  // noise: larger batch faster
  EXPECT_GE(fit.slope(), 0);
  EXPECT_GE(fit.intercept(), 0);
  EXPECT_GT(fit.Predict(4), 0);
}

TEST(BatchModeChooserTest, OneKeyFullBatchGoesFused) {
  BatchModeChooser c = Measured({.max_batch_size = 8});
  BatchModeDecision d = c.Choose({Group("a", 8, 10)}, kT0);
  EXPECT_EQ(d.mode, BatchMode::kFused);
  EXPECT_EQ(d.key, "a");
  EXPECT_EQ(d.rows, 8);
  EXPECT_EQ(d.reason, "rate");
  EXPECT_GT(d.fused_rate, d.unfused_rate);
}

TEST(BatchModeChooserTest, ManyDistinctKeysGoUnfused) {
  BatchModeChooser c = Measured({.max_batch_size = 8});
  std::vector<WaitingGroup> groups;
  for (int k = 0; k < 8; ++k) groups.push_back(Group("k" + std::to_string(k), 1, 100 - k));
  BatchModeDecision d = c.Choose(groups, kT0);
  // Fused: 1 row per 3 ms = 333 rows/s; unfused: 8 rows per 14 ms = 571 rows/s.
  EXPECT_EQ(d.mode, BatchMode::kUnfused);
  EXPECT_EQ(d.rows, 8);
  EXPECT_NEAR(d.unfused_rate, 8 / 0.014, 1e-6);
  EXPECT_NEAR(d.fused_rate, 1 / 0.003, 1e-6);
}

TEST(BatchModeChooserTest, CrossoverFollowsTheDominantKeysShare) {
  // 8 waiting rows: key a holds n of them, the rest are singletons. Fused(a) serves n rows in
  // 2 + n ms; unfused serves 8 in 14 ms (571/s): fused wins from n = 3 (600/s), unfused up to
  // n = 2 (500/s).
  for (int n = 1; n <= 8; ++n) {
    BatchModeChooser c = Measured({.max_batch_size = 8, .hysteresis = 0});
    std::vector<WaitingGroup> groups = {Group("a", n, 50)};
    for (int k = n; k < 8; ++k) groups.push_back(Group("s" + std::to_string(k), 1, 40));
    BatchModeDecision d = c.Choose(groups, kT0);
    const double fused_rate = n / (0.002 + 0.001 * n);
    EXPECT_EQ(d.mode, fused_rate > 8 / 0.014 ? BatchMode::kFused : BatchMode::kUnfused)
        << "n = " << n;
  }
}

TEST(BatchModeChooserTest, NonResidentKeyPaysItsFusion) {
  BatchModeChooser c = Measured({.max_batch_size = 8, .hysteresis = 0});
  c.RecordFusion(0.050);
  std::vector<WaitingGroup> groups = {Group("cold", 6, 50, /*resident=*/false)};
  groups.push_back(Group("x", 1, 10));
  groups.push_back(Group("y", 1, 10));
  // Fused(cold) 6 / 58 ms; unfused 8 / 14 ms.
  EXPECT_EQ(c.Choose(groups, kT0).mode, BatchMode::kUnfused);
  groups[0].resident = true;  // 6 / 8 ms beats 8 / 14 ms
  BatchModeDecision d = c.Choose(groups, kT0);
  EXPECT_EQ(d.mode, BatchMode::kFused);
  EXPECT_EQ(d.key, "cold");
}

TEST(BatchModeChooserTest, HysteresisKeepsTheModeOnSmallDifferences) {
  BatchModeChooser c = Measured({.max_batch_size = 8, .hysteresis = 0.25});
  // First decision: unfused clearly (8 singletons).
  std::vector<WaitingGroup> mixed;
  for (int k = 0; k < 8; ++k) mixed.push_back(Group("k" + std::to_string(k), 1, 10));
  ASSERT_EQ(c.Choose(mixed, kT0).mode, BatchMode::kUnfused);
  // Now key a with 4 rows + 4 singletons: fused(a) 4 / 6 ms = 667/s vs unfused 571/s: better
  // by 17%, under the 25% hysteresis: stays unfused.
  std::vector<WaitingGroup> groups = {Group("a", 4, 10)};
  for (int k = 0; k < 4; ++k) groups.push_back(Group("s" + std::to_string(k), 1, 10));
  BatchModeDecision d = c.Choose(groups, kT0);
  EXPECT_EQ(d.mode, BatchMode::kUnfused);
  EXPECT_EQ(d.reason, "hysteresis");
  // 7 rows of a: 7 / 9 ms = 778/s, 36% better: switches.
  groups = {Group("a", 7, 10), Group("s", 1, 10)};
  d = c.Choose(groups, kT0);
  EXPECT_EQ(d.mode, BatchMode::kFused);
  EXPECT_EQ(d.reason, "rate");
}

// The starvation bound alone (aging off; with it, the unfused batch that holds the rare
// request wins on its weighed rate before the bound: OlderOptionsGoFirst... below).
TEST(BatchModeChooserTest, RareKeyIsNotStarved) {
  BatchModeChooser c = Measured({.max_batch_size = 8, .starvation_us = 20000, .aging_us = 0});
  // A popular key keeps its group full; the rare key's request is older.
  std::vector<WaitingGroup> groups = {Group("popular", 8, 1000), Group("rare", 1, 5000)};
  BatchModeDecision d = c.Choose(groups, kT0);
  EXPECT_EQ(d.mode, BatchMode::kFused);
  EXPECT_EQ(d.key, "popular");
  groups[1].oldest = kT0 - absl::Microseconds(20000);
  d = c.Choose(groups, kT0);
  EXPECT_EQ(d.reason, "starvation");
  // Fused(rare) 1 / 3 ms = 333/s against unfused 8 / 14 ms = 571/s (rows oldest first, so it
  // includes the rare request): unfused.
  EXPECT_EQ(d.mode, BatchMode::kUnfused);
}

// Aging: of two fused groups of about the same rate the older goes first, and the unfused
// batch (which holds the oldest request) overtakes a fresh fused group as its oldest request
// waits; with aging_us 0 the rate alone decides.
TEST(BatchModeChooserTest, OlderOptionsGoFirstAmongNearlyEqualRates) {
  BatchModeChooser by_rate = Measured({.max_batch_size = 8, .hysteresis = 0, .aging_us = 0});
  BatchModeChooser aging = Measured({.max_batch_size = 8, .hysteresis = 0, .aging_us = 10000});
  // Fused 4 rows: 4 / 6 ms = 667/s, fresh; fused 3 rows: 3 / 5 ms = 600/s, waiting 3 ms:
  // x1.3 = 780; unfused 7 rows / 12.5 ms = 560/s, x1.3 = 728 (it holds the oldest request).
  std::vector<WaitingGroup> groups = {Group("fresh", 4, 10), Group("old", 3, 3000)};
  BatchModeDecision d = by_rate.Choose(groups, kT0);
  EXPECT_EQ(d.mode, BatchMode::kFused);
  EXPECT_EQ(d.key, "fresh");
  d = aging.Choose(groups, kT0);
  EXPECT_EQ(d.mode, BatchMode::kFused);
  EXPECT_EQ(d.key, "old");
  EXPECT_NEAR(d.fused_rate, 600, 1e-6);  // the chosen group's own rate, unweighted
  // A full fresh key (8 / 10 ms = 800/s) against unfused over it and an old singleton
  // (8 rows / 14 ms = 571/s): the rate prefers the key; once the singleton has waited 5 ms
  // the unfused batch scores 571 x 1.5 = 857 > 800 x 1.001.
  BatchModeChooser by_rate2 = Measured({.max_batch_size = 8, .hysteresis = 0, .aging_us = 0});
  BatchModeChooser aging2 = Measured({.max_batch_size = 8, .hysteresis = 0, .aging_us = 10000});
  groups = {Group("full", 8, 10), Group("single", 1, 5000)};
  EXPECT_EQ(by_rate2.Choose(groups, kT0).mode, BatchMode::kFused);
  EXPECT_EQ(aging2.Choose(groups, kT0).mode, BatchMode::kUnfused);
}

TEST(BatchModeChooserTest, ExploresUnmeasuredModesOnce) {
  BatchModeChooser c({.max_batch_size = 8, .unfused_available = true});
  std::vector<WaitingGroup> groups = {Group("a", 8, 10)};
  BatchModeDecision d = c.Choose(groups, kT0);
  EXPECT_EQ(d.reason, "explore");
  EXPECT_EQ(d.mode, BatchMode::kFused);
  c.RecordBatch(d.mode, d.rows, 0.010);
  d = c.Choose(groups, kT0);
  EXPECT_EQ(d.reason, "explore");
  EXPECT_EQ(d.mode, BatchMode::kUnfused);
  c.RecordBatch(d.mode, d.rows, 0.014);
  d = c.Choose(groups, kT0);
  EXPECT_EQ(d.reason, "rate");
  EXPECT_EQ(d.mode, BatchMode::kFused);
}

TEST(BatchModeChooserTest, ReexploresTheIdleModeEveryExploreEveryBatches) {
  BatchModeChooser c = Measured({.max_batch_size = 8, .explore_every = 5});
  std::vector<WaitingGroup> groups = {Group("a", 8, 10)};
  int unfused = 0;
  for (int i = 0; i < 30; ++i) {
    BatchModeDecision d = c.Choose(groups, kT0);
    if (d.mode == BatchMode::kUnfused) {
      ++unfused;
      EXPECT_EQ(d.reason, "explore");
    }
  }
  EXPECT_EQ(unfused, 5);  // one in every 6 batches
}

TEST(BatchModeChooserTest, SingleModeConfigurations) {
  BatchModeChooser fused_only({.max_batch_size = 4});
  BatchModeDecision d = fused_only.Choose({Group("a", 9, 10), Group("b", 1, 99)}, kT0);
  EXPECT_EQ(d.mode, BatchMode::kFused);
  EXPECT_EQ(d.key, "b");  // the oldest group, as the fused-only queue always did
  EXPECT_EQ(d.rows, 1);
  BatchModeChooser unfused_only({.max_batch_size = 4, .fused_available = false});
  d = unfused_only.Choose({Group("a", 9, 10), Group("b", 1, 99)}, kT0);
  EXPECT_EQ(d.mode, BatchMode::kUnfused);
  EXPECT_EQ(d.rows, 4);
}

}  // namespace
}  // namespace twin
