// Parity of HfTokenizer with Hugging Face's Tokenizers.js on real vocabularies and on
// SentencePiece models trained for the test.
// tests/text/run_parity.sh generates the fixtures (tests/text/make_fixtures.mjs) and runs this
// with TWIN_HF_PARITY_DIR set. Encode: each tokenizer, loaded from its tokenizer.json directory
// and (where it has one) from its vocab.txt / vocab.json + merges.txt directory, must give the
// reference ids for every text; a SentencePiece model from its tokenizer.model directory, and
// the Unigram one also from the tokenizer.json that Tokenizers.js encoded with. Decode: the
// reference ids must decode to Tokenizers.js's text, keeping and skipping the special tokens, and
// an HfTokenStream fed them one at a time must give Decode's text exactly. The Precompiled
// normalizer's cases compare with SentencePiece's own ids instead (NormalizerParityTest).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/internal/precompiled.h"
#include "core/text/internal/unicode.h"

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

// ---- the Precompiled normalizer, against SentencePiece itself -------------------------------
// Unigram models trained with nmt_nfkc / nmt_nfkc_cf, converted to tokenizer.json as Hugging
// Face converts T5 and XLM-RoBERTa (sentencepiece_fixtures.py); the reference is the ids
// python3-sentencepiece gives (spm_reference.json), since Tokenizers.js replaces the charsmap by
// NFKC. Hugging Face applies the charsmap by grapheme cluster where SentencePiece takes the
// longest key at each position; a text where the two readings of the charsmap give different
// strings is counted and left out (the cluster rule itself is pinned by precompiled_test.cc).

struct SpmReference {
  std::vector<std::string> texts;
  nlohmann::json ids;    // name -> ids per text, </s> added
  nlohmann::json plain;  // name -> ids per text
};

const SpmReference& GetSpmReference() {
  static const SpmReference* ref = [] {
    auto* r = new SpmReference;
    const char* dir = std::getenv("TWIN_HF_PARITY_DIR");
    if (dir == nullptr) return r;
    std::ifstream in(std::string(dir) + "/spm_reference.json");
    if (!in) return r;
    nlohmann::json root = nlohmann::json::parse(in);
    r->texts = root["texts"].get<std::vector<std::string>>();
    r->ids = std::move(root["ids"]);
    r->plain = std::move(root["plain"]);
    return r;
  }();
  return *ref;
}

// SentencePiece's reading of a charsmap: the longest key at each position, else one character.
std::string LongestMatchNormalize(const text_internal::PrecompiledCharsmap& map,
                                  absl::string_view text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    auto match = map.LongestMatch(text.substr(i));
    if (match && match->first > 0) {
      out.append(match->second.data(), match->second.size());
      i += match->first;
      continue;
    }
    size_t n = 1;
    while (i + n < text.size() && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
    out.append(text.substr(i, n).data(), n);
    i += n;
  }
  return out;
}

// A Unigram tokenizer.json's pieces and scores, by id.
struct UnigramVocab {
  std::vector<std::string> pieces;
  std::vector<double> scores;
  int64_t unk_id = 0;
};

UnigramVocab UnigramVocabOf(const std::string& path) {
  std::ifstream in(path);
  const nlohmann::json root = nlohmann::json::parse(in);
  UnigramVocab v;
  for (const nlohmann::json& entry : root["model"]["vocab"]) {
    v.pieces.push_back(entry[0].get<std::string>());
    v.scores.push_back(entry[1].get<double>());
  }
  v.unk_id = root["model"]["unk_id"].get<int64_t>();
  return v;
}

// Whether `a` and `b` are two segmentations of one string with the same Unigram score (as
// Hugging Face scores an unknown piece: the lowest score less 10), which SentencePiece and
// Hugging Face may break differently. The sums may differ by rounding: float32 unit roundoff
// times the number of terms times their magnitude.
bool EqualScoreSegmentations(const UnigramVocab& v, const std::vector<int64_t>& a,
                             const std::vector<int64_t>& b) {
  const double unk_score = *std::min_element(v.scores.begin(), v.scores.end()) - 10.0;
  auto summary = [&](const std::vector<int64_t>& ids, std::string* text, double* score,
                     double* magnitude, int64_t* unknown) {
    for (int64_t id : ids) {
      if (id < 0 || id >= static_cast<int64_t>(v.pieces.size())) return false;
      const double s = id == v.unk_id ? unk_score : v.scores[id];
      *text += v.pieces[id];
      *score += s;
      *magnitude += std::abs(s);
      *unknown += id == v.unk_id ? 1 : 0;
    }
    return true;
  };
  std::string text_a, text_b;
  double score_a = 0, score_b = 0, magnitude = 0;
  int64_t unknown_a = 0, unknown_b = 0;
  if (!summary(a, &text_a, &score_a, &magnitude, &unknown_a) ||
      !summary(b, &text_b, &score_b, &magnitude, &unknown_b)) {
    return false;
  }
  const double roundoff = std::ldexp(1.0, -24);
  const double tolerance = roundoff * static_cast<double>(a.size() + b.size()) * magnitude;
  return text_a == text_b && unknown_a == unknown_b && std::abs(score_a - score_b) <= tolerance;
}

