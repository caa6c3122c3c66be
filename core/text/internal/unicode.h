// Unicode helpers shared by the Hugging Face tokenizers: UTF-8 <-> code points, the character
// classes the tokenizers test (from ICU's property data), full lower casing, normalization forms and grapheme clusters.
//
//   ASSIGN_OR_RETURN(std::u32string cps, DecodeUtf8(text, "text 3"));
//   if (IsPunctuation(cps[0])) ...
//
// Thread-safety: pure functions; ICU's data is immutable once loaded.
#ifndef TWIN_CORE_TEXT_INTERNAL_UNICODE_H_
#define TWIN_CORE_TEXT_INTERNAL_UNICODE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {
namespace text_internal {

// Strict UTF-8 (no overlong forms, surrogates or values past U+10FFFF). INVALID_ARGUMENT names
// `what` and the offset of the first bad byte.
absl::StatusOr<std::u32string> DecodeUtf8(absl::string_view text, absl::string_view what);
void AppendUtf8(char32_t cp, std::string* out);
std::string EncodeUtf8(std::u32string_view cps);

// The White_Space property: Rust's char::is_whitespace and Oniguruma's Unicode \s.
bool IsWhitespace(char32_t c);
// BERT's control class: general category C* (Cc, Cf, Cn, Co, Cs) except \t, \n and \r.
bool IsControl(char32_t c);
// BERT's punctuation: ASCII 33-47, 58-64, 91-96, 123-126, or general category P*.
bool IsPunctuation(char32_t c);
// CJK ideographs that BERT isolates (the ranges of BERT's _is_chinese_char).
bool IsChineseChar(char32_t c);
bool IsLetter(char32_t c);           // general category L*
bool IsNumber(char32_t c);           // general category N*
bool IsNonspacingMark(char32_t c);   // general category Mn

// Full (SpecialCasing) lower casing in the root locale, final sigma included, as Rust's
// str::to_lowercase and JavaScript's toLowerCase.
std::u32string ToLower(std::u32string_view text);
// Canonical decomposition (NFD) and composition (NFC), and their compatibility forms (NFKD,
// NFKC).
std::u32string Nfd(std::u32string_view text);
std::u32string Nfc(std::u32string_view text);
std::u32string Nfkd(std::u32string_view text);
std::u32string Nfkc(std::u32string_view text);

// Where each extended grapheme cluster of `text` ends (UAX #29, ICU's character break rules), in
// code points, ascending; the last is text.size(). Empty for an empty text.
std::vector<size_t> GraphemeEnds(std::u32string_view text);

// U+FFFD, what lossy UTF-8 decoding puts for each ill-formed sequence.
inline constexpr absl::string_view kReplacementCharacterUtf8 = "\xEF\xBF\xBD";
// Appends `bytes` as UTF-8, each maximal ill-formed subpart replaced by U+FFFD (the WHATWG /
// Rust String::from_utf8_lossy rule).
void AppendUtf8Lossy(absl::string_view bytes, std::string* out);
// How many bytes at the end of `bytes` are a well-formed start of a character that more bytes
// could complete (0 to 3): what a decoder fed in pieces holds back.
size_t Utf8IncompleteTail(absl::string_view bytes);
bool IsValidUtf8(absl::string_view bytes);

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_UNICODE_H_
