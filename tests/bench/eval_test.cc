// twin-eval's library on the tiny zoo, built in memory: a shared expert by task arithmetic and
// a router trained on the shared model's features stand in for a published artifact set.
#include "bench/eval/eval.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "bench/eval/eval_inputs.h"
#include "bench/eval/eval_report.h"
#include "core/merge/merge_methods.h"
#include "core/router/router.h"
#include "core/io/safetensors.h"
#include "core/model/script_model.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_models.h"

namespace twin::eval {
namespace {

using ::testing::HasSubstr;

constexpr char kHeadPattern[] = "^(head|classifier)\\.";

class EvalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    testing::TinyZooOptions zo;
    zo.num_tasks = 3;
    zo.test_examples = 96;
    zoo_ = new testing::TinyZoo(*testing::BuildTinyZoo(dir_->path(), zo));
    inputs_ = new EvalInputs();
    EvalInputs& in = *inputs_;
    in.architecture_path = zoo_->base_path;
    auto base_model = ScriptModel::Load(zoo_->base_path);
    ASSERT_TRUE(base_model.ok());
    NamedTensors order, head;
    for (const auto& [name, t] : (*base_model)->NamedParameters()) {
      if (name.rfind("head.", 0) != 0) order.emplace_back(name, t);
    }
    ASSERT_TRUE(SplitParameters((*base_model)->NamedParameters(), order, kHeadPattern, "base",
                                &in.base, &head)
                    .ok());
    for (size_t t = 0; t < zoo_->task_names.size(); ++t) {
      auto expert = ScriptModel::Load(zoo_->expert_paths[t]);
      ASSERT_TRUE(expert.ok());
      NamedTensors merged, expert_head;
      ASSERT_TRUE(SplitParameters((*expert)->NamedParameters(), order, kHeadPattern,
                                  zoo_->expert_paths[t], &merged, &expert_head)
                      .ok());
      in.experts.push_back(merged);
      in.heads.push_back(expert_head);
      EvalTask task;
      task.name = zoo_->task_names[t];
      for (int64_t c = 0; c < zoo_->num_classes[t]; ++c) task.labels.push_back(absl::StrCat(c));
      const auto& test = zoo_->test_data[t];
      task.test = {test.input_ids, test.attention_mask, test.labels};
      auto val = testing::MakeTinyTaskData(t, zo.num_tasks, zoo_->num_classes[t], zo.vocab, 64,
                                           zo.seq_len, /*seed=*/900 + t);
      task.validation = {val.input_ids, val.attention_mask, val.labels};
      in.tasks.push_back(task);
    }
    // theta* = task arithmetic at 0.3, as twin-merge's default.
    MergeOptions mo;
    for (size_t i = 0; i < in.base.size(); ++i) {
      std::vector<at::Tensor> tensors;
      for (const auto& e : in.experts) tensors.push_back(e[i].second);
      auto merged = MergeTensor(in.base[i].second, tensors, mo, i);
      ASSERT_TRUE(merged.ok());
      in.shared.emplace_back(in.base[i].first, *merged);
    }
    // The router on the shared model's features of the router examples.
    ASSERT_TRUE((*base_model)->SetParameters(in.shared).ok());
    std::vector<at::Tensor> features, ids;
    for (size_t t = 0; t < zoo_->router_data.size(); ++t) {
      auto file = SafetensorsReader::Open(zoo_->router_data[t]);
      ASSERT_TRUE(file.ok());
      auto f = (*base_model)
                   ->Embed(*(*file)->Get("input_ids", at::kLong),
                           *(*file)->Get("attention_mask", at::kLong));
      ASSERT_TRUE(f.ok());
      features.push_back(*f);
      ids.push_back(at::full({f->size(0)}, static_cast<int64_t>(t), at::kLong));
    }
    RouterTrainOptions ro;
    ro.seed = 3;
    auto router = TrainRouter(at::cat(features), at::cat(ids), zo.num_tasks, ro);
    ASSERT_TRUE(router.ok()) << router.status();
    in.router = std::move(router->router);
    in.shared_method = "task_arithmetic";

