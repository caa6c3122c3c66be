#include "core/model/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "core/io/safetensors.h"
#include "core/model/hf_encoder.h"
#include "tests/core/model/hf_test_models.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using testing::HfTestModel;
using testing::NamedTensors;
using testing::TempDir;
using ::testing::UnorderedElementsAre;

// Weights of `m` under their normalised (prefixed) names.
std::map<std::string, at::Tensor> Normalised(HfTestModel m) {
  m.prefixed = true;
  std::map<std::string, at::Tensor> out;
  for (auto& [name, t] : testing::HfTestWeights(m)) out.emplace(name, t);
  return out;
}

void ExpectSameTensors(const std::map<std::string, at::Tensor>& got,
                       const std::map<std::string, at::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, t] : want) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << name;
    EXPECT_EQ(it->second.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(at::equal(it->second, t)) << name;
  }
}

absl::StatusOr<HfModel> Write(const TempDir& dir, const HfTestModel& m, const NamedTensors& w,
                              int shards = 0) {
  testing::WriteHfConfig(dir.path(), testing::HfTestConfig(m));
  testing::WriteHfWeights(dir.path(), w, shards);
  return LoadHfModel(dir.path());
}

void ExpectError(const absl::StatusOr<HfModel>& model, absl::StatusCode code,
                 const std::vector<std::string>& parts) {
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), code) << model.status();
  for (const std::string& p : parts) EXPECT_THAT(model.status().message(), HasSubstr(p));
}

TEST(HfCheckpointTest, SingleFileAndShardsGiveTheSameTensors) {
  for (const char* type : {"bert", "roberta"}) {
    HfTestModel m;
    m.model_type = type;
    for (int shards : {0, 1, 3}) {
      TempDir dir;
      auto model = Write(dir, m, testing::HfTestWeights(m), shards);
      ASSERT_TRUE(model.ok()) << type << " " << shards << ": " << model.status();
      std::map<std::string, at::Tensor> all = model->body;
      all.insert(model->head.begin(), model->head.end());
      ExpectSameTensors(all, Normalised(m));
      EXPECT_TRUE(model->ignored.empty());
      for (const auto& [name, t] : model->head) EXPECT_EQ(name.rfind("classifier.", 0), 0u);
      EXPECT_EQ(model->encoder->head_names().size(), model->head.size());
      EXPECT_EQ(model->encoder->body_names().size(), model->body.size());
    }
  }
}

TEST(HfCheckpointTest, BareModelNamesGetThePrefix) {
  for (const char* type : {"bert", "roberta"}) {
    HfTestModel m;
    m.model_type = type;
    m.classifier = false;
    m.prefixed = false;
    TempDir dir;
    auto model = Write(dir, m, testing::HfTestWeights(m));
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_TRUE(model->head.empty());
    ExpectSameTensors(model->body, Normalised(m));
  }
}

TEST(HfCheckpointTest, ConvertsHalfPrecisionAndOldLayerNormNames) {
  HfTestModel m;
  m.model_type = "bert";
  NamedTensors w = testing::HfTestWeights(m);
  std::map<std::string, at::Tensor> want;
  for (auto& [name, t] : w) {
    const std::string normal = name;
    if (name == "bert.embeddings.LayerNorm.weight") name = "bert.embeddings.LayerNorm.gamma";
    if (name == "bert.embeddings.LayerNorm.bias") name = "bert.embeddings.LayerNorm.beta";
    if (name.find("layer.0.") != std::string::npos) t = t.to(at::kHalf);
    if (name.find("layer.1.") != std::string::npos) t = t.to(at::kBFloat16);
    want[normal] = t.to(at::kFloat);
  }
  TempDir dir;
  auto model = Write(dir, m, w);
  ASSERT_TRUE(model.ok()) << model.status();
  std::map<std::string, at::Tensor> all = model->body;
  all.insert(model->head.begin(), model->head.end());
  ExpectSameTensors(all, want);
}

