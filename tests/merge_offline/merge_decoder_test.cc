// twin-merge on Hugging Face causal LMs (Llama, Qwen2, Mistral): tiny random bases written by
// the tests, three experts that are the base plus a low-rank-ish delta of their own, router
// data in token ranges of their own; merged into a file:// store, fetched back with every
// digest verified, and each expert rebuilt from theta* and its twin factors.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/io/safetensors.h"
#include "core/merge/twin_weights.h"
#include "core/model/hf_decoder.h"
#include "core/model/layer_params.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "merge_offline/inspect.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "tests/core/model/hf_decoder_test_models.h"
#include "tests/core/model/hf_decoder_test_zoo.h"
#include "tests/core/model/hf_test_models.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::Float32SumError;
using twin::testing::HfTestDecoder;
using twin::testing::NamedTensors;
using twin::testing::TempDir;

constexpr int kTasks = 3;
// Each expert's delta on a matrix: a rank-kDeltaRank part of O(kDeltaScale) entries plus a
// full-rank tail kTailScale smaller, as fine-tuning deltas have; vectors get the tail only.
constexpr int64_t kDeltaRank = 3;
constexpr double kDeltaScale = 0.05;
constexpr double kTailScale = 0.002;
constexpr uint64_t kExpertSeed = 1000;
// Router data per task: ids drawn from the task's own third of the vocabulary (after the
// special ids), so the n-gram router can tell the tasks apart.
constexpr int64_t kRouterExamples = 40;
constexpr int64_t kRouterLength = 12;
constexpr int64_t kFirstPlainId = 3;
// Held-out routing accuracy that disjoint token ranges must reach.
constexpr double kMinRoutingAccuracy = 0.9;
// The router on unigram counts: the tests' prompts are random draws from each task's ids, so
// their 2- and 3-grams are noise that a router trained on a few dozen prompts per task fits
// instead of the unigrams.
constexpr char kRouter[] = "{max_epochs: 40, ngram: {max_order: 1, buckets: 256}}";

NamedTensors ExpertWeights(const NamedTensors& base, int task) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(kExpertSeed + task);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  NamedTensors expert;
  for (const auto& [name, w] : base) {
    at::Tensor delta = kTailScale * at::randn(w.sizes(), gen, f32);
    if (w.dim() == 2) {
      const int64_t m = w.size(0), n = w.size(1);
      delta +=
          kDeltaScale *
          at::matmul(at::randn({m, kDeltaRank}, gen, f32), at::randn({kDeltaRank, n}, gen, f32)) /
          std::sqrt(static_cast<double>(n));
    }
    expert.emplace_back(name, w + delta);
  }
  return expert;
}

struct Zoo {
  HfTestDecoder base;
  std::string base_dir;
  NamedTensors base_weights;
  std::vector<std::string> expert_dirs;
  std::vector<NamedTensors> expert_weights;
  std::vector<std::string> router_data;
};

// DIR/base, DIR/expert<t> (the same config.json as the base) and DIR/router<t>.safetensors.
Zoo WriteZoo(const std::string& dir, const HfTestDecoder& m, int shards = 0) {
  Zoo zoo;
  zoo.base = m;
  zoo.base_dir = dir + "/base";
  std::filesystem::create_directories(zoo.base_dir);
  zoo.base_weights = twin::testing::WriteHfDecoderDir(zoo.base_dir, m, shards);
  const int64_t span = (m.vocab - kFirstPlainId) / kTasks;
  for (int t = 0; t < kTasks; ++t) {
    const std::string expert_dir = absl::StrCat(dir, "/expert", t);
    std::filesystem::create_directories(expert_dir);
    twin::testing::WriteHfConfig(expert_dir, twin::testing::HfDecoderTestConfig(m));
    zoo.expert_weights.push_back(ExpertWeights(zoo.base_weights, t));
    twin::testing::WriteHfWeights(expert_dir, zoo.expert_weights.back(), shards);
    zoo.expert_dirs.push_back(expert_dir);

    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(kExpertSeed + kTasks + t);
    const int64_t first = kFirstPlainId + t * span;
    const at::Tensor ids = at::randint(first, first + span, {kRouterExamples, kRouterLength}, gen,
                                       at::TensorOptions().dtype(at::kLong));
    zoo.router_data.push_back(absl::StrCat(dir, "/router", t, ".safetensors"));
    EXPECT_TRUE(WriteSafetensors(zoo.router_data.back(),
                                 {{"input_ids", ids}, {"attention_mask", at::ones_like(ids)}})
                    .ok());
  }
  return zoo;
}

