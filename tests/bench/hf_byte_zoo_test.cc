#include "bench/zoo/hf_byte_zoo.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/zoo/hf_byte_model.h"
#include "core/io/safetensors.h"
#include "core/model/hf_encoder.h"
#include "core/model/hf_script.h"
#include "core/model/layer_params.h"
#include "core/text/hf_tokenizer.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin::zoo {
namespace {

using twin::testing::ForwardError;
using twin::testing::TempDir;

constexpr int64_t kMaxLen = 24;
const char* const kTasks[] = {"letters", "digits"};

// Texts of two easy tasks: `letters` tells runs of a-c from runs of x-z, `digits` low digits
// from high ones. Every fourth text carries multi-byte UTF-8, a tab or a newline, and some are
// longer than the model's input, so truncation and bytes >= 0x80 are exercised.
std::string SyntheticText(int task, int label, int i) {
  static const char* const kExtras[] = {"é", "\t", "жж", "\n", "€", "🙂"};
  std::string text;
  const int len = 4 + (i * 7) % 30;
  for (int j = 0; j < len; ++j) {
    text += task == 0 ? static_cast<char>((label ? 'x' : 'a') + (i + j) % 3)
                      : static_cast<char>((label ? '5' : '0') + (i + 2 * j) % 5);
    if (j % 5 == 4) text += ' ';
  }
  if (i % 4 == 0) text += kExtras[(i / 4) % 6];
  return text;
}

// Writes <task>.{train,validation,test}.tsv; returns each split's texts by "task.split".
std::map<std::string, std::vector<std::string>> WriteData(const std::string& dir) {
  std::map<std::string, std::vector<std::string>> texts;
  const std::pair<const char*, int> splits[] = {{"train", 96}, {"validation", 24}, {"test", 24}};
  for (int task = 0; task < 2; ++task) {
    int offset = 0;
    for (const auto& [split, rows] : splits) {
      std::ofstream out(std::string(dir) + "/" + kTasks[task] + "." + split + ".tsv");
      auto& list = texts[std::string(kTasks[task]) + "." + split];
      for (int i = 0; i < rows; ++i) {
        const int label = i % 2;
        const std::string text = SyntheticText(task, label, offset + i);
        out << (task == 0 ? (label ? "late" : "early") : (label ? "high" : "low")) << '\t'
            << EscapeTsvText(text) << '\n';
        list.push_back(text);
      }
      offset += rows;
    }
  }
  return texts;
}

ByteZooOptions TinyOptions() {
  ByteZooOptions o;
  o.size = "test";
  o.tasks = {kTasks[0], kTasks[1]};
  o.model.layers = 2;
  o.model.dim = 16;
  o.model.heads = 2;
  o.model.ff_dim = 32;
  o.model.max_len = kMaxLen;
  o.pretrain.steps = 60;
  o.pretrain.batch_size = 16;
  o.pretrain.learning_rate = 3e-3;
  o.finetune.steps = 60;
  o.finetune.batch_size = 16;
  o.finetune.learning_rate = 3e-3;
  o.seed = 5;
  return o;
}

// The ids the zoo promises: <s>, byte b as b + 4 (at most max_len - 2 of them), </s>.
std::vector<int64_t> ExpectedIds(const std::string& text) {
  std::vector<int64_t> ids = {kHfBosId};
  for (size_t i = 0; i < text.size() && static_cast<int64_t>(i) < kMaxLen - 2; ++i) {
    ids.push_back(kByteOffset + static_cast<unsigned char>(text[i]));
  }
  ids.push_back(kHfEosId);
  return ids;
}

// The native forward's shape for ForwardError, as tests/core/model/hf_test_models.h counts it:
// nine chained reductions per layer, four outside them; the widest is the feed-forward, the
// width or the sequence.
int Depth(const ByteZooOptions& o) { return 9 * static_cast<int>(o.model.layers) + 4; }
int64_t Width(const ByteZooOptions& o) {
  return std::max({o.model.dim, o.model.ff_dim, o.model.max_len});
}

at::Tensor Read(const std::string& path, const std::string& name) {
  auto reader = SafetensorsReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  auto t = (*reader)->Get(name);
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

class HfByteZooTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir;
    out_ = new TempDir;
    texts_ = new std::map<std::string, std::vector<std::string>>(WriteData(data_->path()));
    auto report = BuildHfByteZoo(data_->path(), out_->path(), TinyOptions());
    ASSERT_TRUE(report.ok()) << report.status();
    report_ = new HfByteZooReport(*std::move(report));
  }
  static void TearDownTestSuite() {
    delete report_;
    delete texts_;
    delete out_;
    delete data_;
  }
  void SetUp() override { ASSERT_NE(report_, nullptr) << "the zoo was not built"; }

  static std::string Dir(const std::string& name) { return out_->Join(name); }

  static TempDir* data_;
  static TempDir* out_;
  static std::map<std::string, std::vector<std::string>>* texts_;
  static HfByteZooReport* report_;
};

