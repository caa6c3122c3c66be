#include "core/text/internal/precompiled.h"

#include <random>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/text/internal/unicode.h"
#include "tests/core/text/charsmap_builder.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using testing::AppendLittleEndian32;
using testing::BuildCharsmap;
using testing::BuildDoubleArray;
using testing::CharsmapBlob;
using text_internal::DecodeUtf8;
using text_internal::EncodeUtf8;
using text_internal::PrecompiledCharsmap;

std::shared_ptr<const PrecompiledCharsmap> ParseOrDie(const std::string& blob) {
  auto map = PrecompiledCharsmap::Parse(blob, "charsmap");
  EXPECT_TRUE(map.ok()) << map.status();
  return map.ok() ? *std::move(map) : nullptr;
}

std::string Normalize(const PrecompiledCharsmap& map, const std::string& utf8) {
  return EncodeUtf8(map.Normalize(*DecodeUtf8(utf8, "text")));
}

// Rules of the kind nmt_nfkc holds: compatibility forms, a composition, whitespace and a
// control character.
std::shared_ptr<const PrecompiledCharsmap> NfkcLike() {
  return ParseOrDie(BuildCharsmap({{"\uFB01", "fi"},           // LATIN SMALL LIGATURE FI
                                   {"e\u0301", "\u00E9"},      // e + COMBINING ACUTE -> é
                                   {"\r", " "},
                                   {"\t", " "},
                                   {"\uFF21", "A"},            // FULLWIDTH A
                                   {"\u2460", "1"},            // CIRCLED DIGIT ONE
                                   {"\u200B", ""},             // ZERO WIDTH SPACE: removed
                                   {"\x7F", ""},
                                   {"ab", "X"},
                                   {"abc", "Y"}}));
}

TEST(PrecompiledTest, LookupsFindTheShortestAndLongestKey) {
  auto map = NfkcLike();
  ASSERT_NE(map, nullptr);
  EXPECT_EQ(map->num_keys(), 10u);
  EXPECT_EQ(map->ShortestMatch("abc"), "X");
  EXPECT_EQ(map->LongestMatch("abcd"), std::make_pair(size_t{3}, absl::string_view("Y")));
  EXPECT_EQ(map->LongestMatch("abd"), std::make_pair(size_t{2}, absl::string_view("X")));
  EXPECT_EQ(map->ShortestMatch("a"), std::nullopt);
  EXPECT_EQ(map->ShortestMatch(""), std::nullopt);
  EXPECT_EQ(map->ShortestMatch("\u200B"), "");
  // A NUL byte ends the key, as in SentencePiece.
  EXPECT_EQ(map->ShortestMatch(std::string("a\0b", 3)), std::nullopt);
}

TEST(PrecompiledTest, NormalizesByGraphemeClusterAsHuggingFaceDoes) {
  auto map = NfkcLike();
  ASSERT_NE(map, nullptr);
  EXPECT_EQ(Normalize(*map, "\uFB01ne"), "fine");
  EXPECT_EQ(Normalize(*map, "cafe\u0301"), "caf\u00E9");
  EXPECT_EQ(Normalize(*map, "\uFF21\u2460\tb\x7F"), "A1 b");
  EXPECT_EQ(Normalize(*map, "zero\u200Bwidth"), "zerowidth");
  // "\r\n" is one cluster; its prefix "\r" is a key, so the whole cluster becomes " " (one
  // space, where SentencePiece's longest match gives "\r" -> " " and keeps "\n").
  EXPECT_EQ(Normalize(*map, "a\r\nb"), "a b");
  // A cluster under 6 bytes whose prefix is a key becomes that key's replacement, whole: the
  // ligature's combining mark is dropped (SentencePiece keeps it: "fi\u0301").
  EXPECT_EQ(Normalize(*map, "\uFB01\u0301"), "fi");
  EXPECT_EQ(Normalize(*map, "\uFF21\u0301"), "A");
  // At 6 bytes or more the cluster goes character by character: the marks are kept.
  EXPECT_EQ(Normalize(*map, "\uFF21\u0301\u0301"), "A\u0301\u0301");
  EXPECT_EQ(Normalize(*map, "\uFB01\u0301\u0302"), "fi\u0301\u0302");
  // Keys spanning clusters are never applied: "a", "b" and "c" are clusters of their own.
  EXPECT_EQ(Normalize(*map, "abc"), "abc");
  EXPECT_EQ(Normalize(*map, ""), "");
  EXPECT_EQ(Normalize(*map, "plain text"), "plain text");
  // Characters outside the BMP and emoji sequences pass through.
  EXPECT_EQ(Normalize(*map, "\U0001F468\u200D\U0001F469 \U00010348"),
            "\U0001F468\u200D\U0001F469 \U00010348");
}

