// tokenizer.model directories (Llama 2, Mistral and other SentencePiece models without a
// tokenizer.json), built into the pipeline that Hugging Face's Llama converter gives
// LlamaTokenizerFast:
//   - normalizer (legacy, the default): Prepend "▁" (when add_prefix_space, the default) and
//     Replace ' ' by "▁"; with `legacy: false` instead the Metaspace pre-tokenizer, "▁" before
//     the start of the text only (prepend_scheme "first"; "never" without add_prefix_space),
//     no split. The model's own normalizer spec is not used, as the converter ignores it;
//   - model: BPE (the model's pieces, merges of two pieces into a third ordered by the third's
//     score, byte_fallback, fuse_unk) or Unigram (the pieces' scores, byte_fallback);
//   - control pieces (<s>, </s>) special added tokens, user-defined pieces plain added tokens,
//     and the config files' special tokens special, as elsewhere;
//   - <s> before the text when add_bos_token (default true), </s> after it when add_eos_token
//     (default false);
//   - decoder: "▁" to ' ', <0xNN> pieces to bytes, Fuse, one leading ' ' stripped (when a
//     prefix is added).
//
// spiece.model (T5) and sentencepiece.bpe.model (XLM-RoBERTa) directories, chosen by
// tokenizer_config.json's tokenizer_class or else config.json's model_type, become the pipeline
// Hugging Face's T5 and XLM-RoBERTa converters give: the model's compiled normalization rules
// (Precompiled), Strip on the right, runs of spaces to one "▁", the Metaspace pre-tokenizer and
// decoder ("▁" before every piece: prepend_scheme "always", or "first" with `legacy: false`);
// a Unigram model without byte fallback: T5's pieces followed by extra_ids (default 100)
// sentinel tokens <extra_id_{n-1}> ... <extra_id_0>, special, and "$A </s>"; XLM-RoBERTa's
// fairseq layout <s> <pad> </s> <unk>, the pieces from the fourth on, <mask> (lstrip), and
// "<s> $A </s>".
#include <algorithm>
#include <filesystem>
#include <functional>
#include <optional>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/bounded_json.h"
#include "core/status_macros.h"
#include "core/text/internal/hf_config.h"
#include "core/text/internal/json_fields.h"
#include "core/text/internal/precompiled.h"
#include "core/text/internal/sentencepiece_proto.h"
#include "core/text/internal/special_tokens.h"
#include "core/text/internal/unicode.h"

namespace twin {
namespace text_internal {
namespace {

using PieceType = SentencePieceProto::PieceType;

constexpr const char* kTokenizerModel = "tokenizer.model";
constexpr char32_t kSpace = 0x2581;  // SentencePiece's ' '

absl::StatusOr<DecoderChain> LlamaDecoder(bool strip_prefix, const std::string& what) {
  nlohmann::json decoders = nlohmann::json::array();
  decoders.push_back(
      {{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}});
  decoders.push_back({{"type", "ByteFallback"}});
  decoders.push_back({{"type", "Fuse"}});
  if (strip_prefix) {
    decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1u}, {"stop", 0u}});
  }
  return ParseDecoder({{"type", "Sequence"}, {"decoders", std::move(decoders)}}, what);
}

// Every way to make a normal piece from two pieces, ordered by the made piece's score (highest
// first), then its id, then the left and right pieces' ids.
std::vector<BpeMerge> MergesByScore(const SentencePieceProto& model, const TokenVocab& vocab) {
  struct Candidate {
    float score;
    int64_t id, left, right;
    size_t split;  // bytes of the left piece
  };
  std::vector<Candidate> candidates;
  for (size_t id = 0; id < model.pieces.size(); ++id) {
    const auto& p = model.pieces[id];
    if (p.type != PieceType::kNormal) continue;
    const std::string& s = p.piece;
    for (size_t split = 1; split < s.size(); ++split) {
      if ((static_cast<uint8_t>(s[split]) & 0xC0) == 0x80) continue;  // inside a character
      auto left = vocab.find(s.substr(0, split));
      auto right = vocab.find(s.substr(split));
      if (left == vocab.end() || right == vocab.end()) continue;
      candidates.push_back({p.score, static_cast<int64_t>(id), left->second, right->second, split});
    }
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    return std::tie(a.id, a.left, a.right) < std::tie(b.id, b.left, b.right);
  });
  std::vector<BpeMerge> merges;
  merges.reserve(candidates.size());
  for (const Candidate& c : candidates) {
    const std::string& s = model.pieces[c.id].piece;
    merges.emplace_back(s.substr(0, c.split), s.substr(c.split));
  }
  return merges;
}

