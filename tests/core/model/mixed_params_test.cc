#include "core/model/mixed_params.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/merge/twin_weights.h"
#include "core/model/layer_params.h"
#include "tests/testing/random_tensor.h"
#include "tests/testing/rounding.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::Float32SumError;

constexpr int kTasks = 3;
constexpr int64_t kIn = 12, kOut = 10, kVocab = 20, kDim = 8;

at::Tensor Random(at::IntArrayRef shape, uint64_t seed) {
  return twin::testing::RandomTensor(shape, seed);
}

// theta* of one linear ("lin"), one embedding ("emb"), one LayerNorm ("ln") and a linear whose
// twin is stored dense ("dense"); task factors of different ranks (task 1 has none for "lin").
struct Fixture {
  std::unique_ptr<TwinWeights> twins;
  std::vector<at::Tensor> lin_us, lin_v;  // per task (undefined: none)
};

Fixture MakeFixture() {
  NamedTensors shared = {{"lin.weight", Random({kOut, kIn}, 1)},
                         {"lin.bias", Random({kOut}, 2)},
                         {"emb.weight", Random({kVocab, kDim}, 3)},
                         {"ln.weight", Random({kDim}, 4) + 1.0},
                         {"ln.bias", Random({kDim}, 5)},
                         {"dense.weight", Random({kOut, kIn}, 6)}};
  std::vector<TaskTwin> tasks;
  const int64_t lin_rank[kTasks] = {3, 0, 2};
  const int64_t emb_rank[kTasks] = {2, 4, 1};
  for (int t = 0; t < kTasks; ++t) {
    TaskTwin twin;
    twin.task = "task" + std::to_string(t);
    if (lin_rank[t] > 0) {
      twin.factors["lin.weight"] = {Random({kOut, lin_rank[t]}, 10 + t),
                                    Random({kIn, lin_rank[t]}, 20 + t)};
    }
    twin.factors["emb.weight"] = {Random({kVocab, emb_rank[t]}, 30 + t),
                                  Random({kDim, emb_rank[t]}, 40 + t)};
    twin.dense["lin.bias"] = Random({kOut}, 50 + t);
    if (t != 2) twin.dense["ln.weight"] = 0.1 * Random({kDim}, 60 + t);
    twin.dense["ln.bias"] = Random({kDim}, 70 + t);
    twin.dense["dense.weight"] = 0.5 * Random({kOut, kIn}, 80 + t);
    twin.head = {{"classifier.weight", at::zeros({2, kDim})}};
    tasks.push_back(std::move(twin));
  }
  Fixture fx;
  auto tw = TwinWeights::Create(std::move(shared), std::move(tasks));
  EXPECT_TRUE(tw.ok()) << tw.status();
  fx.twins = std::move(*tw);
  return fx;
}

// One weight set per row: the fused theta(w_row).
DenseParams Fused(const TwinWeights& twins, const std::vector<double>& w) {
  auto fused = twins.Fuse(w);
  EXPECT_TRUE(fused.ok()) << fused.status();
  std::map<std::string, at::Tensor> tensors(fused->begin(), fused->end());
  return DenseParams(std::move(tensors));
}

const std::vector<std::vector<double>> kRows = {
    {1.0, 0.0, 0.0}, {0.0, 1.0, 0.0}, {0.6, 0.0, 0.4}, {0.2, 0.3, 0.5}, {0.0, 0.0, 0.0}};

