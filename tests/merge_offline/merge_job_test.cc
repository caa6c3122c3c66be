// End to end: tiny TorchScript experts, trained here, merged by the job, published to a file
// store, fetched back with every digest verified, and fused.
#include "merge_offline/merge_job.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "core/merge/merge_methods.h"
#include "core/io/safetensors.h"
#include "core/model/script_model.h"
#include "core/merge/twin_weights.h"
#include "merge_offline/internal/inputs.h"
#include "merge_offline/merge_config.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_models.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::Float32SumError;
using twin::testing::Float64SumError;
using twin::testing::TempDir;
using twin::testing::TinyZoo;

class MergeJobTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    zoo_dir_ = new TempDir();
    auto zoo = twin::testing::BuildTinyZoo(zoo_dir_->path(), {});
    ASSERT_TRUE(zoo.ok()) << zoo.status();
    zoo_ = new TinyZoo(*zoo);
  }
  static void TearDownTestSuite() {
    delete zoo_;
    delete zoo_dir_;
  }

  // merge.yaml over the zoo; `extra` is appended (top-level keys).
  std::string Yaml(const std::string& extra, const std::string& output) const {
    std::string y = absl::StrCat("base_model: ", zoo_->base_path, "\nmodels:\n");
    for (size_t t = 0; t < zoo_->task_names.size(); ++t) {
      absl::StrAppend(&y, "  - model: ", zoo_->expert_paths[t], "\n    name: ",
                      zoo_->task_names[t], "\n    router_data: ", zoo_->router_data[t], "\n");
    }
    absl::StrAppend(&y, "output: ", output, "\nrouter: {max_epochs: 60, patience: 10}\n", extra);
    return y;
  }

  absl::StatusOr<MergeJobResult> Run(const std::string& yaml, bool dry_run = false) {
    auto config = ParseMergeConfig(yaml, dir_.path());
    if (!config.ok()) return config.status();
    MergeJobOptions options;
    options.quiet = true;
    options.dry_run = dry_run;
    return RunMergeJob(*config, options);
  }

  // Logits of the fused model for task `t` with router weights `w`.
  static at::Tensor FusedLogits(const LocalArtifactSet& set, const TwinWeights& tw, size_t t,
                                const std::vector<double>& w) {
    auto arch = ScriptModel::Load(set.PathOf(set.manifest.architecture_blob));
    EXPECT_TRUE(arch.ok()) << arch.status();
    auto fused = tw.Fuse(w);
    EXPECT_TRUE(fused.ok()) << fused.status();
    EXPECT_TRUE((*arch)->SetParameters(*fused).ok());
    EXPECT_TRUE((*arch)->SetParameters(tw.head(t)).ok());
    const auto& data = zoo_->test_data[t];
    auto logits = (*arch)->Forward(data.input_ids, data.attention_mask);
    EXPECT_TRUE(logits.ok()) << logits.status();
    return *logits;
  }

  static bool HasAnyVersion(const std::string& store_dir) {
    auto store = FileObjectStore::Create(store_dir);
    auto versions = ListVersions(store->get());
    return !versions.ok() || !versions->empty() ||
           twin::testing::FileExists(store_dir + "/LATEST");
  }

  static TempDir* zoo_dir_;
  static TinyZoo* zoo_;
  TempDir dir_;
};

TempDir* MergeJobTest::zoo_dir_ = nullptr;
TinyZoo* MergeJobTest::zoo_ = nullptr;

