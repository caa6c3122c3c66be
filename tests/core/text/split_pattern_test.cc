#include "core/text/split_pattern.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/text/bpe.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/internal/unicode.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> Split(SplitPattern pattern, absl::string_view text) {
  std::vector<std::string> out;
  for (const auto& piece : SplitWithPattern(pattern, *text_internal::DecodeUtf8(text, "text"))) {
    out.push_back(text_internal::EncodeUtf8(piece));
  }
  return out;
}

TEST(SplitPatternTest, KnowsExactlyThePatternTexts) {
  EXPECT_EQ(FindSplitPattern(kQwen2), SplitPattern::kQwen2);
  EXPECT_EQ(FindSplitPattern(kLlama3), SplitPattern::kLlama3);
  EXPECT_EQ(FindSplitPattern(std::string(kQwen2) + " "), std::nullopt);
  EXPECT_EQ(FindSplitPattern("\\s+"), std::nullopt);
}

TEST(SplitPatternTest, Qwen2Pieces) {
  const SplitPattern q = SplitPattern::kQwen2;
  EXPECT_THAT(Split(q, "Hello, world!"), ElementsAre("Hello", ",", " world", "!"));
  // Contractions in any case; the letter prefix takes one non-letter, non-digit, non-newline.
  EXPECT_THAT(Split(q, "IT'S they'RE"), ElementsAre("IT", "'S", " they", "'RE"));
  EXPECT_THAT(Split(q, "(abc) \tx"), ElementsAre("(abc", ")", " ", "\tx"));
  // Oniguruma folds U+017F (long s) to 's'.
  EXPECT_THAT(Split(q, "it'\u017fa"), ElementsAre("it", "'\u017f", "a"));
  // Digits one by one.
  EXPECT_THAT(Split(q, "x 2024"), ElementsAre("x", " ", "2", "0", "2", "4"));
  // Punctuation takes the newlines after it; whitespace runs end at their last newline.
  EXPECT_THAT(Split(q, "a.\n\nb"), ElementsAre("a", ".\n\n", "b"));
  EXPECT_THAT(Split(q, "a \n \n  b"), ElementsAre("a", " \n \n", " ", " b"));
  EXPECT_THAT(Split(q, "a\nb"), ElementsAre("a", "\n", "b"));
  // \s+(?!\S) leaves the last space to the next word; at the end the run is whole.
  EXPECT_THAT(Split(q, "a   b  "), ElementsAre("a", "  ", " b", "  "));
  EXPECT_THAT(Split(q, "\u4e2d\u6587 \U0001F600!"),
              ElementsAre("\u4e2d\u6587", " \U0001F600!"));
}

TEST(SplitPatternTest, Llama3GroupsDigitsByThree) {
  EXPECT_THAT(Split(SplitPattern::kLlama3, "1234567 x"), ElementsAre("123", "456", "7", " x"));
  EXPECT_THAT(Split(SplitPattern::kGpt2, "1234567 x"), ElementsAre("1234567", " x"));
}

nlohmann::json SplitJson(const std::string& regex) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    text_internal::AppendUtf8(ByteToUnicode(static_cast<uint8_t>(b)), &s);
    vocab[s] = b;
  }
  return {{"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
}

TEST(SplitPatternTest, TokenizerJsonSplitBeforeByteLevel) {
  auto tok = HfTokenizer::FromTokenizerJson(SplitJson(kLlama3).dump(), "tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto e = (*tok)->Encode("a 12");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre('a', ' ', '1', '2'));  // ids are the bytes
  EXPECT_EQ((*tok)->Decode(e->ids), "a 12");
}

TEST(SplitPatternTest, OtherPatternsAreRefusedByName) {
  auto status = HfTokenizer::FromTokenizerJson(SplitJson("\\s+|\\w+").dump(), "tokenizer.json");
  EXPECT_EQ(status.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(status.status().message()),
              HasSubstr("tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex"));
  EXPECT_THAT(std::string(status.status().message()), HasSubstr("\\\\s+|\\\\w+"));
  nlohmann::json removed = SplitJson(kQwen2);
  removed["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  auto r = HfTokenizer::FromTokenizerJson(removed.dump(), "tokenizer.json");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("behavior \"Removed\""));
}

}  // namespace
}  // namespace twin
