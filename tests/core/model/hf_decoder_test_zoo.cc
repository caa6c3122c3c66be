#include "tests/core/model/hf_decoder_test_zoo.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/text/bpe.h"
#include "core/text/internal/unicode.h"

namespace twin::testing {

std::string HfDecoderTestTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    text_internal::AppendUtf8(ByteToUnicode(static_cast<uint8_t>(b)), &s);
    vocab[s] = b;
  }
  const nlohmann::json tokenizer = {
      {"added_tokens", {{{"id", kZooEosId}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  return tokenizer.dump();
}

std::vector<std::string> HfDecoderTestZooPrompts(int task, int n) {
  // Disjoint alphabets: a-h, i-p, q-x.
  const char first = static_cast<char>('a' + 8 * task);
  std::mt19937 rng(100 + task);
  std::vector<std::string> prompts;
  for (int i = 0; i < n; ++i) {
    std::string prompt;
    const int words = 2 + static_cast<int>(rng() % 4);
    for (int w = 0; w < words; ++w) {
      if (w > 0) prompt += ' ';
      const int letters = 2 + static_cast<int>(rng() % 5);
      for (int l = 0; l < letters; ++l) prompt += static_cast<char>(first + rng() % 8);
    }
    prompts.push_back(prompt);
  }
  return prompts;
}

HfDecoderTestZoo WriteHfDecoderTestZoo(const std::string& dir,
                                       const HfDecoderTestZooOptions& options) {
  HfDecoderTestZoo zoo;
  zoo.base.model_type = options.model_type;
  zoo.base.tie = options.tie;
  zoo.base.vocab = 260;
  zoo.base.max_positions = 96;
  zoo.base_dir = dir + "/base";
  zoo.tasks = {"alpha", "beta", "gamma"};
  std::filesystem::create_directories(zoo.base_dir);
  nlohmann::json config = HfDecoderTestConfig(zoo.base);
  config["eos_token_id"] = kZooEosId;
  WriteHfConfig(zoo.base_dir, config);
  const NamedTensors weights = HfDecoderTestWeights(zoo.base);
  WriteHfWeights(zoo.base_dir, weights);
  std::ofstream(zoo.base_dir + "/tokenizer.json") << HfDecoderTestTokenizerJson();
  std::string yaml = absl::StrCat("base_model: ", zoo.base_dir, "\nmodels:\n");
  for (size_t t = 0; t < zoo.tasks.size(); ++t) {
    HfTestDecoder e = zoo.base;
    e.seed = 10 + t;
    const NamedTensors delta = HfDecoderTestWeights(e);
    NamedTensors expert;
    for (size_t i = 0; i < weights.size(); ++i) {
      expert.emplace_back(weights[i].first, weights[i].second + 0.2 * delta[i].second);
    }
    const std::string expert_dir = absl::StrCat(dir, "/", zoo.tasks[t]);
    std::filesystem::create_directories(expert_dir);
    WriteHfConfig(expert_dir, config);
    WriteHfWeights(expert_dir, expert, /*shards=*/t == 1 ? 2 : 0);
    zoo.expert_dirs.push_back(expert_dir);
    const std::string data = absl::StrCat(dir, "/", zoo.tasks[t], ".txt");
    std::ofstream(data) << absl::StrJoin(
                               HfDecoderTestZooPrompts(static_cast<int>(t), options.router_texts),
                               "\n")
                        << "\n";
    absl::StrAppend(&yaml, "  - {model: ", expert_dir, ", name: ", zoo.tasks[t],
                    ", router_data: ", data, "}\n");
  }
  zoo.store = dir + "/store";
  // The router on unigram counts: the prompts are random draws from each task's letters, so
  // their 2- and 3-grams are noise that a router trained on a few dozen prompts per task would
  // fit instead of the letters.
  absl::StrAppend(&yaml, "output: ", zoo.store,
                  "\ntwin: {rank_policy: ratio, ratio: ", options.ratio, "}\n",
                  "router: ", kHfDecoderTestZooRouter, "\nversion: ", options.version, "\n");
  zoo.merge_yaml = yaml;
  return zoo;
}

}  // namespace twin::testing