TEST_F(MergeJobTest, FullRankOneHotFusionReproducesEachExpert) {
  const std::string store = dir_.Join("store");
  auto result = Run(Yaml("twin: {rank_policy: ratio, ratio: 1.0}\nversion: full\n", store));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, "full");
  EXPECT_EQ(twin::testing::ReadFileOrDie(store + "/LATEST"), "full\n");

  auto fs = FileObjectStore::Create(store);
  ASSERT_TRUE(fs.ok());
  auto set = FetchArtifactSet(fs->get(), "LATEST", dir_.Join("cache"));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->manifest.tasks.size(), zoo_->task_names.size());
  auto tw = TwinWeights::Load(*set, c10::kCPU);
  ASSERT_TRUE(tw.ok()) << tw.status();

  for (size_t t = 0; t < zoo_->task_names.size(); ++t) {
    EXPECT_EQ(set->manifest.tasks[t].labels.size(), static_cast<size_t>(zoo_->num_classes[t]));
    std::vector<double> one_hot(zoo_->task_names.size(), 0.0);
    one_hot[t] = 1.0;
    at::Tensor fused = FusedLogits(*set, **tw, t, one_hot);
    auto expert = ScriptModel::Load(zoo_->expert_paths[t]);
    ASSERT_TRUE(expert.ok());
    const auto& data = zoo_->test_data[t];
    at::Tensor expected = *(*expert)->Forward(data.input_ids, data.attention_mask);
    // Full-rank twins rebuild each expert's weights within a float32 SVD's backward error;
    // then the tiny model's forward (embedding, tanh(linear), masked mean, head): 4 stages of
    // inner products over at most max(dim, row length) terms.
    const int64_t width = std::max(set->manifest.embed_dim, data.input_ids.size(1));
    EXPECT_LE((fused - expected).abs().max().item<double>(),
              twin::testing::ForwardError(4, width, expected.abs().max().item<double>()))
        << "task " << t;
  }
  // The shared expert alone is not any expert: the twin vectors carry real knowledge.
  std::vector<double> zeros(zoo_->task_names.size(), 0.0);
  auto expert0 = ScriptModel::Load(zoo_->expert_paths[0]);
  at::Tensor shared_only = FusedLogits(*set, **tw, 0, zeros);
  at::Tensor expert_logits =
      *(*expert0)->Forward(zoo_->test_data[0].input_ids, zoo_->test_data[0].attention_mask);
  EXPECT_GT((shared_only - expert_logits).abs().max().item<double>(), 1e-3);
}

TEST_F(MergeJobTest, RatioReportMatchesRecomputedErrorsAndRouterLearns) {
  const std::string store = dir_.Join("store");
  auto result = Run(Yaml("merge_method: ties\ntwin: {rank_policy: ratio, ratio: 0.1}\n", store));
  ASSERT_TRUE(result.ok()) << result.status();
  const Manifest& m = result->manifest;
  EXPECT_EQ(m.merge_method, "ties");
  EXPECT_THAT(result->report_markdown, HasSubstr("Router"));

  auto fs = FileObjectStore::Create(store);
  auto set = FetchArtifactSet(fs->get(), result->version, dir_.Join("cache"));
  ASSERT_TRUE(set.ok()) << set.status();
  auto shared = SafetensorsReader::Open(set->PathOf(m.shared_blob));
  ASSERT_TRUE(shared.ok());
  ASSERT_FALSE(m.twin_tensors.empty());
  for (const auto& e : m.twin_tensors) {
    const int t = m.TaskIndex(e.task);
    ASSERT_GE(t, 0);
    EXPECT_EQ(e.rank, static_cast<int64_t>(std::ceil(0.1 * std::min(e.rows, e.cols))));
    auto expert = ScriptModel::Load(zoo_->expert_paths[t]);
    at::Tensor delta = (*(*expert)->Parameter(e.name) - *(*shared)->Get(e.name, at::kFloat))
                           .reshape({e.rows, e.cols});
    auto twin = SafetensorsReader::Open(set->PathOf(m.tasks[t].twin_blob));
    at::Tensor us = *(*twin)->Get(e.name + ".us", at::kFloat);
    at::Tensor v = *(*twin)->Get(e.name + ".v", at::kFloat);
    // In float64, from the stored float32 factors: the error those factors really have.
    const at::Tensor delta64 = delta.to(at::kDouble);
    const double recomputed =
        ((delta64 - us.to(at::kDouble).matmul(v.to(at::kDouble).t())).norm() / delta64.norm())
            .item<double>();
    // The reported error is an energy balance, exact up to float32 rounding of the captured
    // energy (see svd_compress_test's SquaredErrorBound): compared as squared errors.
    EXPECT_NEAR(e.rel_error * e.rel_error, recomputed * recomputed,
                4 * Float32SumError(std::max(e.rows, e.cols)))
        << e.task << " " << e.name;
    EXPECT_GT(e.rel_error, 0.0);
    // The same float32 delta (the same subtraction) summed in float64 in two orders.
    EXPECT_NEAR(e.delta_norm, delta64.norm().item<double>(),
                2 * Float64SumError(delta.numel()) * e.delta_norm);
  }
  EXPECT_GE(m.router.validation_accuracy, 0.8);
  int64_t confusion_total = 0;
  for (const auto& row : m.router.confusion) {
    for (int64_t c : row) confusion_total += c;
  }
  EXPECT_EQ(confusion_total, m.router.validation_examples);
  EXPECT_EQ(m.router.train_examples + m.router.validation_examples,
            static_cast<int64_t>(zoo_->task_names.size()) * 80);
}

