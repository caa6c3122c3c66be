#include "core/text/split_pattern.h"

#include "core/text/bpe.h"
#include "core/text/internal/unicode.h"

namespace twin {

using text_internal::IsLetter;
using text_internal::IsNumber;
using text_internal::IsWhitespace;

namespace {

constexpr absl::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr absl::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr absl::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Llama 3 groups digits by at most this many.
constexpr size_t kLlama3DigitRun = 3;

bool IsOther(char32_t c) { return !IsWhitespace(c) && !IsLetter(c) && !IsNumber(c); }
bool IsNewline(char32_t c) { return c == '\r' || c == '\n'; }

// Oniguruma's case-insensitive match of an ASCII letter: its two cases, and the characters
// whose case folding is that letter (U+017F LATIN SMALL LETTER LONG S folds to 's').
bool FoldsTo(char32_t c, char lower) {
  if (c == static_cast<char32_t>(lower) || c == static_cast<char32_t>(lower - 'a' + 'A')) {
    return true;
  }
  return lower == 's' && c == 0x17F;
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d) at text[i]: its length, or 0.
size_t FoldedContractionAt(std::u32string_view text, size_t i) {
  if (text[i] != '\'' || i + 1 >= text.size()) return 0;
  const char32_t a = text[i + 1];
  if (FoldsTo(a, 's') || FoldsTo(a, 't')) return 2;
  if (i + 2 < text.size()) {
    const char32_t b = text[i + 2];
    if ((FoldsTo(a, 'r') && FoldsTo(b, 'e')) || (FoldsTo(a, 'v') && FoldsTo(b, 'e'))) return 3;
    if (FoldsTo(a, 'l') && FoldsTo(b, 'l')) return 3;
  }
  if (FoldsTo(a, 'm') || FoldsTo(a, 'd')) return 2;
  return 0;
}

template <typename Class>
size_t RunEnd(std::u32string_view text, size_t i, Class cls, size_t max = std::u32string::npos) {
  const size_t limit = max == std::u32string::npos ? text.size() : std::min(text.size(), i + max);
  while (i < limit && cls(text[i])) ++i;
  return i;
}

// The end of the match of Qwen2's / Llama 3's pattern at text[i] (i < text.size()).
size_t QwenPieceEnd(std::u32string_view text, size_t i, size_t digit_run) {
  if (size_t n = FoldedContractionAt(text, i)) return i + n;
  const char32_t c = text[i];
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (!IsNewline(c) && !IsLetter(c) && !IsNumber(c) && i + 1 < text.size() &&
      IsLetter(text[i + 1])) {
    return RunEnd(text, i + 1, IsLetter);
  }
  if (IsLetter(c)) return RunEnd(text, i, IsLetter);
  if (IsNumber(c)) return RunEnd(text, i, IsNumber, digit_run);  // \p{N} or \p{N}{1,3}
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const size_t j = (c == ' ' && i + 1 < text.size() && IsOther(text[i + 1])) ? i + 1 : i;
  if (IsOther(text[j])) return RunEnd(text, RunEnd(text, j, IsOther), IsNewline);
  // c is whitespace. '\s*[\r\n]+': through the run's last line break, when it has one.
  const size_t end = RunEnd(text, i, IsWhitespace);
  for (size_t k = end; k > i; --k) {
    if (IsNewline(text[k - 1])) return k;
  }
  // '\s+(?!\S)', then '\s+'.
  if (end == text.size() || end - i == 1) return end;
  return end - 1;
}

}  // namespace

std::optional<SplitPattern> FindSplitPattern(absl::string_view regex) {
  if (regex == kGpt2Regex) return SplitPattern::kGpt2;
  if (regex == kQwen2Regex) return SplitPattern::kQwen2;
  if (regex == kLlama3Regex) return SplitPattern::kLlama3;
  return std::nullopt;
}

std::vector<std::u32string> SplitWithPattern(SplitPattern pattern, std::u32string_view text) {
  if (pattern == SplitPattern::kGpt2) return Gpt2Split(text);
  const size_t digit_run = pattern == SplitPattern::kLlama3 ? kLlama3DigitRun : 1;
  std::vector<std::u32string> pieces;
  for (size_t i = 0; i < text.size();) {
    const size_t end = QwenPieceEnd(text, i, digit_run);
    pieces.emplace_back(text.substr(i, end - i));
    i = end;
  }
  return pieces;
}

}  // namespace twin
