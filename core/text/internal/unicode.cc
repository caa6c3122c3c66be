#include "core/text/internal/unicode.h"

#include <unicode/ubrk.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

namespace twin {
namespace text_internal {
namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;

absl::Status BadUtf8(absl::string_view what, size_t offset) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": invalid UTF-8 at byte ", offset));
}

std::u16string ToUtf16(std::u32string_view text) {
  std::u16string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c > 0xFFFF) {
      out.push_back(static_cast<char16_t>(U16_LEAD(c)));
      out.push_back(static_cast<char16_t>(U16_TRAIL(c)));
    } else {
      out.push_back(static_cast<char16_t>(c));
    }
  }
  return out;
}

std::u32string FromUtf16(const char16_t* text, int32_t length) {
  std::u32string out;
  out.reserve(length);
  for (int32_t i = 0; i < length;) {
    UChar32 c;
    U16_NEXT(text, i, length, c);
    out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

// Runs an ICU string transform that may need a larger output buffer than its input.
template <typename Fn>
std::u32string TransformUtf16(std::u32string_view text, Fn fn) {
  std::u16string in = ToUtf16(text);
  std::vector<char16_t> out(in.size() + 16);
  for (;;) {
    UErrorCode error = U_ZERO_ERROR;
    int32_t n = fn(in, out.data(), static_cast<int32_t>(out.size()), &error);
    if (error == U_BUFFER_OVERFLOW_ERROR) {
      out.resize(n + 1);
      continue;
    }
    // The transforms used here fail only for lack of memory or data; keep the text as it is.
    if (U_FAILURE(error)) return std::u32string(text);
    return FromUtf16(out.data(), n);
  }
}

int8_t Category(char32_t c) { return u_charType(static_cast<UChar32>(c)); }

}  // namespace

absl::StatusOr<std::u32string> DecodeUtf8(absl::string_view text, absl::string_view what) {
  std::u32string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int extra;
    char32_t cp;
    char32_t min;
    if ((b & 0xE0) == 0xC0) {
      extra = 1, cp = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      extra = 2, cp = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      extra = 3, cp = b & 0x07, min = 0x10000;
    } else {
      return BadUtf8(what, i);
    }
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= n || (s[i + k] & 0xC0) != 0x80) return BadUtf8(what, i);
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > kMaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF)) return BadUtf8(what, i);
    out.push_back(cp);
    i += extra + 1;
  }
  return out;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string EncodeUtf8(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) AppendUtf8(c, &out);
  return out;
}

bool IsWhitespace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool IsControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (Category(c)) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_UNASSIGNED:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
      return true;
    default:
      return false;
  }
}

bool IsPunctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_P_MASK) != 0;
}

bool IsChineseChar(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool IsLetter(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK) != 0; }
bool IsNumber(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0; }
bool IsNonspacingMark(char32_t c) { return Category(c) == U_NON_SPACING_MARK; }

std::u32string ToLower(std::u32string_view text) {
  return TransformUtf16(text, [](const std::u16string& in, char16_t* out, int32_t cap,
                                 UErrorCode* error) {
    return u_strToLower(out, cap, in.data(), static_cast<int32_t>(in.size()), "", error);
  });
}

std::u32string Normalize(std::u32string_view text,
                         const UNormalizer2* (*instance)(UErrorCode*)) {
  UErrorCode init_error = U_ZERO_ERROR;
  const UNormalizer2* form = instance(&init_error);
  if (U_FAILURE(init_error)) return std::u32string(text);
  return TransformUtf16(text, [form](const std::u16string& in, char16_t* out, int32_t cap,
                                     UErrorCode* error) {
    return unorm2_normalize(form, in.data(), static_cast<int32_t>(in.size()), out, cap, error);
  });
}

std::u32string Nfd(std::u32string_view text) { return Normalize(text, unorm2_getNFDInstance); }
std::u32string Nfc(std::u32string_view text) { return Normalize(text, unorm2_getNFCInstance); }
std::u32string Nfkd(std::u32string_view text) { return Normalize(text, unorm2_getNFKDInstance); }
std::u32string Nfkc(std::u32string_view text) { return Normalize(text, unorm2_getNFKCInstance); }