// The added tokens' contents of a tokenizer.json.
std::vector<std::string> AddedTokensOf(const std::string& path) {
  std::ifstream in(path);
  const nlohmann::json root = nlohmann::json::parse(in);
  std::vector<std::string> out;
  for (const nlohmann::json& t : root["added_tokens"]) {
    out.push_back(t["content"].get<std::string>());
  }
  return out;
}

// The charsmap of the Precompiled normalizer in a tokenizer.json (alone or in a Sequence).
std::shared_ptr<const text_internal::PrecompiledCharsmap> CharsmapOf(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json normalizer = nlohmann::json::parse(in)["normalizer"];
  std::vector<nlohmann::json> steps = {normalizer};
  if (normalizer["type"] == "Sequence") {
    steps = normalizer["normalizers"].get<std::vector<nlohmann::json>>();
  }
  for (const nlohmann::json& step : steps) {
    if (step["type"] != "Precompiled") continue;
    std::string blob;
    if (!absl::Base64Unescape(step["precompiled_charsmap"].get<std::string>(), &blob)) break;
    auto map = text_internal::PrecompiledCharsmap::Parse(blob, path);
    EXPECT_TRUE(map.ok()) << map.status();
    return map.ok() ? *map : nullptr;
  }
  ADD_FAILURE() << path << " has no Precompiled normalizer";
  return nullptr;
}

class NormalizerParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(NormalizerParityTest, SameIdsAsSentencePiece) {
  const SpmReference& ref = GetSpmReference();
  ASSERT_FALSE(ref.texts.empty())
      << "spm_reference.json is missing: run this through tests/text/run_parity.sh";
  const std::string& name = GetParam();
  ASSERT_TRUE(ref.ids.contains(name)) << name << " is not in spm_reference.json";
  ASSERT_EQ(ref.ids[name].size(), ref.texts.size());
  const std::string dir = GetReference().dir + "/" + name + "-converted";
  auto tok = HfTokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto charsmap = CharsmapOf(dir + "/tokenizer.json");
  ASSERT_NE(charsmap, nullptr);
  const std::vector<std::string> added = AddedTokensOf(dir + "/tokenizer.json");
  const UnigramVocab vocab = UnigramVocabOf(dir + "/tokenizer.json");
  size_t compared = 0, mismatches = 0, rule_differs = 0, changed = 0, ids = 0, with_added = 0;
  size_t other_space = 0, ties = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const std::string& text = ref.texts[i];
    // SentencePiece reads "<s>" in a text as three characters; Hugging Face as the token.
    if (std::any_of(added.begin(), added.end(), [&](const std::string& token) {
          return text.find(token) != std::string::npos;
        })) {
      ++with_added;
      continue;
    }
    auto cps = text_internal::DecodeUtf8(text, "text");
    ASSERT_TRUE(cps.ok()) << cps.status();
    const std::string by_cluster = text_internal::EncodeUtf8(charsmap->Normalize(*cps));
    if (by_cluster != LongestMatchNormalize(*charsmap, text)) {
      ++rule_differs;
      continue;
    }
    // Hugging Face's Strip and WhitespaceSplit cut at any White_Space character; SentencePiece
    // treats only ' ' as a space.
    const std::u32string normalized = charsmap->Normalize(*cps);
    if (std::any_of(normalized.begin(), normalized.end(), [](char32_t c) {
          return c != U' ' && text_internal::IsWhitespace(c);
        })) {
      ++other_space;
      continue;
    }
    if (by_cluster != text) ++changed;
    ++compared;
    for (bool special : {true, false}) {
      const auto expected =
          (special ? ref.ids : ref.plain)[name][i].get<std::vector<int64_t>>();
      auto got = (*tok)->Encode(text, {.add_special_tokens = special});
      ASSERT_TRUE(got.ok()) << "text " << i << ": " << got.status();
      ids += expected.size();
      if (got->ids == expected) continue;
      if (EqualScoreSegmentations(vocab, expected, got->ids)) {
        ++ties;
        continue;
      }
      if (mismatches++ < 5) {
        ADD_FAILURE() << dir << ": mismatch at text " << i << " " << Quoted(text)
                      << " (add_special_tokens=" << special << ")"
                      << "\n  SentencePiece: " << Ids(expected)
                      << "\n  HfTokenizer:   " << Ids(got->ids);
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << "encodings whose ids differ";
  EXPECT_GT(changed, 0u) << "no text was changed by the charsmap: the cases test nothing";
  // Ties are rare: a few long runs of one character or of equal-score pieces.
  EXPECT_LT(ties * 50, 2 * compared) << "encodings that differ by an equal-score segmentation";
  // The two readings differ on "\r\n" and on some clusters of combining marks or jamo, which
  // the corpus holds often; most texts must still be compared.
  EXPECT_GT(compared * 2, ref.texts.size()) << "texts compared";
  std::cout << "[ parity ] " << name << " (Precompiled, converted tokenizer.json): " << compared
            << " of " << ref.texts.size() << " texts compared with SentencePiece (" << changed
            << " changed by the charsmap; left out: " << rule_differs << " where Hugging Face's "
            << "cluster rule and SentencePiece's longest match differ, " << with_added
            << " holding an added token's text, " << other_space
            << " with whitespace other than ' '), " << 2 * compared - mismatches - ties << " of "
            << 2 * compared << " encodings identical (with and without </s>), " << ties
            << " another segmentation of equal score, " << ids << " ids" << std::endl;
}

INSTANTIATE_TEST_SUITE_P(SentencePieceRules, NormalizerParityTest,
                         ::testing::Values("spm_unigram_nfkc", "spm_unigram_nfkc_cf"));

// A directory holding only the SentencePiece model, as T5 (spiece.model) and XLM-RoBERTa
// (sentencepiece.bpe.model) ship it: HfTokenizer's own conversion must give what the converted
// tokenizer.json gives (the reference above compared that one with SentencePiece), id for id;
// XLM-RoBERTa's ids in its fairseq layout (<s> <pad> </s> <unk>, then the pieces one further).
TEST(SentencePieceModelDirTest, T5AndXlmRobertaModelsConvertAsHuggingFaceDoes) {
  const SpmReference& ref = GetSpmReference();
  ASSERT_FALSE(ref.texts.empty()) << "run this through tests/text/run_parity.sh";
  const std::string base = GetReference().dir + "/spm_unigram_nfkc";
  auto json = HfTokenizer::Load(base + "-converted");
  auto t5 = HfTokenizer::Load(base + "-t5");
  auto xlmr = HfTokenizer::Load(base + "-xlmr");
  ASSERT_TRUE(json.ok()) << json.status();
  ASSERT_TRUE(t5.ok()) << t5.status();  // NOLINT
  ASSERT_TRUE(xlmr.ok()) << xlmr.status();
  ASSERT_FALSE(std::filesystem::exists(base + "-t5/tokenizer.json"));
  ASSERT_FALSE(std::filesystem::exists(base + "-xlmr/tokenizer.json"));
  EXPECT_EQ((*t5)->vocab_size(), (*json)->vocab_size());
  EXPECT_EQ((*xlmr)->TokenToId("<mask>"), (*xlmr)->vocab_size() - 1);
  // The converted tokenizer.json: <unk>=0 <s>=1 </s>=2, pieces from 3; XLM-RoBERTa: <s>=0
  // <pad>=1 </s>=2 <unk>=3, pieces from 4.
  auto to_xlmr = [](int64_t id) -> int64_t { return id == 0 ? 3 : id == 1 ? 0 : id == 2 ? 2 : id + 1; };
  size_t t5_same = 0, xlmr_same = 0, xlmr_compared = 0, decoded = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const std::string& text = ref.texts[i];
    for (bool special : {true, false}) {
      auto want = (*json)->Encode(text, {.add_special_tokens = special});
      auto got = (*t5)->Encode(text, {.add_special_tokens = special});
      ASSERT_TRUE(want.ok() && got.ok()) << "text " << i;
      EXPECT_EQ(got->ids, want->ids) << "T5, text " << i << " " << Quoted(text);
      t5_same += got->ids == want->ids;
      if (special) {
        decoded += (*t5)->Decode(got->ids, true) == (*json)->Decode(want->ids, true);
      }
      // <pad> and <mask> are special only in XLM-RoBERTa.
      if (text.find("<pad>") != std::string::npos || text.find("<mask>") != std::string::npos) {
        continue;
      }
      ++xlmr_compared;
      auto plain = (*json)->Encode(text, {.add_special_tokens = false});
      std::vector<int64_t> mapped;
      if (special) mapped.push_back(0);
      for (int64_t id : plain->ids) mapped.push_back(to_xlmr(id));
      if (special) mapped.push_back(2);
      auto x = (*xlmr)->Encode(text, {.add_special_tokens = special});
      ASSERT_TRUE(x.ok()) << x.status();
      EXPECT_EQ(x->ids, mapped) << "XLM-RoBERTa, text " << i << " " << Quoted(text);
      xlmr_same += x->ids == mapped;
    }
  }
  EXPECT_EQ(decoded, ref.texts.size());
  std::cout << "[ parity ] spm_unigram_nfkc from spiece.model (T5): " << t5_same << " of "
            << 2 * ref.texts.size() << " encodings identical to the converted tokenizer.json, "
            << decoded << " of " << ref.texts.size() << " decodes; from sentencepiece.bpe.model "
            << "(XLM-RoBERTa): " << xlmr_same << " of " << xlmr_compared
            << " identical in its id layout" << std::endl;
}

}  // namespace
}  // namespace twin