// The model's control pieces as special added tokens and its user-defined pieces as plain ones,
// each at the id `id_of(model id)` gives it (none: left out).
absl::Status AddPieceTokens(const SentencePieceProto& model,
                            const std::function<std::optional<int64_t>(size_t)>& id_of,
                            const std::string& path, TokenizerPipeline* p) {
  for (size_t id = 0; id < model.pieces.size(); ++id) {
    const auto& piece = model.pieces[id];
    ASSIGN_OR_RETURN(std::u32string content,
                     DecodeUtf8(piece.piece, absl::StrCat(path, ": piece ", id)));
    if (piece.type != PieceType::kControl && piece.type != PieceType::kUserDefined) continue;
    const std::optional<int64_t> token_id = id_of(id);
    if (!token_id) continue;
    p->added_tokens.push_back(AddedToken{std::move(content), *token_id, false, false, false,
                                         piece.type == PieceType::kControl});
  }
  return absl::OkStatus();
}

// The model of `model`'s type, and its control and user-defined pieces as added tokens.
absl::Status AddModel(const SentencePieceProto& model, const std::string& path,
                      TokenizerPipeline* p) {
  RETURN_IF_ERROR(AddPieceTokens(
      model, [](size_t id) { return std::optional<int64_t>(static_cast<int64_t>(id)); }, path, p));
  const std::string& unk = model.pieces[model.unk_id].piece;
  switch (model.model_type) {
    case SentencePieceProto::ModelType::kBpe: {
      TokenVocab vocab;
      for (size_t id = 0; id < model.pieces.size(); ++id) {
        vocab.emplace(model.pieces[id].piece, static_cast<int64_t>(id));
      }
      const std::vector<BpeMerge> merges = MergesByScore(model, vocab);
      BpeOptions options;
      options.unk_token = unk;
      options.byte_fallback = true;
      options.fuse_unk = true;
      ASSIGN_OR_RETURN(p->bpe, Bpe::Create(std::move(vocab), merges, options, path));
      return absl::OkStatus();
    }
    case SentencePieceProto::ModelType::kUnigram: {
      std::vector<std::pair<std::string, double>> pieces;
      pieces.reserve(model.pieces.size());
      for (const auto& piece : model.pieces) pieces.emplace_back(piece.piece, piece.score);
      ASSIGN_OR_RETURN(p->unigram, Unigram::Create(std::move(pieces), model.unk_id,
                                                   /*byte_fallback=*/true, path));
      return absl::OkStatus();
    }
    default:
      return absl::UnimplementedError(absl::StrCat(
          path, ": SentencePiece model_type ", static_cast<int>(model.model_type),
          " (WORD or CHAR) is not supported; BPE and Unigram are"));
  }
}

// How the text reaches the model: the legacy normalizer or the Metaspace pre-tokenizer.
void AddTextSteps(bool legacy, bool prefix_space, TokenizerPipeline* p) {
  if (legacy) {
    if (prefix_space) {
      NormalizerStep& prepend = p->normalizers.emplace_back();
      prepend.kind = NormalizerStep::Kind::kPrepend;
      prepend.text = std::u32string(1, kSpace);
    }
    NormalizerStep& replace = p->normalizers.emplace_back();
    replace.kind = NormalizerStep::Kind::kReplace;
    replace.text = std::u32string(1, U' ');
    replace.content = std::u32string(1, kSpace);
    return;
  }
  PreTokenizerStep& step = p->pre_tokenizers.emplace_back();
  step.kind = PreTokenizerStep::Kind::kMetaspace;
  step.metaspace.replacement = kSpace;
  step.metaspace.prepend =
      prefix_space ? MetaspaceOptions::Prepend::kFirst : MetaspaceOptions::Prepend::kNever;
  step.metaspace.split = false;
}

