#include "core/text/hf_tokenizer.h"

#include <string>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "tests/core/text/charsmap_builder.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::WriteFileOrDie;

// [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 hello=5 world=6 ,=7 !=8 ##s=9 wor=10 ##ld=11
const char* kVocabTxt = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n,\n!\n##s\nwor\n##ld\n";

nlohmann::json WordPieceJson() {
  nlohmann::json vocab = nlohmann::json::object();
  const char* tokens[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello",
                          "world", ",",     "!",     "##s",   "wor",    "##ld"};
  for (int i = 0; i < 12; ++i) vocab[tokens[i]] = i;
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < 5; ++i) {
    added.push_back({{"id", i}, {"content", tokens[i]}, {"special", true}, {"normalized", false}});
  }
  return {{"added_tokens", added},
          {"normalizer", {{"type", "BertNormalizer"}, {"lowercase", true}}},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"post_processor",
           {{"type", "BertProcessing"}, {"cls", {"[CLS]", 2}}, {"sep", {"[SEP]", 3}}}},
          {"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"vocab", vocab}}}};
}

std::unique_ptr<HfTokenizer> FromJson(const nlohmann::json& json) {
  auto tok = HfTokenizer::FromTokenizerJson(json.dump(), "tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

absl::Status LoadError(const nlohmann::json& json) {
  return HfTokenizer::FromTokenizerJson(json.dump(), "tokenizer.json").status();
}

// A T5-style tokenizer.json: Metaspace, a Unigram model, </s> after the text.
// <unk>=0 <s>=1 </s>=2 ▁=3 a=4 b=5 ab=6 ▁ab=7 <0xC3>=8 <0xA9>=9
nlohmann::json UnigramJson() {
  // An array of [piece, score]: nlohmann would read a braced list of pairs as an object.
  nlohmann::json vocab = nlohmann::json::array(
      {{"<unk>", 0.0}, {"<s>", 0.0}, {"</s>", 0.0}, {"\u2581", -2.0}, {"a", -3.0}, {"b", -3.0},
       {"ab", -4.0}, {"\u2581ab", -4.5}, {"<0xC3>", -10.0}, {"<0xA9>", -10.0}});
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < 3; ++i) {
    added.push_back(
        {{"id", i}, {"content", vocab[i][0]}, {"special", true}, {"normalized", false}});
  }
  nlohmann::json metaspace = {{"type", "Metaspace"}, {"replacement", "\u2581"},
                              {"prepend_scheme", "always"}, {"split", true}};
  return {
      {"added_tokens", added},
      {"pre_tokenizer", metaspace},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", nlohmann::json::array(
                       {{{"Sequence", {{"id", "A"}}}}, {{"SpecialToken", {{"id", "</s>"}}}}})},
        {"special_tokens", {{"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}}},
      {"decoder", metaspace},
      {"model", {{"type", "Unigram"}, {"unk_id", 0}, {"byte_fallback", false}, {"vocab", vocab}}}};
}

TEST(HfTokenizerTest, WordPieceWithSpecialTokensInTheText) {
  auto tok = FromJson(WordPieceJson());
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("Hello, [MASK] WORLDS!");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->ids, ElementsAre(2, 5, 7, 4, 6, 9, 8, 3));
  EXPECT_THAT(e->attention_mask, ElementsAre(1, 1, 1, 1, 1, 1, 1, 1));
  EXPECT_THAT(tok->Encode("worldx")->ids, ElementsAre(2, 1, 3));
  EXPECT_THAT(tok->Encode("")->ids, ElementsAre(2, 3));
  EXPECT_THAT(tok->Encode("hello[SEP]world")->ids, ElementsAre(2, 5, 3, 6, 3));
  EXPECT_THAT(tok->Encode("hello", {.add_special_tokens = false})->ids, ElementsAre(5));
  EXPECT_EQ(tok->TokenToId("[MASK]"), 4);
  EXPECT_EQ(tok->TokenToId("nope"), std::nullopt);
  EXPECT_EQ(tok->vocab_size(), 12);
  EXPECT_EQ(tok->num_special_tokens(), 2);
}

TEST(HfTokenizerTest, TruncationKeepsTheSpecialTokens) {
  auto tok = FromJson(WordPieceJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("hello world hello", {.max_length = 4})->ids, ElementsAre(2, 5, 6, 3));
  EXPECT_THAT(tok->Encode("hello world", {.max_length = 2})->ids, ElementsAre(2, 3));
  EXPECT_THAT(tok->Encode("hello world", {.max_length = 100})->ids, ElementsAre(2, 5, 6, 3));
  EXPECT_THAT(tok->Encode("hello world", {.max_length = 1, .add_special_tokens = false})->ids,
              ElementsAre(5));
  auto too_short = tok->Encode("hello", {.max_length = 1});
  EXPECT_EQ(too_short.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_short.status().message()), HasSubstr("max_length 1"));
  EXPECT_FALSE(tok->Encode("hello", {.max_length = -1}).ok());
}

