// Parity of HfTokenizer with Hugging Face's Tokenizers.js on real vocabularies and on
// SentencePiece models trained for the test.
// tests/text/run_parity.sh generates the fixtures (tests/text/make_fixtures.mjs) and runs this
// with TWIN_HF_PARITY_DIR set. Encode: each tokenizer, loaded from its tokenizer.json directory
// and (where it has one) from its vocab.txt / vocab.json + merges.txt directory, must give the
// reference ids for every text; a SentencePiece model from its tokenizer.model directory, and
// the Unigram one also from the tokenizer.json that Tokenizers.js encoded with. Decode: the
// reference ids must decode to Tokenizers.js's text, keeping and skipping the special tokens, and
// an HfTokenStream fed them one at a time must give Decode's text exactly.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/text/hf_tokenizer.h"

namespace twin {
namespace {

struct Reference {
  std::string dir;
  std::vector<std::string> texts;
  nlohmann::json tokenizers;            // name -> ids per text
  nlohmann::json decoded;               // name -> Tokenizers.js's decode of those ids per text
  nlohmann::json decoded_skip_special;  // the same, skipping special tokens
  nlohmann::json plain;  // name -> ids per text without special tokens (SentencePiece cases)
};

const Reference& GetReference() {
  static const Reference* ref = [] {
    auto* r = new Reference;
    const char* dir = std::getenv("TWIN_HF_PARITY_DIR");
    if (dir == nullptr) return r;
    r->dir = dir;
    std::ifstream in(r->dir + "/reference.json");
    if (!in) return r;
    nlohmann::json root = nlohmann::json::parse(in);
    r->texts = root["texts"].get<std::vector<std::string>>();
    r->tokenizers = std::move(root["tokenizers"]);
    r->decoded = std::move(root["decoded"]);
    r->decoded_skip_special = std::move(root["decoded_skip_special"]);
    if (root.contains("plain")) r->plain = std::move(root["plain"]);
    return r;
  }();
  return *ref;
}

std::string Ids(const std::vector<int64_t>& ids) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? ", " : "") << ids[i];
  out << "]";
  return out.str();
}

std::string Quoted(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The tokenizers with an older file form (the others have only tokenizer.json).
constexpr const char* kWithLegacyFiles[] = {
    "bert_uncased", "bert_cased",           "bert_uncased_keep_accents",
    "roberta",      "roberta_prefix_space", "gpt2"};
constexpr const char* kJsonOnly[] = {"qwen2_split", "llama3_split", "llama2_byte_fallback",
                                     "mistral_metaspace"};
// SentencePiece models (tests/text/sentencepiece_fixtures.py): the directory holds only
// tokenizer.model and tokenizer_config.json; Tokenizers.js encoded with their conversion to
// tokenizer.json.
constexpr const char* kSentencePiece[] = {"spm_llama2_bpe", "spm_mistral_bpe", "spm_unigram"};
// SentencePiece models also loaded from that converted tokenizer.json (with the same
// tokenizer_config.json, no tokenizer.model): a Unigram model in a tokenizer.json.
constexpr const char* kConverted[] = {"spm_unigram"};

// Where a case's tokenizer is loaded from.
enum class Form {
  kJson,       // <name>/: tokenizer.json
  kLegacy,     // <name>-legacy/: vocab.txt / vocab.json + merges.txt
  kModel,      // <name>/: tokenizer.model
  kConverted,  // <name>-converted/: the tokenizer.json converted from <name>/tokenizer.model
};

struct Case {
  std::string name;  // the tokenizer's name in reference.json
  Form form;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  switch (info.param.form) {
    case Form::kJson:
      return info.param.name + "_json";
    case Form::kLegacy:
      return info.param.name + "_legacy";
    case Form::kModel:
      return info.param.name + "_model";
    case Form::kConverted:
      return info.param.name + "_converted";
  }
  return info.param.name;
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* name : kWithLegacyFiles) {
    cases.push_back({name, Form::kJson});
    cases.push_back({name, Form::kLegacy});
  }
  for (const char* name : kJsonOnly) cases.push_back({name, Form::kJson});
  for (const char* name : kSentencePiece) cases.push_back({name, Form::kModel});
  for (const char* name : kConverted) cases.push_back({name, Form::kConverted});
  return cases;
}

class ParityTest : public ::testing::TestWithParam<Case> {
 protected:
  // Loads the case's tokenizer; the reference must hold it.
  void SetUp() override {
    const Reference& ref = GetReference();
    ASSERT_FALSE(ref.dir.empty())
        << "TWIN_HF_PARITY_DIR is not set: run this through tests/text/run_parity.sh";
    ASSERT_FALSE(ref.texts.empty()) << ref.dir << "/reference.json is missing or has no texts";
    const Case& c = GetParam();
    for (const nlohmann::json* table : {&ref.tokenizers, &ref.decoded, &ref.decoded_skip_special}) {
      ASSERT_TRUE(table->contains(c.name)) << c.name << " is not in reference.json";
      ASSERT_EQ((*table)[c.name].size(), ref.texts.size()) << c.name;
    }
    dir_ = ref.dir + "/" + c.name +
           (c.form == Form::kLegacy ? "-legacy" : c.form == Form::kConverted ? "-converted" : "");
    if (c.form == Form::kModel || c.form == Form::kConverted) {
      const bool model = c.form == Form::kModel;
      ASSERT_EQ(std::filesystem::exists(dir_ + "/tokenizer.model"), model) << dir_;
      ASSERT_EQ(std::filesystem::exists(dir_ + "/tokenizer.json"), !model) << dir_;
      ASSERT_TRUE(std::filesystem::exists(dir_ + "/tokenizer_config.json")) << dir_;
    }
    auto tok = HfTokenizer::Load(dir_);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
  }

