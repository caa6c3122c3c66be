#include "core/text/internal/hf_config.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/io/bounded_json.h"
#include "core/status_macros.h"
#include "core/text/internal/hf_model.h"
#include "core/text/internal/json_fields.h"
#include "core/text/internal/unicode.h"

namespace twin {
namespace text_internal {
namespace {

// tokenizer.json nests a few levels (Sequence normalizers, [left, right] merges).
constexpr int kTokenizerJsonMaxDepth = 16;
// How much of an unsupported Split pattern an error shows.
constexpr size_t kPatternShownBytes = 60;

absl::Status Unsupported(absl::string_view what, absl::string_view type) {
  return absl::UnimplementedError(
      absl::StrCat(what, ".type \"", type, "\" is not supported"));
}

absl::StatusOr<std::string> TypeOf(const nlohmann::json& config, absl::string_view what) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an object, got ", ShortDump(config)));
  }
  return RequiredString(config, "type", what);
}

// The one regular expression a Replace normalizer may use: runs of two or more spaces, which
// Hugging Face's SentencePiece converters write (" {2,}", replaced by "▁" or " ").
constexpr absl::string_view kSpaceRunsRegex = " {2,}";

// A Replace's pattern: {"String": "..."}, or {"Regex": " {2,}"} (then *space_runs is true).
absl::StatusOr<std::string> ReplacePattern(const nlohmann::json& config, const std::string& what,
                                           bool* space_runs) {
  const nlohmann::json& pattern = Field(config, "pattern");
  const nlohmann::json& string = Field(pattern, "String");
  *space_runs = false;
  if (pattern.is_object() && string.is_string() && !string.get<std::string>().empty()) {
    return string.get<std::string>();
  }
  if (pattern.is_object() && pattern.contains("Regex")) {
    const nlohmann::json& regex = Field(pattern, "Regex");
    if (regex.is_string() && regex.get<std::string>() == kSpaceRunsRegex) {
      *space_runs = true;
      return regex.get<std::string>();
    }
    return absl::UnimplementedError(absl::StrCat(FieldName(what, "pattern.Regex"), " ",
                                                 ShortDump(regex), " is not supported (\"",
                                                 kSpaceRunsRegex, "\" is)"));
  }
  return FieldError(what, "pattern", "{\"String\": a non-empty string}", pattern);
}

// A Precompiled normalizer's charsmap: base64 in "precompiled_charsmap".
absl::StatusOr<std::shared_ptr<const PrecompiledCharsmap>> ParseCharsmap(
    const nlohmann::json& config, const std::string& what) {
  ASSIGN_OR_RETURN(std::string encoded, RequiredString(config, "precompiled_charsmap", what));
  const std::string name = FieldName(what, "precompiled_charsmap");
  std::string blob;
  if (encoded.empty() || !absl::Base64Unescape(encoded, &blob)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a non-empty base64 string"));
  }
  return PrecompiledCharsmap::Parse(blob, name);
}

absl::Status ParseNormalizer(const nlohmann::json& config, const std::string& what,
                             std::vector<NormalizerStep>* steps) {
  if (config.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, TypeOf(config, what));
  NormalizerStep step;
  if (type == "Sequence") {
    const nlohmann::json& list = Field(config, "normalizers");
    if (!list.is_array()) return FieldError(what, "normalizers", "an array", list);
    for (size_t i = 0; i < list.size(); ++i) {
      RETURN_IF_ERROR(ParseNormalizer(list[i], absl::StrCat(what, ".normalizers[", i, "]"), steps));
    }
    return absl::OkStatus();
  } else if (type == "BertNormalizer") {
    step.kind = NormalizerStep::Kind::kBert;
    ASSIGN_OR_RETURN(step.bert.clean_text, OptionalBool(config, "clean_text", true, what));
    ASSIGN_OR_RETURN(step.bert.handle_chinese_chars,
                     OptionalBool(config, "handle_chinese_chars", true, what));
    ASSIGN_OR_RETURN(step.bert.strip_accents, NullableBool(config, "strip_accents", what));
    ASSIGN_OR_RETURN(step.bert.lowercase, OptionalBool(config, "lowercase", true, what));
  } else if (type == "Lowercase") {
    step.kind = NormalizerStep::Kind::kLowercase;
  } else if (type == "NFD") {
    step.kind = NormalizerStep::Kind::kNfd;
  } else if (type == "NFC") {
    step.kind = NormalizerStep::Kind::kNfc;
  } else if (type == "NFKD") {
    step.kind = NormalizerStep::Kind::kNfkd;
  } else if (type == "NFKC") {
    step.kind = NormalizerStep::Kind::kNfkc;
  } else if (type == "Prepend") {
    step.kind = NormalizerStep::Kind::kPrepend;
    ASSIGN_OR_RETURN(std::string prepend, RequiredString(config, "prepend", what));
    ASSIGN_OR_RETURN(step.text, DecodeUtf8(prepend, FieldName(what, "prepend")));
  } else if (type == "Replace") {
    bool space_runs = false;
    ASSIGN_OR_RETURN(std::string pattern, ReplacePattern(config, what, &space_runs));
    if (space_runs) {
      step.kind = NormalizerStep::Kind::kReplaceSpaceRuns;
    } else {
      step.kind = NormalizerStep::Kind::kReplace;
      ASSIGN_OR_RETURN(step.text, DecodeUtf8(pattern, FieldName(what, "pattern.String")));
    }
    ASSIGN_OR_RETURN(std::string content, RequiredString(config, "content", what));
    ASSIGN_OR_RETURN(step.content, DecodeUtf8(content, FieldName(what, "content")));
  } else if (type == "StripAccents") {
    step.kind = NormalizerStep::Kind::kStripAccents;
  } else if (type == "Strip") {
    step.kind = NormalizerStep::Kind::kStrip;
    ASSIGN_OR_RETURN(step.strip_left, OptionalBool(config, "strip_left", true, what));
    ASSIGN_OR_RETURN(step.strip_right, OptionalBool(config, "strip_right", true, what));
  } else if (type == "Precompiled") {
    step.kind = NormalizerStep::Kind::kPrecompiled;
    ASSIGN_OR_RETURN(step.charsmap, ParseCharsmap(config, what));
  } else {
    return Unsupported(what, type);
  }
  steps->push_back(step);
  return absl::OkStatus();
}

// A Split with one of the known regular expressions (split_pattern.h), isolating matches.
absl::Status ParseSplit(const nlohmann::json& config, const std::string& what,
                        SplitPattern* pattern) {
  const nlohmann::json& p = Field(config, "pattern");
  const nlohmann::json& regex = Field(p, "Regex");
  if (!p.is_object() || !regex.is_string()) {
    if (p.is_object() && p.contains("String")) {
      return absl::UnimplementedError(
          absl::StrCat(FieldName(what, "pattern.String"), " is not supported (Regex is)"));
    }
    return FieldError(what, "pattern", "{\"Regex\": a string}", p);
  }
  std::optional<SplitPattern> known = FindSplitPattern(regex.get<std::string>());
  if (!known) {
    return absl::UnimplementedError(absl::StrCat(
        FieldName(what, "pattern.Regex"), " ", ShortDump(regex, kPatternShownBytes),
        " is not a supported pattern (GPT-2's, Qwen2's and Llama 3's are)"));
  }
  *pattern = *known;
  ASSIGN_OR_RETURN(std::string behavior, RequiredString(config, "behavior", what));
  if (behavior != "Isolated") {
    return absl::UnimplementedError(absl::StrCat(FieldName(what, "behavior"), " \"", behavior,
                                                 "\" is not supported (Isolated is)"));
  }
  ASSIGN_OR_RETURN(bool invert, OptionalBool(config, "invert", false, what));
  if (invert) {
    return absl::UnimplementedError(absl::StrCat(FieldName(what, "invert"), " = true is not supported"));
  }
  return absl::OkStatus();
}

absl::Status ParseMetaspace(const nlohmann::json& config, const std::string& what,
                            MetaspaceOptions* options) {
  const nlohmann::json& replacement = Field(config, "replacement");
  if (!replacement.is_null()) {
    auto cps = replacement.is_string()
                   ? DecodeUtf8(replacement.get<std::string>(), FieldName(what, "replacement"))
                   : absl::StatusOr<std::u32string>(std::u32string());
    if (!cps.ok() || cps->size() != 1) {
      return FieldError(what, "replacement", "a one-character string", replacement);
    }
    options->replacement = (*cps)[0];
  }
  ASSIGN_OR_RETURN(auto scheme, NullableString(config, "prepend_scheme", what));
  if (scheme) {
    if (*scheme == "always") {
      options->prepend = MetaspaceOptions::Prepend::kAlways;
    } else if (*scheme == "first") {
      options->prepend = MetaspaceOptions::Prepend::kFirst;
    } else if (*scheme == "never") {
      options->prepend = MetaspaceOptions::Prepend::kNever;
    } else {
      return FieldError(what, "prepend_scheme", "\"always\", \"first\" or \"never\"",
                        Field(config, "prepend_scheme"));
    }
  } else {  // files written before prepend_scheme
    ASSIGN_OR_RETURN(bool add_prefix_space, OptionalBool(config, "add_prefix_space", true, what));
    options->prepend = add_prefix_space ? MetaspaceOptions::Prepend::kAlways
                                        : MetaspaceOptions::Prepend::kNever;
  }
  ASSIGN_OR_RETURN(options->split, OptionalBool(config, "split", true, what));
  return absl::OkStatus();
}

absl::Status ParsePreTokenizer(const nlohmann::json& config, const std::string& what,
                               std::vector<PreTokenizerStep>* steps) {
  if (config.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, TypeOf(config, what));
  if (!steps->empty() && steps->back().kind == PreTokenizerStep::Kind::kByteLevel) {
    return absl::UnimplementedError(
        absl::StrCat(what, ": a pre-tokenizer after ByteLevel is not supported"));
  }
  PreTokenizerStep step;
  if (type == "Sequence") {
    const nlohmann::json& list = Field(config, "pretokenizers");
    if (!list.is_array()) return FieldError(what, "pretokenizers", "an array", list);
    for (size_t i = 0; i < list.size(); ++i) {
      RETURN_IF_ERROR(
          ParsePreTokenizer(list[i], absl::StrCat(what, ".pretokenizers[", i, "]"), steps));
    }
    return absl::OkStatus();
  } else if (type == "BertPreTokenizer") {
    step.kind = PreTokenizerStep::Kind::kBert;
  } else if (type == "WhitespaceSplit") {
    step.kind = PreTokenizerStep::Kind::kWhitespaceSplit;
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    RETURN_IF_ERROR(ParseSplit(config, what, &step.split));
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    RETURN_IF_ERROR(ParseMetaspace(config, what, &step.metaspace));
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    ASSIGN_OR_RETURN(step.byte_level.add_prefix_space,
                     OptionalBool(config, "add_prefix_space", false, what));
    ASSIGN_OR_RETURN(step.byte_level.use_regex, OptionalBool(config, "use_regex", true, what));
  } else {
    return Unsupported(what, type);
  }
  steps->push_back(step);
  return absl::OkStatus();
}

// ["[CLS]", 101] of Bert/RobertaProcessing.
absl::StatusOr<int64_t> PairId(const nlohmann::json& config, const std::string& key,
                               const std::string& what) {
  const nlohmann::json& v = Field(config, key);
  if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_number_integer() ||
      v[1].get<int64_t>() < 0) {
    return FieldError(what, key, "[token, id]", v);
  }
  return v[1].get<int64_t>();
}

