#include "bench/zoo/llama_zoo.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/zoo/causal_eval.h"
#include "bench/zoo/causal_tasks.h"
#include "bench/zoo/llama_byte_model.h"
#include "core/model/hf_decoder.h"
#include "core/model/layer_params.h"
#include "core/text/hf_tokenizer.h"
#include "tests/core/model/hf_decoder_test_models.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin::zoo {
namespace {

using twin::testing::ForwardError;
using twin::testing::ReadFileOrDie;
using twin::testing::TempDir;

// Synthetic corpora in the shape of the byte zoo's (DATA.md): the five corpora the generative
// tasks read, two labels each, words drawn from a vocabulary per label (German with umlauts,
// so that multi-byte UTF-8 is cut and encoded), code with nested brackets over several lines.
const std::map<std::string, std::vector<std::pair<std::string, std::vector<std::string>>>>&
Vocabularies() {
  static const auto* v =
      new std::map<std::string, std::vector<std::pair<std::string, std::vector<std::string>>>>{
          {"spam",
           {{"ham", {"meeting", "patch", "list", "thanks", "review", "build", "notes", "the"}},
            {"spam", {"free", "money", "offer", "winner", "cheap", "click", "deal", "cash"}}}},
          {"lang",
           {{"de", {"das", "Haus", "ist", "klein", "und", "grün", "Wasser", "über"}},
            {"en", {"the", "house", "is", "small", "and", "green", "water", "over"}}}},
          {"manual",
           {{"1", {"print", "the", "file", "names", "option", "output", "with", "each"}},
            {"2", {"return", "the", "call", "fails", "errno", "set", "value", "on"}}}},
          {"topic",
           {{"people", {"a", "man", "who", "never", "said", "friend", "wife", "always"}},
            {"work", {"the", "boss", "job", "office", "meeting", "money", "hours", "never"}}}},
      };
  return *v;
}

std::string Words(const std::vector<std::string>& vocab, std::mt19937& rng, int n) {
  std::vector<std::string> words;
  for (int i = 0; i < n; ++i) words.push_back(vocab[rng() % vocab.size()]);
  return absl::StrJoin(words, " ");
}

// A call with nested brackets, e.g. "get(foo[bar], {baz})".
std::string Call(std::mt19937& rng, int depth) {
  static const char* const kNames[] = {"foo", "bar", "baz", "run", "get", "x"};
  static const char kOpen[] = "([{", kClose[] = ")]}";
  std::string s = kNames[rng() % 6];
  if (depth >= 3 || (depth > 0 && rng() % 3 == 0)) return s;
  const int k = static_cast<int>(rng() % 3);
  s += kOpen[k];
  const int args = 1 + static_cast<int>(rng() % 2);
  for (int a = 0; a < args; ++a) s += (a ? ", " : "") + Call(rng, depth + 1);
  return s + kClose[k];
}

std::string SyntheticText(const std::string& corpus, int label, std::mt19937& rng) {
  if (corpus == "code") {
    std::vector<std::string> lines;
    const char* const end = label ? ";" : ":";
    for (int i = 0; i < 4; ++i)
      lines.push_back(std::string(label ? "  " : "    ") + Call(rng, 0) + end);
    return absl::StrJoin(lines, "\n");
  }
  return Words(Vocabularies().at(corpus)[label].second, rng, 8 + static_cast<int>(rng() % 10));
}

void WriteData(const std::string& dir) {
  const std::pair<const char*, int> splits[] = {{"train", 64}, {"validation", 24}, {"test", 16}};
  std::mt19937 rng(11);
  for (const char* corpus : {"spam", "lang", "manual", "code", "topic"}) {
    for (const auto& [split, rows] : splits) {
      std::ofstream out(std::string(dir) + "/" + corpus + "." + split + ".tsv");
      for (int i = 0; i < rows; ++i) {
        const int label = i % 2;
        const std::string name = std::string(corpus) == "code"
                                     ? (label ? "c" : "python")
                                     : Vocabularies().at(corpus)[label].first;
        out << name << '\t' << EscapeTsvText(SyntheticText(corpus, label, rng)) << '\n';
      }
    }
  }
}

LlamaZooOptions SmokeOptions() {
  auto o = LlamaZooPreset("smoke");
  EXPECT_TRUE(o.ok()) << o.status();
  o->seed = 3;
  return *o;
}

// rounding.h's bound for the native forward of `o` on `len` ids, its chained reductions counted
// as for the decoder tests' models.
double ParityBound(const ByteLlamaOptions& o, int64_t len, double scale) {
  twin::testing::HfTestDecoder m;
  m.hidden = o.dim;
  m.layers = o.layers;
  m.heads = o.heads;
  m.kv_heads = o.kv_heads;
  m.intermediate = o.ff_dim;
  return ForwardError(twin::testing::HfDecoderDepth(m), twin::testing::HfDecoderWidth(m, len),
                      scale);
}

class LlamaZooTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir;
    out_ = new TempDir;
    WriteData(data_->path());
    auto report = BuildLlamaByteZoo(data_->path(), out_->path(), SmokeOptions());
    ASSERT_TRUE(report.ok()) << report.status();
    report_ = new LlamaZooReport(*std::move(report));
  }
  static void TearDownTestSuite() {
    delete report_;
    delete out_;
    delete data_;
  }
  void SetUp() override { ASSERT_NE(report_, nullptr) << "the zoo was not built"; }

  static std::string Dir(const std::string& name) { return out_->Join(name); }
  static std::vector<std::string> Names() {
    std::vector<std::string> names = {"base"};
    for (const LlamaZooTask& t : report_->tasks) names.push_back(t.name);
    return names;
  }

  static TempDir* data_;
  static TempDir* out_;
  static LlamaZooReport* report_;
};