std::map<std::string, at::Tensor> ByName(const NamedTensors& tensors) {
  return std::map<std::string, at::Tensor>(tensors.begin(), tensors.end());
}

// Full-rank float32 factors rebuild a delta within the backward error of the factorization and
// of the product (svd_compress_test's BackwardErrorBound), relative to ||delta||, plus the
// rounding of the float32 subtraction that made the delta and of the addition to theta*,
// relative to the expert's magnitude.
double FullRankError(int64_t rows, int64_t cols, double delta_norm, double expert_norm) {
  return 2.0 * Float32SumError(std::max(rows, cols)) * delta_norm +
         2.0 * twin::testing::kFloat32Unit * expert_norm;
}

class MergeDecoderTest : public ::testing::Test {
 protected:
  // merge.yaml over `zoo`; `extra` is appended (top-level keys).
  std::string Yaml(const Zoo& zoo, const std::string& extra,
                   const std::string& router = kRouter) const {
    std::string y = absl::StrCat("base_model: ", zoo.base_dir, "\nmodels:\n");
    for (int t = 0; t < kTasks; ++t) {
      absl::StrAppend(&y, "  - {model: ", zoo.expert_dirs[t], ", name: task", t,
                      ", router_data: ", zoo.router_data[t], "}\n");
    }
    absl::StrAppend(&y, "output: ", store_, "\ntwin: {rank_policy: ratio, ratio: 1.0}\n",
                    "router: ", router, "\n", extra);
    return y;
  }

  absl::StatusOr<MergeJobResult> Run(const std::string& yaml) {
    auto config = ParseMergeConfig(yaml, dir_.path());
    if (!config.ok()) return config.status();
    MergeJobOptions options;
    options.quiet = true;
    return RunMergeJob(*config, options);
  }

  absl::StatusOr<LocalArtifactSet> Fetch(const std::string& version) {
    auto store = FileObjectStore::Create(store_);
    if (!store.ok()) return store.status();
    return FetchArtifactSet(store->get(), version, dir_.Join("cache"));
  }

  bool HasAnyVersion() {
    auto store = FileObjectStore::Create(store_);
    auto versions = ListVersions(store->get());
    return !versions.ok() || !versions->empty() || twin::testing::FileExists(store_ + "/LATEST");
  }