absl::Status ParseTemplate(const nlohmann::json& config, const std::string& what,
                           TokenizerPipeline* p) {
  const nlohmann::json& single = Field(config, "single");
  if (!single.is_array()) return FieldError(what, "single", "an array", single);
  const nlohmann::json& specials = Field(config, "special_tokens");
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const nlohmann::json& item = single[i];
    const std::string name = absl::StrCat(what, ".single[", i, "]");
    if (item.is_object() && item.contains("Sequence")) {
      if (seen_sequence) {
        return absl::UnimplementedError(absl::StrCat(name, ": a second Sequence"));
      }
      seen_sequence = true;
      continue;
    }
    const nlohmann::json& special = item.is_object() ? Field(item, "SpecialToken") : item;
    ASSIGN_OR_RETURN(std::string token, RequiredString(special, "id", name + ".SpecialToken"));
    const nlohmann::json& entry = specials.is_object() ? Field(specials, token) : nlohmann::json();
    const nlohmann::json& ids = Field(entry, "ids");
    if (!ids.is_array() || ids.empty()) {
      return FieldError(what, "special_tokens." + token + ".ids", "an array of ids", ids);
    }
    for (const auto& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) {
        return FieldError(what, "special_tokens." + token + ".ids", "an array of ids", ids);
      }
      (seen_sequence ? p->suffix_ids : p->prefix_ids).push_back(id.get<int64_t>());
    }
  }
  if (!seen_sequence) {
    return absl::InvalidArgumentError(absl::StrCat(what, ".single: no Sequence entry"));
  }
  return absl::OkStatus();
}