TempDir* LlamaZooTest::data_ = nullptr;
TempDir* LlamaZooTest::out_ = nullptr;
LlamaZooReport* LlamaZooTest::report_ = nullptr;

TEST_F(LlamaZooTest, EveryDirectoryLoadsWithTheNativeLoader) {
  const LlamaZooOptions o = SmokeOptions();
  ASSERT_EQ(report_->tasks.size(), 5u);
  for (const std::string& name : Names()) {
    auto lm = LoadHfCausalLm(Dir(name));
    ASSERT_TRUE(lm.ok()) << name << ": " << lm.status();
    const HfDecoderConfig& c = lm->decoder->config();
    EXPECT_EQ(c.family, HfDecoderFamily::kLlama) << name;
    EXPECT_EQ(c.architecture, "LlamaForCausalLM");
    EXPECT_EQ(c.vocab_size, kLlamaVocab);
    EXPECT_EQ(c.hidden_size, o.model.dim);
    EXPECT_EQ(c.num_hidden_layers, o.model.layers);
    EXPECT_EQ(c.num_key_value_heads, o.model.kv_heads);
    EXPECT_EQ(c.max_position_embeddings, o.model.max_len);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{kLlamaEosId}));
    EXPECT_EQ(c.bos_token_id, kLlamaBosId);
    EXPECT_TRUE(lm->ignored.empty()) << name;
    EXPECT_EQ(lm->weights.count("lm_head.weight"), 0u) << name << ": tied";
    int64_t parameters = 0;
    for (const auto& [n, t] : lm->weights) parameters += t.numel();
    EXPECT_EQ(parameters, report_->parameters) << name;

    auto tokenizer = HfTokenizer::Load(Dir(name));
    ASSERT_TRUE(tokenizer.ok()) << name << ": " << tokenizer.status();
    EXPECT_EQ((*tokenizer)->vocab_size(), kLlamaVocab);
    EXPECT_EQ((*tokenizer)->pad_id(), kLlamaPadId);
    auto e = (*tokenizer)->Encode("a ü<|endoftext|>");
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->ids, (std::vector<int64_t>{kLlamaBosId, 'a', ' ', 0xC3, 0xBC, kLlamaEosId}));
    EXPECT_EQ((*tokenizer)->Decode({kLlamaBosId, 'h', 0xC3, 0xA9}, true), "hé");
  }
}

// The zoo's own check: each written directory's native logits against the module it trained.
TEST_F(LlamaZooTest, NativeLogitsMatchTheTrainedModule) {
  const LlamaZooOptions o = SmokeOptions();
  EXPECT_EQ(report_->parity_rows, 16 * 5);
  ASSERT_GT(report_->parity_max_len, 1);
  ASSERT_LE(report_->parity_max_len, o.model.max_len);
  std::vector<std::pair<std::string, HfNativeParity>> checks = {{"base", report_->base_parity}};
  for (const LlamaZooTask& t : report_->tasks) checks.emplace_back(t.name, t.parity);
  for (const auto& [name, p] : checks) {
    EXPECT_GT(p.max_abs_logit, 0) << name;
    EXPECT_LE(p.max_abs_diff, ParityBound(o.model, report_->parity_max_len, p.max_abs_logit))
        << name << " at logit scale " << p.max_abs_logit;
  }
}