// Sum of the magnitudes of every term either computation adds for the 2-D tensor `name`
// applied to x (rows of one mixture w): |x| |theta*|^T + ((|x| |v|) w_c) |us|^T
// + sum_t w_t |x| |D_t|^T, plus the bias terms |b*| + sum_t w_t |db_t| for a linear. Each
// entry of either result is off by at most a sum-error bound relative to it.
at::Tensor LinearMagnitude(const TwinWeights& twins, const std::string& name, const at::Tensor& x,
                           const std::vector<double>& w) {
  const std::string weight = name + ".weight", bias = name + ".bias";
  at::Tensor m = at::linear(x.abs(), twins.shared_tensor(weight)->abs());
  if (const FactorStack* s = twins.factor_stack(weight)) {
    const at::Tensor wc = at::tensor(std::vector<float>(w.begin(), w.end()))
                              .index_select(0, s->column_task);
    m = m + at::matmul(at::matmul(x.abs(), s->v.abs()) * wc, s->us.abs().t());
  }
  for (size_t t = 0; t < w.size(); ++t) {
    if (const at::Tensor* d = twins.dense_delta(t, weight)) {
      m = m + w[t] * at::linear(x.abs(), d->abs());
    }
  }
  if (const at::Tensor* b = twins.shared_tensor(bias)) {
    m = m + b->abs();
    for (size_t t = 0; t < w.size(); ++t) {
      if (const at::Tensor* d = twins.dense_delta(t, bias)) m = m + w[t] * d->abs();
    }
  }
  return m;
}

// The same for rows `ids` of an embedding table.
at::Tensor EmbeddingMagnitude(const TwinWeights& twins, const std::string& name,
                              const at::Tensor& ids, const std::vector<double>& w) {
  const std::string weight = name + ".weight";
  at::Tensor m = at::embedding(twins.shared_tensor(weight)->abs(), ids);
  if (const FactorStack* s = twins.factor_stack(weight)) {
    const at::Tensor wc = at::tensor(std::vector<float>(w.begin(), w.end()))
                              .index_select(0, s->column_task);
    m = m + at::matmul(at::embedding(s->us.abs(), ids) * wc, s->v.abs().t());
  }
  return m;
}

// |theta*| + sum_t w_t |delta_t| of the 1-D tensor `full_name`.
at::Tensor VectorMagnitude(const TwinWeights& twins, const std::string& full_name,
                           const std::vector<double>& w) {
  at::Tensor m = twins.shared_tensor(full_name)->abs();
  for (size_t t = 0; t < w.size(); ++t) {
    if (const at::Tensor* d = twins.dense_delta(t, full_name)) m = m + w[t] * d->abs();
  }
  return m;
}

// Each side is an inner product of at most `terms` terms (Float32SumError relative to the
// magnitude), and fusion rounds every weight once per task term on top.
at::Tensor Bound(const at::Tensor& magnitude, int64_t terms) {
  return 3.0 * Float32SumError(terms) * magnitude;
}

constexpr int64_t kMaxRank = 7;  // the largest stacked rank of the fixture

class MixedParamsTest : public ::testing::TestWithParam<MixStrategy> {};

TEST_P(MixedParamsTest, LinearOfEveryRowEqualsItsFusedWeights) {
  Fixture fx = MakeFixture();
  auto mixed = MixedParams::Create(*fx.twins, kRows, GetParam());
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  for (const std::string name : {"lin", "dense"}) {
    const at::Tensor x = Random({static_cast<int64_t>(kRows.size()), 7, kIn}, 99);
    const at::Tensor y = mixed->Linear(name, x);
    ASSERT_EQ(y.sizes(), (at::IntArrayRef{static_cast<int64_t>(kRows.size()), 7, kOut}));
    for (size_t r = 0; r < kRows.size(); ++r) {
      DenseParams fused = Fused(*fx.twins, kRows[r]);
      const at::Tensor xr = x.narrow(0, static_cast<int64_t>(r), 1);
      const at::Tensor expected = fused.Linear(name, xr);
      const at::Tensor magnitude = LinearMagnitude(*fx.twins, name, xr, kRows[r]);
      const at::Tensor diff = (y.narrow(0, static_cast<int64_t>(r), 1) - expected).abs();
      EXPECT_TRUE((diff <= Bound(magnitude, kIn + kMaxRank + kTasks + 1)).all().item<bool>())
          << name << " row " << r << ": max difference " << diff.max().item<double>();
    }
  }
}

