#include "tests/core/model/hf_test_models.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/safetensors.h"
#include "tests/testing/temp_dir.h"

namespace twin::testing {
namespace {

bool IsBert(const HfTestModel& m) { return m.model_type == "bert"; }

std::string Architecture(const HfTestModel& m) {
  const std::string family = IsBert(m)                   ? "Bert"
                             : m.model_type == "roberta" ? "Roberta"
                                                         : "XLMRoberta";
  return family + (m.classifier ? "ForSequenceClassification" : "Model");
}

}  // namespace

int HfForwardDepth(const HfTestModel& m) {
  constexpr int kStagesPerLayer = 9;
  constexpr int kOuterStages = 4;
  return kStagesPerLayer * static_cast<int>(m.layers) + kOuterStages;
}

int64_t HfForwardWidth(const HfTestModel& m, int64_t seq_len) {
  return std::max({m.hidden, m.intermediate, seq_len});
}

std::string BodyName(const HfTestModel& m, const std::string& name) {
  if (!m.prefixed) return name;
  return (IsBert(m) ? "bert." : "roberta.") + name;
}

nlohmann::json HfTestConfig(const HfTestModel& m) {
  nlohmann::json c = {
      {"model_type", m.model_type},
      {"architectures", {Architecture(m)}},
      {"vocab_size", m.vocab},
      {"hidden_size", m.hidden},
      {"num_hidden_layers", m.layers},
      {"num_attention_heads", m.heads},
      {"intermediate_size", m.intermediate},
      {"hidden_act", m.hidden_act},
      {"max_position_embeddings", m.max_positions},
      {"type_vocab_size", m.type_vocab},
      {"layer_norm_eps", m.layer_norm_eps},
      {"pad_token_id", m.pad},
      {"position_embedding_type", "absolute"},
      {"hidden_dropout_prob", 0.1},
      {"attention_probs_dropout_prob", 0.1},
      {"torch_dtype", "float32"},
      {"transformers_version", "4.40.0"},
  };
  if (m.classifier) {
    nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
    for (int64_t i = 0; i < m.num_labels; ++i) {
      id2label[absl::StrCat(i)] = absl::StrCat("label", i);
      label2id[absl::StrCat("label", i)] = i;
    }
    c["id2label"] = id2label;
    c["label2id"] = label2id;
    c["problem_type"] = "single_label_classification";
  }
  return c;
}

NamedTensors HfTestWeights(const HfTestModel& m) {
  at::manual_seed(m.seed);
  const int64_t d = m.hidden;
  NamedTensors w;
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    w.emplace_back(name + ".weight", at::randn({out, in}) / std::sqrt(static_cast<double>(in)));
    w.emplace_back(name + ".bias", 0.1 * at::randn({out}));
  };
  auto norm = [&](const std::string& name) {
    w.emplace_back(name + ".weight", 1.0 + 0.1 * at::randn({d}));
    w.emplace_back(name + ".bias", 0.1 * at::randn({d}));
  };
  const std::string e = BodyName(m, "embeddings.");
  w.emplace_back(e + "word_embeddings.weight", at::randn({m.vocab, d}));
  w.emplace_back(e + "position_embeddings.weight", at::randn({m.max_positions, d}));
  w.emplace_back(e + "token_type_embeddings.weight", at::randn({m.type_vocab, d}));
  norm(e + "LayerNorm");
  for (int64_t i = 0; i < m.layers; ++i) {
    const std::string l = BodyName(m, absl::StrCat("encoder.layer.", i, "."));
    linear(l + "attention.self.query", d, d);
    linear(l + "attention.self.key", d, d);
    linear(l + "attention.self.value", d, d);
    linear(l + "attention.output.dense", d, d);
    norm(l + "attention.output.LayerNorm");
    linear(l + "intermediate.dense", m.intermediate, d);
    linear(l + "output.dense", d, m.intermediate);
    norm(l + "output.LayerNorm");
  }
  if (IsBert(m)) linear(BodyName(m, "pooler.dense"), d, d);
  if (m.classifier && IsBert(m)) linear("classifier", m.num_labels, d);
  if (m.classifier && !IsBert(m)) {
    linear("classifier.dense", d, d);
    linear("classifier.out_proj", m.num_labels, d);
  }
  return w;
}

void WriteHfConfig(const std::string& dir, const nlohmann::json& config) {
  WriteFileOrDie(dir + "/config.json", config.dump(2));
}

void WriteHfWeights(const std::string& dir, const NamedTensors& weights, int shards) {
  if (shards == 0) {
    ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", weights).ok());
    return;
  }
  nlohmann::json map = nlohmann::json::object();
  const size_t per_shard = (weights.size() + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards);
    NamedTensors part;
    for (size_t i = s * per_shard; i < std::min(weights.size(), (s + 1) * per_shard); ++i) {
      part.push_back(weights[i]);
      map[weights[i].first] = file;
    }
    ASSERT_TRUE(WriteSafetensors(dir + "/" + file, part).ok());
  }
  const nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", map}};
  WriteFileOrDie(dir + "/model.safetensors.index.json", index.dump(2));
}

NamedTensors WriteHfTestDir(const std::string& dir, const HfTestModel& m, int shards) {
  NamedTensors weights = HfTestWeights(m);
  WriteHfConfig(dir, HfTestConfig(m));
  WriteHfWeights(dir, weights, shards);
  return weights;
}

}  // namespace twin::testing
