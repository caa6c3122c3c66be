#include "core/merge/twin_weights.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/io/safetensors.h"
#include "core/merge/svd_compress.h"
#include "tests/testing/random_tensor.h"
#include "tests/testing/rounding.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::Float32SumError;
using twin::testing::kFloat32Unit;

constexpr int kNumTasks = 3;

at::Tensor Random(at::IntArrayRef shape, uint64_t seed) {
  return twin::testing::RandomTensor(shape, seed);
}

// theta* with a 2-D, a 3-D, a 1-D and an integer tensor, plus three experts around it.
struct Fixture {
  NamedTensors shared;
  std::map<std::string, at::Tensor> shared_by_name;
  std::vector<std::map<std::string, at::Tensor>> experts;  // per task: name -> theta_t
};

Fixture MakeFixture() {
  Fixture fx;
  fx.shared = {{"w", Random({4, 6}, 1)},
               {"t3", Random({2, 3, 2}, 2)},
               {"b", Random({6}, 3)},
               {"pos", at::arange(5, at::kLong)}};
  for (const auto& [name, tensor] : fx.shared) fx.shared_by_name[name] = tensor;
  for (int t = 0; t < kNumTasks; ++t) {
    std::map<std::string, at::Tensor> theta;
    for (const auto& [name, tensor] : fx.shared) {
      theta[name] = name == "pos" ? tensor : tensor + Random(tensor.sizes(), 100 + t);
    }
    fx.experts.push_back(theta);
  }
  return fx;
}

// Full-rank factors of every 2-D+ delta, dense deltas for 1-D tensors.
std::vector<TaskTwin> FullRankTwins(const Fixture& fx) {
  SvdOptions exact;
  exact.allow_randomized = false;
  std::vector<TaskTwin> twins;
  for (int t = 0; t < kNumTasks; ++t) {
    TaskTwin twin;
    twin.task = "task" + std::to_string(t);
    for (const auto& [name, base] : fx.shared) {
      if (name == "pos") continue;
      const at::Tensor delta = fx.experts[t].at(name) - base;
      if (base.dim() < 2) {
        twin.dense[name] = delta;
        continue;
      }
      auto dims = MatrixDims(base.sizes().vec());
      auto f = CompressDelta(delta, std::min(dims->first, dims->second), exact);
      EXPECT_TRUE(f.ok()) << f.status();
      twin.factors[name] = {f->us, f->v};
    }
    twin.head = {{"head.weight", at::full({2, 6}, static_cast<float>(t))},
                 {"head.bias", at::full({2}, static_cast<float>(t))}};
    twins.push_back(twin);
  }
  return twins;
}