TEST_F(MergeJobTest, StreamedTwoPassMergeEqualsMergeTensor) {
  // dare_ties streams every expert twice (sign election, then the disjoint mean), redrawing
  // each DARE mask: the shared expert must still be exactly MergeTensor's over whole inputs.
  const std::string store = dir_.Join("store");
  const std::string yaml =
      Yaml("merge_method: dare_ties\nparameters: {drop_rate: 0.5}\nseed: 7\n", store);
  auto result = Run(yaml);
  ASSERT_TRUE(result.ok()) << result.status();
  auto config = ParseMergeConfig(yaml, dir_.path());
  ASSERT_TRUE(config.ok());
  auto fs = FileObjectStore::Create(store);
  auto set = FetchArtifactSet(fs->get(), result->version, dir_.Join("cache"));
  ASSERT_TRUE(set.ok()) << set.status();
  auto shared = SafetensorsReader::Open(set->PathOf(result->manifest.shared_blob));
  ASSERT_TRUE(shared.ok());
  auto base = ScriptModel::Load(zoo_->base_path);
  ASSERT_TRUE(base.ok());
  std::vector<std::unique_ptr<ScriptModel>> experts;
  for (const auto& path : zoo_->expert_paths) experts.push_back(*ScriptModel::Load(path));
  const auto& names = (*shared)->names();  // in merge order
  ASSERT_FALSE(names.empty());
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<at::Tensor> inputs;
    for (const auto& e : experts) inputs.push_back(*e->Parameter(names[i]));
    auto expected = MergeTensor(*(*base)->Parameter(names[i]), inputs,
                                config->ToMergeOptions(), i);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_TRUE((*shared)->Get(names[i])->equal(*expected)) << names[i];
  }
}

TEST_F(MergeJobTest, BudgetPolicyStaysWithinItsBudget) {
  constexpr uint64_t kBudgetBytes = 12000;
  const std::string store = dir_.Join("store");
  auto result = Run(Yaml(absl::StrCat("twin: {rank_policy: budget, budget_bytes: ",
                                      kBudgetBytes, "}\n"),
                         store));
  ASSERT_TRUE(result.ok()) << result.status();
  uint64_t spent = 0;
  int64_t total_rank = 0;
  for (const auto& e : result->manifest.twin_tensors) {
    spent += static_cast<uint64_t>(e.rank * (e.rows + e.cols)) * sizeof(float);
    total_rank += e.rank;
    EXPECT_GE(e.rel_error, 0.0);
    EXPECT_LE(e.rel_error, 1.0);
  }
  EXPECT_GT(total_rank, 0);
  EXPECT_LE(spent, kBudgetBytes);
}

