// tokenizer.model directories: small SentencePiece models written here field by field (the
// protocol buffer wire format of sentencepiece_model.proto), their encoding and decoding, and the
// errors of bad files. tests/text/run_parity.sh compares trained models with Tokenizers.js.
#include <cstring>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/text/hf_tokenizer.h"
#include "tests/core/text/charsmap_builder.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::WriteFileOrDie;

enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6 };
enum ModelType { kUnigram = 1, kBpe = 2, kWord = 3 };

struct Piece {
  std::string piece;
  float score;
  PieceType type = kNormal;
};

std::string Varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
  return out;
}
std::string VarintField(int number, int64_t value) {
  return Varint(static_cast<uint64_t>(number) << 3) + Varint(static_cast<uint64_t>(value));
}
std::string BytesField(int number, const std::string& bytes) {
  return Varint((static_cast<uint64_t>(number) << 3) | 2) + Varint(bytes.size()) + bytes;
}
std::string FloatField(int number, float value) {
  std::string bits(4, '\0');
  std::memcpy(bits.data(), &value, 4);  // little-endian, as the wire format
  return Varint((static_cast<uint64_t>(number) << 3) | 5) + bits;
}

struct Model {
  std::vector<Piece> pieces;
  ModelType type = kBpe;
  int64_t unk_id = 0, bos_id = 1, eos_id = 2;
  std::string charsmap;  // normalizer_spec.precompiled_charsmap, if any

  std::string Serialize() const {
    std::string out;
    for (const Piece& p : pieces) {
      out += BytesField(1, BytesField(1, p.piece) + FloatField(2, p.score) + VarintField(3, p.type));
    }
    out += BytesField(2, VarintField(3, type) + VarintField(40, unk_id) + VarintField(41, bos_id) +
                             VarintField(42, eos_id));
    if (!charsmap.empty()) out += BytesField(3, BytesField(1, "nmt_nfkc") + BytesField(2, charsmap));
    return out;
  }
};

const std::string kSpace = "\xE2\x96\x81";  // ▁

// <unk> <s> </s>, then (with_bytes) <0x00>..<0xFF> at 3..258, then `normal` in order.
Model MakeModel(ModelType type, const std::vector<Piece>& normal, bool with_bytes) {
  Model m;
  m.type = type;
  m.pieces = {{"<unk>", 0, kUnknown}, {"<s>", 0, kControl}, {"</s>", 0, kControl}};
  for (int b = 0; with_bytes && b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    m.pieces.push_back({name, 0, kByte});
  }
  m.pieces.insert(m.pieces.end(), normal.begin(), normal.end());
  return m;
}

// ▁=259 a=260 b=261 ▁a=262 ab=263 ▁ab=264
Model BpeModel() {
  return MakeModel(kBpe, {{kSpace, -1}, {"a", -2}, {"b", -3}, {kSpace + "a", -4}, {"ab", -5},
                          {kSpace + "ab", -6}},
                   /*with_bytes=*/true);
}

