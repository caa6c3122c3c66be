// Linears of one input packed by TwinWeights::GroupLinears: theta* (DenseParams::Linears) and
// the unfused path (MixedParams::Linears, both strategies) equal the same twins unpacked, with
// the block-diagonal expansion and with one addmm per member; fusion is unchanged; the members'
// tensors are views into the group's buffers; bad groups are refused by name.
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
#include "core/model/mixed_params.h"
#include "tests/testing/random_tensor.h"
#include "tests/testing/rounding.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::Float32SumError;

constexpr int kTasks = 3;

at::Tensor Random(at::IntArrayRef shape, uint64_t seed) {
  return twin::testing::RandomTensor(shape, seed);
}

// Three linears a, b, c of one input (outputs `out`, 1/2 `out` and 1/2 `out`), biases on all
// three (b's bias with a dense delta when `row_bias`), and "other" outside the group. Task 1
// has no factors for b.
struct Sizes {
  int64_t in, out, rank;
  bool row_bias;
};

std::unique_ptr<TwinWeights> MakeTwins(const Sizes& s) {
  const int64_t outs[3] = {s.out, s.out / 2, s.out / 2};
  const char* names[3] = {"a", "b", "c"};
  NamedTensors shared;
  for (int i = 0; i < 3; ++i) {
    shared.emplace_back(std::string(names[i]) + ".weight", Random({outs[i], s.in}, 1 + i));
    shared.emplace_back(std::string(names[i]) + ".bias", Random({outs[i]}, 5 + i));
  }
  shared.emplace_back("other.weight", Random({s.out, s.in}, 9));
  std::vector<TaskTwin> tasks;
  for (int t = 0; t < kTasks; ++t) {
    TaskTwin twin;
    twin.task = "task" + std::to_string(t);
    for (int i = 0; i < 3; ++i) {
      if (i == 1 && t == 1) continue;
      const int64_t rank = s.rank + t;  // ranks differ per task
      twin.factors[std::string(names[i]) + ".weight"] = {
          Random({outs[i], rank}, 100 + 10 * t + i), Random({s.in, rank}, 200 + 10 * t + i)};
    }
    twin.factors["other.weight"] = {Random({s.out, 2}, 300 + t), Random({s.in, 2}, 310 + t)};
    if (s.row_bias) twin.dense["b.bias"] = Random({s.out / 2}, 400 + t);
    tasks.push_back(std::move(twin));
  }
  auto tw = TwinWeights::Create(std::move(shared), std::move(tasks));
  EXPECT_TRUE(tw.ok()) << tw.status();
  return std::move(*tw);
}

const std::vector<std::string> kNames = {"a", "b", "c"};
const std::vector<std::string> kWeights = {"a.weight", "b.weight", "c.weight"};
const std::vector<std::vector<double>> kRows = {
    {1.0, 0.0, 0.0}, {0.0, 1.0, 0.0}, {0.6, 0.0, 0.4}, {0.2, 0.3, 0.5}, {0.0, 0.0, 0.0}};

std::map<std::string, at::Tensor> ByName(const NamedTensors& t) {
  return std::map<std::string, at::Tensor>(t.begin(), t.end());
}

// |x| |W*|^T + ((|x| |v|) w_c) |us|^T + |b(w)|: the magnitude of the terms of member `name`.
at::Tensor Magnitude(const TwinWeights& twins, const std::string& name, const at::Tensor& x,
                     const std::vector<double>& w) {
  at::Tensor m = at::linear(x.abs(), twins.shared_tensor(name + ".weight")->abs());
  if (const FactorStack* s = twins.factor_stack(name + ".weight")) {
    const at::Tensor wc =
        at::tensor(std::vector<float>(w.begin(), w.end())).index_select(0, s->column_task);
    m = m + at::matmul(at::matmul(x.abs(), s->v.abs()) * wc, s->us.abs().t());
  }
  m = m + twins.shared_tensor(name + ".bias")->abs();
  for (size_t t = 0; t < w.size(); ++t) {
    if (const at::Tensor* d = twins.dense_delta(t, name + ".bias")) m = m + w[t] * d->abs();
  }
  return m;
}

// Both sides are inner products of at most `terms` terms, each rounded relative to its
// magnitude; their difference is bounded by twice that.
void ExpectClose(const at::Tensor& got, const at::Tensor& want, const at::Tensor& magnitude,
                 int64_t terms, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const at::Tensor diff = (got - want).abs();
  EXPECT_TRUE((diff <= 2.0 * Float32SumError(terms) * magnitude).all().item<bool>())
      << what << ": max difference " << diff.max().item<double>();
}

class LinearGroupTest : public ::testing::TestWithParam<Sizes> {};