  // Merges `zoo` with `extra` and checks what every causal-LM version must be: native model,
  // no architecture, no labels, an n-gram router, every expert rebuilt exactly from theta*, its
  // twin factors and dense deltas (ratio 1.0), and `head` (tensor names) kept per task.
  void MergeAndCheck(const Zoo& zoo, const std::string& extra,
                     const std::vector<std::string>& head) {
    auto result = Run(Yaml(zoo, extra));
    ASSERT_TRUE(result.ok()) << result.status();
    auto set = Fetch(result->version);
    ASSERT_TRUE(set.ok()) << set.status();
    const Manifest& m = set->manifest;
    EXPECT_EQ(m.native.family, zoo.base.model_type);
    EXPECT_EQ(m.native.config_blob, "hf/config.json");
    EXPECT_EQ(twin::testing::ReadFileOrDie(set->PathOf(m.native.config_blob)),
              twin::testing::ReadFileOrDie(zoo.base_dir + "/config.json"));
    EXPECT_EQ(m.architecture_blob, "");
    EXPECT_EQ(m.blobs.count("architecture.pt"), 0u);
    EXPECT_FALSE(
        twin::testing::FileExists(absl::StrCat(store_, "/", result->version, "/architecture.pt")));
    EXPECT_EQ(m.embed_dim, zoo.base.hidden);
    EXPECT_EQ(m.router.features, "ngram");  // router.features auto
    EXPECT_EQ(m.router.ngram.max_order, 1);
    EXPECT_GE(m.router.validation_accuracy, kMinRoutingAccuracy);
    ASSERT_EQ(m.tasks.size(), static_cast<size_t>(kTasks));
    // The recorded head pattern splits the checkpoint as the merge did.
    const std::regex head_pattern(m.head_pattern);
    for (const auto& [name, t] : zoo.base_weights) {
      EXPECT_EQ(std::regex_search(name, head_pattern),
                std::count(head.begin(), head.end(), name) > 0)
          << name;
    }
    for (const TaskEntry& task : m.tasks) {
      EXPECT_TRUE(task.labels.empty()) << task.name;
      EXPECT_EQ(task.head_tensors, head) << task.name;
    }

    auto tw = TwinWeights::Load(*set, c10::kCPU);
    ASSERT_TRUE(tw.ok()) << tw.status();
    const auto shared = ByName((*tw)->shared());
    EXPECT_EQ(shared.size() + head.size(), zoo.base_weights.size());
    for (const std::string& name : head) EXPECT_EQ(shared.count(name), 0u) << name;
    for (const TwinTensorEntry& e : m.twin_tensors) {
      EXPECT_EQ(e.rank, std::min(e.rows, e.cols)) << e.task << " " << e.name;
    }
    for (int t = 0; t < kTasks; ++t) {
      std::vector<double> one_hot(kTasks, 0.0);
      one_hot[t] = 1.0;
      auto fused = (*tw)->Fuse(one_hot);
      ASSERT_TRUE(fused.ok()) << fused.status();
      std::map<std::string, at::Tensor> rebuilt = ByName(*fused);
      for (const auto& [name, tensor] : (*tw)->head(t)) rebuilt[name] = tensor;
      ASSERT_EQ(rebuilt.size(), zoo.base_weights.size());
      const auto expert = ByName(zoo.expert_weights[t]);
      for (const auto& [name, want] : expert) {
        ASSERT_EQ(rebuilt.count(name), 1u) << name;
        const at::Tensor got = rebuilt.at(name).to(at::kDouble);
        const at::Tensor want64 = want.to(at::kDouble);
        if (std::count(head.begin(), head.end(), name)) {
          EXPECT_TRUE(got.equal(want64)) << "task " << t << " head " << name;
          continue;
        }
        const double delta_norm = (want64 - shared.at(name).to(at::kDouble)).norm().item<double>();
        const int64_t rows = want.size(0), cols = want.dim() == 2 ? want.size(1) : 1;
        EXPECT_LE((got - want64).norm().item<double>(),
                  FullRankError(rows, cols, delta_norm, want64.norm().item<double>()))
            << "task " << t << " " << name;
      }
    }
  }

  TempDir dir_;
  const std::string store_ = dir_.Join("store");
};

TEST_F(MergeDecoderTest, LlamaUntiedMergesEveryTensorAndRebuildsEachExpert) {
  const Zoo zoo = WriteZoo(dir_.Join("zoo"), HfTestDecoder{});
  MergeAndCheck(zoo, "", {});
}

TEST_F(MergeDecoderTest, LlamaTiedHasNoLmHead) {
  HfTestDecoder m;
  m.tie = true;
  const Zoo zoo = WriteZoo(dir_.Join("zoo"), m);
  for (const auto& [name, t] : zoo.base_weights) EXPECT_NE(name, "lm_head.weight");
  MergeAndCheck(zoo, "", {});
}

TEST_F(MergeDecoderTest, Qwen2WithBiases) {
  HfTestDecoder m;
  m.model_type = "qwen2";
  const Zoo zoo = WriteZoo(dir_.Join("zoo"), m);
  ASSERT_TRUE(ByName(zoo.base_weights).count("model.layers.0.self_attn.q_proj.bias"));
  MergeAndCheck(zoo, "", {});
}

TEST_F(MergeDecoderTest, MistralWithSlidingWindowFromShards) {
  HfTestDecoder m;
  m.model_type = "mistral";
  m.sliding_window = 8;
  const Zoo zoo = WriteZoo(dir_.Join("zoo"), m, /*shards=*/2);
  MergeAndCheck(zoo, "", {});
}

TEST_F(MergeDecoderTest, HeadPatternKeepsTheLmHeadPerTask) {
  const Zoo zoo = WriteZoo(dir_.Join("zoo"), HfTestDecoder{});
  MergeAndCheck(zoo, "head_pattern: '^lm_head\\.'\n", {"lm_head.weight"});
}