TempDir* HfByteZooTest::data_ = nullptr;
TempDir* HfByteZooTest::out_ = nullptr;
std::map<std::string, std::vector<std::string>>* HfByteZooTest::texts_ = nullptr;
HfByteZooReport* HfByteZooTest::report_ = nullptr;

TEST_F(HfByteZooTest, EveryDirectoryLoadsWithTheNativeLoader) {
  const std::map<std::string, std::vector<std::string>> labels = {
      {"base", {"LABEL_0", "LABEL_1"}}, {"letters", {"early", "late"}}, {"digits", {"high", "low"}}};
  for (const auto& [name, want] : labels) {
    auto model = LoadHfModel(Dir(name));
    ASSERT_TRUE(model.ok()) << name << ": " << model.status();
    const HfEncoderConfig& c = model->encoder->config();
    EXPECT_EQ(c.family, HfFamily::kRoberta) << name;
    EXPECT_EQ(c.architecture, "RobertaForSequenceClassification") << name;
    EXPECT_EQ(c.labels, want) << name;
    EXPECT_EQ(c.vocab_size, kByteVocab);
    EXPECT_EQ(c.pad_token_id, kHfPadId);
    EXPECT_EQ(c.type_vocab_size, 1);
    EXPECT_EQ(c.layer_norm_eps, 1e-5);
    EXPECT_EQ(c.max_position_embeddings, kMaxLen + 2);
    EXPECT_EQ(model->encoder->max_input_length(), kMaxLen);
    EXPECT_EQ(c.hidden_size, 16);
    EXPECT_EQ(c.num_hidden_layers, 2);
    EXPECT_TRUE(model->ignored.empty()) << name << ": the lm_head must not be written";
    EXPECT_EQ(model->head.size(), 4u) << name;  // classifier.{dense,out_proj}.{weight,bias}
  }
  std::ifstream yaml(out_->Join("merge.yaml"));
  std::string text((std::istreambuf_iterator<char>(yaml)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("base_model: base\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  - model: letters\n"), std::string::npos) << text;
  EXPECT_NE(text.find("features: ngram"), std::string::npos) << text;
}

// The zoo's own check: the written directory's native forward against the module it trained.
TEST_F(HfByteZooTest, NativeForwardMatchesTheTrainedModule) {
  const ByteZooOptions o = TinyOptions();
  ASSERT_EQ(report_->parity.size(), 2u);
  for (size_t i = 0; i < report_->parity.size(); ++i) {
    const HfNativeParity& p = report_->parity[i];
    EXPECT_GT(p.max_abs_logit, 0);
    EXPECT_LE(p.max_abs_diff, ForwardError(Depth(o), Width(o), p.max_abs_logit))
        << kTasks[i] << " at logit scale " << p.max_abs_logit;
  }
}

// The same on the test rows, with the TorchScript module rebuilt from the written weights.
TEST_F(HfByteZooTest, NativeForwardMatchesTorchScriptOnTheTestRows) {
  const ByteZooOptions o = TinyOptions();
  for (const char* task : kTasks) {
    auto model = LoadHfModel(Dir(task));
    ASSERT_TRUE(model.ok()) << model.status();
    std::map<std::string, at::Tensor> weights = model->body;
    weights.insert(model->head.begin(), model->head.end());
    auto script = MakeHfScriptModule(model->encoder->config(), weights);
    ASSERT_TRUE(script.ok()) << script.status();
    const std::string test = out_->Join(std::string(task) + ".test.safetensors");
    const at::Tensor ids = Read(test, "input_ids"), mask = Read(test, "attention_mask");
    DenseParams body(model->body), head(model->head);
    auto native = model->encoder->Forward(ids, mask, body, head);
    ASSERT_TRUE(native.ok()) << native.status();
    c10::InferenceMode guard;
    const at::Tensor want = script->forward({ids, mask}).toTensor();
    const double scale = want.abs().max().item<double>();
    EXPECT_LE((*native - want).abs().max().item<double>(), ForwardError(Depth(o), Width(o), scale))
        << task;
  }
}

TEST_F(HfByteZooTest, TokenizerJsonGivesTheZoosIds) {
  for (const char* dir : {"base", "letters", "digits"}) {
    auto tokenizer = HfTokenizer::Load(Dir(dir));
    ASSERT_TRUE(tokenizer.ok()) << dir << ": " << tokenizer.status();
    EXPECT_EQ((*tokenizer)->pad_id(), kHfPadId);
    EXPECT_EQ((*tokenizer)->vocab_size(), kByteVocab);
    for (const char* task : kTasks) {
      for (const auto& [split, file] : {std::pair<std::string, std::string>{"test", ".test"},
                                        {"train", ".router"}}) {
        const std::vector<std::string>& texts = texts_->at(std::string(task) + "." + split);
        const std::string path = out_->Join(std::string(task) + file + ".safetensors");
        const at::Tensor ids = Read(path, "input_ids"), mask = Read(path, "attention_mask");
        ASSERT_EQ(ids.size(0), static_cast<int64_t>(texts.size()));
        for (size_t i = 0; i < texts.size(); ++i) {
          auto e = (*tokenizer)->Encode(texts[i], {.max_length = static_cast<int>(kMaxLen)});
          ASSERT_TRUE(e.ok()) << e.status();
          const std::vector<int64_t> want = ExpectedIds(texts[i]);
          ASSERT_EQ(e->ids, want) << dir << " " << path << " row " << i;
          const int64_t n = static_cast<int64_t>(want.size());
          ASSERT_EQ(mask[i].sum().item<int64_t>(), n) << path << " row " << i;
          const at::Tensor row = ids[i].slice(0, 0, n);
          EXPECT_TRUE(row.equal(at::tensor(want, at::kLong))) << path << " row " << i;
          EXPECT_TRUE(ids[i].slice(0, n).eq(kHfPadId).all().item<bool>()) << path << " row " << i;
        }
      }
    }
  }
}

// Every byte a UTF-8 text can hold is one token, b + 4, in byte order.
TEST(HfByteTokenizerTest, EveryByteOfUtf8IsOneToken) {
  auto tokenizer = HfTokenizer::FromTokenizerJson(HfByteTokenizerJson(), "tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::string text(1, '\0');
  for (int c = 1; c < 0x80; ++c) text += static_cast<char>(c);
  text += "\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBD\xF0\x9F\x99\x82\xF4\x8F\xBF\xBF";
  text += "  leading  and trailing  ";
  auto e = (*tokenizer)->Encode(text);
  ASSERT_TRUE(e.ok()) << e.status();
  std::vector<int64_t> want = {kHfBosId};
  for (unsigned char b : text) want.push_back(kByteOffset + b);
  want.push_back(kHfEosId);
  EXPECT_EQ(e->ids, want);
  // The special tokens are added tokens: written in a text, they are themselves.
  auto special = (*tokenizer)->Encode("a<unk>b", {.add_special_tokens = false});
  ASSERT_TRUE(special.ok());
  EXPECT_EQ(special->ids, (std::vector<int64_t>{kByteOffset + 'a', kHfUnkId, kByteOffset + 'b'}));
}

// Masked-byte loss at initialisation is about ln(vocab) (small weights: near-uniform logits);
// fine-tuning starts near ln(classes). Both end well below, and the experts learned the tasks.
TEST_F(HfByteZooTest, TrainingLoweredTheLoss) {
  const ByteZooReport& r = report_->zoo;
  EXPECT_EQ(r.pretraining.steps, TinyOptions().pretrain.steps);
  EXPECT_LT(r.pretraining.final_loss, std::log(static_cast<double>(kByteVocab)) - 1.0);
  ASSERT_EQ(r.tasks.size(), 2u);
  for (const ByteZooTask& t : r.tasks) {
    EXPECT_LT(t.training.final_loss, 0.5 * std::log(2.0)) << t.name;
    EXPECT_GE(t.validation_accuracy, 0.9) << t.name;
  }
}

TEST(HfByteModelTest, PretrainingLowersTheMaskedByteLoss) {
  ByteTransformerOptions o;
  o.layers = 1, o.dim = 16, o.heads = 2, o.ff_dim = 32, o.max_len = kMaxLen;
  auto config = HfByteConfig(o, {"a", "b"});
  ASSERT_TRUE(config.ok()) << config.status();
  auto module = MakeHfBytePretrainer(*config, 3);
  ASSERT_TRUE(module.ok()) << module.status();
  TempDir dir;  // tokenizer.json names no pad token; tokenizer_config.json does
  ASSERT_TRUE(WriteHfByteTokenizer(o, dir.path()).ok());
  auto tokenizer = HfTokenizer::Load(dir.path());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  TextSplit corpus;
  for (int i = 0; i < 64; ++i) corpus.texts.push_back(SyntheticText(i % 2, i / 2 % 2, i));
  auto data = HfTokenize(**tokenizer, corpus, kMaxLen);
  ASSERT_TRUE(data.ok()) << data.status();
  TrainOptions t;
  t.batch_size = 16;
  t.learning_rate = 3e-3;
  t.steps = 1;
  auto first = PretrainMaskedBytes(*module, *data, t);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NEAR(first->final_loss, std::log(static_cast<double>(kByteVocab)), 0.2);
  t.steps = 80;
  auto trained = PretrainMaskedBytes(*module, *data, t);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_LT(trained->final_loss, first->final_loss - 1.0);
}

TEST(HfByteModelTest, ConfigJsonIsWhatTheLoaderReads) {
  ByteTransformerOptions o;
  o.max_len = 40;
  auto config = HfByteConfig(o, {"neg", "pos", "mixed"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->has_classifier);
  EXPECT_EQ(config->model_type, "roberta");
  EXPECT_EQ(config->labels, (std::vector<std::string>{"neg", "pos", "mixed"}));
  EXPECT_EQ(config->max_position_embeddings, 42);
  EXPECT_EQ(config->hidden_act, HfActivation::kGelu);
  EXPECT_EQ(config->intermediate_size, o.ff_dim);
  EXPECT_FALSE(HfByteConfig(o, {}).ok());
}

}  // namespace
}  // namespace twin::zoo
