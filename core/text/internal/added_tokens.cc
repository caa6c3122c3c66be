#include "core/text/internal/added_tokens.h"

#include <algorithm>

#include "core/text/internal/unicode.h"

namespace twin {
namespace text_internal {

AddedTokenSplitter::AddedTokenSplitter(std::vector<const AddedToken*> tokens) {
  for (const AddedToken* token : tokens) {
    if (!token->content.empty()) by_first_[token->content[0]].push_back(token);
  }
  for (auto& [first, list] : by_first_) {
    std::stable_sort(list.begin(), list.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->content.size() > b->content.size();
    });
  }
}

std::vector<AddedTokenSplitter::Segment> AddedTokenSplitter::Split(
    std::u32string_view text) const {
  std::vector<Segment> segments;
  size_t plain_start = 0;
  bool strip_next = false;  // the last token was rstrip: skip the whitespace that follows
  auto add_plain = [&](size_t begin, size_t end, bool lstrip) {
    if (strip_next) {
      while (begin < end && IsWhitespace(text[begin])) ++begin;
      strip_next = false;
    }
    if (lstrip) {
      while (end > begin && IsWhitespace(text[end - 1])) --end;
    }
    if (end > begin) segments.push_back({std::u32string(text.substr(begin, end - begin)), nullptr});
  };
  for (size_t i = 0; i < text.size();) {
    const AddedToken* match = nullptr;
    if (auto it = by_first_.find(text[i]); it != by_first_.end()) {
      for (const AddedToken* token : it->second) {
        if (text.compare(i, token->content.size(), token->content) == 0) {
          match = token;
          break;
        }
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    add_plain(plain_start, i, match->lstrip);
    segments.push_back({std::u32string(), match});
    strip_next = match->rstrip;
    i += match->content.size();
    plain_start = i;
  }
  add_plain(plain_start, text.size(), false);
  return segments;
}

}  // namespace text_internal
}  // namespace twin