TEST_P(LinearGroupTest, PackedLinearsEqualTheLinearsOneByOne) {
  const Sizes s = GetParam();
  std::unique_ptr<TwinWeights> plain = MakeTwins(s), packed = MakeTwins(s);
  auto n = packed->GroupLinears({kWeights});
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1);
  const LinearGroup* group = packed->linear_group(kWeights);
  ASSERT_NE(group, nullptr);
  const int64_t outs = s.out * 2, rank = 2 * (3 * s.rank + 3) + 2 * s.rank + 2;
  EXPECT_EQ(group->out_offset, (std::vector<int64_t>{0, s.out, s.out + s.out / 2, outs}));
  EXPECT_EQ(group->rank_offset.back(), rank);
  const int64_t diagonal =
      s.out * (3 * s.rank + 3) + (s.out / 2) * (2 * s.rank + 2) + (s.out / 2) * (3 * s.rank + 3);
  EXPECT_EQ(group->us_t.defined(), outs * rank - diagonal <= kBlockDiagonalMaxZeros);
  const int64_t terms = s.in + 3 * s.rank + 3 + kTasks + 1;

  const int64_t rows = static_cast<int64_t>(kRows.size());
  const at::Tensor x = Random({rows, 4, s.in}, 77);
  // theta* alone: one GEMM over the adjacent weights.
  {
    const DenseParams a(ByName(plain->shared())), b(ByName(packed->shared()));
    const std::vector<at::Tensor> got = b.Linears(kNames, x);
    ASSERT_EQ(got.size(), 3u);
    // One GEMM: the results are columns of one buffer.
    EXPECT_TRUE(got[2].storage().is_alias_of(got[0].storage()));
    EXPECT_FALSE(a.Linears(kNames, x)[2].storage().is_alias_of(a.Linears(kNames, x)[0].storage()));
    for (size_t i = 0; i < 3; ++i) {
      const std::vector<double> none(kTasks, 0.0);
      ExpectClose(got[i], a.Linear(kNames[i], x), Magnitude(*plain, kNames[i], x, none), s.in + 1,
                  "theta* " + kNames[i]);
    }
  }
  for (MixStrategy strategy : {MixStrategy::kStacked, MixStrategy::kGrouped}) {
    auto one_by_one = MixedParams::Create(*plain, kRows, strategy);
    auto together = MixedParams::Create(*packed, kRows, strategy);
    ASSERT_TRUE(one_by_one.ok() && together.ok());
    const std::vector<at::Tensor> got = together->Linears(kNames, x);
    ASSERT_EQ(got.size(), 3u);
    // Stacked: one joint GEMM whose output holds every member's result.
    EXPECT_EQ(got[2].storage().is_alias_of(got[0].storage()), strategy == MixStrategy::kStacked);
    for (size_t i = 0; i < 3; ++i) {
      // A member called alone takes the unpacked path on the packed twins: the same result.
      const at::Tensor alone = together->Linear(kNames[i], x);
      const at::Tensor want = one_by_one->Linear(kNames[i], x);
      for (int64_t r = 0; r < rows; ++r) {
        const at::Tensor xr = x.narrow(0, r, 1);
        const at::Tensor m = Magnitude(*plain, kNames[i], xr, kRows[static_cast<size_t>(r)]);
        const std::string what = std::string(MixStrategyName(strategy)) + " " + kNames[i] +
                                 " row " + std::to_string(r);
        ExpectClose(got[i].narrow(0, r, 1), want.narrow(0, r, 1), m, terms, what);
        ExpectClose(alone.narrow(0, r, 1), want.narrow(0, r, 1), m, terms, what + " alone");
      }
    }
  }
}

TEST_P(LinearGroupTest, FusionAndTensorsAreUnchangedByPacking) {
  const Sizes s = GetParam();
  std::unique_ptr<TwinWeights> plain = MakeTwins(s), packed = MakeTwins(s);
  ASSERT_TRUE(packed->GroupLinears({kWeights}).ok());
  for (const auto& [name, tensor] : plain->shared()) {
    EXPECT_TRUE(at::equal(*packed->shared_tensor(name), tensor)) << name;
  }
  for (const std::vector<double>& w : kRows) {
    auto a = plain->Fuse(w), b = packed->Fuse(w);
    ASSERT_TRUE(a.ok() && b.ok());
    for (size_t i = 0; i < a->size(); ++i) {
      EXPECT_TRUE(at::equal((*a)[i].second, (*b)[i].second)) << (*a)[i].first;
    }
  }
  // The members' weights and biases are rows of the group's buffers, in order.
  const LinearGroup* group = packed->linear_group(kWeights);
  ASSERT_NE(group, nullptr);
  const char* base = static_cast<const char*>(group->joint.data_ptr());
  for (size_t i = 0; i < 3; ++i) {
    const at::Tensor& w = *packed->shared_tensor(kWeights[i]);
    EXPECT_EQ(static_cast<const char*>(w.data_ptr()),
              base + group->out_offset[i] * s.in * static_cast<int64_t>(sizeof(float)));
    EXPECT_TRUE(packed->factor_stack(kWeights[i])->grouped);
  }
  ASSERT_TRUE(group->bias.defined());
  EXPECT_EQ(packed->shared_tensor("a.bias")->data_ptr(), group->bias.data_ptr());
  EXPECT_FALSE(packed->factor_stack("other.weight")->grouped);
  // Bytes: the factors once, plus a block-diagonal expansion's zeros.
  uint64_t zeros = 0;
  if (group->us_t.defined()) {
    zeros = group->us_t.nbytes();
    for (const FactorStack* stack : group->stacks) zeros -= stack->us.nbytes();
  }
  EXPECT_EQ(packed->twin_bytes(), plain->twin_bytes() + zeros);
  EXPECT_EQ(packed->shared_bytes(), plain->shared_bytes());
}