TEST(HfCheckpointTest, HarmlessExtrasAreListedAndDropped) {
  HfTestModel m;  // RoBERTa: its pooler and an MLM head are unused
  NamedTensors w = testing::HfTestWeights(m);
  w.emplace_back("roberta.embeddings.position_ids", at::arange(40, at::kLong).unsqueeze(0));
  w.emplace_back("roberta.pooler.dense.weight", at::zeros({32, 32}));
  w.emplace_back("lm_head.bias", at::zeros({100}));
  TempDir dir;
  auto model = Write(dir, m, w);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_THAT(model->ignored, UnorderedElementsAre("roberta.embeddings.position_ids",
                                                   "roberta.pooler.dense.weight", "lm_head.bias"));

  HfTestModel b;
  b.model_type = "bert";
  NamedTensors bw = testing::HfTestWeights(b);
  bw.emplace_back("cls.predictions.bias", at::zeros({100}));
  TempDir bdir;
  auto bert = Write(bdir, b, bw);
  ASSERT_TRUE(bert.ok()) << bert.status();
  EXPECT_THAT(bert->ignored, UnorderedElementsAre("cls.predictions.bias"));
}

TEST(HfCheckpointTest, UnexpectedTensorsAreErrors) {
  HfTestModel m;
  NamedTensors w = testing::HfTestWeights(m);
  w.emplace_back("roberta.encoder.layer.2.output.dense.weight", at::zeros({32, 64}));
  w.emplace_back("qa_outputs.weight", at::zeros({2, 32}));
  TempDir dir;
  ExpectError(Write(dir, m, w), absl::StatusCode::kInvalidArgument,
              {"2 tensor(s)", "roberta.encoder.layer.2.output.dense.weight", "qa_outputs.weight"});
}

TEST(HfCheckpointTest, WrongShapeNamesTensorAndShapes) {
  HfTestModel m;
  NamedTensors w = testing::HfTestWeights(m);
  for (auto& [name, t] : w) {
    if (name == "roberta.encoder.layer.1.intermediate.dense.weight") t = at::zeros({48, 32});
  }
  TempDir dir;
  ExpectError(Write(dir, m, w), absl::StatusCode::kInvalidArgument,
              {"roberta.encoder.layer.1.intermediate.dense.weight", "[48, 32]", "[64, 32]"});

  // The head's shape follows id2label.
  HfTestModel four = m;
  four.num_labels = 4;
  TempDir dir4;
  testing::WriteHfConfig(dir4.path(), testing::HfTestConfig(four));
  testing::WriteHfWeights(dir4.path(), testing::HfTestWeights(m));
  ExpectError(LoadHfModel(dir4.path()), absl::StatusCode::kInvalidArgument,
              {"classifier.out_proj.weight", "[3, 32]", "[4, 32]"});
}

TEST(HfCheckpointTest, MissingTensorIsNamed) {
  HfTestModel m;
  m.model_type = "bert";
  NamedTensors w;
  for (auto& [name, t] : testing::HfTestWeights(m)) {
    if (name != "bert.pooler.dense.bias") w.emplace_back(name, t);
  }
  TempDir dir;
  ExpectError(Write(dir, m, w), absl::StatusCode::kNotFound, {"bert.pooler.dense.bias", "[32]"});
}

TEST(HfCheckpointTest, IntegerWeightsAreErrors) {
  HfTestModel m;
  NamedTensors w = testing::HfTestWeights(m);
  w[0].second = w[0].second.to(at::kInt);
  TempDir dir;
  ExpectError(Write(dir, m, w), absl::StatusCode::kInvalidArgument, {w[0].first, "I32"});
}

TEST(HfCheckpointTest, OneTensorTwiceIsAnError) {
  HfTestModel m;
  NamedTensors w = testing::HfTestWeights(m);
  w.emplace_back("embeddings.word_embeddings.weight", w[0].second);  // bare and prefixed
  TempDir dir;
  ExpectError(Write(dir, m, w), absl::StatusCode::kInvalidArgument,
              {"roberta.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"});
}