TEST_F(MergeJobTest, SafetensorsExpertsAndDryRun) {
  // Base and experts as safetensors with the base .pt as architecture.
  std::string y = absl::StrCat("base_model: ", dir_.Join("base.safetensors"),
                               "\narchitecture: ", zoo_->base_path, "\nmodels:\n");
  for (size_t t = 0; t < 2; ++t) {
    auto expert = ScriptModel::Load(zoo_->expert_paths[t]);
    const std::string path = dir_.Join(absl::StrCat("e", t, ".safetensors"));
    ASSERT_TRUE(WriteSafetensors(path, (*expert)->NamedParameters()).ok());
    absl::StrAppend(&y, "  - {model: ", path, ", router_data: ", zoo_->router_data[t], "}\n");
  }
  auto base = ScriptModel::Load(zoo_->base_path);
  ASSERT_TRUE(WriteSafetensors(dir_.Join("base.safetensors"), (*base)->NamedParameters()).ok());
  const std::string store = dir_.Join("store");
  absl::StrAppend(&y, "output: ", store, "\nrouter: {max_epochs: 5}\n");

  auto dry = Run(y, /*dry_run=*/true);
  ASSERT_TRUE(dry.ok()) << dry.status();
  EXPECT_FALSE(HasAnyVersion(store));

  auto real = Run(y);
  ASSERT_TRUE(real.ok()) << real.status();
  EXPECT_EQ(real->manifest.tasks[0].name, "e0");
  EXPECT_TRUE(HasAnyVersion(store));
}

// Each bad input gives an error naming the problem and publishes nothing.
TEST_F(MergeJobTest, BadInputsPublishNothing) {
  const std::string store = dir_.Join("store");
  auto expect_error = [&](const std::string& yaml, const std::string& needle) {
    auto result = Run(yaml);
    ASSERT_FALSE(result.ok()) << "expected failure mentioning " << needle;
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(needle));
    EXPECT_FALSE(HasAnyVersion(store)) << needle;
  };
  auto replace_expert = [&](const std::string& path) {
    std::string y = Yaml("", store);
    const std::string& original = zoo_->expert_paths[1];
    y.replace(y.find(original), original.size(), path);
    return y;
  };

  // Multi-stage merging needs a Hugging Face encoder, whose layers the job can tell apart.
  expect_error(Yaml("twin: {from_layer: 1}\n", store), "twin.from_layer needs a Hugging Face");

  // Shape mismatch: a model with a wider embedding.
  const std::string wide = dir_.Join("wide.pt");
  twin::testing::MakeTinyModel({64, 24, 2, 3}).save(wide);
  expect_error(replace_expert(wide), "emb.weight");

  // Name mismatch: an extra parameter.
  torch::jit::Module extra = twin::testing::MakeTinyModel({64, 16, 2, 3});
  extra.register_parameter("extra_scale", at::ones({1}), false);
  const std::string extra_path = dir_.Join("extra.pt");
  extra.save(extra_path);
  expect_error(replace_expert(extra_path), "extra_scale");

  // NaN in a weight (safetensors expert).
  auto expert = ScriptModel::Load(zoo_->expert_paths[1]);
  auto params = (*expert)->NamedParameters();
  for (auto& [name, t] : params) {
    if (name == "enc.weight") {
      t = t.clone();
      t[0][0] = std::nan("");
    }
  }
  const std::string nan_path = dir_.Join("nan.safetensors");
  ASSERT_TRUE(WriteSafetensors(nan_path, params).ok());
  expect_error(replace_expert(nan_path), "enc.weight");

  // Missing, truncated and corrupt files.
  expect_error(replace_expert(dir_.Join("missing.pt")), "missing.pt");
  const std::string good = twin::testing::ReadFileOrDie(nan_path);
  twin::testing::WriteFileOrDie(dir_.Join("trunc.safetensors"), good.substr(0, good.size() / 2));
  expect_error(replace_expert(dir_.Join("trunc.safetensors")), "trunc.safetensors");
  std::string corrupt = good;
  corrupt[10] = '\x01';
  twin::testing::WriteFileOrDie(dir_.Join("corrupt.safetensors"), corrupt);
  expect_error(replace_expert(dir_.Join("corrupt.safetensors")), "corrupt.safetensors");
  twin::testing::WriteFileOrDie(dir_.Join("junk.pt"), "junk");
  expect_error(replace_expert(dir_.Join("junk.pt")), "junk.pt");

  // Wrong label count, missing router data, a rank above what the tensor allows is clamped
  // (not an error) but a zero ratio is refused.
  std::string labels = Yaml("", store);
  labels.insert(labels.find("    router_data"), "    labels: [a, b, c, d, e]\n");
  expect_error(labels, "labels");
  std::string no_router = Yaml("", store);
  const std::string& rd = zoo_->router_data[0];
  no_router.replace(no_router.find(rd), rd.size(), dir_.Join("none.safetensors"));
  expect_error(no_router, "none.safetensors");
  EXPECT_FALSE(Run(Yaml("twin: {rank_policy: ratio, ratio: 0}\n", store)).ok());
  EXPECT_FALSE(HasAnyVersion(store));
}