// The merged experts answer as the experts do through the native decoder: one-hot fusion is
// each expert, within the forward's rounding.
TEST_F(MergeDecoderTest, FusedWeightsGenerateTheExpertsLogits) {
  const Zoo zoo = WriteZoo(dir_.Join("zoo"), HfTestDecoder{});
  auto result = Run(Yaml(zoo, "version: v1\n"));
  ASSERT_TRUE(result.ok()) << result.status();
  auto set = Fetch("v1");
  ASSERT_TRUE(set.ok()) << set.status();
  auto tw = TwinWeights::Load(*set, c10::kCPU);
  ASSERT_TRUE(tw.ok()) << tw.status();
  const std::vector<std::vector<int64_t>> prompt = {{5, 17, 40, 41, 90, 3, 3, 12}};
  for (int t = 0; t < kTasks; ++t) {
    auto lm = LoadHfCausalLm(zoo.expert_dirs[t]);
    ASSERT_TRUE(lm.ok()) << lm.status();
    std::vector<double> one_hot(kTasks, 0.0);
    one_hot[t] = 1.0;
    auto fused = (*tw)->Fuse(one_hot);
    ASSERT_TRUE(fused.ok());
    auto got = lm->decoder->Logits(prompt, DenseParams(ByName(*fused)));
    auto want = lm->decoder->Logits(prompt, DenseParams(lm->weights));
    ASSERT_TRUE(got.ok() && want.ok());
    const int64_t len = static_cast<int64_t>(prompt[0].size());
    EXPECT_LE((*got - *want).abs().max().item<double>(),
              twin::testing::ForwardError(twin::testing::HfDecoderDepth(zoo.base),
                                          twin::testing::HfDecoderWidth(zoo.base, len),
                                          want->abs().max().item<double>()))
        << "task " << t;
  }
  // twin-inspect verifies the version and says why it does not evaluate it.
  auto store = FileObjectStore::Create(store_);
  ASSERT_TRUE(store.ok());
  InspectOptions options;
  options.cache_dir = dir_.Join("inspect");
  options.zoo_dir = dir_.Join("zoo");
  auto inspected = InspectArtifactSet(store->get(), options);
  ASSERT_TRUE(inspected.ok()) << inspected.status();
  EXPECT_THAT(inspected->summary, HasSubstr("all digests verified"));
  EXPECT_THAT(inspected->summary, HasSubstr("evaluation skipped"));
  EXPECT_THAT(inspected->summary, HasSubstr("causal language model"));
  EXPECT_TRUE(inspected->evaluations.empty());
}

// Text router data through the base's own tokenizer.json (the default for a base that has one).
TEST_F(MergeDecoderTest, TextRouterDataUsesTheBasesTokenizer) {
  twin::testing::HfDecoderTestZooOptions zoo_options;
  zoo_options.model_type = "qwen2";
  const twin::testing::HfDecoderTestZoo zoo =
      twin::testing::WriteHfDecoderTestZoo(dir_.Join("text"), zoo_options);
  auto result = Run(zoo.merge_yaml);
  ASSERT_TRUE(result.ok()) << result.status();
  const Manifest& m = result->manifest;
  EXPECT_EQ(m.native.family, "qwen2");
  EXPECT_EQ(m.router.features, "ngram");
  EXPECT_EQ(m.tokenizer.type, "hf");
  EXPECT_THAT(m.tokenizer.files, ::testing::Contains("hf/tokenizer.json"));
  // The default max_length (128) cut to the decoder's positions.
  EXPECT_EQ(m.tokenizer.max_length, zoo.base.max_positions);
  EXPECT_GE(m.router.validation_accuracy, kMinRoutingAccuracy);
}

