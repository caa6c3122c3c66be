#include "core/text/bpe.h"

#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/text/internal/unicode.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Split(const std::u32string& text) {
  std::vector<std::string> out;
  for (const auto& piece : Gpt2Split(text)) out.push_back(text_internal::EncodeUtf8(piece));
  return out;
}

TEST(Gpt2SplitTest, FollowsThePattern) {
  EXPECT_THAT(Split(U"Hello world"), ElementsAre("Hello", " world"));
  EXPECT_THAT(Split(U"I'm here's they'll"),
              ElementsAre("I", "'m", " here", "'s", " they", "'ll"));
  // Contractions are lower case only; ' ?' is one space; other characters run together.
  EXPECT_THAT(Split(U"IT'S 's '''s x.'s"),
              ElementsAre("IT", "'", "S", " '", "s", " '''", "s", " x", ".'", "s"));
  EXPECT_THAT(Split(U"12ab 3.5"), ElementsAre("12", "ab", " 3", ".", "5"));
  EXPECT_THAT(Split(U" !!x"), ElementsAre(" !!", "x"));
  EXPECT_THAT(Split(U"caf\u00E9 \u6F22\u5B57"), ElementsAre("caf\u00E9", " \u6F22\u5B57"));
}

TEST(Gpt2SplitTest, WhitespaceRunsLeaveTheirLastSpaceToTheNextWord) {
  EXPECT_THAT(Split(U"a  b"), ElementsAre("a", " ", " b"));
  EXPECT_THAT(Split(U"a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(Split(U"a\n\nb"), ElementsAre("a", "\n", "\n", "b"));
  EXPECT_THAT(Split(U"a\n b"), ElementsAre("a", "\n", " b"));
  EXPECT_THAT(Split(U"x   "), ElementsAre("x", "   "));
  EXPECT_THAT(Split(U"\t x"), ElementsAre("\t", " x"));
  EXPECT_THAT(Split(U"a\u3000b"), ElementsAre("a", "\u3000", "b"));
  EXPECT_THAT(Split(U" "), ElementsAre(" "));
  // \s is White_Space, as in Oniguruma: U+0085 is whitespace, U+FEFF (Cf) is not.
  EXPECT_THAT(Split(U"x \u0085y"), ElementsAre("x", " ", "\u0085", "y"));
  EXPECT_THAT(Split(U"x \uFEFFy"), ElementsAre("x", " \uFEFF", "y"));
  EXPECT_THAT(Split(U""), ElementsAre());
}

TEST(ByteLevelTest, Gpt2ByteAlphabet) {
  EXPECT_EQ(ByteToUnicode('A'), U'A');
  EXPECT_EQ(ByteToUnicode(' '), U'\u0120');   // 'Ġ'
  EXPECT_EQ(ByteToUnicode('\n'), U'\u010A');  // 'Ċ'
  EXPECT_EQ(ByteToUnicode(0x7F), U'\u0121');
  EXPECT_EQ(ByteToUnicode(0xAD), U'\u0143');
  EXPECT_EQ(ByteToUnicode(0xFF), U'\u00FF');
  EXPECT_EQ(ByteLevelEncode(U" \u00E9"), "\u0120\u00C3\u00A9");
  EXPECT_THAT(ByteLevelPreTokenize(U"hi there", {}), ElementsAre("hi", "\u0120there"));
  ByteLevelOptions prefix;
  prefix.add_prefix_space = true;
  EXPECT_THAT(ByteLevelPreTokenize(U"hi", prefix), ElementsAre("\u0120hi"));
  EXPECT_THAT(ByteLevelPreTokenize(U" hi", prefix), ElementsAre("\u0120hi"));
  ByteLevelOptions no_regex;
  no_regex.use_regex = false;
  EXPECT_THAT(ByteLevelPreTokenize(U"a b", no_regex), ElementsAre("a\u0120b"));
}

TokenVocab AbcVocab() {
  return {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}, {"<unk>", 6}};
}

std::vector<int64_t> Ids(const Bpe& bpe, absl::string_view word) {
  std::vector<int64_t> ids;
  bpe.Tokenize(word, &ids);
  return ids;
}

TEST(BpeTest, MergesByRankLeftmostFirst) {
  auto bpe = Bpe::Create(AbcVocab(), {{"a", "b"}, {"ab", "c"}, {"b", "c"}}, {}, "test");
  ASSERT_TRUE(bpe.ok()) << bpe.status();
  EXPECT_THAT(Ids(**bpe, "abc"), ElementsAre(5));
  EXPECT_THAT(Ids(**bpe, "abab"), ElementsAre(3, 3));
  EXPECT_THAT(Ids(**bpe, "bcab"), ElementsAre(4, 3));
  EXPECT_THAT(Ids(**bpe, "abc"), ElementsAre(5));  // from the cache
  // The lower rank wins wherever it is: b+c first leaves a, bc.
  auto other = Bpe::Create(AbcVocab(), {{"b", "c"}, {"a", "b"}}, {}, "test");
  ASSERT_TRUE(other.ok());
  EXPECT_THAT(Ids(**other, "abc"), ElementsAre(0, 4));
  // Equal ranks: the leftmost pair first (b b b -> bb b).
  auto bbb = Bpe::Create({{"b", 0}, {"bb", 1}}, {{"b", "b"}}, {}, "test");
  ASSERT_TRUE(bbb.ok());
  EXPECT_THAT(Ids(**bbb, "bbb"), ElementsAre(1, 0));
}

TEST(BpeTest, UnknownSymbolsAreDroppedOrUnk) {
  auto drop = Bpe::Create(AbcVocab(), {{"a", "b"}}, {}, "test");
  ASSERT_TRUE(drop.ok());
  EXPECT_THAT(Ids(**drop, "axb"), ElementsAre(0, 1));  // x never merges
  BpeOptions unk;
  unk.unk_token = "<unk>";
  auto with_unk = Bpe::Create(AbcVocab(), {{"a", "b"}}, unk, "test");
  ASSERT_TRUE(with_unk.ok());
  EXPECT_THAT(Ids(**with_unk, "ab\u00E9"), ElementsAre(3, 6));
  BpeOptions ignore;
  ignore.ignore_merges = true;
  auto whole = Bpe::Create(AbcVocab(), {{"b", "c"}}, ignore, "test");
  ASSERT_TRUE(whole.ok());
  EXPECT_THAT(Ids(**whole, "abc"), ElementsAre(5));
}

TEST(BpeTest, RefusesMergesOutsideTheVocabulary) {
  auto left = Bpe::Create(AbcVocab(), {{"a", "b"}, {"x", "b"}}, {}, "merges.txt");
  EXPECT_EQ(left.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(left.status().message()), HasSubstr("merges.txt: merge 2"));
  EXPECT_THAT(std::string(left.status().message()), HasSubstr("\"x\""));
  auto merged = Bpe::Create(AbcVocab(), {{"a", "c"}}, {}, "merges.txt");
  EXPECT_THAT(std::string(merged.status().message()), HasSubstr("\"ac\""));
  BpeOptions unk;
  unk.unk_token = "[UNK]";
  EXPECT_FALSE(Bpe::Create(AbcVocab(), {}, unk, "test").ok());
}

TEST(BpeTest, SharedAcrossThreads) {
  auto bpe = Bpe::Create(AbcVocab(), {{"a", "b"}, {"ab", "c"}}, {}, "test");
  ASSERT_TRUE(bpe.ok());
  std::vector<std::thread> threads;
  std::vector<int> good(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) good[t] += Ids(**bpe, i % 2 ? "abc" : "abca") ==
                                                      (i % 2 ? std::vector<int64_t>{5}
                                                             : std::vector<int64_t>{5, 0});
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(good, ElementsAre(500, 500, 500, 500));
}

TEST(LoadMergesTxtTest, SkipsTheVersionLineAndNamesBadLines) {
  testing::TempDir dir;
  testing::WriteFileOrDie(dir.Join("merges.txt"), "#version: 0.2\na b\r\nab c\n\n");
  auto merges = LoadMergesTxt(dir.Join("merges.txt"));
  ASSERT_TRUE(merges.ok()) << merges.status();
  EXPECT_THAT(*merges, ElementsAre(BpeMerge{"a", "b"}, BpeMerge{"ab", "c"}));
  testing::WriteFileOrDie(dir.Join("bad.txt"), "a b\nabc\n");
  auto bad = LoadMergesTxt(dir.Join("bad.txt"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bad.txt: line 2"));
  EXPECT_EQ(LoadMergesTxt(dir.Join("none.txt")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace twin