    EvalOptions o;
    o.lambdas = {0.3, 0.6, 1.0};
    o.ties_lambdas = {1.0};
    o.ratios = {0.25, 1.0};
    o.energy = 0.9;
    o.key_grids = {10, 4};
    o.batch_size = 40;
    o.progress = false;
    auto result = RunEvaluation(in, o);
    ASSERT_TRUE(result.ok()) << result.status();
    result_ = new EvalResult(*std::move(result));
  }

  static const MethodResult& M(const std::string& id) {
    const MethodResult* m = result_->Find(id);
    EXPECT_NE(m, nullptr) << id;
    static const MethodResult kNone;
    return m != nullptr ? *m : kNone;
  }

  static testing::TempDir* dir_;
  static testing::TinyZoo* zoo_;
  static EvalInputs* inputs_;
  static EvalResult* result_;
};

testing::TempDir* EvalTest::dir_ = nullptr;
testing::TinyZoo* EvalTest::zoo_ = nullptr;
EvalInputs* EvalTest::inputs_ = nullptr;
EvalResult* EvalTest::result_ = nullptr;

TEST_F(EvalTest, EveryMethodHasOneAccuracyInRangePerTaskAndMode) {
  ASSERT_NE(result_, nullptr);
  // base, expert, shared, linear, 3 searched statics; 3 policies x 4 routings.
  EXPECT_EQ(result_->methods.size(), 7u + 3u * 4u);
  for (const MethodResult& m : result_->methods) {
    ASSERT_EQ(m.given.size(), 3u) << m.id;
    ASSERT_EQ(m.unknown.size(), 3u) << m.id;
    for (size_t t = 0; t < 3; ++t) {
      EXPECT_GE(m.given[t], 0.0) << m.id;
      EXPECT_LE(m.given[t], 1.0) << m.id;
      // Task unknown can only lose rows: a wrongly routed row is wrong.
      EXPECT_LE(m.unknown[t], m.given[t] + 1e-12) << m.id;
    }
  }
  EXPECT_EQ(result_->test_rows, (std::vector<int64_t>{96, 96, 96}));
  EXPECT_EQ(result_->validation_rows, (std::vector<int64_t>{64, 64, 64}));
}

TEST_F(EvalTest, ExpertAccuracyMatchesTheZoosOwnScoring) {
  ASSERT_NE(result_, nullptr);
  for (size_t t = 0; t < zoo_->expert_paths.size(); ++t) {
    auto module = torch::jit::load(zoo_->expert_paths[t]);
    EXPECT_NEAR(M("expert").given[t], testing::TinyAccuracy(module, zoo_->test_data[t]), 1e-9);
  }
  EXPECT_GE(Mean(M("expert").given), Mean(M("base").given));
}

TEST_F(EvalTest, OracleTwinAtFullRankIsTheExpert) {
  ASSERT_NE(result_, nullptr);
  const MethodResult& oracle = M("twin:ratio=1:oracle");
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_NEAR(oracle.given[t], M("expert").given[t], 1.5 / 96) << t;
    EXPECT_EQ(oracle.unknown[t], oracle.given[t]);
  }
  EXPECT_EQ(oracle.fusions, 3);  // one per task
  EXPECT_GT(Mean(M("twin:ratio=0.25:router").given), Mean(M("task_arithmetic").given));
}

TEST_F(EvalTest, KeysGroupRowsAndRouterRowsFuseOneByOne) {
  ASSERT_NE(result_, nullptr);
  const MethodResult& exact = M("twin:ratio=0.25:router");
  EXPECT_GT(exact.fusions, 96);  // per row (distinct softmax outputs)
  EXPECT_LE(exact.fusions, 3 * 96);
  // top_k 2 of 3 tasks on a grid of 4: at most 3 one-hot keys + 3 pairs x 3 splits.
  EXPECT_LE(M("twin:ratio=0.25:key_g4").fusions, 12);
  ASSERT_EQ(result_->routing.size(), 3u);
  EXPECT_EQ(result_->routing[0].routing, "router");
  for (const RoutingResult& r : result_->routing) {
    EXPECT_GT(Mean(r.accuracy), 0.5) << r.routing;  // the tiny tasks use disjoint vocabularies
  }
}