TEST_P(MixedParamsTest, EmbeddingAndLayerNormOfEveryRowEqualItsFusedWeights) {
  Fixture fx = MakeFixture();
  auto mixed = MixedParams::Create(*fx.twins, kRows, GetParam());
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  const int64_t rows = static_cast<int64_t>(kRows.size());
  const at::Tensor ids = at::arange(rows * 6, at::kLong).remainder(kVocab).view({rows, 6});
  const at::Tensor e = mixed->Embedding("emb", ids);
  const at::Tensor h = Random({rows, 6, kDim}, 7);
  const at::Tensor n = mixed->LayerNorm("ln", h, 1e-5);
  for (int64_t r = 0; r < rows; ++r) {
    DenseParams fused = Fused(*fx.twins, kRows[static_cast<size_t>(r)]);
    const std::vector<double>& w = kRows[static_cast<size_t>(r)];
    const at::Tensor row_ids = ids.narrow(0, r, 1);
    const at::Tensor want_e = fused.Embedding("emb", row_ids);
    const at::Tensor diff_e = (e.narrow(0, r, 1) - want_e).abs();
    EXPECT_TRUE((diff_e <= Bound(EmbeddingMagnitude(*fx.twins, "emb", row_ids, w), kMaxRank + 1))
                    .all()
                    .item<bool>())
        << "row " << r << ": max difference " << diff_e.max().item<double>();
    // LayerNorm: both normalise h the same way up to the rounding of a kDim-term mean and
    // variance (relative Float32SumError(kDim) of the normalised value u, twice for the
    // reciprocal square root), then scale by gamma(w) and shift by beta(w), which both round
    // once per task term: the error is bounded relative to |u| |gamma(w)| + |beta(w)|.
    const at::Tensor want_n = fused.LayerNorm("ln", h.narrow(0, r, 1), 1e-5);
    const at::Tensor u = at::layer_norm(h.narrow(0, r, 1), {kDim}, {}, {}, 1e-5);
    const at::Tensor magnitude = u.abs() * VectorMagnitude(*fx.twins, "ln.weight", w) +
                                 VectorMagnitude(*fx.twins, "ln.bias", w);
    const at::Tensor diff_n = (n.narrow(0, r, 1) - want_n).abs();
    EXPECT_TRUE((diff_n <= 4.0 * Bound(magnitude, kDim + kTasks + 1)).all().item<bool>())
        << "row " << r << ": max difference " << diff_n.max().item<double>();
  }
}

TEST_P(MixedParamsTest, AllZeroWeightsGiveThetaStar) {
  Fixture fx = MakeFixture();
  auto mixed = MixedParams::Create(*fx.twins, std::vector<std::vector<double>>{{0.0, 0.0, 0.0}},
                                   GetParam());
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->active_pairs(), 0);
  const at::Tensor x = Random({1, kIn}, 5);
  const at::Tensor want =
      at::linear(x, *fx.twins->shared_tensor("lin.weight"), *fx.twins->shared_tensor("lin.bias"));
  EXPECT_TRUE(at::equal(mixed->Linear("lin", x), want));
}

INSTANTIATE_TEST_SUITE_P(Strategies, MixedParamsTest,
                         ::testing::Values(MixStrategy::kStacked, MixStrategy::kGrouped),
                         [](const auto& info) { return std::string(MixStrategyName(info.param)); });

