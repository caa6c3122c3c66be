// HfTokenizer::Decode and HfTokenStream on small hand-made tokenizers: byte-level BPE, BERT's
// WordPiece, and Llama-2 style BPE with byte fallback.
#include <random>

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

const std::string kFffd = "\xEF\xBF\xBD";

std::unique_ptr<HfTokenizer> FromJson(const nlohmann::json& json) {
  auto tok = HfTokenizer::FromTokenizerJson(json.dump(), "tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// Byte-level BPE whose id for each byte is the byte; "Ġw"=256, <|endoftext|>=257 (special),
// <extra>=258 (added, not special).
nlohmann::json ByteLevelJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    text_internal::AppendUtf8(ByteToUnicode(static_cast<uint8_t>(b)), &s);
    vocab[s] = b;
  }
  vocab["\xC4\xA0w"] = 256;
  return {{"added_tokens",
           {{{"id", 257}, {"content", "<|endoftext|>"}, {"special", true}},
            {{"id", 258}, {"content", "<extra>"}, {"special", false}}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\xC4\xA0 w"}}}}};
}

// Llama-2 style: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF> = 3..258, then pieces.
nlohmann::json LlamaJson() {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) vocab[std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">"] = 3 + b;
  const std::vector<std::string> pieces = {"\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d",
                                           "\xE2\x96\x81h", "ll", "\xE2\x96\x81he",
                                           "\xE2\x96\x81hell", "\xE2\x96\x81hello",
                                           "\xE2\x96\x81w", "or", "\xE2\x96\x81wor"};
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = 259 + static_cast<int>(i);
  const nlohmann::json merges = {"\xE2\x96\x81 h", "l l", "\xE2\x96\x81h e", "\xE2\x96\x81he ll",
                                 "\xE2\x96\x81hell o", "\xE2\x96\x81 w", "o r",
                                 "\xE2\x96\x81w or"};
  const nlohmann::json special = {{"special", true}, {"normalized", false}};
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < 3; ++i) {
    nlohmann::json t = special;
    t["id"] = i;
    t["content"] = i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>";
    added.push_back(t);
  }
  return {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
        {"vocab", vocab}, {"merges", merges}}}};
}

constexpr int64_t kByte0 = 3;  // LlamaJson's <0x00>
int64_t Piece(int i) { return 259 + i; }

// Every delta of a stream over `ids`, then Finish's.
std::vector<std::string> Stream(const HfTokenizer& tok, const std::vector<int64_t>& ids,
                                bool skip = false) {
  HfTokenStream stream(&tok, skip);
  std::vector<std::string> out;
  for (int64_t id : ids) out.push_back(stream.Push(id));
  out.push_back(stream.Finish());
  return out;
}

std::string Concat(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += p;
  return s;
}

TEST(HfDecodeTest, ByteLevelRoundTripsAndKeepsAddedTokens) {
  auto tok = FromJson(ByteLevelJson());
  ASSERT_NE(tok, nullptr);
  const std::string text = "Hello world <|endoftext|> \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80<extra>";
  auto e = tok->Encode(text);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(tok->Decode(e->ids), text);
  EXPECT_EQ(tok->Decode(e->ids, /*skip_special_tokens=*/true),
            "Hello world  \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80<extra>");
  EXPECT_EQ(tok->Decode({}), "");
  // Ids without a token are dropped.
  EXPECT_EQ(tok->Decode({'a', -1, 100000, 'b'}), "ab");
}

TEST(HfDecodeTest, ByteLevelInvalidUtf8BecomesReplacementCharacters) {
  auto tok = FromJson(ByteLevelJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Decode({0xE4, 0xB8}), kFffd);              // a cut character: one U+FFFD
  EXPECT_EQ(tok->Decode({0xE4, 0xB8, 'a'}), kFffd + "a");
  EXPECT_EQ(tok->Decode({0x80, 0xFF, 'a'}), kFffd + kFffd + "a");
  EXPECT_EQ(tok->Decode({0xED, 0xA0, 0x80}), kFffd + kFffd + kFffd);  // a surrogate
  EXPECT_EQ(tok->Decode({0xE4, 0xB8, 257}), kFffd + "<|endoftext|>");
}

TEST(HfDecodeTest, StreamHoldsCharactersSplitAcrossTokens) {
  auto tok = FromJson(ByteLevelJson());
  ASSERT_NE(tok, nullptr);
  // 中 = E4 B8 AD, 😀 = F0 9F 98 80: nothing comes out until the last byte.
  EXPECT_THAT(Stream(*tok, {'a', 0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0x98, 0x80, 256}),
              ElementsAre("a", "", "", "\xE4\xB8\xAD", "", "", "", "\xF0\x9F\x98\x80", " w", ""));
  // A character still cut at the end is U+FFFD from Finish, as Decode gives.
  EXPECT_THAT(Stream(*tok, {'a', 0xF0, 0x9F}), ElementsAre("a", "", "", kFffd));
  EXPECT_THAT(Stream(*tok, {0xE4, 'x'}), ElementsAre("", kFffd + "x", ""));
  EXPECT_THAT(Stream(*tok, {'a', 257, 'b'}, /*skip=*/true), ElementsAre("a", "", "b", ""));
}