TEST_F(EvalTest, LambdasComeFromTheGridAndStorageFollowsRank) {
  ASSERT_NE(result_, nullptr);
  ASSERT_EQ(result_->searches.size(), 3u);
  EXPECT_EQ(result_->searches[0].method, "task_arithmetic");
  EXPECT_EQ(result_->searches[0].validation_mean.size(), 3u);
  EXPECT_THAT((std::vector<double>{0.3, 0.6, 1.0}),
              ::testing::Contains(M("task_arithmetic").lambda));
  EXPECT_EQ(M("ties").lambda, 1.0);
  ASSERT_EQ(result_->storage.size(), 3u);
  const StorageResult& low = result_->storage[0];
  const StorageResult& full = result_->storage[1];
  EXPECT_EQ(full.policy, "ratio=1");
  EXPECT_DOUBLE_EQ(full.kept_rank_fraction, 1.0);
  EXPECT_LT(full.mean_rel_error, 1e-4);
  EXPECT_LT(low.twin_bytes, full.twin_bytes);
  EXPECT_EQ(low.twin_fp16_bytes * 2, low.twin_bytes);
  EXPECT_EQ(result_->storage[2].policy, "energy=0.9");
  uint64_t model_bytes = 0;
  for (const auto& [name, t] : inputs_->experts[0]) model_bytes += t.nbytes();
  EXPECT_GT(low.experts_bytes, 3 * model_bytes);  // plus the heads
}

TEST_F(EvalTest, ReportsCarryTheTablesAndParse) {
  ASSERT_NE(result_, nullptr);
  RunInfo info;
  info.command = "twin-eval --zoo 'a b'";
  info.machine = DescribeMachine();
  info.date = NowUtc();
  const std::string md = ResultMarkdown(*result_, info);
  EXPECT_THAT(md, HasSubstr("twin-eval --zoo 'a b'"));
  EXPECT_THAT(md, HasSubstr("| individual experts |  | "));
  EXPECT_THAT(md, HasSubstr("## Task unknown"));
  EXPECT_THAT(md, HasSubstr("| ratio=0.25 |"));
  const auto j = nlohmann::json::parse(ResultJson(*result_, info));
  EXPECT_EQ(j["methods"].size(), result_->methods.size());
  EXPECT_EQ(j["methods"][1]["id"], "expert");
  EXPECT_DOUBLE_EQ(j["methods"][1]["normalized_given"].get<double>(), 100.0);
  EXPECT_EQ(j["min_ratio"].size(), 4u);
  EXPECT_TRUE(j["methods"][0]["lambda"].is_null());
}