TEST_F(LlamaZooTest, ExpertsBeatTheBaseOnTheirOwnTask) {
  const LlamaZooOptions o = SmokeOptions();
  EXPECT_LT(report_->pretraining.final_loss, std::log(static_cast<double>(kLlamaVocab)) - 1.0);
  for (const LlamaZooTask& t : report_->tasks) {
    EXPECT_EQ(t.expert.examples, std::min(t.validation_examples, o.max_eval_examples)) << t.name;
    EXPECT_EQ(t.base.target_tokens, t.expert.target_tokens) << t.name;
    EXPECT_LT(t.expert.mean_loss, t.base.mean_loss) << t.name;
    EXPECT_GE(t.expert.exact_match, t.base.exact_match) << t.name;
    EXPECT_GT(t.train_examples, 0) << t.name;
  }
}

TEST_F(LlamaZooTest, WritesTheRouterTestDataAndMergeYaml) {
  const std::string yaml = ReadFileOrDie(out_->Join("merge.yaml"));
  EXPECT_TRUE(absl::StrContains(yaml, "base_model: base\n")) << yaml;
  EXPECT_TRUE(absl::StrContains(yaml, "features: ngram")) << yaml;
  for (const LlamaZooTask& t : report_->tasks) {
    EXPECT_TRUE(absl::StrContains(yaml, "  - model: " + t.name + "\n")) << yaml;
    EXPECT_TRUE(absl::StrContains(yaml, "router_data: " + t.name + ".router.txt\n")) << yaml;
    const std::vector<std::string> lines =
        absl::StrSplit(ReadFileOrDie(Dir(t.name + ".router.txt")), '\n', absl::SkipEmpty());
    EXPECT_EQ(static_cast<int64_t>(lines.size()), t.train_examples) << t.name;
    auto validation = ReadCausalPairsJsonl(Dir(t.name + ".validation.jsonl"));
    ASSERT_TRUE(validation.ok()) << validation.status();
    EXPECT_EQ(static_cast<int64_t>(validation->size()), t.validation_examples);
    auto test = ReadCausalPairsJsonl(Dir(t.name + ".test.jsonl"));
    ASSERT_TRUE(test.ok()) << test.status();
    EXPECT_EQ(static_cast<int64_t>(test->size()), t.test_examples);
  }
  EXPECT_TRUE(absl::StrContains(ReadFileOrDie(out_->Join("zoo.md")), "| brackets | code |"));
}