// The id that add_bos_token / add_eos_token (`flag`) adds: the special token `key`.
absl::StatusOr<int64_t> AddedId(const absl::flat_hash_map<std::string, int64_t>& ids,
                                const std::string& key, const char* flag,
                                const std::string& path) {
  auto it = ids.find(key);
  if (it == ids.end()) {
    return absl::InvalidArgumentError(absl::StrCat(kTokenizerConfig, ": ", flag, " is true but ",
                                                   path, " has no ", key,
                                                   " and the config files name none"));
  }
  return it->second;
}

// How a directory's SentencePiece model becomes a pipeline: Hugging Face's converter for it.
enum class Converter { kLlama, kT5, kXlmRoberta };

// The model file of `dir` and its converter (tokenizer_class, else config.json's model_type).
absl::StatusOr<std::pair<std::string, Converter>> ChooseConverter(const std::string& dir,
                                                                  const DirConfig& config) {
  auto exists = [&](const char* name) { return std::filesystem::exists(dir + "/" + name); };
  if (exists(kTokenizerModel)) return std::make_pair(std::string(kTokenizerModel), Converter::kLlama);
  const char* file = exists("spiece.model") ? "spiece.model" : "sentencepiece.bpe.model";
  std::string kind;  // "tokenizer_class X" / "model_type y", for errors
  std::string name;
  const nlohmann::json& cls = Field(config.tokenizer_config, "tokenizer_class");
  if (cls.is_string()) {
    name = cls.get<std::string>();
    if (absl::EndsWith(name, "Fast")) name.resize(name.size() - 4);
    kind = absl::StrCat("tokenizer_class \"", cls.get<std::string>(), "\" (", kTokenizerConfig, ")");
  } else if (std::filesystem::exists(dir + "/config.json")) {
    ASSIGN_OR_RETURN(std::string text, ReadTokenizerFile(dir + "/config.json"));
    ASSIGN_OR_RETURN(nlohmann::json model_config,
                     ParseBoundedJson(text, {}, dir + "/config.json"));
    const nlohmann::json& type = Field(model_config, "model_type");
    if (type.is_string()) {
      name = type.get<std::string>();
      kind = absl::StrCat("model_type \"", name, "\" (config.json)");
    }
  }
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, "/", file, ": neither ", kTokenizerConfig,
        " names a tokenizer_class nor config.json a model_type, so the SentencePiece model's "
        "conversion is unknown"));
  }
  const bool spiece = std::string(file) == "spiece.model";
  if (spiece && (name == "T5Tokenizer" || name == "t5" || name == "mt5" || name == "umt5")) {
    return std::make_pair(std::string(file), Converter::kT5);
  }
  if (!spiece && (name == "XLMRobertaTokenizer" || name == "xlm-roberta")) {
    return std::make_pair(std::string(file), Converter::kXlmRoberta);
  }
  return absl::UnimplementedError(absl::StrCat(
      dir, "/", file, " with ", kind, ": only ",
      spiece ? "T5's conversion of spiece.model" : "XLM-RoBERTa's conversion of sentencepiece.bpe.model",
      " is supported; give the directory the tokenizer.json of its fast tokenizer"));
}

// T5 / XLM-RoBERTa: normalizer, Metaspace and decoder of Hugging Face's SentencePiece converter.
absl::Status AddConverterTextSteps(const SentencePieceProto& model, bool legacy, bool prefix_space,
                                   const std::string& path, TokenizerPipeline* p) {
  if (!model.precompiled_charsmap.empty()) {
    NormalizerStep step;
    step.kind = NormalizerStep::Kind::kPrecompiled;
    ASSIGN_OR_RETURN(step.charsmap, PrecompiledCharsmap::Parse(
                                        model.precompiled_charsmap,
                                        path + ": normalizer_spec.precompiled_charsmap"));
    p->normalizers.push_back(std::move(step));
  }
  NormalizerStep strip;
  strip.kind = NormalizerStep::Kind::kStrip;
  strip.strip_left = false;
  strip.strip_right = true;
  p->normalizers.push_back(std::move(strip));
  NormalizerStep runs;
  runs.kind = NormalizerStep::Kind::kReplaceSpaceRuns;
  runs.content = std::u32string(1, kSpace);
  p->normalizers.push_back(std::move(runs));
  PreTokenizerStep& step = p->pre_tokenizers.emplace_back();
  step.kind = PreTokenizerStep::Kind::kMetaspace;
  step.metaspace.replacement = kSpace;
  step.metaspace.prepend = !prefix_space ? MetaspaceOptions::Prepend::kNever
                           : legacy      ? MetaspaceOptions::Prepend::kAlways
                                         : MetaspaceOptions::Prepend::kFirst;
  step.metaspace.split = true;
  const char* scheme = !prefix_space ? "never" : legacy ? "always" : "first";
  ASSIGN_OR_RETURN(p->decoder,
                   ParseDecoder({{"type", "Metaspace"},
                                 {"replacement", "\xE2\x96\x81"},
                                 {"prepend_scheme", scheme},
                                 {"split", true}},
                                path + ": decoder"));
  return absl::OkStatus();
}

