#include "core/model/task_heads.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "tests/testing/random_tensor.h"
#include "tests/testing/rounding.h"

namespace twin {
namespace {

using testing::Float32SumError;
using testing::RandomTensor;

constexpr int64_t kIn = 6, kVocab = 9;

std::map<std::string, at::Tensor> Head(uint64_t seed) {
  return {{"lm_head.weight", RandomTensor({kVocab, kIn}, seed)},
          {"lm_head.bias", RandomTensor({kVocab}, seed + 100)}};
}

class TaskHeadParamsTest : public ::testing::Test {
 protected:
  TaskHeadParamsTest()
      : body_{{"proj.weight", RandomTensor({kIn, kIn}, 1)},
              {"norm.weight", RandomTensor({kIn}, 2)},
              {"embed.weight", RandomTensor({kVocab, kIn}, 3)}},
        heads_{DenseParams(Head(10)), DenseParams(Head(20)), DenseParams(Head(30))} {}

  TaskHeadParams Params(std::vector<int> row_tasks) const {
    return TaskHeadParams(std::make_unique<DenseParams>(body_),
                          {&heads_[0], &heads_[1], &heads_[2]}, std::move(row_tasks),
                          {"lm_head"});
  }

  std::map<std::string, at::Tensor> body_;
  DenseParams heads_[3];
};

TEST_F(TaskHeadParamsTest, EachRowReadsItsTasksHead) {
  const std::vector<int> tasks = {1, 0, 1, 2, 0};
  const TaskHeadParams params = Params(tasks);
  for (const at::Tensor& x : {RandomTensor({5, kIn}, 4), RandomTensor({5, 3, kIn}, 5)}) {
    const at::Tensor got = params.Linear("lm_head", x);
    ASSERT_EQ(got.size(0), 5);
    EXPECT_EQ(got.size(-1), kVocab);
    for (int64_t b = 0; b < 5; ++b) {
      // Each row alone, through its own task's head: the same GEMM on fewer rows, so equal up
      // to the kernel's blocking (unit roundoff times the inner size, per entry).
      const at::Tensor row = x.narrow(0, b, 1);
      const at::Tensor alone = heads_[tasks[b]].Linear("lm_head", row);
      const at::Tensor magnitude =
          at::linear(row.abs(), heads_[tasks[b]].Get("lm_head.weight")->abs(),
                     heads_[tasks[b]].Get("lm_head.bias")->abs());
      const at::Tensor diff = (got.narrow(0, b, 1) - alone).abs();
      EXPECT_TRUE((diff <= 2.0 * Float32SumError(kIn + 1) * magnitude).all().item<bool>())
          << "row " << b;
    }
  }
  // Every other layer comes from the body.
  const at::Tensor x = RandomTensor({5, kIn}, 6);
  EXPECT_TRUE(at::equal(params.Linear("proj", x), DenseParams(body_).Linear("proj", x)));
  EXPECT_TRUE(at::equal(params.Linears({"proj"}, x)[0], DenseParams(body_).Linear("proj", x)));
  EXPECT_TRUE(params.Has("lm_head"));
  EXPECT_TRUE(params.Has("proj"));
  EXPECT_FALSE(params.Has("missing"));
  EXPECT_EQ(params.RmsNorm("norm", x, 1e-6).sizes(), x.sizes());
}

TEST_F(TaskHeadParamsTest, OneTaskIsOneGemmAndTheHeadsDiffer) {
  const at::Tensor x = RandomTensor({3, kIn}, 7);
  for (int t = 0; t < 3; ++t) {
    EXPECT_TRUE(at::equal(Params({t, t, t}).Linear("lm_head", x), heads_[t].Linear("lm_head", x)));
  }
  EXPECT_FALSE(at::allclose(heads_[0].Linear("lm_head", x), heads_[1].Linear("lm_head", x)));
}

TEST_F(TaskHeadParamsTest, MisuseThrows) {
  EXPECT_THROW(Params({0, 3}), c10::Error);
  EXPECT_THROW(Params({-1}), c10::Error);
  const TaskHeadParams params = Params({0, 1});
  // Rows must match the row tasks; a per-task name is only a linear.
  EXPECT_THROW(params.Linear("lm_head", RandomTensor({3, kIn}, 8)), c10::Error);
  EXPECT_THROW(params.Embedding("lm_head", at::zeros({2, 1}, at::kLong)), c10::Error);
  EXPECT_THROW(params.RmsNorm("lm_head", RandomTensor({2, kIn}, 9), 1e-6), c10::Error);
}

}  // namespace
}  // namespace twin