// Bound on |fused - expected| for one tensor: each factored delta is rebuilt from a float32 SVD
// (backward error 2 Float32SumError(max(m, n)) relative to ||delta||_F, which bounds every
// entry) and weighted by |w_t|; the additions round each entry by u relative to its size.
double FusionBound(const Fixture& fx, const std::string& name, const std::vector<double>& w,
                   const at::Tensor& expected) {
  const at::Tensor& base = fx.experts[0].at(name);
  const int64_t rows = base.dim() > 0 ? base.size(0) : 1;
  const int64_t cols = base.dim() > 0 ? base.numel() / rows : 1;
  double bound = (kNumTasks + 1) * kFloat32Unit * expected.abs().max().item<double>();
  for (int t = 0; t < kNumTasks; ++t) {
    const at::Tensor& theta = fx.experts[t].at(name);
    if (!theta.is_floating_point()) continue;
    const double delta_norm = (theta - fx.shared_by_name.at(name)).norm().item<double>();
    bound += std::abs(w[t]) * 2 * Float32SumError(std::max(rows, cols)) * delta_norm;
  }
  return bound;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

const at::Tensor& Find(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static const at::Tensor kNone;
  return kNone;
}

TEST(TwinWeightsTest, OneHotFusionReproducesEachExpert) {
  Fixture fx = MakeFixture();
  auto tw = TwinWeights::Create(fx.shared, FullRankTwins(fx));
  ASSERT_TRUE(tw.ok()) << tw.status();
  ASSERT_EQ((*tw)->num_tasks(), 3u);
  EXPECT_EQ((*tw)->task_names(), (std::vector<std::string>{"task0", "task1", "task2"}));
  for (int t = 0; t < kNumTasks; ++t) {
    std::vector<double> w(kNumTasks, 0.0);
    w[t] = 1.0;
    auto fused = (*tw)->Fuse(w);
    ASSERT_TRUE(fused.ok()) << fused.status();
    ASSERT_EQ(fused->size(), fx.shared.size());
    for (size_t i = 0; i < fused->size(); ++i) {
      const auto& [name, tensor] = (*fused)[i];
      EXPECT_EQ(name, fx.shared[i].first);  // shared() order
      EXPECT_EQ(tensor.sizes(), fx.shared[i].second.sizes());
      EXPECT_EQ(tensor.scalar_type(), fx.shared[i].second.scalar_type());
      const at::Tensor& expected = fx.experts[t].at(name);
      EXPECT_LE(MaxAbsDiff(tensor, expected), FusionBound(fx, name, w, expected))
          << name << " task " << t;
    }
    // Untouched tensors are theta*'s own storage.
    EXPECT_TRUE(Find(*fused, "pos").is_same(fx.shared[3].second));
  }
  EXPECT_EQ((*tw)->head(1)[0].first, "head.weight");
  EXPECT_EQ((*tw)->head(1)[0].second[0][0].item<float>(), 1.0f);
}

TEST(TwinWeightsTest, MixedWeightsAddTheWeightedDeltas) {
  Fixture fx = MakeFixture();
  auto tw = TwinWeights::Create(fx.shared, FullRankTwins(fx));
  ASSERT_TRUE(tw.ok()) << tw.status();
  const std::vector<double> w = {0.5, -0.25, 1.5};
  auto fused = (*tw)->Fuse(w);
  ASSERT_TRUE(fused.ok()) << fused.status();
  for (const auto& [name, base] : fx.shared) {
    at::Tensor expected = base.clone();
    for (int t = 0; t < kNumTasks; ++t) {
      if (name != "pos") expected += w[t] * (fx.experts[t].at(name) - base);
    }
    EXPECT_LE(MaxAbsDiff(Find(*fused, name), expected), FusionBound(fx, name, w, expected))
        << name;
  }
  auto one = (*tw)->FuseTensor("t3", w);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(one->equal(Find(*fused, "t3")));
  // All-zero weights give theta* itself.
  auto zero = (*tw)->Fuse({0.0, 0.0, 0.0});
  ASSERT_TRUE(zero.ok());
  EXPECT_TRUE(Find(*zero, "w").equal(fx.shared[0].second));
}

TEST(TwinWeightsTest, HalfPrecisionSharedStaysHalf) {
  Fixture fx = MakeFixture();
  std::vector<TaskTwin> twins = FullRankTwins(fx);
  NamedTensors half = fx.shared;
  for (auto& [name, tensor] : half) {
    if (tensor.is_floating_point()) tensor = tensor.to(at::kHalf);
  }
  auto tw = TwinWeights::Create(half, twins);
  ASSERT_TRUE(tw.ok()) << tw.status();
  auto fused = (*tw)->FuseTensor("w", {0.0, 1.0, 0.0});
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_EQ(fused->scalar_type(), at::kHalf);
  const at::Tensor expected =
      half[0].second.to(at::kFloat) + (fx.experts[1].at("w") - fx.shared[0].second);
  // Stored in float16: rounding of half its unit roundoff (2^-11) relative to the entry.
  EXPECT_LE(MaxAbsDiff(*fused, expected),
            0x1p-11 * expected.abs().max().item<double>() +
                FusionBound(fx, "w", {0.0, 1.0, 0.0}, expected));
}

TEST(TwinWeightsTest, RejectsBadFusionWeights) {
  Fixture fx = MakeFixture();
  auto tw = TwinWeights::Create(fx.shared, FullRankTwins(fx));
  ASSERT_TRUE(tw.ok()) << tw.status();
  auto short_w = (*tw)->Fuse({1.0, 0.0});
  EXPECT_EQ(short_w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(short_w.status().message()), HasSubstr("2 fusion weights for 3"));
  auto nan = (*tw)->Fuse({1.0, std::numeric_limits<double>::quiet_NaN(), 0.0});
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(nan.status().message()), HasSubstr("task1"));
  EXPECT_EQ((*tw)->FuseTensor("nope", {1.0, 0.0, 0.0}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TwinWeightsTest, CreateRejectsMismatchedTwins) {
  Fixture fx = MakeFixture();
  {
    std::vector<TaskTwin> twins = FullRankTwins(fx);
    twins[1].factors["w"].second = at::zeros({5, 4});  // v must be [6, r]
    auto tw = TwinWeights::Create(fx.shared, twins);
    EXPECT_EQ(tw.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("task 'task1' tensor 'w'"));
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("[5, 4]"));
  }
  {
    std::vector<TaskTwin> twins = FullRankTwins(fx);
    twins[0].factors["t3"].first = at::zeros({2, 3});  // rank 3 against v's rank 2
    auto tw = TwinWeights::Create(fx.shared, twins);
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("'t3'"));
  }
  {
    std::vector<TaskTwin> twins = FullRankTwins(fx);
    twins[2].dense["b"] = at::zeros({5});
    auto tw = TwinWeights::Create(fx.shared, twins);
    EXPECT_EQ(tw.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("'b'"));
  }
  {
    std::vector<TaskTwin> twins = FullRankTwins(fx);
    twins[0].factors["missing"] = {at::zeros({4, 1}), at::zeros({6, 1})};
    auto tw = TwinWeights::Create(fx.shared, twins);
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("'missing'"));
  }
  {
    std::vector<TaskTwin> twins = FullRankTwins(fx);
    twins[0].factors["b"] = {at::zeros({6, 1}), at::zeros({1, 1})};  // 1-D cannot be factored
    EXPECT_FALSE(TwinWeights::Create(fx.shared, twins).ok());
  }
  {
    std::vector<TaskTwin> twins = FullRankTwins(fx);
    twins[2].task = "task0";
    auto tw = TwinWeights::Create(fx.shared, twins);
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("'task0' appears twice"));
  }
}