absl::Status ParsePostProcessor(const nlohmann::json& config, const std::string& what,
                                TokenizerPipeline* p) {
  if (config.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, TypeOf(config, what));
  if (type == "Sequence") {
    const nlohmann::json& list = Field(config, "processors");
    if (!list.is_array()) return FieldError(what, "processors", "an array", list);
    for (size_t i = 0; i < list.size(); ++i) {
      RETURN_IF_ERROR(ParsePostProcessor(list[i], absl::StrCat(what, ".processors[", i, "]"), p));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    ASSIGN_OR_RETURN(int64_t cls, PairId(config, "cls", what));
    ASSIGN_OR_RETURN(int64_t sep, PairId(config, "sep", what));
    p->prefix_ids.push_back(cls);
    p->suffix_ids.insert(p->suffix_ids.begin(), sep);
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") return ParseTemplate(config, what, p);
  return Unsupported(what, type);
}

absl::Status ParseAddedTokens(const nlohmann::json& list, const std::string& what,
                              TokenizerPipeline* p) {
  if (list.is_null()) return absl::OkStatus();
  if (!list.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected an array, got ",
                                                   ShortDump(list)));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& t = list[i];
    const std::string name = absl::StrCat(what, "[", i, "]");
    if (!t.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": expected an object"));
    }
    AddedToken token;
    ASSIGN_OR_RETURN(token.id, RequiredId(t, "id", name));
    ASSIGN_OR_RETURN(std::string content, RequiredString(t, "content", name));
    ASSIGN_OR_RETURN(token.content, DecodeUtf8(content, name + ".content"));
    if (token.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ".content: empty"));
    }
    ASSIGN_OR_RETURN(bool single_word, OptionalBool(t, "single_word", false, name));
    if (single_word) {
      return absl::UnimplementedError(absl::StrCat(name, ".single_word = true is not supported"));
    }
    ASSIGN_OR_RETURN(token.lstrip, OptionalBool(t, "lstrip", false, name));
    ASSIGN_OR_RETURN(token.rstrip, OptionalBool(t, "rstrip", false, name));
    ASSIGN_OR_RETURN(token.special, OptionalBool(t, "special", false, name));
    ASSIGN_OR_RETURN(token.normalized, OptionalBool(t, "normalized", !token.special, name));
    p->added_tokens.push_back(std::move(token));
  }
  return absl::OkStatus();
}