TEST_F(EvalTest, RoutingByClassAndConfusionAddUpToTheTaskFigures) {
  ASSERT_NE(result_, nullptr);
  const size_t T = result_->tasks.size();
  ASSERT_FALSE(result_->routing.empty());
  const RoutingResult& router = result_->routing[0];
  ASSERT_EQ(router.routing, "router");
  ASSERT_EQ(router.confusion.size(), T);
  ASSERT_EQ(router.class_accuracy.size(), T);
  for (size_t t = 0; t < T; ++t) {
    // Confusion rows count every test row once; the diagonal is the routing accuracy.
    int64_t total = 0;
    for (int64_t c : router.confusion[t]) total += c;
    EXPECT_EQ(total, result_->test_rows[t]) << t;
    EXPECT_NEAR(static_cast<double>(router.confusion[t][t]) / total, router.accuracy[t], 1e-9);
    // Class accuracies weighted by class size give the task's routing accuracy back.
    const at::Tensor labels = zoo_->test_data[t].labels.slice(0, 0, result_->test_rows[t]);
    ASSERT_EQ(router.class_accuracy[t].size(), result_->class_names[t].size());
    double weighted = 0;
    for (size_t c = 0; c < router.class_accuracy[t].size(); ++c) {
      const int64_t n = labels.eq(static_cast<int64_t>(c)).sum().item<int64_t>();
      if (n > 0) weighted += router.class_accuracy[t][c] * n;
    }
    EXPECT_NEAR(weighted / total, router.accuracy[t], 1e-9) << t;
  }
  // Accuracy by class, weighted by class size, gives each method's task accuracy back.
  for (const MethodResult& m : result_->methods) {
    ASSERT_EQ(m.class_given.size(), T) << m.id;
    for (size_t t = 0; t < T; ++t) {
      const at::Tensor labels = zoo_->test_data[t].labels.slice(0, 0, result_->test_rows[t]);
      double weighted = 0;
      for (size_t c = 0; c < m.class_given[t].size(); ++c) {
        const int64_t n = labels.eq(static_cast<int64_t>(c)).sum().item<int64_t>();
        if (n > 0) weighted += m.class_given[t][c] * n;
      }
      EXPECT_NEAR(weighted / result_->test_rows[t], m.given[t], 1e-9) << m.id << " " << t;
    }
  }
  // Key modes report classes but no confusion.
  for (size_t i = 1; i < result_->routing.size(); ++i) {
    EXPECT_TRUE(result_->routing[i].confusion.empty());
    EXPECT_EQ(result_->routing[i].class_accuracy.size(), T);
  }
  RunInfo info;
  const std::string md = ResultMarkdown(*result_, info);
  EXPECT_THAT(md, HasSubstr("Confusion of the router"));
  EXPECT_THAT(md, HasSubstr("by class"));
  EXPECT_THAT(md,
              HasSubstr("## Accuracy by class (task given; experts and Twin-Merging ratio=0.25)"));
  const auto j = nlohmann::json::parse(ResultJson(*result_, info));
  EXPECT_EQ(j["routing"][0]["confusion"].size(), T);
  EXPECT_TRUE(j["routing"][0]["class_accuracy"].contains(result_->tasks[0]));
}

TEST_F(EvalTest, OracleKeepsTheTargetScoreAtFullRank) {
  ASSERT_NE(result_, nullptr);
  ASSERT_EQ(result_->min_ratios.size(), 4u);  // router, oracle, key_g10, key_g4
  EXPECT_EQ(result_->min_ratios[1].routing, "oracle");
  EXPECT_GT(result_->min_ratios[1].given, 0.0);  // full rank reproduces the experts
  EXPECT_EQ(result_->min_ratios[1].given, result_->min_ratios[1].unknown);
}

TEST(ValidateEvalOptionsTest, RejectsOutOfRangeSettingsBeforeAnyWork) {
  EvalOptions o;
  EXPECT_TRUE(ValidateEvalOptions(o, 3).ok());
  o.ratios = {0.1, 2.0};
  EXPECT_THAT(std::string(ValidateEvalOptions(o, 3).message()), HasSubstr("got 2"));
  o = EvalOptions();
  o.key_grids = {-1};
  EXPECT_FALSE(ValidateEvalOptions(o, 3).ok());
  o = EvalOptions();
  o.dare_drop_rate = 1.0;
  EXPECT_FALSE(ValidateEvalOptions(o, 3).ok());
}

TEST(CommandLineTest, QuotesSpecialArguments) {
  char a0[] = "twin-eval", a1[] = "--zoo", a2[] = "my zoo", a3[] = "it's";
  char* argv[] = {a0, a1, a2, a3};
  EXPECT_EQ(CommandLine(4, argv), "twin-eval --zoo 'my zoo' 'it'\\''s'");
}

TEST(SplitParametersTest, NamesTheMissingTensorAndTheShapeMismatch) {
  NamedTensors order = {{"enc.weight", at::zeros({2, 2})}};
  NamedTensors merged, head;
  absl::Status missing = SplitParameters({{"head.weight", at::zeros({1, 2})}}, order, kHeadPattern,
                                         "x.pt", &merged, &head);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("x.pt has no tensor 'enc.weight'"));
  absl::Status shape = SplitParameters({{"enc.weight", at::zeros({3, 2})}}, order, kHeadPattern,
                                       "y.pt", &merged, &head);
  EXPECT_THAT(std::string(shape.message()), HasSubstr("'enc.weight' has shape [3, 2]"));
}

}  // namespace
}  // namespace twin::eval
