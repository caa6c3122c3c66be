#include "core/text/internal/hf_model.h"

#include <limits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/io/bounded_json.h"
#include "core/status_macros.h"
#include "core/text/internal/json_fields.h"

namespace twin {
namespace text_internal {
namespace {

absl::StatusOr<std::vector<BpeMerge>> ParseMerges(const nlohmann::json& list,
                                                  const std::string& what) {
  if (!list.is_array()) return FieldError(what, "merges", "an array", list);
  std::vector<BpeMerge> merges;
  merges.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& m = list[i];
    const std::string name = absl::StrCat("merges[", i, "]");
    if (m.is_string()) {
      std::vector<std::string> parts = absl::StrSplit(m.get<std::string>(), ' ');
      if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
        return FieldError(what, name, "\"left right\"", m);
      }
      merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return FieldError(what, name, "\"left right\" or [left, right]", m);
    }
  }
  return merges;
}

// A BPE option this does not implement must be absent, null, or its neutral value.
absl::Status RequireNeutral(const nlohmann::json& config, const std::string& key,
                            const nlohmann::json& neutral, const std::string& what) {
  const nlohmann::json& v = Field(config, key);
  if (v.is_null() || v == neutral) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat(FieldName(what, key), " = ", ShortDump(v), " is not supported"));
}

absl::Status ParseWordPiece(const nlohmann::json& config, const std::string& what,
                            TokenizerPipeline* p) {
  ASSIGN_OR_RETURN(TokenVocab vocab, VocabFromJson(Field(config, "vocab"), what + ".vocab"));
  WordPieceOptions options;
  ASSIGN_OR_RETURN(options.unk_token, RequiredString(config, "unk_token", what));
  ASSIGN_OR_RETURN(auto prefix, NullableString(config, "continuing_subword_prefix", what));
  if (prefix) options.continuing_subword_prefix = *prefix;
  const nlohmann::json& max_chars = Field(config, "max_input_chars_per_word");
  if (!max_chars.is_null()) {
    if (!max_chars.is_number_integer() || max_chars.get<int64_t>() <= 0 ||
        max_chars.get<int64_t>() > std::numeric_limits<int>::max()) {
      return FieldError(what, "max_input_chars_per_word", "a positive integer", max_chars);
    }
    options.max_input_chars_per_word = max_chars.get<int>();
  }
  ASSIGN_OR_RETURN(p->wordpiece, WordPiece::Create(std::move(vocab), options, what));
  return absl::OkStatus();
}

absl::Status ParseBpe(const nlohmann::json& config, const std::string& what, TokenizerPipeline* p) {
  ASSIGN_OR_RETURN(TokenVocab vocab, VocabFromJson(Field(config, "vocab"), what + ".vocab"));
  for (const auto& [key, neutral] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"dropout", nullptr}, {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}}) {
    RETURN_IF_ERROR(RequireNeutral(config, key, neutral, what));
  }
  BpeOptions options;
  ASSIGN_OR_RETURN(options.unk_token, NullableString(config, "unk_token", what));
  ASSIGN_OR_RETURN(options.ignore_merges, OptionalBool(config, "ignore_merges", false, what));
  ASSIGN_OR_RETURN(options.byte_fallback, OptionalBool(config, "byte_fallback", false, what));
  ASSIGN_OR_RETURN(options.fuse_unk, OptionalBool(config, "fuse_unk", false, what));
  ASSIGN_OR_RETURN(std::vector<BpeMerge> merges, ParseMerges(Field(config, "merges"), what));
  ASSIGN_OR_RETURN(p->bpe, Bpe::Create(std::move(vocab), merges, options, what));
  return absl::OkStatus();
}

// Unigram: "vocab" [[piece, score], ...] with the pieces' ids as positions; "unk_id" null: none
// (encoding then fails on the first character no piece covers, as in Rust).
absl::Status ParseUnigram(const nlohmann::json& config, const std::string& what,
                          TokenizerPipeline* p) {
  const nlohmann::json& list = Field(config, "vocab");
  if (!list.is_array() || list.empty()) {
    return FieldError(what, "vocab", "a non-empty array of [piece, score]", list);
  }
  std::vector<std::pair<std::string, double>> pieces;
  pieces.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& entry = list[i];
    if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number()) {
      return FieldError(what, absl::StrCat("vocab[", i, "]"), "[piece, score]", entry);
    }
    pieces.emplace_back(entry[0].get<std::string>(), entry[1].get<double>());
  }
  const nlohmann::json& unk = Field(config, "unk_id");
  std::optional<int64_t> unk_id;
  if (!unk.is_null()) {
    if (!unk.is_number_integer() || unk.get<int64_t>() < 0 ||
        unk.get<int64_t>() >= static_cast<int64_t>(pieces.size())) {
      return FieldError(what, "unk_id",
                        absl::StrCat("the id of one of the ", pieces.size(), " pieces, or null"),
                        unk);
    }
    unk_id = unk.get<int64_t>();
  }
  ASSIGN_OR_RETURN(bool byte_fallback, OptionalBool(config, "byte_fallback", false, what));
  ASSIGN_OR_RETURN(p->unigram, Unigram::Create(std::move(pieces), unk_id, byte_fallback,
                                               FieldName(what, "vocab")));
  return absl::OkStatus();
}

// The model's "type", or the one its fields spell when it has none (empty: neither).
absl::StatusOr<std::string> ModelType(const nlohmann::json& config, const std::string& what) {
  const nlohmann::json& type = Field(config, "type");
  if (type.is_string()) return type.get<std::string>();
  if (!type.is_null()) return FieldError(what, "type", "a string", type);
  if (config.contains("merges")) return std::string("BPE");
  if (config.contains("max_input_chars_per_word")) return std::string("WordPiece");
  if (Field(config, "vocab").is_array()) return std::string("Unigram");
  return std::string();
}

}  // namespace

absl::Status ParseModel(const nlohmann::json& config, const std::string& what,
                        TokenizerPipeline* p) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an object, got ", ShortDump(config)));
  }
  ASSIGN_OR_RETURN(std::string type, ModelType(config, what));
  if (type == "WordPiece") return ParseWordPiece(config, what, p);
  if (type == "BPE") return ParseBpe(config, what, p);
  if (type == "Unigram") return ParseUnigram(config, what, p);
  if (type.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unknown model type (no \"type\")"));
  }
  return absl::UnimplementedError(absl::StrCat(what, ": unknown model type \"", type,
                                               "\" (WordPiece, BPE and Unigram are supported)"));
}

}  // namespace text_internal
}  // namespace twin
