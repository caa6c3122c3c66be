// The n-gram router input: counts by hand, padding invariance, masked windows, limits.
#include "core/router/ngram_features.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace twin {
namespace {

using ::testing::HasSubstr;

at::Tensor Row(std::vector<int64_t> ids) {
  return at::tensor(ids, at::kLong).unsqueeze(0);
}

TEST(NgramFeaturesTest, CountsEveryWindowOnce) {
  // ids 5 5 5 with max_order 2: three 1-grams (all "5") and two 2-grams (all "5 5"):
  // two buckets (or one if the hashes collide) holding log(1 + 3) and log(1 + 2).
  const NgramSpec spec{2, 1 << 16};
  auto f = NgramFeatures(Row({5, 5, 5}), at::ones({1, 3}, at::kLong), spec);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->sizes().vec(), (std::vector<int64_t>{1, spec.buckets}));
  const at::Tensor counts = at::expm1(*f).round();
  EXPECT_EQ(counts.sum().item<double>(), 5.0);  // 3 + 2 windows, exactly
  EXPECT_EQ((counts > 0).sum().item<int64_t>(), 2);
  EXPECT_EQ(counts.max().item<double>(), 3.0);
  // Order 1 only: the one bucket of "5".
  auto unigrams = NgramFeatures(Row({5, 5, 5}), at::ones({1, 3}, at::kLong), {1, 1 << 16});
  EXPECT_EQ((*unigrams > 0).sum().item<int64_t>(), 1);
  EXPECT_FLOAT_EQ(unigrams->max().item<float>(), std::log1p(3.0f));
  // Windows total L + (L - 1) + ... for distinct orders, whatever the bucket count.
  auto small = NgramFeatures(Row({1, 2, 3, 4}), at::ones({1, 4}, at::kLong), {3, 7});
  EXPECT_EQ(at::expm1(*small).round().sum().item<double>(), 4.0 + 3.0 + 2.0);
}

TEST(NgramFeaturesTest, PaddingNeverChangesARow) {
  const NgramSpec spec{3, 512};
  const at::Tensor ids = Row({9, 3, 7, 7, 2});
  auto alone = NgramFeatures(ids, at::ones({1, 5}, at::kLong), spec);
  // The same row padded with other ids, in a batch with a longer row.
  at::Tensor batch = at::tensor({9, 3, 7, 7, 2, 0, 0, 11, 12, 13, 14, 15, 16, 17}, at::kLong)
                         .reshape({2, 7});
  at::Tensor mask = at::tensor({1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1}, at::kLong)
                        .reshape({2, 7});
  batch[0][5] = 42;  // a padding id that is not 0 must not count either
  auto padded = NgramFeatures(batch, mask, spec);
  ASSERT_TRUE(alone.ok() && padded.ok());
  EXPECT_TRUE(at::equal((*padded)[0], (*alone)[0]));
  EXPECT_FALSE(at::equal((*padded)[1], (*alone)[0]));
}

TEST(NgramFeaturesTest, WindowsThroughAMaskedPositionAreSkipped) {
  // 4 5 [masked] 6: 1-grams 4, 5, 6; 2-grams "4 5" only.
  auto f = NgramFeatures(Row({4, 5, 99, 6}), at::tensor({1, 1, 0, 1}, at::kLong).unsqueeze(0),
                         {2, 1 << 16});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(at::expm1(*f).round().sum().item<double>(), 4.0);
}

TEST(NgramFeaturesTest, RefusesBadSpecsAndShapes) {
  const at::Tensor ids = Row({1, 2});
  const at::Tensor mask = at::ones({1, 2}, at::kLong);
  EXPECT_THAT(NgramFeatures(ids, mask, {0, 16}).status().message(), HasSubstr("max_order"));
  EXPECT_THAT(NgramFeatures(ids, mask, {kMaxNgramOrder + 1, 16}).status().message(),
              HasSubstr("max_order"));
  EXPECT_THAT(NgramFeatures(ids, mask, {2, 0}).status().message(), HasSubstr("buckets"));
  EXPECT_THAT(NgramFeatures(ids, mask, {2, kMaxNgramBuckets + 1}).status().message(),
              HasSubstr("buckets"));
  EXPECT_THAT(NgramFeatures(ids, at::ones({1, 3}, at::kLong), {2, 16}).status().message(),
              HasSubstr("one shape"));
  EXPECT_THAT(NgramFeatures(at::tensor({1, 2}, at::kLong), at::ones({2}, at::kLong), {2, 16})
                  .status()
                  .message(),
              HasSubstr("[B, L]"));
}

}  // namespace
}  // namespace twin