TEST(HfTokenizerTest, BatchPadsToTheLongestWithThePadId) {
  nlohmann::json json = WordPieceJson();
  json["padding"] = {{"pad_id", 0}};
  auto tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->pad_id(), 0);
  auto batch = tok->EncodeBatch({"hello world", "", "hello"}, {.pad_to_longest = true});
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 3u);
  EXPECT_THAT((*batch)[1].ids, ElementsAre(2, 3, 0, 0));
  EXPECT_THAT((*batch)[1].attention_mask, ElementsAre(1, 1, 0, 0));
  EXPECT_THAT((*batch)[2].attention_mask, ElementsAre(1, 1, 1, 0));
  auto bad = tok->EncodeBatch({"ok", "bad \xff"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("text 1"));

  auto no_pad = FromJson(WordPieceJson());
  EXPECT_EQ(no_pad->pad_id(), std::nullopt);
  EXPECT_EQ(no_pad->EncodeBatch({"a"}, {.pad_to_longest = true}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(HfTokenizerTest, AddedTokensStripWhitespaceWhenAsked) {
  nlohmann::json json = WordPieceJson();
  json["added_tokens"].push_back(
      {{"id", 12}, {"content", "<x>"}, {"lstrip", true}, {"rstrip", true}, {"special", true}});
  json["model"]["vocab"]["<x>"] = 12;
  auto tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("hello  <x>  world", {.add_special_tokens = false})->ids,
              ElementsAre(5, 12, 6));
}

TEST(HfTokenizerTest, UnigramModelInTokenizerJson) {
  nlohmann::json json = UnigramJson();
  auto tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  // The best total score: "▁ab" (-4.5) over "▁" + "ab" (-6); unknown characters fused into one
  // <unk>; "é" has no piece and, without byte_fallback, is <unk> too.
  EXPECT_THAT(tok->Encode("ab ab")->ids, ElementsAre(7, 7, 2));
  EXPECT_THAT(tok->Encode("abxyz</s>")->ids, ElementsAre(7, 0, 2, 2));
  EXPECT_THAT(tok->Encode("ab \u00e9", {.add_special_tokens = false})->ids, ElementsAre(7, 3, 0));
  EXPECT_EQ(tok->Decode({7, 3, 4, 5, 2}, /*skip_special_tokens=*/true), "ab ab");
  EXPECT_EQ(tok->vocab_size(), 10);
  EXPECT_EQ(tok->TokenToId("\u2581ab"), 7);

  json["model"]["byte_fallback"] = true;
  tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("ab \u00e9", {.add_special_tokens = false})->ids,
              ElementsAre(7, 3, 8, 9));
  // Unknown characters whose bytes are not all pieces stay one <unk>.
  EXPECT_THAT(tok->Encode("\u00e9x", {.add_special_tokens = false})->ids, ElementsAre(3, 0));

  json["model"].erase("type");  // files written before models were tagged
  json["model"].erase("byte_fallback");
  tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("ab \u00e9")->ids, ElementsAre(7, 3, 0, 2));

  // Without an unk_id a text the pieces cover encodes; any other fails, naming the character
  // (Rust's MissingUnkId), even with byte_fallback (its pieces come after the segmentation).
  json["model"]["unk_id"] = nullptr;
  for (bool byte_fallback : {false, true}) {
    json["model"]["byte_fallback"] = byte_fallback;
    tok = FromJson(json);
    ASSERT_NE(tok, nullptr);
    EXPECT_THAT(tok->Encode("ab ab")->ids, ElementsAre(7, 7, 2));
    auto unknown = tok->Encode("ab \u00e9");
    EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("\"\u00e9\""));
    EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("no unk_id"));
    EXPECT_FALSE(tok->EncodeBatch({"ab", "\u00e9"}).ok());
  }
}

