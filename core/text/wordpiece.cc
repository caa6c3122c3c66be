#include "core/text/wordpiece.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/text/internal/unicode.h"

namespace twin {

using text_internal::IsChineseChar;
using text_internal::IsControl;
using text_internal::IsNonspacingMark;
using text_internal::IsPunctuation;
using text_internal::IsWhitespace;

namespace {

constexpr char32_t kReplacementChar = 0xFFFD;

std::u32string StripAccents(std::u32string_view text) {
  std::u32string out;
  for (char32_t c : text_internal::Nfd(text)) {
    if (!IsNonspacingMark(c)) out.push_back(c);
  }
  return out;
}

}  // namespace

std::u32string BertNormalize(std::u32string_view text, const BertNormalizerOptions& options) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (options.clean_text) {
      if (c == 0 || c == kReplacementChar || IsControl(c)) continue;
      if (IsWhitespace(c)) c = ' ';
    }
    if (options.handle_chinese_chars && IsChineseChar(c)) {
      out.push_back(' ');
      out.push_back(c);
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  // Accents go before lower casing, as in Hugging Face's BertNormalizer.
  if (options.strip_accents.value_or(options.lowercase)) out = StripAccents(out);
  if (options.lowercase) out = text_internal::ToLower(out);
  return out;
}

std::vector<std::u32string> BertPreTokenize(std::u32string_view text) {
  std::vector<std::u32string> words;
  std::u32string current;
  auto flush = [&] {
    if (!current.empty()) words.push_back(std::move(current));
    current.clear();
  };
  for (char32_t c : text) {
    if (IsWhitespace(c)) {
      flush();
    } else if (IsPunctuation(c)) {
      flush();
      words.emplace_back(1, c);
    } else {
      current.push_back(c);
    }
  }
  flush();
  return words;
}

absl::StatusOr<std::unique_ptr<WordPiece>> WordPiece::Create(TokenVocab vocab,
                                                             WordPieceOptions options,
                                                             absl::string_view what) {
  auto unk = vocab.find(options.unk_token);
  if (unk == vocab.end()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the unk token \"", options.unk_token,
                                                   "\" is not in the vocabulary"));
  }
  if (options.max_input_chars_per_word <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": max_input_chars_per_word ",
                                                   options.max_input_chars_per_word,
                                                   " is not positive"));
  }
  size_t max_token_bytes = 0;
  for (const auto& [token, id] : vocab) max_token_bytes = std::max(max_token_bytes, token.size());
  const int64_t unk_id = unk->second;
  return std::unique_ptr<WordPiece>(
      new WordPiece(std::move(vocab), std::move(options), unk_id, max_token_bytes));
}

void WordPiece::Tokenize(std::u32string_view word, std::vector<int64_t>* ids) const {
  if (word.empty()) return;
  if (word.size() > static_cast<size_t>(options_.max_input_chars_per_word)) {
    ids->push_back(unk_id_);
    return;
  }
  // bounds[i]: the byte offset of code point i in the UTF-8 word.
  std::string utf8;
  std::vector<size_t> bounds;
  bounds.reserve(word.size() + 1);
  for (char32_t c : word) {
    bounds.push_back(utf8.size());
    text_internal::AppendUtf8(c, &utf8);
  }
  bounds.push_back(utf8.size());

  const size_t first = ids->size();
  std::string piece;
  size_t start = 0;
  while (start < word.size()) {
    const std::string& prefix = start > 0 ? options_.continuing_subword_prefix : std::string();
    size_t end = word.size();
    // Longer pieces than the longest vocabulary entry cannot match.
    while (end > start && bounds[end] - bounds[start] + prefix.size() > max_token_bytes_) --end;
    int64_t found = -1;
    for (; end > start; --end) {
      piece.assign(prefix);
      piece.append(utf8, bounds[start], bounds[end] - bounds[start]);
      auto it = vocab_.find(piece);
      if (it != vocab_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {
      ids->resize(first);
      ids->push_back(unk_id_);
      return;
    }
    ids->push_back(found);
    start = end;
  }
}

}  // namespace twin