// Each bad input is an error naming the problem, and publishes nothing.
TEST_F(MergeDecoderTest, BadInputsAreRefusedByName) {
  const Zoo zoo = WriteZoo(dir_.Join("zoo"), HfTestDecoder{});
  auto expect_error = [&](const std::string& yaml, const std::vector<std::string>& needles) {
    auto result = Run(yaml);
    ASSERT_FALSE(result.ok()) << needles.front();
    for (const std::string& needle : needles) {
      EXPECT_THAT(std::string(result.status().message()), HasSubstr(needle));
    }
    EXPECT_FALSE(HasAnyVersion()) << needles.front();
  };
  // merge.yaml with expert 1 replaced by a directory written from `m`.
  int written = 0;
  auto with_expert = [&](const HfTestDecoder& m) {
    const std::string other = dir_.Join(absl::StrCat("other", written++));
    std::filesystem::create_directories(other);
    twin::testing::WriteHfDecoderDir(other, m);
    return std::make_pair(other, absl::StrReplaceAll(Yaml(zoo, ""), {{zoo.expert_dirs[1], other}}));
  };
  const std::string base_config = zoo.base_dir + "/config.json";

  HfTestDecoder qwen2;
  qwen2.model_type = "qwen2";
  auto [qwen2_dir, qwen2_yaml] = with_expert(qwen2);
  expect_error(qwen2_yaml, {qwen2_dir + "/config.json", base_config, "model_type"});

  // Fields that change shapes, and fields that change only the forward.
  HfTestDecoder wider;
  wider.intermediate = 64;
  auto [wider_dir, wider_yaml] = with_expert(wider);
  expect_error(wider_yaml, {wider_dir + "/config.json", base_config, "intermediate_size"});
  HfTestDecoder kv;
  kv.kv_heads = 4;
  auto [kv_dir, kv_yaml] = with_expert(kv);
  expect_error(kv_yaml, {kv_dir + "/config.json", "num_key_value_heads"});
  HfTestDecoder rope;
  rope.rope_theta = 500000.0;
  auto [rope_dir, rope_yaml] = with_expert(rope);
  expect_error(rope_yaml, {rope_dir + "/config.json", base_config, "rope_theta"});
  HfTestDecoder tied;
  tied.tie = true;
  auto [tied_dir, tied_yaml] = with_expert(tied);
  expect_error(tied_yaml, {tied_dir + "/config.json", "tie_word_embeddings"});

  // An encoder among decoder experts, and a decoder among encoder experts.
  const std::string encoder = dir_.Join("encoder");
  std::filesystem::create_directories(encoder);
  twin::testing::WriteHfTestDir(encoder, twin::testing::HfTestModel{});
  expect_error(absl::StrReplaceAll(Yaml(zoo, ""), {{zoo.expert_dirs[1], encoder}}),
               {encoder, zoo.base_dir, "an encoder", "a causal language model"});
  expect_error(absl::StrReplaceAll(Yaml(zoo, ""), {{zoo.base_dir + "\n", encoder + "\n"}}),
               {zoo.expert_dirs[0], encoder, "a causal language model", "an encoder"});

  expect_error(Yaml(zoo, "", "{features: model}"),
               {"router.features", "decoders have no model features"});
  std::string labels = Yaml(zoo, "");
  labels.replace(labels.find(", router_data"), 0, ", labels: [a, b]");
  expect_error(labels, {"models[0].labels", "no labels"});
  expect_error(Yaml(zoo, absl::StrCat("architecture: ", zoo.base_dir, "\n")),
               {"architecture", "give no architecture"});
  // A head pattern given that matches nothing is still refused.
  expect_error(Yaml(zoo, "head_pattern: '^lmhead\\.'\n"), {"no tensor matches the head pattern"});

  // NaN in a head kept per task, and in a merged tensor.
  for (const std::string& name : {"lm_head.weight", "model.layers.1.mlp.up_proj.weight"}) {
    const std::string nan_dir = dir_.Join(absl::StrCat("nan", written++));
    std::filesystem::create_directories(nan_dir);
    twin::testing::WriteHfConfig(nan_dir, twin::testing::HfDecoderTestConfig(zoo.base));
    NamedTensors weights = zoo.expert_weights[1];
    for (auto& [n, t] : weights) {
      if (n == name) t = t.clone().index_fill_(0, at::zeros({1}, at::kLong), std::nan(""));
    }
    twin::testing::WriteHfWeights(nan_dir, weights);
    expect_error(absl::StrReplaceAll(Yaml(zoo, "head_pattern: '^lm_head\\.'\n"),
                                     {{zoo.expert_dirs[1], nan_dir}}),
                 {nan_dir, name, "NaN"});
  }

  HfTestDecoder tie;
  tie.tie = true;
  const Zoo tied_zoo = WriteZoo(dir_.Join("tied"), tie);
  expect_error(Yaml(tied_zoo, "head_pattern: '^(model\\.embed_tokens|lm_head)\\.'\n"),
               {"model.embed_tokens.weight", "tie_word_embeddings", tied_zoo.base_dir});
}

}  // namespace
}  // namespace twin