TEST(PrecompiledTest, CorruptCharsmapsAreRefusedWithTheReason) {
  auto error = [](const std::string& blob) {
    return PrecompiledCharsmap::Parse(blob, "tokenizer.json: normalizer.precompiled_charsmap")
        .status();
  };
  auto expect = [&](const std::string& blob, const std::string& reason) {
    const absl::Status status = error(blob);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << reason;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("tokenizer.json: normalizer.precompiled_charsmap"));
    EXPECT_THAT(std::string(status.message()), HasSubstr(reason));
  };
  expect("", "shorter than the 4-byte trie size");
  expect("ab", "shorter than the 4-byte trie size");
  std::string header;
  AppendLittleEndian32(0, &header);
  expect(header, "trie size 0 is not a positive multiple of 4");
  header.clear();
  AppendLittleEndian32(6, &header);
  expect(header + "abcdefgh", "trie size 6 is not a positive multiple of 4");
  header.clear();
  AppendLittleEndian32(1024, &header);
  expect(header + "abcd", "trie size 1024 is larger than the 4 bytes after the header");

  const std::vector<uint32_t> units = BuildDoubleArray({{"a", 0}, {"b", 2}});
  expect(CharsmapBlob(units, std::string("x\0\xFF\0", 4)), "not valid UTF-8");
  // "b"'s replacement starts at byte 2: inside "é" here, past the end of "x".
  expect(CharsmapBlob(units, "x\xC3\xA9"), "not the start of a character");
  expect(CharsmapBlob(units, "x"), "starts at byte 2");
  EXPECT_TRUE(error(CharsmapBlob(units, std::string("x\0y", 3))).ok());
  // A leaf that points past the array.
  std::vector<uint32_t> broken = units;
  for (uint32_t& unit : broken) {
    if (unit & (1u << 8)) unit = (unit & 0x3FF) | (0x1FFFFFu << 10);
  }
  expect(CharsmapBlob(broken, std::string("x\0y", 3)), "past the trie's");
  std::string too_big;
  AppendLittleEndian32(4, &too_big);
  too_big.resize(PrecompiledCharsmap::kMaxBytes + 1, '\0');
  expect(too_big, "allowed");
}

// Random bytes after a valid header either parse or are refused; what parses normalizes any
// text without reading outside the data (run under the sanitizers in CI).
TEST(PrecompiledTest, RandomCharsmapsNeverCrash) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  const std::u32string text = *DecodeUtf8("a\uFB01 e\u0301\r\n\uFF21\U0001F600 xyz", "text");
  int parsed = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const uint32_t units = 1 + trial % 64;
    std::string blob;
    AppendLittleEndian32(units * 4, &blob);
    for (uint32_t i = 0; i < units * 4; ++i) blob.push_back(static_cast<char>(byte(rng)));
    blob += "abc";
    auto map = PrecompiledCharsmap::Parse(blob, "random");
    if (!map.ok()) {
      EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++parsed;
    const std::u32string out = (*map)->Normalize(text);
    EXPECT_TRUE(text_internal::IsValidUtf8(EncodeUtf8(out)));
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace twin