// Rows that share one mixture, as many tokens as a prompt chunk: the one-mixture path (only
// the used tasks' columns) equals the fused weights, packed or not.
TEST_P(LinearGroupTest, OneMixturePromptChunkEqualsItsFusedWeights) {
  const Sizes s = GetParam();
  std::unique_ptr<TwinWeights> plain = MakeTwins(s), packed = MakeTwins(s);
  ASSERT_TRUE(packed->GroupLinears({kWeights}).ok());
  const std::vector<double> w = {0.6, 0.0, 0.4};
  const std::vector<std::vector<double>> rows(3, w);
  const at::Tensor x = Random({3, kOneMixtureMinTokens, s.in}, 78);
  auto fused = plain->Fuse(w);
  ASSERT_TRUE(fused.ok());
  const DenseParams want(ByName(*fused));
  const int64_t terms = s.in + 3 * s.rank + 3 + kTasks + 1;
  for (MixStrategy strategy : {MixStrategy::kStacked, MixStrategy::kGrouped}) {
    auto a = MixedParams::Create(*plain, rows, strategy);
    auto b = MixedParams::Create(*packed, rows, strategy);
    ASSERT_TRUE(a.ok() && b.ok());
    const std::vector<at::Tensor> together = b->Linears(kNames, x);
    for (size_t i = 0; i < 3; ++i) {
      const at::Tensor expected = want.Linear(kNames[i], x);
      // Fusion rounds every weight once more per task term: three bounds, not two.
      const at::Tensor m = 1.5 * Magnitude(*plain, kNames[i], x, w);
      const std::string what = std::string(MixStrategyName(strategy)) + " " + kNames[i];
      ExpectClose(together[i], expected, m, terms, what + " packed");
      ExpectClose(a->Linear(kNames[i], x), expected, m, terms, what + " alone");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearGroupTest,
    ::testing::Values(Sizes{12, 10, 2, false},   // block diagonal
                      Sizes{12, 10, 2, true},    // a per-row bias
                      Sizes{16, 300, 40, false}  // zeros too many: one addmm per member
                      ),
    [](const auto& info) {
      return "in" + std::to_string(info.param.in) + "_out" + std::to_string(info.param.out) +
             (info.param.row_bias ? "_rowbias" : "");
    });

TEST(LinearGroupErrors, BadGroupsAreNamedAndUnpackableOnesLeftAlone) {
  std::unique_ptr<TwinWeights> twins = MakeTwins({12, 10, 2, false});
  EXPECT_THAT(twins->GroupLinears({{"a.weight", "nothing.weight"}}).status().message(),
              HasSubstr("no shared tensor named 'nothing.weight'"));
  EXPECT_THAT(twins->GroupLinears({{"a.weight"}}).status().message(),
              HasSubstr("at least two tensors"));
  EXPECT_THAT(twins->GroupLinears({{"a.weight", "a.weight"}}).status().message(),
              HasSubstr("named twice"));
  // A bias has no factors: the group stays unpacked, and nothing changed.
  auto n = twins->GroupLinears({{"a.weight", "b.bias"}});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(twins->linear_group({"a.weight", "b.bias"}), nullptr);
  EXPECT_FALSE(twins->factor_stack("a.weight")->grouped);
  // Packed once; a second group reusing a member is left alone.
  ASSERT_EQ(*twins->GroupLinears({kWeights}), 1);
  EXPECT_EQ(*twins->GroupLinears({{"c.weight", "other.weight"}}), 0);
  EXPECT_EQ(twins->linear_group({"a.weight", "b.weight"}), nullptr);  // not the same members
}

}  // namespace
}  // namespace twin
