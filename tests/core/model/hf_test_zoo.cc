#include "tests/core/model/hf_test_zoo.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "core/status_macros.h"
#include "core/store/artifact_set.h"
#include "core/store/object_store.h"

namespace twin::testing {

std::vector<std::string> HfTestZooVocabulary() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (char c = 'a'; c <= 'z'; ++c) v.push_back(std::string(1, c));
  for (char c = 'a'; c <= 'z'; ++c) v.push_back(absl::StrCat("##", std::string(1, c)));
  for (const char* w : {"free", "money", "win", "prize", "click", "offer", "cash", "deal",
                        "sport", "match", "team", "goal", "score", "league", "coach", "season",
                        "happy", "sad", "love", "angry", "calm", "glad", "tired", "proud"}) {
    v.push_back(w);
  }
  while (v.size() < 100) v.push_back(absl::StrCat("[unused", v.size(), "]"));
  return v;
}

std::vector<std::string> HfTestZooTexts(int task, int n) {
  const std::vector<std::string> v = HfTestZooVocabulary();
  const size_t first = 5 + 52 + 8 * static_cast<size_t>(task);
  std::vector<std::string> texts;
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> words;
    for (int j = 0; j < 3 + i % 4; ++j) words.push_back(v[first + (i * 3 + j * 5) % 8]);
    texts.push_back(absl::StrJoin(words, " "));
  }
  return texts;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> PublishedTokenizer(const std::string& store,
                                                              const std::string& cache_dir) {
  ASSIGN_OR_RETURN(auto objects, OpenObjectStore(store));
  ASSIGN_OR_RETURN(LocalArtifactSet set, FetchArtifactSet(objects.get(), "LATEST", cache_dir));
  return Tokenizer::Create(set.manifest.tokenizer, set.dir);
}

absl::StatusOr<at::Tensor> HfDirLogits(const std::string& dir, const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask) {
  ASSIGN_OR_RETURN(HfModel model, LoadHfModel(dir));
  return model.encoder->Forward(input_ids, attention_mask, DenseParams(model.body),
                                DenseParams(model.head));
}

HfTestZoo WriteHfTestZoo(const std::string& dir, const HfTestZooOptions& options) {
  HfTestZoo zoo;
  zoo.tasks = {"spam", "topic", "mood"};
  HfTestModel& m = zoo.base;
  m.model_type = "bert";
  m.pad = 0;
  m.num_labels = 2;
  zoo.base_dir = dir + "/base";
  std::filesystem::create_directories(zoo.base_dir);
  const NamedTensors weights = WriteHfTestDir(zoo.base_dir, m);
  std::ofstream(zoo.base_dir + "/vocab.txt") << absl::StrJoin(HfTestZooVocabulary(), "\n") << "\n";
  std::ofstream(zoo.base_dir + "/tokenizer_config.json") << R"({"do_lower_case": true})";
  std::string yaml = absl::StrCat("base_model: ", zoo.base_dir, "\nmodels:\n");
  for (size_t t = 0; t < zoo.tasks.size(); ++t) {
    // Each expert: the base plus its own deltas, and its own head of 2 + t classes.
    HfTestModel e = m;
    e.seed = 10 + t;
    e.num_labels = 2 + static_cast<int64_t>(t);
    const NamedTensors delta = HfTestWeights(e);
    NamedTensors expert;
    for (size_t i = 0; i < weights.size(); ++i) {
      const bool head = weights[i].first.rfind("classifier.", 0) == 0;
      expert.emplace_back(weights[i].first,
                          head ? delta[i].second : weights[i].second + 0.2 * delta[i].second);
    }
    const std::string expert_dir = absl::StrCat(dir, "/", zoo.tasks[t]);
    std::filesystem::create_directories(expert_dir);
    WriteHfConfig(expert_dir, HfTestConfig(e));
    WriteHfWeights(expert_dir, expert, /*shards=*/t == 1 ? 2 : 0);
    zoo.expert_dirs.push_back(expert_dir);
    const std::string data = absl::StrCat(dir, "/", zoo.tasks[t], ".txt");
    std::ofstream(data) << absl::StrJoin(HfTestZooTexts(static_cast<int>(t), options.router_texts),
                                         "\n")
                        << "\n";
    absl::StrAppend(&yaml, "  - {model: ", expert_dir, ", name: ", zoo.tasks[t],
                    ", router_data: ", data, "}\n");
  }
  zoo.store = dir + "/store";
  absl::StrAppend(&yaml, "output: ", zoo.store, "\ntwin: {rank_policy: ratio, ratio: ",
                  options.ratio, ", from_layer: ", options.from_layer, "}\n",
                  "router: {max_epochs: 30, features: ", options.router_features,
                  "}\nversion: ", options.version, "\n");
  zoo.merge_yaml = yaml;
  return zoo;
}

std::vector<std::string> HfTestZooServingTexts(int n) {
  std::vector<std::string> texts;
  for (int t = 0; t < 3; ++t) {
    for (const std::string& s : HfTestZooTexts(t, n)) texts.push_back(s + " deal sport");
  }
  return texts;
}

}  // namespace twin::testing