// ▁=3 a=4 b=5 ab=6 ▁ab=7 ▁a=8
Model UnigramModel() {
  return MakeModel(kUnigram, {{kSpace, -2}, {"a", -3}, {"b", -3}, {"ab", -4},
                              {kSpace + "ab", -4.5}, {kSpace + "a", -3.5}},
                   /*with_bytes=*/false);
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> LoadModel(const TempDir& dir, const std::string& bytes,
                                                       const std::string& config = "{}") {
  WriteFileOrDie(dir.Join("tokenizer.model"), bytes);
  WriteFileOrDie(dir.Join("tokenizer_config.json"), config);
  return HfTokenizer::Load(dir.path());
}

std::vector<int64_t> Ids(const HfTokenizer& tok, const std::string& text, bool special = true) {
  auto e = tok.Encode(text, {.add_special_tokens = special});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? e->ids : std::vector<int64_t>{};
}

TEST(SentencePieceTest, BpeMergesByScoreWithByteFallback) {
  TempDir dir;
  auto tok = LoadModel(dir, BpeModel().Serialize());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(Ids(**tok, "ab ab"), ElementsAre(1, 264, 264));
  // é is not a piece: its UTF-8 bytes C3 A9.
  EXPECT_THAT(Ids(**tok, "abé", false), ElementsAre(264, 3 + 0xC3, 3 + 0xA9));
  // <s> in the text is the control token; the text after it gets its own ▁ (legacy).
  EXPECT_THAT(Ids(**tok, "a<s>b", false), ElementsAre(262, 1, 259, 261));
  EXPECT_EQ((*tok)->vocab_size(), 265);
  EXPECT_EQ((*tok)->TokenToId("<0x41>"), 3 + 0x41);
  EXPECT_EQ((*tok)->num_special_tokens(), 1);
  EXPECT_EQ((*tok)->Decode({1, 264, 3 + 0xC3, 3 + 0xA9}), "<s> abé");
  EXPECT_EQ((*tok)->Decode({1, 264, 3 + 0xC3, 3 + 0xA9}, /*skip_special_tokens=*/true), "abé");
  HfTokenStream stream(tok->get(), /*skip_special_tokens=*/true);
  std::string streamed;
  for (int64_t id : {1, 264, 3 + 0xC3, 3 + 0xA9, 264}) streamed += stream.Push(id);
  streamed += stream.Finish();
  EXPECT_EQ(streamed, "abé ab");
}

TEST(SentencePieceTest, ConfigFlags) {
  TempDir dir;
  auto tok = LoadModel(dir, BpeModel().Serialize(),
                       R"({"add_bos_token": false, "add_eos_token": true})");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(Ids(**tok, "ab"), ElementsAre(264, 2));
  // legacy false: ▁ only before the start of the text, not after <s>.
  TempDir mistral;
  tok = LoadModel(mistral, BpeModel().Serialize(), R"({"legacy": false})");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(Ids(**tok, "a<s>b", false), ElementsAre(262, 1, 261));
}

TEST(SentencePieceTest, UnigramBestScoreAndFusedUnknown) {
  TempDir dir;
  auto tok = LoadModel(dir, UnigramModel().Serialize());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(Ids(**tok, "ab"), ElementsAre(1, 7));
  // x and y are no pieces: one <unk> for both.
  EXPECT_THAT(Ids(**tok, "xyab", false), ElementsAre(3, 0, 6));
  EXPECT_EQ((*tok)->Decode({1, 3, 0, 6}), "<s> <unk>ab");
  EXPECT_EQ((*tok)->Decode({1, 3, 0, 6}, /*skip_special_tokens=*/true), "ab");
}

TEST(SentencePieceTest, TokenizerJsonIsPreferred) {
  TempDir dir;
  WriteFileOrDie(dir.Join("tokenizer.json"),
                 R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  auto tok = LoadModel(dir, "not a model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 1);
}

TEST(SentencePieceTest, CorruptModelsAreInvalidArgumentNamingTheFile) {
  const std::string good = BpeModel().Serialize();
  struct Bad {
    std::string what, bytes, message;
  } cases[] = {
      {"empty", "", "no pieces"},
      {"text", "this is not a model\n", "not a SentencePiece model"},
      {"cut at the end", good.substr(0, good.size() - 1), "truncated"},
      {"cut in half", good.substr(0, good.size() / 2), "truncated"},
      {"wire type 7", std::string("\x0f\x01", 2), "wire type 7"},
      {"varint too long", std::string(12, '\xff'), "longer than 10 bytes"},
  };
  for (const Bad& bad : cases) {
    TempDir dir;
    auto tok = LoadModel(dir, bad.bytes);
    ASSERT_FALSE(tok.ok()) << bad.what;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << bad.what;
    EXPECT_THAT(tok.status().message(), HasSubstr(dir.Join("tokenizer.model"))) << bad.what;
    EXPECT_THAT(tok.status().message(), HasSubstr(bad.message)) << bad.what;
  }
}

TEST(SentencePieceTest, BadModelContent) {
  Model twice = BpeModel();
  twice.pieces.push_back({"ab", -7});
  Model no_unk = BpeModel();
  no_unk.unk_id = 500;
  Model no_bos = BpeModel();
  no_bos.bos_id = -1;
  struct Bad {
    std::string what;
    Model model;
    std::string message;
  } cases[] = {
      {"repeated piece", twice, "occurs twice"},
      {"unk_id", no_unk, "unk_id 500 is not a piece"},
      {"no bos", no_bos, "add_bos_token is true"},
  };
  for (const Bad& bad : cases) {
    TempDir dir;
    auto tok = LoadModel(dir, bad.model.Serialize());
    ASSERT_FALSE(tok.ok()) << bad.what;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << bad.what;
    EXPECT_THAT(tok.status().message(), HasSubstr(bad.message)) << bad.what;
  }
  Model word = BpeModel();
  word.type = kWord;
  TempDir dir;
  auto tok = LoadModel(dir, word.Serialize());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kUnimplemented) << tok.status();
}

// Every prefix of a model and every byte flipped: a tokenizer or an error, never a crash.
TEST(SentencePieceTest, TruncatedAndFlippedBytesNeverCrash) {
  const std::string good = UnigramModel().Serialize();
  TempDir dir;
  auto check = [&](const std::string& bytes) {
    auto tok = LoadModel(dir, bytes);
    if (tok.ok()) {
      (void)(*tok)->Encode("ab xy");
      return;
    }
    EXPECT_THAT(tok.status().code(), AnyOf(absl::StatusCode::kInvalidArgument,
                                           absl::StatusCode::kUnimplemented))
        << tok.status();
  };
  for (size_t n = 0; n < good.size(); ++n) check(good.substr(0, n));
  for (size_t i = 0; i < good.size(); ++i) {
    std::string flipped = good;
    flipped[i] = static_cast<char>(flipped[i] ^ 0xA5);
    check(flipped);
  }
}

// spiece.model (T5) and sentencepiece.bpe.model (XLM-RoBERTa) alone: Hugging Face's converters,
// the model's compiled rules first.
// <unk>=0 <s>=1 </s>=2 ▁ab=3 ▁a=4 b=5 ▁=6 a=7; fullwidth a and b map to a and b.
Model ConverterModel() {
  Model m = MakeModel(kUnigram,
                      {{kSpace + "ab", -1}, {kSpace + "a", -2}, {"b", -2}, {kSpace, -3}, {"a", -3}},
                      /*with_bytes=*/false);
  m.charsmap = testing::BuildCharsmap({{"\uFF41", "a"}, {"\uFF42", "b"}});
  return m;
}

TEST(SentencePieceTest, T5AndXlmRobertaModelsConvertAsHuggingFaceDoes) {
  TempDir t5;
  WriteFileOrDie(t5.Join("spiece.model"), ConverterModel().Serialize());
  WriteFileOrDie(t5.Join("tokenizer_config.json"),
                 R"({"tokenizer_class": "T5TokenizerFast", "extra_ids": 3})");
  auto t = HfTokenizer::Load(t5.path());
  ASSERT_TRUE(t.ok()) << t.status();
  // The charsmap, then the right end stripped, then Metaspace; </s> after the text.
  EXPECT_THAT((*t)->Encode("\uFF41\uFF42  ")->ids, ElementsAre(3, 2));
  EXPECT_THAT((*t)->Encode("a   b")->ids, ElementsAre(4, 6, 5, 2));
  EXPECT_EQ((*t)->vocab_size(), 11);
  EXPECT_EQ((*t)->TokenToId("<extra_id_0>"), 10);
  EXPECT_EQ((*t)->TokenToId("<extra_id_2>"), 8);
  EXPECT_THAT((*t)->Encode("<extra_id_0>")->ids, ElementsAre(10, 2));
  EXPECT_EQ((*t)->Decode({3, 6, 5, 2}, /*skip_special_tokens=*/true), "ab b");
  EXPECT_FALSE((*t)->pad_id().has_value());  // the model has no <pad>

  TempDir xlmr;
  WriteFileOrDie(xlmr.Join("sentencepiece.bpe.model"), ConverterModel().Serialize());
  WriteFileOrDie(xlmr.Join("config.json"), R"({"model_type": "xlm-roberta"})");
  auto x = HfTokenizer::Load(xlmr.path());
  ASSERT_TRUE(x.ok()) << x.status();
  // fairseq's layout: <s>=0 <pad>=1 </s>=2 <unk>=3, the pieces from the fourth one further,
  // <mask> last (taking the space before it).
  EXPECT_THAT((*x)->Encode("\uFF41\uFF42")->ids, ElementsAre(0, 4, 2));
  EXPECT_EQ((*x)->TokenToId("<mask>"), 9);
  EXPECT_THAT((*x)->Encode("a <mask>")->ids, ElementsAre(0, 5, 9, 2));
  EXPECT_THAT((*x)->Encode("x")->ids, ElementsAre(0, 7, 3, 2));
  EXPECT_EQ((*x)->pad_id(), 1);
}

TEST(SentencePieceTest, OtherConversionsAreRefusedNamingTheClass) {
  auto error = [](const std::string& file, const std::string& config_name,
                  const std::string& config, const Model& model) {
    TempDir dir;
    WriteFileOrDie(dir.Join(file), model.Serialize());
    if (!config_name.empty()) WriteFileOrDie(dir.Join(config_name), config);
    return HfTokenizer::Load(dir.path()).status();
  };
  const Model m = ConverterModel();
  absl::Status albert = error("spiece.model", "tokenizer_config.json",
                              R"({"tokenizer_class": "AlbertTokenizer"})", m);
  EXPECT_EQ(albert.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(albert.message()), HasSubstr("\"AlbertTokenizer\""));
  EXPECT_THAT(std::string(albert.message()), HasSubstr("tokenizer.json"));
  absl::Status mbart = error("sentencepiece.bpe.model", "config.json",
                             R"({"model_type": "mbart"})", m);
  EXPECT_EQ(mbart.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(mbart.message()), HasSubstr("\"mbart\""));
  absl::Status unknown = error("spiece.model", "", "", m);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("spiece.model"));
  Model bpe = m;
  bpe.type = kBpe;
  absl::Status bpe_t5 = error("spiece.model", "tokenizer_config.json",
                              R"({"tokenizer_class": "T5Tokenizer"})", bpe);
  EXPECT_EQ(bpe_t5.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(bpe_t5.message()), HasSubstr("Unigram"));
  Model corrupt = m;
  corrupt.charsmap = "ab";
  absl::Status charsmap = error("spiece.model", "tokenizer_config.json",
                                R"({"tokenizer_class": "T5Tokenizer"})", corrupt);
  EXPECT_EQ(charsmap.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(charsmap.message()), HasSubstr("normalizer_spec.precompiled_charsmap"));
  absl::Status extra = error("spiece.model", "tokenizer_config.json",
                             R"({"tokenizer_class": "T5Tokenizer", "extra_ids": -1})", m);
  EXPECT_THAT(std::string(extra.message()), HasSubstr("extra_ids"));
}

}  // namespace
}  // namespace twin
