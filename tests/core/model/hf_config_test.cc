#include "core/model/hf_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kPath[] = "/models/x/config.json";

// roberta-base's config.json with a 2-label classification head.
Json RobertaConfig() {
  return Json::parse(R"({
    "architectures": ["RobertaForSequenceClassification"],
    "attention_probs_dropout_prob": 0.1, "bos_token_id": 0, "classifier_dropout": null,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "initializer_range": 0.02,
    "intermediate_size": 3072, "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
    "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "model_type": "roberta",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "position_embedding_type": "absolute", "problem_type": "single_label_classification",
    "torch_dtype": "float32", "transformers_version": "4.40.0", "type_vocab_size": 1,
    "use_cache": true, "vocab_size": 50265})");
}

absl::StatusOr<HfEncoderConfig> Parse(const Json& j) {
  return ParseHfEncoderConfig(j.dump(), kPath);
}

void ExpectError(const Json& j, const std::string& part1, const std::string& part2) {
  auto c = Parse(j);
  ASSERT_FALSE(c.ok()) << j.dump();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(kPath));
  EXPECT_THAT(c.status().message(), HasSubstr(part1));
  EXPECT_THAT(c.status().message(), HasSubstr(part2));
}

TEST(HfConfigTest, ReadsRobertaBase) {
  auto c = Parse(RobertaConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, HfFamily::kRoberta);
  EXPECT_EQ(c->path, kPath);
  EXPECT_TRUE(c->has_classifier);
  EXPECT_EQ(c->architecture, "RobertaForSequenceClassification");
  EXPECT_EQ(c->vocab_size, 50265);
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->num_hidden_layers, 12);
  EXPECT_EQ(c->num_attention_heads, 12);
  EXPECT_EQ(c->head_dim(), 64);
  EXPECT_EQ(c->intermediate_size, 3072);
  EXPECT_EQ(c->hidden_act, HfActivation::kGelu);
  EXPECT_EQ(c->max_position_embeddings, 514);
  EXPECT_EQ(c->type_vocab_size, 1);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-5);
  EXPECT_EQ(c->pad_token_id, 1);
  EXPECT_THAT(c->labels, ElementsAre("NEGATIVE", "POSITIVE"));
}

TEST(HfConfigTest, OptionalKeysTakeTheHuggingFaceDefaults) {
  const Json j = {
      {"model_type", "bert"},         {"vocab_size", 30},         {"hidden_size", 8},
      {"num_hidden_layers", 1},       {"num_attention_heads", 2}, {"intermediate_size", 16},
      {"max_position_embeddings", 12}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, HfFamily::kBert);
  EXPECT_FALSE(c->has_classifier);
  EXPECT_EQ(c->architecture, "");
  EXPECT_EQ(c->hidden_act, HfActivation::kGelu);
  EXPECT_EQ(c->type_vocab_size, 2);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-12);
  EXPECT_EQ(c->pad_token_id, 0);
  EXPECT_THAT(c->labels, ElementsAre("LABEL_0", "LABEL_1"));

  Json r = j;
  r["model_type"] = "xlm-roberta";
  r["num_labels"] = 3;
  r["pad_token_id"] = nullptr;  // null is absent
  auto x = Parse(r);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->family, HfFamily::kXlmRoberta);
  EXPECT_EQ(x->pad_token_id, 1);
  EXPECT_THAT(x->labels, ElementsAre("LABEL_0", "LABEL_1", "LABEL_2"));
}

TEST(HfConfigTest, Activations) {
  const std::pair<const char*, HfActivation> cases[] = {
      {"gelu", HfActivation::kGelu},
      {"gelu_new", HfActivation::kGeluTanh},
      {"gelu_pytorch_tanh", HfActivation::kGeluTanh},
      {"relu", HfActivation::kRelu},
      {"silu", HfActivation::kSilu},
      {"swish", HfActivation::kSilu}};
  for (const auto& [name, act] : cases) {
    Json j = RobertaConfig();
    j["hidden_act"] = name;
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    EXPECT_EQ(c->hidden_act, act) << name;
    EXPECT_EQ(c->hidden_act_name, name);
  }
}

TEST(HfConfigTest, BareArchitecturesHaveNoHead) {
  for (const char* arch : {"RobertaModel"}) {
    Json j = RobertaConfig();
    j["architectures"] = {arch};
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_FALSE(c->has_classifier);
  }
}

TEST(HfConfigTest, UnknownModelTypeNamesTheValue) {
  Json j = RobertaConfig();
  j["model_type"] = "deberta-v2";
  ExpectError(j, "model_type", "deberta-v2");
}

TEST(HfConfigTest, MissingRequiredKeysAreNamed) {
  for (const char* key : {"model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                          "num_attention_heads", "intermediate_size", "max_position_embeddings"}) {
    Json j = RobertaConfig();
    j.erase(key);
    ExpectError(j, "missing required key", key);
  }
}

TEST(HfConfigTest, HeadsMustDivideHidden) {
  Json j = RobertaConfig();
  j["num_attention_heads"] = 10;
  ExpectError(j, "num_attention_heads", "divide hidden_size");
}

TEST(HfConfigTest, UnsupportedSemanticsAreErrors) {
  struct Case {
    const char* key;
    Json value;
    const char* shown;
  };
  const Case cases[] = {
      {"hidden_act", "quick_gelu", "quick_gelu"},
      {"position_embedding_type", "relative_key_query", "relative_key_query"},
      {"problem_type", "multi_label_classification", "multi_label_classification"},
      {"architectures", {"BertForSequenceClassification"}, "BertForSequenceClassification"},
      {"architectures", {"RobertaForMaskedLM"}, "RobertaForMaskedLM"},
      {"is_decoder", true, "bidirectional"},
      {"vocab_size", 0, "at least 1"},
      {"hidden_size", "768", "integer"},
      {"layer_norm_eps", -1.0, "positive"},
      {"pad_token_id", 50265, "below vocab_size"},
      {"num_labels", 3, "id2label has 2"},
      {"id2label", {{"0", "A"}, {"2", "B"}}, "0..1"},
      {"label2id", {{"NEGATIVE", 1}, {"POSITIVE", 0}}, "inverse"},
  };
  for (const Case& c : cases) {
    Json j = RobertaConfig();
    j[c.key] = c.value;
    ExpectError(j, c.key, c.shown);
  }
}

TEST(HfConfigTest, MalformedJsonIsAnError) {
  for (const char* text : {"{\"model_type\": \"bert\",", "[1, 2]", "{\"a\": 1, \"a\": 2}", ""}) {
    auto c = ParseHfEncoderConfig(text, kPath);
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(kPath));
  }
}

TEST(HfConfigTest, LoadsFromADirectory) {
  testing::TempDir dir;
  auto missing = LoadHfEncoderConfig(dir.path());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir.Join("config.json")));

  testing::WriteFileOrDie(dir.Join("config.json"), RobertaConfig().dump());
  auto c = LoadHfEncoderConfig(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->path, dir.Join("config.json"));
}

}  // namespace
}  // namespace twin