TEST(HfTokenizerTest, LoadsEachDirectoryForm) {
  TempDir dir;
  WriteFileOrDie(dir.Join("vocab.txt"), kVocabTxt);
  WriteFileOrDie(dir.Join("tokenizer_config.json"), R"({"do_lower_case": false})");
  auto cased = HfTokenizer::Load(dir.path());
  ASSERT_TRUE(cased.ok()) << cased.status();
  EXPECT_THAT((*cased)->Encode("hello Hello [MASK]")->ids, ElementsAre(2, 5, 1, 4, 3));
  EXPECT_EQ((*cased)->pad_id(), 0);

  TempDir bpe;
  WriteFileOrDie(bpe.Join("vocab.json"),
                 R"({"h": 0, "i": 1, "hi": 2, "\u0120": 3, "\u0120hi": 4, "<s>": 5, "</s>": 6,
                     "<unk>": 7, "<pad>": 8, "<mask>": 9})");
  WriteFileOrDie(bpe.Join("merges.txt"), "#version: 0.2\nh i\n\u0120 hi\n");
  auto roberta = HfTokenizer::Load(bpe.path());
  ASSERT_TRUE(roberta.ok()) << roberta.status();
  EXPECT_THAT((*roberta)->Encode("hi hi <mask>")->ids, ElementsAre(5, 2, 4, 9, 6));
  EXPECT_EQ((*roberta)->pad_id(), 8);
  WriteFileOrDie(bpe.Join("tokenizer_config.json"),
                 R"({"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": true,
                     "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"})");
  auto gpt2 = HfTokenizer::Load(bpe.path());
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_THAT((*gpt2)->Encode("hi")->ids, ElementsAre(4));
  EXPECT_EQ((*gpt2)->pad_id(), std::nullopt);
}

TEST(HfTokenizerErrorsTest, MissingFilesAreNotFound) {
  EXPECT_EQ(HfTokenizer::Load("/nonexistent/dir").status().code(), absl::StatusCode::kNotFound);
  TempDir empty;
  auto none = HfTokenizer::Load(empty.path());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("missing file"));
  TempDir no_merges;
  WriteFileOrDie(no_merges.Join("vocab.json"), R"({"a": 0})");
  auto merges = HfTokenizer::Load(no_merges.path());
  EXPECT_EQ(merges.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(merges.status().message()), HasSubstr("merges.txt"));
}

TEST(HfTokenizerErrorsTest, MalformedJsonNamesTheFile) {
  TempDir dir;
  WriteFileOrDie(dir.Join("tokenizer.json"), "{\"model\": ");
  auto status = HfTokenizer::Load(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tokenizer.json"));
  EXPECT_FALSE(HfTokenizer::FromTokenizerJson("[]", "t.json").ok());
  EXPECT_THAT(std::string(LoadError(nlohmann::json::object()).message()), HasSubstr("model"));
}

TEST(HfTokenizerErrorsTest, BadModelsNameTheKey) {
  nlohmann::json word_level = WordPieceJson();
  word_level["model"]["type"] = "WordLevel";
  EXPECT_EQ(LoadError(word_level).code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(LoadError(word_level).message()),
              HasSubstr("unknown model type \"WordLevel\""));
  nlohmann::json untyped = {{"model", {{"vocab", {{"a", 0}}}}}};
  EXPECT_THAT(std::string(LoadError(untyped).message()), HasSubstr("unknown model type"));
  nlohmann::json bad_id = WordPieceJson();
  bad_id["model"]["vocab"]["hello"] = "five";
  EXPECT_THAT(std::string(LoadError(bad_id).message()), HasSubstr("model.vocab: token \"hello\""));
  nlohmann::json no_unk = WordPieceJson();
  no_unk["model"]["unk_token"] = "<unk>";
  EXPECT_THAT(std::string(LoadError(no_unk).message()), HasSubstr("<unk>"));
  nlohmann::json bpe = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}},
                                   {"merges", {"a b"}}}}};
  auto status = LoadError(bpe);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("merge 1"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("\"ab\""));
  bpe["model"]["merges"] = {"a  b"};
  EXPECT_THAT(std::string(LoadError(bpe).message()), HasSubstr("model.merges[0]"));
  bpe["model"]["merges"] = nlohmann::json::array();
  bpe["model"]["dropout"] = 0.1;
  EXPECT_EQ(LoadError(bpe).code(), absl::StatusCode::kUnimplemented);
}