// Every occurrence of `from` (non-empty), left to right.
std::u32string ReplaceAll(std::u32string_view text, std::u32string_view from,
                          std::u32string_view to) {
  std::u32string out;
  size_t i = 0;
  for (size_t hit; (hit = text.find(from, i)) != std::u32string_view::npos; i = hit + from.size()) {
    out.append(text.substr(i, hit - i));
    out.append(to);
  }
  out.append(text.substr(i));
  return out;
}

// Each run of two or more U+0020 replaced by `to`.
std::u32string ReplaceSpaceRuns(std::u32string_view text, std::u32string_view to) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t run = 0;
    while (i + run < text.size() && text[i + run] == U' ') ++run;
    if (run >= 2) {
      out.append(to);
    } else if (run == 1) {
      out.push_back(U' ');
    } else {
      out.push_back(text[i]);
      run = 1;
    }
    i += run;
  }
  return out;
}

std::u32string Strip(std::u32string_view text, bool left, bool right) {
  size_t begin = 0;
  size_t end = text.size();
  if (left) {
    while (begin < end && IsWhitespace(text[begin])) ++begin;
  }
  if (right) {
    while (end > begin && IsWhitespace(text[end - 1])) --end;
  }
  return std::u32string(text.substr(begin, end - begin));
}

}  // namespace