// The scores in the report are what an evaluator gets from the written files alone.
TEST_F(LlamaZooTest, ScoresAreReproducedFromTheWrittenFiles) {
  const LlamaZooOptions o = SmokeOptions();
  auto tokenizer = HfTokenizer::Load(Dir("base"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const LlamaZooTask& t : report_->tasks) {
    auto pairs = ReadCausalPairsJsonl(Dir(t.name + ".validation.jsonl"));
    ASSERT_TRUE(pairs.ok()) << pairs.status();
    pairs->resize(std::min<size_t>(pairs->size(), o.max_eval_examples));
    auto examples = EncodeCausalPairs(**tokenizer, *pairs, kLlamaEosId, o.model.max_len);
    ASSERT_TRUE(examples.ok()) << examples.status();
    auto lm = LoadHfCausalLm(Dir(t.name));
    ASSERT_TRUE(lm.ok()) << lm.status();
    auto scores =
        ScoreCausalLm(*lm->decoder, DenseParams(lm->weights), *examples, {.batch_size = 7});
    ASSERT_TRUE(scores.ok()) << scores.status();
    EXPECT_EQ(scores->exact_match, t.expert.exact_match) << t.name;
    EXPECT_NEAR(scores->mean_loss, t.expert.mean_loss, 1e-4 * t.expert.mean_loss) << t.name;
  }
}

// Greedy matches and the target loss, against the module's own forward.
TEST(CausalEvalTest, ScoresGreedyMatchesAndTargetLoss) {
  ByteLlamaOptions o;
  o.layers = 1, o.dim = 16, o.heads = 2, o.kv_heads = 1, o.ff_dim = 24, o.max_len = 24;
  auto config = ByteLlamaConfig(o);
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = MakeByteLlama(*config, 5);
  ASSERT_TRUE(model.ok()) << model.status();
  TempDir dir;
  ASSERT_TRUE(SaveByteLlama(*model, o, dir.path()).ok());
  auto lm = LoadHfCausalLm(dir.path());
  ASSERT_TRUE(lm.ok()) << lm.status();

  constexpr int kTargetTokens = 3;
  std::vector<CausalExample> right, wrong;
  double loss = 0;
  c10::InferenceMode guard;
  for (int i = 0; i < 6; ++i) {
    CausalExample e{{kLlamaBosId, 'a' + i, 'b', 'c' + i % 2}, {}};
    std::vector<int64_t> row = e.prompt;
    for (int k = 0; k < kTargetTokens; ++k) {  // the module's greedy continuation
      const at::Tensor logits = (*model)(at::tensor(row, at::kLong).unsqueeze(0));
      row.push_back(logits[0][-1].argmax().item<int64_t>());
    }
    e.target.assign(row.end() - kTargetTokens, row.end());
    const at::Tensor log_probs =
        at::log_softmax((*model)(at::tensor(row, at::kLong).unsqueeze(0))[0], -1);
    for (int k = 0; k < kTargetTokens; ++k) {
      const int64_t at_pos = static_cast<int64_t>(e.prompt.size()) - 1 + k;
      loss -= log_probs[at_pos][e.target[k]].item<double>();
    }
    right.push_back(e);
    e.target.back() = (e.target.back() + 1) % kLlamaVocab;
    wrong.push_back(e);
  }
  auto scores = ScoreCausalLm(*lm->decoder, DenseParams(lm->weights), right, {.batch_size = 4});
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_EQ(scores->examples, 6);
  EXPECT_EQ(scores->target_tokens, 6 * kTargetTokens);
  EXPECT_EQ(scores->exact_match, 1.0);
  EXPECT_NEAR(scores->mean_loss, loss / (6 * kTargetTokens), 1e-4);
  auto wrong_scores = ScoreCausalLm(*lm->decoder, DenseParams(lm->weights), wrong);
  ASSERT_TRUE(wrong_scores.ok()) << wrong_scores.status();
  EXPECT_EQ(wrong_scores->exact_match, 0.0);
  EXPECT_GT(wrong_scores->mean_loss, scores->mean_loss);
  EXPECT_FALSE(ScoreCausalLm(*lm->decoder, DenseParams(lm->weights), {}).ok());
}

TEST(CausalEvalTest, PairsRoundTripThroughJsonl) {
  const std::vector<CausalPair> pairs = {{"a \"quoted\" | spam or ham? ", "ham"},
                                         {"Женщины | language? ", "ru"},
                                         {"tab\tand\\back", "line\nbreak"}};
  auto jsonl = CausalPairsJsonl(pairs);
  ASSERT_TRUE(jsonl.ok()) << jsonl.status();
  EXPECT_EQ(std::count(jsonl->begin(), jsonl->end(), '\n'), 3);
  TempDir dir;
  twin::testing::WriteFileOrDie(dir.Join("x.jsonl"), *jsonl);
  auto read = ReadCausalPairsJsonl(dir.Join("x.jsonl"));
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    EXPECT_EQ((*read)[i].prompt, pairs[i].prompt);
    EXPECT_EQ((*read)[i].target, pairs[i].target);
  }
  EXPECT_FALSE(CausalPairsJsonl({{"\xC3", "x"}}).ok());  // not UTF-8
  twin::testing::WriteFileOrDie(dir.Join("bad.jsonl"), "{\"prompt\": \"a\"}\n");
  auto bad = ReadCausalPairsJsonl(dir.Join("bad.jsonl"));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "bad.jsonl:1")) << bad.status();
}

// The closers of the brackets open at the end of `code`, innermost first, recomputed here.
std::string OpenBrackets(const std::string& code) {
  std::string stack;
  for (char c : code) {
    if (c == '(' || c == '[' || c == '{') stack += c == '(' ? ')' : c == '[' ? ']' : '}';
    if (c == ')' || c == ']' || c == '}') stack.pop_back();
  }
  return {stack.rbegin(), stack.rend()};
}