TEST(TwinWeightsTest, CountsBytes) {
  Fixture fx = MakeFixture();
  auto tw = TwinWeights::Create(fx.shared, FullRankTwins(fx));
  ASSERT_TRUE(tw.ok()) << tw.status();
  // theta*: 24 + 12 + 6 floats and 5 int64s.
  EXPECT_EQ((*tw)->shared_bytes(), (24u + 12u + 6u) * 4u + 5u * 8u);
  // Per task: w us [4,4] + v [6,4], t3 us [2,2] + v [6,2], b dense [6]; heads excluded.
  EXPECT_EQ((*tw)->twin_bytes(), 3u * (16u + 24u + 4u + 12u + 6u) * 4u);
}

// A fresh temporary directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/twin_weights_test_XXXXXX";
    const char* made = mkdtemp(pattern);
    EXPECT_NE(made, nullptr);
    path_ = made ? made : "";
  }
  ~TempDir() {
    if (!path_.empty()) std::filesystem::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes the artifact blobs for `twins` the way the offline job lays them out.
LocalArtifactSet WriteArtifactSet(const std::string& dir, const NamedTensors& shared,
                                  const std::vector<TaskTwin>& twins) {
  LocalArtifactSet set;
  set.version = "v1";
  set.dir = dir;
  std::filesystem::create_directories(dir + "/twin");
  EXPECT_TRUE(WriteSafetensors(set.PathOf(set.manifest.shared_blob), shared).ok());
  for (const TaskTwin& twin : twins) {
    TaskEntry entry;
    entry.name = twin.task;
    entry.twin_blob = "twin/" + twin.task + ".safetensors";
    NamedTensors blob;
    for (const auto& [name, f] : twin.factors) {
      blob.emplace_back(name + ".us", f.first);
      blob.emplace_back(name + ".v", f.second);
    }
    for (const auto& [name, d] : twin.dense) blob.emplace_back(name + ".delta", d);
    // Heads listed in the reverse of file order: head() must follow the manifest.
    for (auto it = twin.head.rbegin(); it != twin.head.rend(); ++it) {
      entry.head_tensors.push_back(it->first);
    }
    for (const auto& named : twin.head) blob.push_back(named);
    EXPECT_TRUE(WriteSafetensors(set.PathOf(entry.twin_blob), blob).ok());
    set.manifest.tasks.push_back(entry);
  }
  return set;
}

TEST(TwinWeightsTest, LoadsAnArtifactSetDirectory) {
  TempDir tmp;
  Fixture fx = MakeFixture();
  const LocalArtifactSet set = WriteArtifactSet(tmp.path(), fx.shared, FullRankTwins(fx));
  auto tw = TwinWeights::Load(set, c10::Device(c10::kCPU));
  ASSERT_TRUE(tw.ok()) << tw.status();
  EXPECT_EQ((*tw)->task_names(), (std::vector<std::string>{"task0", "task1", "task2"}));
  ASSERT_EQ((*tw)->shared().size(), fx.shared.size());
  auto fused = (*tw)->Fuse({0.0, 0.0, 1.0});
  ASSERT_TRUE(fused.ok()) << fused.status();
  for (const auto& [name, tensor] : *fused) {
    EXPECT_LE(MaxAbsDiff(tensor, fx.experts[2].at(name)),
              FusionBound(fx, name, {0.0, 0.0, 1.0}, fx.experts[2].at(name)))
        << name;
  }
  const NamedTensors& head = (*tw)->head(2);
  ASSERT_EQ(head.size(), 2u);
  EXPECT_EQ(head[0].first, "head.bias");
  EXPECT_EQ(head[1].first, "head.weight");
  EXPECT_EQ(head[1].second[0][0].item<float>(), 2.0f);
  EXPECT_EQ((*tw)->twin_bytes(), 3u * (16u + 24u + 4u + 12u + 6u) * 4u);
}

TEST(TwinWeightsTest, LoadRejectsUnknownAndMissingKeys) {
  TempDir tmp;
  Fixture fx = MakeFixture();
  std::vector<TaskTwin> twins = FullRankTwins(fx);
  {
    LocalArtifactSet set = WriteArtifactSet(tmp.path() + "/extra", fx.shared, twins);
    set.manifest.tasks[1].head_tensors = {"head.weight"};  // head.bias is now unexplained
    auto tw = TwinWeights::Load(set, c10::Device(c10::kCPU));
    EXPECT_EQ(tw.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("twin/task1.safetensors"));
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("'head.bias'"));
  }
  {
    LocalArtifactSet set = WriteArtifactSet(tmp.path() + "/head", fx.shared, twins);
    set.manifest.tasks[0].head_tensors.push_back("head.extra");
    auto tw = TwinWeights::Load(set, c10::Device(c10::kCPU));
    EXPECT_EQ(tw.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("'head.extra'"));
  }
  {
    std::vector<TaskTwin> broken = twins;
    broken[0].factors["w"].first = at::zeros({3, 4});
    LocalArtifactSet set = WriteArtifactSet(tmp.path() + "/shape", fx.shared, broken);
    auto tw = TwinWeights::Load(set, c10::Device(c10::kCPU));
    EXPECT_FALSE(tw.ok());
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("'w'"));
  }
  {
    LocalArtifactSet set = WriteArtifactSet(tmp.path() + "/gone", fx.shared, twins);
    std::filesystem::remove(set.PathOf("twin/task2.safetensors"));
    auto tw = TwinWeights::Load(set, c10::Device(c10::kCPU));
    EXPECT_FALSE(tw.ok());
    EXPECT_THAT(std::string(tw.status().message()), HasSubstr("task2.safetensors"));
  }
}

}  // namespace
}  // namespace twin