// T5's or XLM-RoBERTa's Unigram vocabulary (Hugging Face ids) from the model, and the model's
// control and user-defined pieces as added tokens at their ids there.
absl::Status AddConverterModel(const SentencePieceProto& model, Converter converter,
                               int64_t extra_ids, const std::string& path, TokenizerPipeline* p,
                               DirConfig* config) {
  if (model.model_type != SentencePieceProto::ModelType::kUnigram) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": a ", converter == Converter::kT5 ? "T5" : "XLM-RoBERTa",
        " SentencePiece model of another type than Unigram is not supported"));
  }
  std::vector<std::pair<std::string, double>> vocab;
  int64_t unk_id = model.unk_id;
  if (converter == Converter::kT5) {
    for (const auto& piece : model.pieces) vocab.emplace_back(piece.piece, piece.score);
    for (int64_t i = extra_ids - 1; i >= 0; --i) {
      vocab.emplace_back(absl::StrCat("<extra_id_", i, ">"), 0.0);
    }
  } else {
    vocab = {{"<s>", 0.0}, {"<pad>", 0.0}, {"</s>", 0.0}, {"<unk>", 0.0}};
    for (size_t id = 3; id < model.pieces.size(); ++id) {
      vocab.emplace_back(model.pieces[id].piece, model.pieces[id].score);
    }
    vocab.emplace_back("<mask>", 0.0);
    unk_id = 3;
  }
  std::vector<std::pair<std::string, double>> pieces = vocab;
  ASSIGN_OR_RETURN(p->unigram,
                   Unigram::Create(std::move(pieces), unk_id, /*byte_fallback=*/false, path));
  const TokenVocab& ids = p->unigram->vocab();
  // At the id the converted vocabulary gives the piece's text (as Hugging Face adds them by
  // content); a piece it lacks is left out.
  RETURN_IF_ERROR(AddPieceTokens(
      model,
      [&](size_t id) -> std::optional<int64_t> {
        auto it = ids.find(model.pieces[id].piece);
        if (it == ids.end()) return std::nullopt;
        return it->second;
      },
      path, p));
  if (converter == Converter::kT5) {
    // The model's own pieces; "<pad>" only where the model has it.
    SetDefault(config, "eos_token", model.eos_id >= 0 ? model.pieces[model.eos_id].piece : "</s>");
    SetDefault(config, "unk_token", model.pieces[model.unk_id].piece);
    if (ids.count("<pad>") > 0) SetDefault(config, "pad_token", "<pad>");
    if (config->additional.empty()) {
      for (int64_t i = 0; i < extra_ids; ++i) {
        config->additional.push_back(
            {absl::StrCat("<extra_id_", i, ">"), false, false, "default extra_ids"});
      }
    }
  } else {
    SetDefault(config, "bos_token", "<s>");
    SetDefault(config, "eos_token", "</s>");
    SetDefault(config, "unk_token", "<unk>");
    SetDefault(config, "pad_token", "<pad>");
    SetDefault(config, "mask_token", "<mask>", /*lstrip=*/true);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadConverted(const std::string& dir,
                                                                 const std::string& file,
                                                                 Converter converter,
                                                                 DirConfig config) {
  const nlohmann::json& tc = config.tokenizer_config;
  ASSIGN_OR_RETURN(bool legacy, OptionalBool(tc, "legacy", true, kTokenizerConfig));
  ASSIGN_OR_RETURN(bool prefix_space, OptionalBool(tc, "add_prefix_space", true, kTokenizerConfig));
  int64_t extra_ids = 0;
  if (converter == Converter::kT5) {
    const nlohmann::json& n = Field(tc, "extra_ids");
    extra_ids = 100;
    if (!n.is_null()) {
      if (!n.is_number_integer() || n.get<int64_t>() < 0 || n.get<int64_t>() > 100000) {
        return FieldError(kTokenizerConfig, "extra_ids", "a count in [0, 100000]", n);
      }
      extra_ids = n.get<int64_t>();
    }
  }
  const std::string path = dir + "/" + file;
  ASSIGN_OR_RETURN(std::string bytes, ReadTokenizerFile(path));
  ASSIGN_OR_RETURN(SentencePieceProto model, ParseSentencePieceModel(bytes, path));
  auto p = std::make_unique<TokenizerPipeline>();
  RETURN_IF_ERROR(AddConverterModel(model, converter, extra_ids, path, p.get(), &config));
  RETURN_IF_ERROR(AddConverterTextSteps(model, legacy, prefix_space, path, p.get()));
  ASSIGN_OR_RETURN(auto ids, AddSpecialTokens(config, file, p.get()));
  auto id_of = [&](const char* key) -> absl::StatusOr<int64_t> {
    auto it = ids.find(key);
    if (it == ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": no ", key));
    }
    return it->second;
  };
  ASSIGN_OR_RETURN(int64_t eos, id_of("eos_token"));
  p->suffix_ids = {eos};
  if (converter == Converter::kXlmRoberta) {
    ASSIGN_OR_RETURN(int64_t bos, id_of("bos_token"));
    p->prefix_ids = {bos};
  }
  if (auto it = ids.find("pad_token"); it != ids.end()) p->pad_id = it->second;
  p->Finish();
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadSentencePieceDir(const std::string& dir) {
  ASSIGN_OR_RETURN(DirConfig config, ReadDirConfig(dir));
  ASSIGN_OR_RETURN(auto choice, ChooseConverter(dir, config));
  if (choice.second != Converter::kLlama) {
    return LoadConverted(dir, choice.first, choice.second, std::move(config));
  }
  const nlohmann::json& tc = config.tokenizer_config;
  ASSIGN_OR_RETURN(bool add_bos, OptionalBool(tc, "add_bos_token", true, kTokenizerConfig));
  ASSIGN_OR_RETURN(bool add_eos, OptionalBool(tc, "add_eos_token", false, kTokenizerConfig));
  ASSIGN_OR_RETURN(bool legacy, OptionalBool(tc, "legacy", true, kTokenizerConfig));
  ASSIGN_OR_RETURN(bool prefix_space, OptionalBool(tc, "add_prefix_space", true, kTokenizerConfig));

  const std::string path = dir + "/" + kTokenizerModel;
  ASSIGN_OR_RETURN(std::string bytes, ReadTokenizerFile(path));
  ASSIGN_OR_RETURN(SentencePieceProto model, ParseSentencePieceModel(bytes, path));
  // The model's own special pieces unless the config files name others.
  for (auto [key, id] : {std::pair<const char*, int>{"unk_token", model.unk_id},
                         {"bos_token", model.bos_id},
                         {"eos_token", model.eos_id}}) {
    if (id >= 0) SetDefault(&config, key, model.pieces[id].piece);
  }

  auto p = std::make_unique<TokenizerPipeline>();
  RETURN_IF_ERROR(AddModel(model, path, p.get()));
  AddTextSteps(legacy, prefix_space, p.get());
  ASSIGN_OR_RETURN(p->decoder, LlamaDecoder(prefix_space, path + ": decoder"));
  ASSIGN_OR_RETURN(auto ids, AddSpecialTokens(config, kTokenizerModel, p.get()));
  if (add_bos) {
    ASSIGN_OR_RETURN(int64_t bos, AddedId(ids, "bos_token", "add_bos_token", path));
    p->prefix_ids = {bos};
  }
  if (add_eos) {
    ASSIGN_OR_RETURN(int64_t eos, AddedId(ids, "eos_token", "add_eos_token", path));
    p->suffix_ids = {eos};
  }
  if (auto it = ids.find("pad_token"); it != ids.end()) p->pad_id = it->second;
  p->Finish();
  return p;
}

}  // namespace text_internal
}  // namespace twin
