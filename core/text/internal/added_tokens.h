// Added tokens (special tokens and tokens added after training) and the split of text around
// them that Hugging Face tokenizers do before normalization: at each position the longest
// token that starts there, leftmost first; lstrip / rstrip tokens also take the whitespace on
// their left / right.
//
//   AddedTokenSplitter splitter({&cls, &mask});
//   for (const auto& seg : splitter.Split(text)) seg.token ? emit(seg.token->id) : encode(seg.text);
//
// Thread-safety: immutable after construction; the tokens must outlive the splitter.
#ifndef TWIN_CORE_TEXT_INTERNAL_ADDED_TOKENS_H_
#define TWIN_CORE_TEXT_INTERNAL_ADDED_TOKENS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace twin {
namespace text_internal {

struct AddedToken {
  std::u32string content;
  int64_t id = 0;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;  // matched in the normalized text rather than the raw text
  bool special = false;
};

class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;
  explicit AddedTokenSplitter(std::vector<const AddedToken*> tokens);

  struct Segment {
    std::u32string text;              // plain text when token is null
    const AddedToken* token = nullptr;
  };
  // Segments in order; plain segments are never empty.
  std::vector<Segment> Split(std::u32string_view text) const;

 private:
  // First code point -> tokens starting with it, longest first.
  absl::flat_hash_map<char32_t, std::vector<const AddedToken*>> by_first_;
};

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_ADDED_TOKENS_H_