std::vector<size_t> GraphemeEnds(std::u32string_view text) {
  std::vector<size_t> ends;
  if (text.empty()) return ends;
  const std::u16string units = ToUtf16(text);
  // The code point index of each UTF-16 unit boundary, to map ICU's offsets back.
  std::vector<size_t> code_point_at(units.size() + 1, 0);
  size_t unit = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    code_point_at[unit] = i;
    unit += text[i] > 0xFFFF ? 2 : 1;
  }
  code_point_at[unit] = text.size();
  // One iterator per thread: opening one loads and compiles ICU's rules.
  struct Closer {
    void operator()(UBreakIterator* it) const { ubrk_close(it); }
  };
  thread_local std::unique_ptr<UBreakIterator, Closer> iterator = [] {
    UErrorCode error = U_ZERO_ERROR;
    std::unique_ptr<UBreakIterator, Closer> it(ubrk_open(UBRK_CHARACTER, "", nullptr, 0, &error));
    if (U_FAILURE(error)) it.reset();
    return it;
  }();
  UErrorCode error = U_ZERO_ERROR;
  if (iterator != nullptr) {
    ubrk_setText(iterator.get(), units.data(), static_cast<int32_t>(units.size()), &error);
  }
  if (iterator == nullptr || U_FAILURE(error)) {
    // Without ICU's break data every code point is its own cluster.
    for (size_t i = 1; i <= text.size(); ++i) ends.push_back(i);
    return ends;
  }
  ubrk_first(iterator.get());
  for (int32_t end = ubrk_next(iterator.get()); end != UBRK_DONE; end = ubrk_next(iterator.get())) {
    ends.push_back(code_point_at[static_cast<size_t>(end)]);
  }
  // Keep no pointer to this call's text.
  ubrk_setText(iterator.get(), nullptr, 0, &error);
  return ends;
}

namespace {

// The length of the well-formed prefix of a UTF-8 sequence at bytes[i] (Unicode's "maximal
// subpart"), and whether that prefix is a whole character.
struct Utf8Unit {
  size_t length;
  bool complete;
};

Utf8Unit Utf8UnitAt(absl::string_view bytes, size_t i) {
  const auto lead = static_cast<unsigned char>(bytes[i]);
  if (lead < 0x80) return {1, true};
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return {1, false};
  }
  size_t n = 1;
  for (; n < need && i + n < bytes.size(); ++n) {
    const auto b = static_cast<unsigned char>(bytes[i + n]);
    if (b < (n == 1 ? lo : 0x80) || b > (n == 1 ? hi : 0xBF)) return {n, false};
  }
  return {n, n == need};
}

}  // namespace

size_t Utf8IncompleteTail(absl::string_view bytes) {
  // A character is at most 4 bytes: the unit that reaches the end starts in the last 3.
  const size_t kMaxTail = 3;
  for (size_t i = bytes.size() > kMaxTail ? bytes.size() - kMaxTail : 0; i < bytes.size();) {
    const Utf8Unit unit = Utf8UnitAt(bytes, i);
    if (i + unit.length == bytes.size() && !unit.complete &&
        static_cast<unsigned char>(bytes[i]) >= 0xC2) {
      // A well-formed prefix cut by the end (not a stray continuation or an invalid lead).
      bool prefix_ok = true;
      for (size_t j = i; j < bytes.size(); ++j) prefix_ok &= j == i || (bytes[j] & 0xC0) == 0x80;
      if (prefix_ok) return bytes.size() - i;
    }
    i += unit.length;
  }
  return 0;
}

void AppendUtf8Lossy(absl::string_view bytes, std::string* out) {
  for (size_t i = 0; i < bytes.size();) {
    const Utf8Unit unit = Utf8UnitAt(bytes, i);
    if (unit.complete) {
      out->append(bytes.data() + i, unit.length);
    } else {
      out->append(kReplacementCharacterUtf8.data(), kReplacementCharacterUtf8.size());
    }
    i += unit.length;
  }
}

bool IsValidUtf8(absl::string_view bytes) {
  for (size_t i = 0; i < bytes.size();) {
    const Utf8Unit unit = Utf8UnitAt(bytes, i);
    if (!unit.complete) return false;
    i += unit.length;
  }
  return true;
}

}  // namespace text_internal
}  // namespace twin