// Each bad Unigram field is INVALID_ARGUMENT naming it.
TEST(HfTokenizerErrorsTest, BadUnigramFieldsNameTheKey) {
  auto error_with = [](const std::string& key, const nlohmann::json& value) {
    nlohmann::json json = UnigramJson();
    json["model"][key] = value;
    return LoadError(json);
  };
  auto pieces = &nlohmann::json::array;  // a braced list of pairs alone would be an object
  const std::string entry = "model.vocab[1]: expected [piece, score]";
  const std::vector<std::tuple<std::string, nlohmann::json, std::string>> bad = {
      {"vocab", {{"a", 0}}, "tokenizer.json: model.vocab: expected a non-empty array"},
      {"vocab", pieces({}), "model.vocab: expected a non-empty array"},
      {"vocab", pieces({{"<unk>", 0.0}, {"a"}}), entry},
      {"vocab", pieces({{"<unk>", 0.0}, {"a", "-1"}}), entry},
      {"vocab", pieces({{"<unk>", 0.0}, {7, -1.0}}), entry},
      {"vocab", pieces({{"<unk>", 0.0}, {"", -1.0}}), "model.vocab: piece 1 is empty"},
      {"vocab", pieces({{"<unk>", 0.0}, {"a", -1.0}, {"a", -2.0}}),
       "model.vocab: piece 2 \"a\" occurs twice"},
      {"unk_id", 10, "model.unk_id: expected the id of one of the 10 pieces, or null, got 10"},
      {"unk_id", -1, "model.unk_id"},
      {"unk_id", "0", "model.unk_id"},
      {"byte_fallback", "yes", "model.byte_fallback: expected a boolean"},
  };
  for (const auto& [key, value, message] : bad) {
    const absl::Status status = error_with(key, value);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << key << " = " << value;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message)) << key << " = " << value;
  }
}

// What Hugging Face's SentencePiece converters write for XLM-RoBERTa and T5: the model's
// Precompiled rules, right stripping, runs of spaces to one "▁", then Metaspace.
nlohmann::json PrecompiledUnigramJson() {
  nlohmann::json json = UnigramJson();
  std::string charsmap;
  absl::Base64Escape(testing::BuildCharsmap({{"\uFF41", "a"}, {"\uFF42", "b"}, {"\t", " "}}),
                     &charsmap);
  json["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Precompiled"}, {"precompiled_charsmap", charsmap}},
        {{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}},
        {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", "\u2581"}}}}};
  return json;
}

TEST(HfTokenizerTest, PrecompiledNormalizerWithStripAndSpaceRuns) {
  auto tok = FromJson(PrecompiledUnigramJson());
  ASSERT_NE(tok, nullptr);
  // Fullwidth "ａｂ" becomes "ab"; trailing whitespace goes.
  EXPECT_THAT(tok->Encode("\uFF41\uFF42 \t ")->ids, ElementsAre(7, 2));
  EXPECT_THAT(tok->Encode("ab")->ids, ElementsAre(7, 2));
  // A run of spaces is one "▁"; a tab is a space first.
  EXPECT_THAT(tok->Encode("a   b")->ids, ElementsAre(3, 4, 3, 5, 2));
  EXPECT_THAT(tok->Encode("a\t b")->ids, ElementsAre(3, 4, 3, 5, 2));
  EXPECT_THAT(tok->Encode("a b")->ids, ElementsAre(3, 4, 3, 5, 2));
  EXPECT_EQ(tok->Decode(tok->Encode("\uFF41\uFF42")->ids, /*skip_special_tokens=*/true), "ab");

  // Strip with both ends, and the compatibility normalization forms.
  nlohmann::json forms = UnigramJson();
  forms["normalizer"] = {{"type", "Sequence"},
                         {"normalizers", {{{"type", "Strip"}}, {{"type", "NFKC"}}}}};
  auto nfkc = FromJson(forms);
  ASSERT_NE(nfkc, nullptr);
  EXPECT_THAT(nfkc->Encode(" \uFF41\uFF42\u3000")->ids, ElementsAre(7, 2));
  forms["normalizer"]["normalizers"][1]["type"] = "NFKD";
  auto nfkd = FromJson(forms);
  ASSERT_NE(nfkd, nullptr);
  EXPECT_THAT(nfkd->Encode("\uFF41\uFF42")->ids, ElementsAre(7, 2));
}

