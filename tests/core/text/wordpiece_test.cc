#include "core/text/wordpiece.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/text/internal/unicode.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using text_internal::EncodeUtf8;
using namespace std::string_literals;

std::string Normalize(const std::u32string& text, BertNormalizerOptions options = {}) {
  return EncodeUtf8(BertNormalize(text, options));
}

std::vector<std::string> PreTokenize(const std::u32string& text) {
  std::vector<std::string> out;
  for (const auto& w : BertPreTokenize(text)) out.push_back(EncodeUtf8(w));
  return out;
}

TEST(BertNormalizeTest, CleansControlsAndWhitespace) {
  BertNormalizerOptions keep_case;
  keep_case.lowercase = false;
  EXPECT_EQ(Normalize(U"a\u0000b\uFFFDc\u0007d\u200Be\u0378f"s, keep_case), "abcdef");
  EXPECT_EQ(Normalize(U"a\tb\nc\r\u3000d\u00A0e", keep_case), "a b c  d e");
  keep_case.clean_text = false;
  EXPECT_EQ(Normalize(U"a\u0007\tb", keep_case), "a\u0007\tb");
}

TEST(BertNormalizeTest, SpacesAroundCjkIdeographsInAllRanges) {
  BertNormalizerOptions options;
  options.lowercase = false;  // no NFD: U+F900 would decompose to U+8C48
  EXPECT_EQ(Normalize(U"a\u4E2Db\u3400c\U00020000d\uF900", options),
            "a \u4E2D b \u3400 c \U00020000 d \uF900 ");
  // Kana and Hangul are not ideographs.
  EXPECT_EQ(Normalize(U"\u3042\uAC00", options), "\u3042\uAC00");
  options.handle_chinese_chars = false;
  EXPECT_EQ(Normalize(U"a\u4E2Db", options), "a\u4E2Db");
}

TEST(BertNormalizeTest, LowercaseAndAccents) {
  EXPECT_EQ(Normalize(U"Caf\u00E9 NAI\u0308VE \u0130stanbul \u212Bngstr\u00F6m"),
            "cafe naive istanbul angstrom");
  // Full lower casing with the final sigma.
  EXPECT_EQ(Normalize(U"\u039F\u0394\u039F\u03A3 \u03A3\u0391\u03A3."),
            "\u03BF\u03B4\u03BF\u03C2 \u03C3\u03B1\u03C2.");
  BertNormalizerOptions keep_accents;
  keep_accents.strip_accents = false;
  EXPECT_EQ(Normalize(U"Caf\u00E9", keep_accents), "caf\u00E9");
  BertNormalizerOptions cased_stripped;
  cased_stripped.lowercase = false;
  cased_stripped.strip_accents = true;
  EXPECT_EQ(Normalize(U"Caf\u00E9", cased_stripped), "Cafe");
  BertNormalizerOptions cased;
  cased.lowercase = false;
  EXPECT_EQ(Normalize(U"Caf\u00E9", cased), "Caf\u00E9");
}

TEST(BertPreTokenizeTest, WhitespaceAndPunctuation) {
  EXPECT_THAT(PreTokenize(U"  Hello,  world!! a-b  "),
              ElementsAre("Hello", ",", "world", "!", "!", "a", "-", "b"));
  // ASCII symbols in the punctuation ranges are split; other symbols (S*) are not.
  EXPECT_THAT(PreTokenize(U"$5 ^x \u20AC5 \u00ABq\u00BB"),
              ElementsAre("$", "5", "^", "x", "\u20AC5", "\u00AB", "q", "\u00BB"));
  EXPECT_THAT(PreTokenize(U""), ElementsAre());
  EXPECT_THAT(PreTokenize(U" \u2028 "), ElementsAre());
}

TokenVocab SmallVocab() {
  return {{"[UNK]", 0}, {"un", 1}, {"##aff", 2}, {"##able", 3}, {"a", 4}, {"##a", 5},
          {"\u00E9", 6}, {"##\u00E9", 7}};
}

std::vector<int64_t> Pieces(const WordPiece& wp, const std::u32string& word) {
  std::vector<int64_t> ids;
  wp.Tokenize(word, &ids);
  return ids;
}

TEST(WordPieceTest, GreedyLongestMatchFirst) {
  auto wp = WordPiece::Create(SmallVocab(), {}, "test");
  ASSERT_TRUE(wp.ok()) << wp.status();
  EXPECT_THAT(Pieces(**wp, U"unaffable"), ElementsAre(1, 2, 3));
  EXPECT_THAT(Pieces(**wp, U"aaa"), ElementsAre(4, 5, 5));
  EXPECT_THAT(Pieces(**wp, U"\u00E9\u00E9"), ElementsAre(6, 7));
  // One unmatchable piece makes the whole word unknown.
  EXPECT_THAT(Pieces(**wp, U"unaffablex"), ElementsAre(0));
  EXPECT_THAT(Pieces(**wp, U""), ElementsAre());
}

TEST(WordPieceTest, WordsLongerThanTheLimitAreUnknown) {
  auto wp = WordPiece::Create(SmallVocab(), {}, "test");
  ASSERT_TRUE(wp.ok());
  EXPECT_EQ(Pieces(**wp, std::u32string(100, U'a')).size(), 100u);
  EXPECT_THAT(Pieces(**wp, std::u32string(101, U'a')), ElementsAre(0));
  WordPieceOptions short_words;
  short_words.max_input_chars_per_word = 2;
  auto wp2 = WordPiece::Create(SmallVocab(), short_words, "test");
  ASSERT_TRUE(wp2.ok());
  EXPECT_THAT(Pieces(**wp2, U"aaa"), ElementsAre(0));
}

TEST(WordPieceTest, RefusesAMissingUnkTokenAndBadLimits) {
  WordPieceOptions options;
  options.unk_token = "<unk>";
  auto missing = WordPiece::Create(SmallVocab(), options, "vocab.txt");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("vocab.txt"));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("<unk>"));
  WordPieceOptions zero;
  zero.max_input_chars_per_word = 0;
  EXPECT_FALSE(WordPiece::Create(SmallVocab(), zero, "test").ok());
}

TEST(LoadVocabTxtTest, LinesAreIdsAndErrorsNameTheFile) {
  testing::TempDir dir;
  testing::WriteFileOrDie(dir.Join("vocab.txt"), "[UNK]\r\nhello\n##s\nhello\n");
  auto vocab = LoadVocabTxt(dir.Join("vocab.txt"));
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->at("[UNK]"), 0);
  EXPECT_EQ(vocab->at("##s"), 2);
  EXPECT_EQ(vocab->at("hello"), 3);  // the last line of a repeated token

  auto missing = LoadVocabTxt(dir.Join("nope.txt"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.txt"));

  testing::WriteFileOrDie(dir.Join("bad.txt"), "ok\n\xff\xfe\n");
  auto bad = LoadVocabTxt(dir.Join("bad.txt"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("line 2"));
}

}  // namespace
}  // namespace twin