TEST(CausalTasksTest, EveryTaskGivesOneLinePromptsThatFitWithTheirTargets) {
  TempDir data;
  WriteData(data.path());
  constexpr int64_t kMaxLen = 48;
  for (const std::string task : {"spam", "lang", "manual", "brackets", "upper"}) {
    auto corpus = CausalTaskCorpus(task);
    ASSERT_TRUE(corpus.ok()) << corpus.status();
    std::vector<std::string> labels;
    auto split = ReadTsvSplit(data.Join(*corpus + ".train.tsv"), &labels);
    ASSERT_TRUE(split.ok()) << split.status();
    auto pairs = MakeCausalPairs(task, *split, labels, kMaxLen);
    ASSERT_TRUE(pairs.ok()) << pairs.status();
    EXPECT_GE(pairs->size(), split->texts.size() / 2) << task;
    for (const CausalPair& p : *pairs) {
      EXPECT_LE(static_cast<int64_t>(p.prompt.size() + p.target.size()) + 2, kMaxLen) << task;
      EXPECT_EQ(p.prompt.find('\n'), std::string::npos) << task;
      ASSERT_FALSE(p.target.empty()) << task << ": " << p.prompt;
      if (task == "spam" || task == "lang") {
        EXPECT_NE(std::find(labels.begin(), labels.end(), p.target), labels.end()) << p.target;
      } else if (task == "manual") {
        EXPECT_TRUE(absl::EndsWith(p.prompt, " ")) << p.prompt;
        EXPECT_EQ(p.target.find(' '), std::string::npos) << p.target;
      } else if (task == "brackets") {
        ASSERT_TRUE(absl::EndsWith(p.prompt, " | close: ")) << p.prompt;
        const std::string code = p.prompt.substr(0, p.prompt.size() - 10);
        EXPECT_EQ(p.target, OpenBrackets(code)) << code;
      } else {
        ASSERT_TRUE(absl::EndsWith(p.prompt, " | upper: ")) << p.prompt;
        EXPECT_EQ(p.target, absl::AsciiStrToUpper(p.prompt.substr(0, p.prompt.size() - 10)));
      }
    }
  }
  EXPECT_FALSE(CausalTaskCorpus("poetry").ok());
  EXPECT_FALSE(MakeCausalPairs("spam", {{"x"}, {0}}, {"ham", "spam"}, 8).ok());
}

TEST(CausalTasksTest, BracketsSkipCodeThatClosesWhatItDidNotOpen) {
  const TextSplit split{
      {"}) if (x) { call(a[1], b)", "int main(int argc, char** argv) { return f(g("}, {0, 0}};
  auto pairs = MakeCausalPairs("brackets", split, {"c"}, 48);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 1u);
  EXPECT_TRUE(absl::StartsWith((*pairs)[0].prompt, "int main(int")) << (*pairs)[0].prompt;
}

TEST(CausalTasksTest, TextsBecomeOneLineCutAtCharacters) {
  EXPECT_EQ(OneLine("  a\n\tb  c \n"), "a b c");
  EXPECT_EQ(OneLine(""), "");
  EXPECT_EQ(CutUtf8("hé!", 2), "h");
  EXPECT_EQ(CutUtf8("hé!", 3), "hé");
  EXPECT_EQ(CutUtf8("abc", 5), "abc");
}

TEST(ByteLlamaTest, ConfigJsonIsWhatTheLoaderReads) {
  ByteLlamaOptions o;
  o.kv_heads = 4;
  auto config = ByteLlamaConfig(o);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "llama");
  EXPECT_EQ(config->head_dim, o.dim / o.heads);
  EXPECT_EQ(config->kv_group(), 1);
  EXPECT_EQ(config->pad_token_id, kLlamaPadId);
  o.kv_heads = 3;  // does not divide 4 heads
  EXPECT_FALSE(ByteLlamaConfig(o).ok());
  EXPECT_FALSE(LlamaZooPreset("full").ok());
}

// An untied model writes its lm_head, and the native engine reads it.
TEST(ByteLlamaTest, UntiedModelWritesItsHeadAndMatchesTheNativeLogits) {
  ByteLlamaOptions o;
  o.layers = 2, o.dim = 16, o.heads = 4, o.kv_heads = 2, o.ff_dim = 24, o.max_len = 16;
  o.tie_word_embeddings = false;
  auto config = ByteLlamaConfig(o);
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = MakeByteLlama(*config, 9);
  ASSERT_TRUE(model.ok()) << model.status();
  TempDir dir;
  ASSERT_TRUE(SaveByteLlama(*model, o, dir.path()).ok());
  auto lm = LoadHfCausalLm(dir.path());
  ASSERT_TRUE(lm.ok()) << lm.status();
  ASSERT_EQ(lm->weights.count("lm_head.weight"), 1u);
  const std::vector<int64_t> row = {kLlamaBosId, 'x', 'y', 'z', ' ', 0xC3, 0xA9, kLlamaEosId};
  auto native = lm->decoder->Logits({row}, DenseParams(lm->weights));
  ASSERT_TRUE(native.ok()) << native.status();
  c10::InferenceMode guard;
  const at::Tensor ours = (*model)(at::tensor(row, at::kLong).unsqueeze(0));
  const double scale = ours.abs().max().item<double>();
  EXPECT_LE((*native - ours).abs().max().item<double>(),
            ParityBound(o, static_cast<int64_t>(row.size()), scale));
}

}  // namespace
}  // namespace twin::zoo