TEST(HfTokenizerErrorsTest, BadPrecompiledNormalizersNameTheKey) {
  auto with_charsmap = [](const nlohmann::json& value) {
    nlohmann::json json = PrecompiledUnigramJson();
    json["normalizer"]["normalizers"][0]["precompiled_charsmap"] = value;
    return LoadError(json);
  };
  const std::string key = "tokenizer.json: normalizer.normalizers[0].precompiled_charsmap";
  for (const nlohmann::json& bad : {nlohmann::json("!!not base64!!"), nlohmann::json(""),
                                    nlohmann::json(17), nlohmann::json("AAAA")}) {
    const absl::Status status = with_charsmap(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(status.message()), HasSubstr(key)) << bad;
  }
  EXPECT_THAT(std::string(with_charsmap("AAAA").message()), HasSubstr("4-byte trie size"));
  nlohmann::json missing = PrecompiledUnigramJson();
  missing["normalizer"]["normalizers"][0].erase("precompiled_charsmap");
  EXPECT_THAT(std::string(LoadError(missing).message()), HasSubstr(key));
  // Only the spaces-run regex is known to Replace.
  nlohmann::json regex = PrecompiledUnigramJson();
  regex["normalizer"]["normalizers"][2]["pattern"]["Regex"] = "\\s+";
  EXPECT_EQ(LoadError(regex).code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(LoadError(regex).message()),
              HasSubstr("normalizer.normalizers[2].pattern.Regex"));
  nlohmann::json strip = PrecompiledUnigramJson();
  strip["normalizer"]["normalizers"][1]["strip_left"] = "no";
  EXPECT_THAT(std::string(LoadError(strip).message()),
              HasSubstr("normalizer.normalizers[1].strip_left"));
}

TEST(HfTokenizerErrorsTest, UnsupportedComponentsAndBadFields) {
  nlohmann::json nmt = WordPieceJson();
  nmt["normalizer"] = {{"type", "Nmt"}};
  EXPECT_EQ(LoadError(nmt).code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(LoadError(nmt).message()), HasSubstr("normalizer.type \"Nmt\""));
  nlohmann::json punctuation = WordPieceJson();
  punctuation["pre_tokenizer"] = {{"type", "Punctuation"}};
  EXPECT_EQ(LoadError(punctuation).code(), absl::StatusCode::kUnimplemented);
  nlohmann::json bad_bool = WordPieceJson();
  bad_bool["normalizer"]["lowercase"] = "yes";
  EXPECT_THAT(std::string(LoadError(bad_bool).message()), HasSubstr("normalizer.lowercase"));
  nlohmann::json bad_post = WordPieceJson();
  bad_post["post_processor"]["cls"] = "[CLS]";
  EXPECT_THAT(std::string(LoadError(bad_post).message()), HasSubstr("post_processor.cls"));
  nlohmann::json bad_added = WordPieceJson();
  bad_added["added_tokens"][0].erase("id");
  EXPECT_THAT(std::string(LoadError(bad_added).message()), HasSubstr("added_tokens[0].id"));
}

TEST(HfTokenizerErrorsTest, SpecialTokensMustBeInTheVocabulary) {
  TempDir dir;
  WriteFileOrDie(dir.Join("vocab.txt"), "[UNK]\n[SEP]\n[PAD]\n[MASK]\nhello\n");
  auto no_cls = HfTokenizer::Load(dir.path()).status();
  EXPECT_EQ(no_cls.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_cls.message()), HasSubstr("cls_token"));
  EXPECT_THAT(std::string(no_cls.message()), HasSubstr("vocab.txt"));

  TempDir json_dir;
  WriteFileOrDie(json_dir.Join("tokenizer.json"), WordPieceJson().dump());
  WriteFileOrDie(json_dir.Join("special_tokens_map.json"), R"({"pad_token": "<pad>"})");
  auto no_pad = HfTokenizer::Load(json_dir.path()).status();
  EXPECT_EQ(no_pad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_pad.message()), HasSubstr("special_tokens_map.json: pad_token"));
  WriteFileOrDie(json_dir.Join("special_tokens_map.json"), R"({"pad_token": {"content": "[PAD]"}})");
  auto ok = HfTokenizer::Load(json_dir.path());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->pad_id(), 0);
  WriteFileOrDie(json_dir.Join("special_tokens_map.json"), R"({"pad_token": 7})");
  EXPECT_THAT(std::string(HfTokenizer::Load(json_dir.path()).status().message()),
              HasSubstr("pad_token"));

  TempDir bpe;
  WriteFileOrDie(bpe.Join("vocab.json"), R"({"a": 0, "b": 1, "<s>": 2, "</s>": 3})");
  WriteFileOrDie(bpe.Join("merges.txt"), "a b\n");
  auto bad_merge = HfTokenizer::Load(bpe.path()).status();
  EXPECT_THAT(std::string(bad_merge.message()), HasSubstr("merges.txt: merge 1"));
  WriteFileOrDie(bpe.Join("merges.txt"), "");
  auto no_unk = HfTokenizer::Load(bpe.path()).status();
  EXPECT_THAT(std::string(no_unk.message()), HasSubstr("unk_token"));
}

}  // namespace
}  // namespace twin
