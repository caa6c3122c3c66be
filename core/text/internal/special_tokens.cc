// The older Hugging Face directory forms (vocab.txt; vocab.json + merges.txt) and the special
// tokens named by tokenizer_config.json and special_tokens_map.json.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/bounded_json.h"
#include "core/status_macros.h"
#include "core/text/internal/hf_config.h"
#include "core/text/internal/json_fields.h"
#include "core/text/internal/special_tokens.h"
#include "core/text/internal/unicode.h"

namespace twin {
namespace text_internal {
namespace {

constexpr int kConfigJsonMaxDepth = 16;
constexpr const char* kSpecialTokensMap = "special_tokens_map.json";
constexpr const char* kSpecialKeys[] = {"unk_token", "cls_token", "sep_token", "pad_token",
                                        "mask_token", "bos_token", "eos_token"};

// A special token value: "<s>" or {"content": "<s>", "lstrip": ..., "rstrip": ...}.
absl::StatusOr<SpecialToken> ParseSpecial(const nlohmann::json& v, const std::string& source) {
  SpecialToken token;
  token.source = source;
  if (v.is_string()) {
    token.content = v.get<std::string>();
  } else if (v.is_object()) {
    ASSIGN_OR_RETURN(token.content, RequiredString(v, "content", source));
    ASSIGN_OR_RETURN(token.lstrip, OptionalBool(v, "lstrip", false, source));
    ASSIGN_OR_RETURN(token.rstrip, OptionalBool(v, "rstrip", false, source));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a token string or object, got ", ShortDump(v)));
  }
  if (token.content.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": empty"));
  return token;
}

// Reads `file` of `dir` when it exists: an object whose special-token keys are taken.
absl::Status ReadConfigFile(const std::string& dir, const char* file, DirConfig* config,
                            nlohmann::json* whole) {
  const std::string path = dir + "/" + file;
  if (!std::filesystem::exists(path)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string text, ReadTokenizerFile(path));
  ASSIGN_OR_RETURN(nlohmann::json root,
                   ParseBoundedJson(text, {.max_depth = kConfigJsonMaxDepth}, path));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected an object"));
  }
  for (const char* key : kSpecialKeys) {
    const nlohmann::json& v = Field(root, key);
    if (v.is_null()) continue;
    ASSIGN_OR_RETURN(config->special[key], ParseSpecial(v, absl::StrCat(file, ": ", key)));
  }
  const nlohmann::json& extra = Field(root, "additional_special_tokens");
  if (!extra.is_null()) {
    if (!extra.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": additional_special_tokens: expected an array, got ", ShortDump(extra)));
    }
    config->additional.clear();
    for (size_t i = 0; i < extra.size(); ++i) {
      ASSIGN_OR_RETURN(SpecialToken t, ParseSpecial(extra[i], absl::StrCat(
                                                                 file, ": additional_special_tokens[", i, "]")));
      config->additional.push_back(std::move(t));
    }
  }
  if (whole != nullptr) *whole = std::move(root);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DirConfig> ReadDirConfig(const std::string& dir) {
  DirConfig config;
  RETURN_IF_ERROR(ReadConfigFile(dir, kTokenizerConfig, &config, &config.tokenizer_config));
  RETURN_IF_ERROR(ReadConfigFile(dir, kSpecialTokensMap, &config, nullptr));
  return config;
}

void SetDefault(DirConfig* config, const std::string& key, const std::string& content,
                bool lstrip) {
  if (config->special.contains(key)) return;
  config->special[key] = SpecialToken{content, lstrip, false, "default " + key};
}

namespace {

// The id of a special token: an added token's, else the vocabulary's.
absl::StatusOr<int64_t> SpecialId(const TokenizerPipeline& p, const SpecialToken& token,
                                  absl::string_view vocab_file) {
  ASSIGN_OR_RETURN(std::u32string content, DecodeUtf8(token.content, token.source));
  for (const AddedToken& added : p.added_tokens) {
    if (added.content == content) return added.id;
  }
  auto it = p.vocab().find(token.content);
  if (it == p.vocab().end()) {
    return absl::InvalidArgumentError(absl::StrCat(token.source, ": \"", token.content,
                                                   "\" is not in ", vocab_file));
  }
  return it->second;
}

}  // namespace

absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> AddSpecialTokens(
    const DirConfig& config, absl::string_view vocab_file, TokenizerPipeline* p) {
  absl::flat_hash_map<std::string, int64_t> ids;
  std::vector<const SpecialToken*> all;
  for (const char* key : kSpecialKeys) {
    if (auto it = config.special.find(key); it != config.special.end()) all.push_back(&it->second);
  }
  for (const SpecialToken& t : config.additional) all.push_back(&t);
  for (const SpecialToken* t : all) {
    ASSIGN_OR_RETURN(int64_t id, SpecialId(*p, *t, vocab_file));
    ASSIGN_OR_RETURN(std::u32string content, DecodeUtf8(t->content, t->source));
    bool known = false;
    for (AddedToken& added : p->added_tokens) known |= added.content == content;
    if (!known) {
      p->added_tokens.push_back(AddedToken{content, id, t->lstrip, t->rstrip, false, true});
    }
  }
  for (const auto& [key, t] : config.special) {
    ASSIGN_OR_RETURN(ids[key], SpecialId(*p, t, vocab_file));
  }
  return ids;
}

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadWordPieceDir(const std::string& dir) {
  ASSIGN_OR_RETURN(DirConfig config, ReadDirConfig(dir));
  const nlohmann::json& tc = config.tokenizer_config;
  BertNormalizerOptions bert;
  ASSIGN_OR_RETURN(bert.lowercase, OptionalBool(tc, "do_lower_case", true, kTokenizerConfig));
  ASSIGN_OR_RETURN(bert.strip_accents, NullableBool(tc, "strip_accents", kTokenizerConfig));
  ASSIGN_OR_RETURN(bert.handle_chinese_chars,
                   OptionalBool(tc, "tokenize_chinese_chars", true, kTokenizerConfig));
  SetDefault(&config, "unk_token", "[UNK]");
  SetDefault(&config, "sep_token", "[SEP]");
  SetDefault(&config, "pad_token", "[PAD]");
  SetDefault(&config, "cls_token", "[CLS]");
  SetDefault(&config, "mask_token", "[MASK]");

  const std::string vocab_path = dir + "/vocab.txt";
  ASSIGN_OR_RETURN(TokenVocab vocab, LoadVocabTxt(vocab_path));
  auto p = std::make_unique<TokenizerPipeline>();
  p->normalizers.emplace_back().bert = bert;  // kBert
  p->pre_tokenizers.emplace_back();              // kBert
  DecoderStep wordpiece = DecoderStep::Of(DecoderStep::Kind::kWordPiece);
  wordpiece.pattern = "##";
  p->decoder = DecoderChain({wordpiece});
  WordPieceOptions options;
  options.unk_token = config.special["unk_token"].content;
  if (!vocab.contains(options.unk_token)) {
    return absl::InvalidArgumentError(absl::StrCat(config.special["unk_token"].source, ": \"",
                                                   options.unk_token, "\" is not in vocab.txt"));
  }
  ASSIGN_OR_RETURN(p->wordpiece, WordPiece::Create(std::move(vocab), options, vocab_path));
  ASSIGN_OR_RETURN(auto ids, AddSpecialTokens(config, "vocab.txt", p.get()));
  p->prefix_ids = {ids["cls_token"]};
  p->suffix_ids = {ids["sep_token"]};
  p->pad_id = ids["pad_token"];
  p->Finish();
  return p;
}

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadByteLevelBpeDir(const std::string& dir) {
  ASSIGN_OR_RETURN(DirConfig config, ReadDirConfig(dir));
  const nlohmann::json& tc = config.tokenizer_config;
  ByteLevelOptions byte_level;
  ASSIGN_OR_RETURN(byte_level.add_prefix_space,
                   OptionalBool(tc, "add_prefix_space", false, kTokenizerConfig));
  ASSIGN_OR_RETURN(std::optional<std::string> cls,
                   NullableString(tc, "tokenizer_class", kTokenizerConfig));

  const std::string vocab_path = dir + "/vocab.json";
  const std::string merges_path = dir + "/merges.txt";
  ASSIGN_OR_RETURN(TokenVocab vocab, LoadVocabJson(vocab_path));
  ASSIGN_OR_RETURN(std::vector<BpeMerge> merges, LoadMergesTxt(merges_path));
  bool roberta;
  if (!cls) {
    roberta = vocab.contains("<s>") && vocab.contains("</s>");
  } else if (absl::StartsWith(*cls, "Roberta") || absl::StartsWith(*cls, "Bart")) {
    roberta = true;
  } else if (absl::StartsWith(*cls, "GPT2")) {
    roberta = false;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        kTokenizerConfig, ": tokenizer_class \"", *cls,
        "\" is not supported with vocab.json + merges.txt (RoBERTa, BART or GPT-2 are)"));
  }
  if (roberta) {
    SetDefault(&config, "bos_token", "<s>");
    SetDefault(&config, "eos_token", "</s>");
    SetDefault(&config, "sep_token", "</s>");
    SetDefault(&config, "cls_token", "<s>");
    SetDefault(&config, "unk_token", "<unk>");
    SetDefault(&config, "pad_token", "<pad>");
    SetDefault(&config, "mask_token", "<mask>", /*lstrip=*/true);
  } else {
    SetDefault(&config, "bos_token", "<|endoftext|>");
    SetDefault(&config, "eos_token", "<|endoftext|>");
    SetDefault(&config, "unk_token", "<|endoftext|>");
  }

  auto p = std::make_unique<TokenizerPipeline>();
  PreTokenizerStep& step = p->pre_tokenizers.emplace_back();
  step.kind = PreTokenizerStep::Kind::kByteLevel;
  step.byte_level = byte_level;
  p->decoder = DecoderChain({DecoderStep::Of(DecoderStep::Kind::kByteLevel)});
  ASSIGN_OR_RETURN(p->bpe, Bpe::Create(std::move(vocab), merges, {}, merges_path));
  ASSIGN_OR_RETURN(auto ids, AddSpecialTokens(config, "vocab.json", p.get()));
  if (roberta) {
    p->prefix_ids = {ids["cls_token"]};
    p->suffix_ids = {ids["sep_token"]};
  }
  if (auto it = ids.find("pad_token"); it != ids.end()) p->pad_id = it->second;
  p->Finish();
  return p;
}

absl::Status ApplySpecialTokenFiles(const std::string& dir, TokenizerPipeline* p) {
  ASSIGN_OR_RETURN(DirConfig config, ReadDirConfig(dir));
  std::vector<const SpecialToken*> all;
  for (const auto& [key, t] : config.special) all.push_back(&t);
  for (const SpecialToken& t : config.additional) all.push_back(&t);
  for (const SpecialToken* t : all) RETURN_IF_ERROR(SpecialId(*p, *t, "tokenizer.json").status());
  if (auto it = config.special.find("pad_token"); it != config.special.end()) {
    ASSIGN_OR_RETURN(p->pad_id, SpecialId(*p, it->second, "tokenizer.json"));
  }
  return absl::OkStatus();
}

}  // namespace text_internal
}  // namespace twin