  std::string FormName() const {
    switch (GetParam().form) {
      case Form::kJson:
        return " (tokenizer.json)";
      case Form::kLegacy:
        return " (legacy files)";
      case Form::kModel:
        return " (tokenizer.model)";
      case Form::kConverted:
        return " (converted tokenizer.json)";
    }
    return "";
  }

  // The SentencePiece models' cases, which also compare the ids without special tokens.
  bool SentencePiece() const {
    return GetParam().form == Form::kModel || GetParam().form == Form::kConverted;
  }

  std::string dir_;
  std::unique_ptr<HfTokenizer> tok_;
};

TEST_P(ParityTest, SameIdsAsTokenizersJs) {
  const Reference& ref = GetReference();
  const nlohmann::json& expected_all = ref.tokenizers[GetParam().name];
  size_t mismatches = 0;
  size_t ids_compared = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const auto expected = expected_all[i].get<std::vector<int64_t>>();
    auto got = tok_->Encode(ref.texts[i]);
    ASSERT_TRUE(got.ok()) << "text " << i << ": " << got.status();
    ids_compared += expected.size();
    if (got->ids == expected) continue;
    if (mismatches++ == 0) {
      ADD_FAILURE() << dir_ << ": first mismatch at text " << i << " " << Quoted(ref.texts[i])
                    << "\n  Tokenizers.js: " << Ids(expected)
                    << "\n  HfTokenizer:   " << Ids(got->ids);
    }
  }
  EXPECT_EQ(mismatches, 0u) << "texts whose ids differ";
  std::cout << "[ parity ] " << GetParam().name << FormName() << ": "
            << ref.texts.size() - mismatches << " of " << ref.texts.size() << " texts identical, "
            << ids_compared << " ids" << std::endl;
}

// Without special tokens (add_special_tokens false), where the reference has those ids.
TEST_P(ParityTest, SameIdsWithoutSpecialTokens) {
  const Reference& ref = GetReference();
  if (!SentencePiece()) GTEST_SKIP() << "compared for the SentencePiece cases";
  ASSERT_TRUE(ref.plain.contains(GetParam().name)) << GetParam().name << " has no plain ids";
  const nlohmann::json& expected_all = ref.plain[GetParam().name];
  ASSERT_EQ(expected_all.size(), ref.texts.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const auto expected = expected_all[i].get<std::vector<int64_t>>();
    auto got = tok_->Encode(ref.texts[i], {.add_special_tokens = false});
    ASSERT_TRUE(got.ok()) << "text " << i << ": " << got.status();
    if (got->ids == expected) continue;
    if (mismatches++ == 0) {
      ADD_FAILURE() << dir_ << ": first mismatch without special tokens at text " << i << " "
                    << Quoted(ref.texts[i]) << "\n  Tokenizers.js: " << Ids(expected)
                    << "\n  HfTokenizer:   " << Ids(got->ids);
    }
  }
  EXPECT_EQ(mismatches, 0u) << "texts whose ids differ";
  std::cout << "[ parity ] " << GetParam().name << FormName() << " without special tokens: "
            << ref.texts.size() - mismatches << " of " << ref.texts.size()
            << " texts identical" << std::endl;
}

// Decode (keeping, then skipping special tokens) against Tokenizers.js, and a stream fed one id
// at a time against Decode.
TEST_P(ParityTest, SameTextAsTokenizersJs) {
  const Reference& ref = GetReference();
  const std::string& name = GetParam().name;
  size_t decode_mismatches = 0;
  size_t stream_mismatches = 0;
  size_t checks = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const auto ids = ref.tokenizers[name][i].get<std::vector<int64_t>>();
    for (bool skip : {false, true}) {
      const std::string expected =
          (skip ? ref.decoded_skip_special : ref.decoded)[name][i].get<std::string>();
      const std::string got = tok_->Decode(ids, skip);
      ++checks;
      if (got != expected && decode_mismatches++ == 0) {
        ADD_FAILURE() << dir_ << ": first decode mismatch at text " << i
                      << " (skip_special_tokens=" << skip << ") " << Quoted(ref.texts[i])
                      << "\n  ids:           " << Ids(ids)
                      << "\n  Tokenizers.js: " << Quoted(expected)
                      << "\n  HfTokenizer:   " << Quoted(got);
      }
      HfTokenStream stream(tok_.get(), skip);
      std::string streamed;
      for (int64_t id : ids) streamed += stream.Push(id);
      streamed += stream.Finish();
      if (streamed != got && stream_mismatches++ == 0) {
        ADD_FAILURE() << dir_ << ": first stream mismatch at text " << i
                      << " (skip_special_tokens=" << skip << ") " << Quoted(ref.texts[i])
                      << "\n  ids:           " << Ids(ids) << "\n  Decode:        " << Quoted(got)
                      << "\n  HfTokenStream: " << Quoted(streamed);
      }
    }
  }
  EXPECT_EQ(decode_mismatches, 0u) << "decodes that differ from Tokenizers.js";
  EXPECT_EQ(stream_mismatches, 0u) << "streams that differ from Decode";
  std::cout << "[ parity ] " << name << FormName() << ": decode " << checks - decode_mismatches
            << " of " << checks << " identical to Tokenizers.js (with and without special "
            << "tokens), stream " << checks - stream_mismatches << " of " << checks
            << " identical to Decode" << std::endl;
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ParityTest, ::testing::ValuesIn(AllCases()), CaseName);

}  // namespace
}  // namespace twin