TEST(MixedParamsStrategies, StackedAndGroupedAgree) {
  Fixture fx = MakeFixture();
  auto stacked = MixedParams::Create(*fx.twins, kRows, MixStrategy::kStacked);
  auto grouped = MixedParams::Create(*fx.twins, kRows, MixStrategy::kGrouped);
  ASSERT_TRUE(stacked.ok() && grouped.ok());
  EXPECT_EQ(grouped->active_pairs(), 1 + 1 + 2 + 3 + 0);
  const at::Tensor x = Random({static_cast<int64_t>(kRows.size()), 3, kIn}, 11);
  const at::Tensor a = stacked->Linear("lin", x), b = grouped->Linear("lin", x);
  for (size_t r = 0; r < kRows.size(); ++r) {
    const int64_t i = static_cast<int64_t>(r);
    const at::Tensor magnitude = LinearMagnitude(*fx.twins, "lin", x.narrow(0, i, 1), kRows[r]);
    const at::Tensor diff = (a.narrow(0, i, 1) - b.narrow(0, i, 1)).abs();
    EXPECT_TRUE((diff <= Bound(magnitude, kIn + kMaxRank + kTasks + 1)).all().item<bool>())
        << "row " << r << ": " << diff.max().item<double>();
  }
}

TEST(MixedParamsErrors, BadRowWeightsAreRefused) {
  Fixture fx = MakeFixture();
  auto wrong_width = MixedParams::Create(*fx.twins, std::vector<std::vector<double>>{{1.0, 0.0}},
                                         MixStrategy::kStacked);
  EXPECT_THAT(wrong_width.status().message(), HasSubstr("row 0 has 2 weights for 3 tasks"));
  auto negative = MixedParams::Create(
      *fx.twins, std::vector<std::vector<double>>{{1.0, -0.5, 0.0}}, MixStrategy::kStacked);
  EXPECT_THAT(negative.status().message(), HasSubstr("non-negative"));
  auto nan = MixedParams::Create(*fx.twins, at::full({2, kTasks}, NAN), MixStrategy::kGrouped);
  EXPECT_THAT(nan.status().message(), HasSubstr("finite"));
  auto empty = MixedParams::Create(*fx.twins, at::zeros({0, kTasks}), MixStrategy::kGrouped);
  EXPECT_THAT(empty.status().message(), HasSubstr("rows > 0"));
  EXPECT_FALSE(ParseMixStrategy("sgmv").ok());
}

TEST(MixedParamsErrors, WrongBatchAndMissingTensorThrowNamingThem) {
  Fixture fx = MakeFixture();
  auto mixed = MixedParams::Create(*fx.twins, kRows, MixStrategy::kStacked);
  ASSERT_TRUE(mixed.ok());
  try {
    mixed->Linear("lin", Random({2, kIn}, 1));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("lin: input has 2 rows, the mixture 5"));
  }
  try {
    mixed->Linear("nothing", Random({5, kIn}, 1));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("missing tensor nothing.weight"));
  }
  EXPECT_TRUE(mixed->Has("lin"));
  EXPECT_FALSE(mixed->Has("nothing"));
}

TEST(TwinWeightsStacks, FactorsAreViewsIntoOneStack) {
  Fixture fx = MakeFixture();
  const FactorStack* stack = fx.twins->factor_stack("lin.weight");
  ASSERT_NE(stack, nullptr);
  EXPECT_EQ(stack->us.sizes(), (at::IntArrayRef{kOut, 5}));
  EXPECT_EQ(stack->v.sizes(), (at::IntArrayRef{kIn, 5}));
  EXPECT_EQ(stack->offset, (std::vector<int64_t>{0, 3, 3, 5}));
  EXPECT_TRUE(at::equal(stack->column_task, at::tensor({0, 0, 0, 2, 2}, at::kLong)));
  EXPECT_EQ(fx.twins->factor_stack("lin.bias"), nullptr);
  EXPECT_TRUE(fx.twins->has_dense("ln.weight"));
  EXPECT_EQ(fx.twins->dense_delta(2, "ln.weight"), nullptr);
  // Every byte once: stacks plus dense deltas.
  const uint64_t stacks = (kOut + kIn) * 5 * 4 + (kVocab + kDim) * 7 * 4;
  const uint64_t dense = 3 * kOut * 4 + 2 * kDim * 4 + 3 * kDim * 4 + 3 * kOut * kIn * 4;
  EXPECT_EQ(fx.twins->twin_bytes(), stacks + dense);
}

}  // namespace
}  // namespace twin
