#include "core/text/internal/decoder.h"

#include <array>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "core/status_macros.h"
#include "core/text/bpe.h"
#include "core/text/internal/json_fields.h"
#include "core/text/internal/unicode.h"

namespace twin {
namespace text_internal {
namespace {

using Kind = DecoderStep::Kind;
using Tokens = std::vector<std::string>;

// "<0x0A>": ByteFallback's spelling of one byte.
constexpr size_t kByteTokenSize = 6;

// bytes_to_unicode reversed: code point -> byte, -1 for code points that spell no byte.
const std::array<int16_t, 512>& UnicodeToByte() {
  static const std::array<int16_t, 512> table = [] {
    std::array<int16_t, 512> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[ByteToUnicode(static_cast<uint8_t>(b))] = static_cast<int16_t>(b);
    return t;
  }();
  return table;
}

// A byte-level token's bytes; a token with a character outside the byte alphabet (an added
// token such as "<|im start|>") stands for its own UTF-8, as in the Rust decoder.
void AppendTokenBytes(const std::string& token, std::string* bytes) {
  auto cps = DecodeUtf8(token, "token");
  std::string out;
  if (cps.ok()) {
    for (char32_t c : *cps) {
      const int16_t b = c < UnicodeToByte().size() ? UnicodeToByte()[c] : -1;
      if (b < 0) {
        bytes->append(token);
        return;
      }
      out.push_back(static_cast<char>(b));
    }
    bytes->append(out);
  } else {
    bytes->append(token);
  }
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "<0xNN>" -> the byte, else -1.
int ByteTokenValue(absl::string_view token) {
  if (token.size() != kByteTokenSize || !absl::StartsWith(token, "<0x") || token.back() != '>') {
    return -1;
  }
  const int hi = HexDigit(token[3]), lo = HexDigit(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// The WordPiece decoder's cleanup (Rust tokenizers' decoders::wordpiece::cleanup).
std::string Cleanup(absl::string_view text) {
  std::string out(text);
  for (const auto& [from, to] : std::vector<std::pair<absl::string_view, absl::string_view>>{
           {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
           {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"},
           {" 're", "'re"}}) {
    out = absl::StrReplaceAll(out, {{from, to}});
  }
  return out;
}

std::u32string Chars(absl::string_view token) {
  auto cps = DecodeUtf8(token, "token");
  return cps.ok() ? *std::move(cps) : std::u32string();
}

void FlushBytes(DecoderState::Step* s, Tokens* out) {
  if (s->bytes.empty()) return;
  if (IsValidUtf8(s->bytes)) {
    out->push_back(s->bytes);
  } else {
    for (size_t i = 0; i < s->bytes.size(); ++i) out->emplace_back(kReplacementCharacterUtf8);
  }
  s->bytes.clear();
}

Tokens Apply(const DecoderStep& step, Tokens tokens, bool at_end, DecoderState::Step* s) {
  Tokens out;
  switch (step.kind) {
    case Kind::kJoinWithSpace:
      for (auto& t : tokens) {
        out.push_back(s->seen_token ? " " + t : t);
        s->seen_token = true;
      }
      return out;
    case Kind::kByteLevel: {
      for (const auto& t : tokens) AppendTokenBytes(t, &s->bytes);
      const size_t keep = at_end ? 0 : Utf8IncompleteTail(s->bytes);
      std::string text;
      AppendUtf8Lossy(absl::string_view(s->bytes).substr(0, s->bytes.size() - keep), &text);
      s->bytes.erase(0, s->bytes.size() - keep);
      out.push_back(std::move(text));
      return out;
    }
    case Kind::kWordPiece:
      for (auto& t : tokens) {
        if (s->seen_token) {
          t = absl::StartsWith(t, step.pattern) ? t.substr(step.pattern.size()) : " " + t;
        }
        s->seen_token = true;
        out.push_back(step.cleanup ? Cleanup(t) : t);
      }
      return out;
    case Kind::kReplace:
      for (auto& t : tokens) out.push_back(absl::StrReplaceAll(t, {{step.pattern, step.content}}));
      return out;
    case Kind::kByteFallback:
      for (auto& t : tokens) {
        const int byte = ByteTokenValue(t);
        if (byte >= 0) {
          s->bytes.push_back(static_cast<char>(byte));
        } else {
          FlushBytes(s, &out);
          out.push_back(std::move(t));
        }
      }
      if (at_end) FlushBytes(s, &out);
      return out;
    case Kind::kFuse:
      out.push_back(absl::StrJoin(tokens, ""));
      return out;
    case Kind::kStrip:
      for (const auto& t : tokens) {
        std::u32string cs = Chars(t);
        size_t begin = 0;
        if (step.fused) {
          while (s->strip_left > 0 && begin < cs.size() && cs[begin] == step.strip_char) {
            ++begin;
            --s->strip_left;
          }
          if (begin < cs.size()) s->strip_left = 0;
          out.push_back(EncodeUtf8(std::u32string_view(cs).substr(begin)));
          continue;
        }
        while (begin < step.strip_start && begin < cs.size() && cs[begin] == step.strip_char) {
          ++begin;
        }
        size_t end = cs.size();
        while (cs.size() - end < step.strip_stop && end > begin && cs[end - 1] == step.strip_char) {
          --end;
        }
        out.push_back(EncodeUtf8(std::u32string_view(cs).substr(begin, end - begin)));
      }
      return out;
    case Kind::kMetaspace:
      for (const auto& t : tokens) {
        // Rust's Metaspace decoder drops every replacement character of the first token.
        const bool first = step.fused || !s->seen_token;
        s->seen_token = true;
        out.push_back(absl::StrReplaceAll(
            t, {{step.replacement, first && step.metaspace_prepend ? "" : " "}}));
      }
      return out;
  }
  return tokens;
}

absl::StatusOr<std::string> OneCharString(const nlohmann::json& config, const std::string& key,
                                          const std::string& what, absl::string_view fallback) {
  const nlohmann::json& v = Field(config, key);
  std::string s(fallback);
  if (!v.is_null()) {
    if (!v.is_string()) return FieldError(what, key, "a one-character string", v);
    s = v.get<std::string>();
  }
  auto cps = DecodeUtf8(s, FieldName(what, key));
  if (!cps.ok() || cps->size() != 1) return FieldError(what, key, "a one-character string", v);
  return s;
}

absl::StatusOr<size_t> Count(const nlohmann::json& config, const std::string& key,
                             const std::string& what) {
  const nlohmann::json& v = Field(config, key);
  if (v.is_null()) return 0;
  if (!v.is_number_unsigned()) return FieldError(what, key, "a non-negative integer", v);
  return v.get<size_t>();
}

absl::Status ParseStep(const nlohmann::json& config, const std::string& what,
                       std::vector<DecoderStep>* steps) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an object, got ", ShortDump(config)));
  }
  ASSIGN_OR_RETURN(std::string type, RequiredString(config, "type", what));
  const bool fused = !steps->empty() && (steps->back().fused || steps->back().kind == Kind::kFuse ||
                                         steps->back().kind == Kind::kByteLevel);
  DecoderStep step;
  step.fused = fused;
  auto after_fuse = [&](absl::string_view detail) {
    return absl::UnimplementedError(absl::StrCat(
        what, ": decoder ", type, detail, " after Fuse or ByteLevel is not supported"));
  };
  if (type == "Sequence") {
    const nlohmann::json& list = Field(config, "decoders");
    if (!list.is_array()) return FieldError(what, "decoders", "an array", list);
    for (size_t i = 0; i < list.size(); ++i) {
      RETURN_IF_ERROR(ParseStep(list[i], absl::StrCat(what, ".decoders[", i, "]"), steps));
    }
    return absl::OkStatus();
  } else if (type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
  } else if (type == "WordPiece") {
    if (fused) return after_fuse("");
    step.kind = Kind::kWordPiece;
    ASSIGN_OR_RETURN(auto prefix, NullableString(config, "prefix", what));
    step.pattern = prefix.value_or("##");
    ASSIGN_OR_RETURN(step.cleanup, OptionalBool(config, "cleanup", true, what));
  } else if (type == "Replace") {
    step.kind = Kind::kReplace;
    const nlohmann::json& pattern = Field(config, "pattern");
    const nlohmann::json& string = Field(pattern, "String");
    if (!pattern.is_object() || !string.is_string() || string.get<std::string>().empty()) {
      if (pattern.is_object() && pattern.contains("Regex")) {
        return absl::UnimplementedError(
            absl::StrCat(FieldName(what, "pattern.Regex"), " is not supported"));
      }
      return FieldError(what, "pattern", "{\"String\": non-empty string}", pattern);
    }
    step.pattern = string.get<std::string>();
    ASSIGN_OR_RETURN(step.content, RequiredString(config, "content", what));
    if (fused && Chars(step.pattern).size() != 1) return after_fuse(" (longer than a character)");
  } else if (type == "ByteFallback") {
    if (fused) return after_fuse("");
    step.kind = Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = Kind::kFuse;
  } else if (type == "Strip") {
    step.kind = Kind::kStrip;
    ASSIGN_OR_RETURN(std::string content, OneCharString(config, "content", what, " "));
    step.strip_char = Chars(content)[0];
    ASSIGN_OR_RETURN(step.strip_start, Count(config, "start", what));
    ASSIGN_OR_RETURN(step.strip_stop, Count(config, "stop", what));
    if (fused && step.strip_stop > 0) return after_fuse(" with stop > 0");
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    ASSIGN_OR_RETURN(step.replacement, OneCharString(config, "replacement", what, "\xE2\x96\x81"));
    ASSIGN_OR_RETURN(auto scheme, NullableString(config, "prepend_scheme", what));
    if (scheme) {
      if (*scheme != "always" && *scheme != "first" && *scheme != "never") {
        return FieldError(what, "prepend_scheme", "\"always\", \"first\" or \"never\"",
                          Field(config, "prepend_scheme"));
      }
      step.metaspace_prepend = *scheme != "never";
    } else {
      ASSIGN_OR_RETURN(step.metaspace_prepend, OptionalBool(config, "add_prefix_space", true, what));
    }
  } else {
    return absl::UnimplementedError(absl::StrCat(what, ".type \"", type, "\" is not supported"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

}  // namespace

DecoderChain::DecoderChain() : steps_{DecoderStep::Of(Kind::kJoinWithSpace)} {}

DecoderState DecoderChain::NewState() const {
  DecoderState state;
  state.steps.resize(steps_.size());
  for (size_t i = 0; i < steps_.size(); ++i) state.steps[i].strip_left = steps_[i].strip_start;
  return state;
}

std::string DecoderChain::Run(std::vector<std::string> tokens, bool at_end,
                              DecoderState* state) const {
  for (size_t i = 0; i < steps_.size(); ++i) {
    tokens = Apply(steps_[i], std::move(tokens), at_end, &state->steps[i]);
  }
  return absl::StrJoin(tokens, "");
}

absl::StatusOr<DecoderChain> ParseDecoder(const nlohmann::json& config, const std::string& what) {
  if (config.is_null()) return DecoderChain();
  std::vector<DecoderStep> steps;
  RETURN_IF_ERROR(ParseStep(config, what, &steps));
  return DecoderChain(std::move(steps));
}

}  // namespace text_internal
}  // namespace twin