TEST(HfDecodeTest, WordPieceJoinsContinuationsAndCleansUp) {
  nlohmann::json vocab = nlohmann::json::object();
  const char* tokens[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", ",", "!", "##s",
                          "don", "'", "t"};
  for (int i = 0; i < 12; ++i) vocab[tokens[i]] = i;
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < 4; ++i) added.push_back({{"id", i}, {"content", tokens[i]}, {"special", true}});
  nlohmann::json json = {
      {"added_tokens", added},
      {"normalizer", {{"type", "BertNormalizer"}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"post_processor", {{"type", "BertProcessing"}, {"cls", {"[CLS]", 2}}, {"sep", {"[SEP]", 3}}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"vocab", vocab}}}};
  auto tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("Hello, worlds!");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(tok->Decode(e->ids), "[CLS] hello, worlds! [SEP]");
  EXPECT_EQ(tok->Decode(e->ids, true), "hello, worlds!");
  EXPECT_EQ(tok->Decode({8, 4}), "##s hello");  // the first token keeps its prefix
  EXPECT_EQ(Concat(Stream(*tok, e->ids, true)), "hello, worlds!");
  json["decoder"]["cleanup"] = false;
  EXPECT_EQ(FromJson(json)->Decode(e->ids, true), "hello , worlds !");
  json.erase("decoder");  // none: tokens joined by ' '
  EXPECT_EQ(FromJson(json)->Decode({4, 8, 7}), "hello ##s !");
}

TEST(HfDecodeTest, LlamaEncodesWithByteFallbackAndDecodes) {
  auto tok = FromJson(LlamaJson());
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("hello world");
  ASSERT_TRUE(e.ok()) << e.status();
  // <s> ▁hello ▁wor l d
  EXPECT_THAT(e->ids, ElementsAre(1, Piece(12), Piece(15), Piece(3), Piece(7)));
  EXPECT_EQ(tok->Decode(e->ids), "<s> hello world");  // Strip only cuts the text's start
  EXPECT_EQ(tok->Decode(e->ids, true), "hello world");
  // é is not in the vocabulary: its bytes C3 A9; \n is <0x0A>.
  e = tok->Encode("h\xC3\xA9\nlo");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, Piece(8), kByte0 + 0xC3, kByte0 + 0xA9, kByte0 + 0x0A,
                                  Piece(3), Piece(4)));
  EXPECT_EQ(tok->Decode(e->ids, true), "h\xC3\xA9\nlo");
  // Leading spaces: Prepend adds one, the decoder's Strip removes one.
  e = tok->Encode("  hello");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(tok->Decode(e->ids, true), "  hello");
  // A byte run that is not UTF-8 becomes one U+FFFD per byte.
  EXPECT_EQ(tok->Decode({Piece(8), kByte0 + 0xE4, kByte0 + 0xB8, Piece(13)}),
            "h" + kFffd + kFffd + " w");
}

TEST(HfDecodeTest, LlamaStreamHoldsByteRunsUntilTheyEnd) {
  auto tok = FromJson(LlamaJson());
  ASSERT_NE(tok, nullptr);
  // ▁h 😀(4 byte tokens) ▁w
  const std::vector<int64_t> ids = {Piece(8), kByte0 + 0xF0, kByte0 + 0x9F, kByte0 + 0x98,
                                    kByte0 + 0x80, Piece(13)};
  EXPECT_THAT(Stream(*tok, ids), ElementsAre("h", "", "", "", "", "\xF0\x9F\x98\x80 w", ""));
  EXPECT_EQ(tok->Decode(ids), "h\xF0\x9F\x98\x80 w");
  EXPECT_THAT(Stream(*tok, {kByte0 + 0xE4, kByte0 + 0xB8, kByte0 + 0xAD}),
              ElementsAre("", "", "", "\xE4\xB8\xAD"));
}

TEST(HfDecodeTest, LlamaFusesUnknownCharacters) {
  nlohmann::json json = LlamaJson();
  json["model"]["byte_fallback"] = false;
  auto tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("h\xC3\xA9\xC3\xA9o");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, Piece(8), 0, Piece(4)));
  json["model"]["fuse_unk"] = false;
  e = FromJson(json)->Encode("h\xC3\xA9\xC3\xA9o");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, Piece(8), 0, 0, Piece(4)));
}