std::u32string TokenizerPipeline::Normalize(std::u32string_view text) const {
  std::u32string out(text);
  for (const NormalizerStep& step : normalizers) {
    switch (step.kind) {
      case NormalizerStep::Kind::kBert:
        out = BertNormalize(out, step.bert);
        break;
      case NormalizerStep::Kind::kLowercase:
        out = ToLower(out);
        break;
      case NormalizerStep::Kind::kNfd:
        out = Nfd(out);
        break;
      case NormalizerStep::Kind::kNfc:
        out = Nfc(out);
        break;
      case NormalizerStep::Kind::kNfkd:
        out = Nfkd(out);
        break;
      case NormalizerStep::Kind::kNfkc:
        out = Nfkc(out);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!out.empty()) out.insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace:
        out = ReplaceAll(out, step.text, step.content);
        break;
      case NormalizerStep::Kind::kStripAccents:
        out.erase(std::remove_if(out.begin(), out.end(), IsNonspacingMark), out.end());
        break;
      case NormalizerStep::Kind::kReplaceSpaceRuns:
        out = ReplaceSpaceRuns(out, step.content);
        break;
      case NormalizerStep::Kind::kStrip:
        out = Strip(out, step.strip_left, step.strip_right);
        break;
      case NormalizerStep::Kind::kPrecompiled:
        out = step.charsmap->Normalize(out);
        break;
    }
  }
  return out;
}

void TokenizerPipeline::Finish() {
  std::vector<const AddedToken*> raw;
  normalized_added_tokens.clear();
  for (const AddedToken& token : added_tokens) {
    if (!token.normalized || normalizers.empty()) {
      raw.push_back(&token);
      continue;
    }
    AddedToken normalized = token;
    normalized.content = Normalize(token.content);
    if (!normalized.content.empty()) normalized_added_tokens.push_back(std::move(normalized));
  }
  std::vector<const AddedToken*> in_normalized;
  for (const AddedToken& token : normalized_added_tokens) in_normalized.push_back(&token);
  raw_splitter = AddedTokenSplitter(raw);
  normalized_splitter = AddedTokenSplitter(in_normalized);
  vocab_size = 0;
  for (const auto& [token, id] : vocab()) vocab_size = std::max(vocab_size, id + 1);
  for (const AddedToken& token : added_tokens) vocab_size = std::max(vocab_size, token.id + 1);
  id_to_token.assign(vocab_size, std::string());
  is_special.assign(vocab_size, false);
  for (const auto& [token, id] : vocab()) id_to_token[id] = token;
  for (const AddedToken& token : added_tokens) {
    id_to_token[token.id] = EncodeUtf8(token.content);
    is_special[token.id] = token.special;
  }
}

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> ParseTokenizerJson(absl::string_view text,
                                                                     absl::string_view what) {
  ASSIGN_OR_RETURN(nlohmann::json root,
                   ParseBoundedJson(text, {.max_depth = kTokenizerJsonMaxDepth}, what));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected an object"));
  }
  const std::string w(what);
  auto p = std::make_unique<TokenizerPipeline>();
  if (!root.contains("model")) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no \"model\""));
  }
  RETURN_IF_ERROR(ParseModel(root["model"], w + ": model", p.get()));
  RETURN_IF_ERROR(ParseNormalizer(Field(root, "normalizer"), w + ": normalizer", &p->normalizers));
  RETURN_IF_ERROR(
      ParsePreTokenizer(Field(root, "pre_tokenizer"), w + ": pre_tokenizer", &p->pre_tokenizers));
  RETURN_IF_ERROR(ParsePostProcessor(Field(root, "post_processor"), w + ": post_processor",
                                     p.get()));
  RETURN_IF_ERROR(ParseAddedTokens(Field(root, "added_tokens"), w + ": added_tokens", p.get()));
  ASSIGN_OR_RETURN(p->decoder, ParseDecoder(Field(root, "decoder"), w + ": decoder"));
  const nlohmann::json& padding = Field(root, "padding");
  if (padding.is_object() && padding.contains("pad_id")) {
    ASSIGN_OR_RETURN(p->pad_id, RequiredId(padding, "pad_id", w + ": padding"));
  }
  p->Finish();
  return p;
}

}  // namespace text_internal
}  // namespace twin
