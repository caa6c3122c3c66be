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
#include <algorithm>
#include <tuple>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/text/internal/hf_config.h"
#include "core/text/internal/json_fields.h"
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

// The model of `model`'s type, and its control and user-defined pieces as added tokens.
absl::Status AddModel(const SentencePieceProto& model, const std::string& path,
                      TokenizerPipeline* p) {
  for (size_t id = 0; id < model.pieces.size(); ++id) {
    const auto& piece = model.pieces[id];
    ASSIGN_OR_RETURN(std::u32string content,
                     DecodeUtf8(piece.piece, absl::StrCat(path, ": piece ", id)));
    if (piece.type == PieceType::kControl || piece.type == PieceType::kUserDefined) {
      p->added_tokens.push_back(AddedToken{std::move(content), static_cast<int64_t>(id), false,
                                           false, false, piece.type == PieceType::kControl});
    }
  }
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

}  // namespace

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadSentencePieceDir(const std::string& dir) {
  ASSIGN_OR_RETURN(DirConfig config, ReadDirConfig(dir));
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