TEST(HfDecodeTest, MetaspacePreTokenizerAndDecoder) {
  nlohmann::json json = LlamaJson();
  json["normalizer"] = nullptr;
  json["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"},
                           {"prepend_scheme", "first"}, {"split", false}};
  json["decoder"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"},
                     {"prepend_scheme", "first"}, {"split", false}};
  json["model"]["vocab"]["\xE2\x96\x81\xE2\x96\x81"] = Piece(16);  // no merge makes it
  auto tok = FromJson(json);
  ASSERT_NE(tok, nullptr);
  auto e = tok->Encode("hello world");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, Piece(12), Piece(15), Piece(3), Piece(7)));
  // A leading space is the replacement: none is prepended to it.
  e = tok->Encode(" hello");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, Piece(12)));
  // "first": no replacement prepended after an added token.
  e = tok->Encode("<s>hello");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, 1, Piece(1), Piece(2), Piece(9), Piece(4)));
  // The decoder drops the replacements of the first token and turns the others into spaces.
  EXPECT_EQ(tok->Decode({Piece(12), Piece(15), Piece(3)}), "hello worl");
  EXPECT_EQ(Concat(Stream(*tok, {Piece(12), Piece(15), Piece(3)})), "hello worl");
  // Every one of them (Rust; Tokenizers.js strips one leading space: "  hello").
  EXPECT_EQ(tok->Decode({Piece(16), Piece(12)}), " hello");
  json["pre_tokenizer"]["prepend_scheme"] = "always";
  e = FromJson(json)->Encode("<s>hello");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, 1, Piece(12)));
  json["pre_tokenizer"]["split"] = true;
  e = FromJson(json)->Encode("hello world");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(e->ids, ElementsAre(1, Piece(12), Piece(15), Piece(3), Piece(7)));
}

// For random id sequences, the stream's pieces concatenate to Decode's text.
void ExpectStreamMatchesDecode(const HfTokenizer& tok, int64_t max_id, uint32_t seed) {
  std::mt19937 random(seed);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int64_t> ids(random() % 12);
    for (auto& id : ids) id = static_cast<int64_t>(random() % (max_id + 2)) - 1;
    for (bool skip : {false, true}) {
      const std::vector<std::string> parts = Stream(tok, ids, skip);
      EXPECT_EQ(Concat(parts), tok.Decode(ids, skip)) << "trial " << trial;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        // Every piece but Finish's is whole UTF-8.
        EXPECT_TRUE(text_internal::IsValidUtf8(parts[i])) << "trial " << trial;
      }
    }
  }
}

TEST(HfDecodeTest, StreamConcatenationEqualsDecode) {
  auto byte_level = FromJson(ByteLevelJson());
  auto llama = FromJson(LlamaJson());
  ASSERT_NE(byte_level, nullptr);
  ASSERT_NE(llama, nullptr);
  ExpectStreamMatchesDecode(*byte_level, 258, 1);
  ExpectStreamMatchesDecode(*llama, 274, 2);
}

TEST(HfDecodeTest, BadDecodersNameTheKey) {
  auto error = [](const nlohmann::json& decoder) {
    nlohmann::json json = LlamaJson();
    json["decoder"] = decoder;
    return HfTokenizer::FromTokenizerJson(json.dump(), "tokenizer.json").status();
  };
  EXPECT_EQ(error({{"type", "CTC"}}).code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(error({{"type", "CTC"}}).message()),
              HasSubstr("tokenizer.json: decoder.type \"CTC\""));
  auto strip = error({{"type", "Sequence"},
                      {"decoders", {{{"type", "Strip"}, {"content", "ab"}, {"start", 1}}}}});
  EXPECT_EQ(strip.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(strip.message()), HasSubstr("decoder.decoders[0].content"));
  auto regex = error({{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", " "}});
  EXPECT_EQ(regex.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(regex.message()), HasSubstr("decoder.pattern.Regex"));
  auto after_fuse = error({{"type", "Sequence"},
                           {"decoders", {{{"type", "Fuse"}}, {{"type", "ByteFallback"}}}}});
  EXPECT_EQ(after_fuse.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(error({{"type", "Strip"}, {"start", -1}}).message()),
              HasSubstr("decoder.start"));
  nlohmann::json bad_split = LlamaJson();
  bad_split["pre_tokenizer"] = {{"type", "Metaspace"}, {"prepend_scheme", "sometimes"}};
  EXPECT_THAT(std::string(HfTokenizer::FromTokenizerJson(bad_split.dump(), "tokenizer.json")
                              .status()
                              .message()),
              HasSubstr("pre_tokenizer.prepend_scheme"));
}

}  // namespace
}  // namespace twin