TEST(HfCheckpointTest, NoWeightsIsNotFound) {
  HfTestModel m;
  TempDir dir;
  testing::WriteHfConfig(dir.path(), testing::HfTestConfig(m));
  ExpectError(LoadHfModel(dir.path()), absl::StatusCode::kNotFound,
              {"model.safetensors", "model.safetensors.index.json", dir.path()});
}

// A sharded checkpoint in `dir` with the index rewritten by `edit`.
absl::StatusOr<HfModel> WithIndex(const TempDir& dir,
                                  const std::function<void(nlohmann::json&)>& edit) {
  HfTestModel m;
  testing::WriteHfConfig(dir.path(), testing::HfTestConfig(m));
  testing::WriteHfWeights(dir.path(), testing::HfTestWeights(m), 2);
  const std::string path = dir.Join(kHfWeightsIndexFile);
  nlohmann::json index = nlohmann::json::parse(testing::ReadFileOrDie(path));
  edit(index);
  testing::WriteFileOrDie(path, index.dump());
  return LoadHfModel(dir.path());
}

TEST(HfCheckpointTest, IndexNamingAMissingShardIsAnError) {
  TempDir dir;
  ExpectError(WithIndex(dir,
                        [](nlohmann::json& index) {
                          index["weight_map"]["roberta.embeddings.LayerNorm.bias"] =
                              "model-00003-of-00002.safetensors";
                        }),
              absl::StatusCode::kNotFound, {"model-00003-of-00002.safetensors", "index"});
}

TEST(HfCheckpointTest, IndexNamingATensorAbsentFromItsShardIsAnError) {
  TempDir dir;
  ExpectError(WithIndex(dir,
                        [](nlohmann::json& index) {
                          index["weight_map"]["roberta.encoder.layer.1.output.dense.weight"] =
                              "model-00001-of-00002.safetensors";
                        }),
              absl::StatusCode::kInvalidArgument,
              {"roberta.encoder.layer.1.output.dense.weight", "model-00001-of-00002.safetensors",
               "does not hold it"});
}

TEST(HfCheckpointTest, ShardTensorsTheIndexDoesNotListAreErrors) {
  TempDir dir;
  ExpectError(WithIndex(dir,
                        [](nlohmann::json& index) {
                          index["weight_map"].erase("classifier.out_proj.bias");
                        }),
              absl::StatusCode::kInvalidArgument, {"classifier.out_proj.bias", "does not list"});
}

TEST(HfCheckpointTest, MalformedIndexesAreErrors) {
  const std::function<void(nlohmann::json&)> edits[] = {
      [](nlohmann::json& index) { index.erase("weight_map"); },
      [](nlohmann::json& index) {
        index["weight_map"] = {1, 2};
      },
      [](nlohmann::json& index) {
        index["weight_map"]["classifier.out_proj.bias"] = "../model-00002-of-00002.safetensors";
      },
      [](nlohmann::json& index) { index["weight_map"]["classifier.out_proj.bias"] = 7; },
  };
  for (const auto& edit : edits) {
    TempDir dir;
    ExpectError(WithIndex(dir, edit), absl::StatusCode::kInvalidArgument, {kHfWeightsIndexFile});
  }
  TempDir dir;
  HfTestModel m;
  testing::WriteHfConfig(dir.path(), testing::HfTestConfig(m));
  testing::WriteFileOrDie(dir.Join(kHfWeightsIndexFile), "{\"weight_map\": {\"a\": ");
  ExpectError(LoadHfModel(dir.path()), absl::StatusCode::kInvalidArgument, {kHfWeightsIndexFile});
}

TEST(HfCheckpointTest, ConfigErrorsComeFirst) {
  HfTestModel m;
  TempDir dir;
  nlohmann::json config = testing::HfTestConfig(m);
  config["model_type"] = "gpt2";
  testing::WriteHfConfig(dir.path(), config);
  testing::WriteHfWeights(dir.path(), testing::HfTestWeights(m));
  ExpectError(LoadHfModel(dir.path()), absl::StatusCode::kInvalidArgument, {"config.json", "gpt2"});
}

}  // namespace
}  // namespace twin