TEST_F(MergeJobTest, RefusesToOverwriteAPublishedVersion) {
  const std::string store = dir_.Join("store");
  const std::string y = Yaml("version: v1\nrouter: {max_epochs: 3}\n", store);
  ASSERT_TRUE(Run(y).ok());
  auto again = Run(y);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(MergeJobTest, CommandLineExitCodes) {
  const std::string bin = twin::testing::ProjectBinary("twin-merge");
  ASSERT_TRUE(twin::testing::FileExists(bin)) << bin;
  const std::string store = dir_.Join("store");
  twin::testing::WriteFileOrDie(dir_.Join("ok.yaml"), Yaml("router: {max_epochs: 3}\n", store));
  twin::testing::WriteFileOrDie(dir_.Join("bad.yaml"), "models: [");
  auto run = [&](const std::string& args) {
    int rc = std::system((bin + " --quiet " + args + " > /dev/null 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  EXPECT_EQ(run("--config " + dir_.Join("ok.yaml") + " --dry_run"), 0);
  EXPECT_FALSE(HasAnyVersion(store));
  EXPECT_NE(run("--config " + dir_.Join("bad.yaml")), 0);
  EXPECT_NE(run(""), 0);
  EXPECT_EQ(run("--config " + dir_.Join("ok.yaml") + " --version cli"), 0);
  EXPECT_EQ(twin::testing::ReadFileOrDie(store + "/LATEST"), "cli\n");
}

// The base directory's tokenizer files the artifact set carries: a SentencePiece model (Llama's,
// T5's or XLM-RoBERTa's name) only when there is no tokenizer.json, which is then what loads.
TEST(HfTokenizerFilesTest, SentencePieceModelsOnlyWithoutTokenizerJson) {
  TempDir dir;
  for (const char* name : {"spiece.model", "tokenizer_config.json", "config.json"}) {
    twin::testing::WriteFileOrDie(dir.Join(name), "x");
  }
  EXPECT_THAT(merge_internal::HfTokenizerFiles(dir.path()),
              ::testing::ElementsAre("spiece.model", "tokenizer_config.json"));
  TempDir xlmr;
  twin::testing::WriteFileOrDie(xlmr.Join("sentencepiece.bpe.model"), "x");
  EXPECT_THAT(merge_internal::HfTokenizerFiles(xlmr.path()),
              ::testing::ElementsAre("sentencepiece.bpe.model"));
  twin::testing::WriteFileOrDie(xlmr.Join("tokenizer.json"), "{}");
  EXPECT_THAT(merge_internal::HfTokenizerFiles(xlmr.path()),
              ::testing::ElementsAre("tokenizer.json"));
}

}  // namespace
}  // namespace twin
