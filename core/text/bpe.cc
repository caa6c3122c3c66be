#include "core/text/bpe.h"

#include <algorithm>
#include <array>
#include <functional>
#include <queue>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status_macros.h"
#include "core/text/internal/unicode.h"

namespace twin {

using text_internal::IsLetter;
using text_internal::IsNumber;
using text_internal::IsWhitespace;

namespace {

// Recent words are remembered up to this many entries, words up to this many bytes.
constexpr size_t kCacheMaxEntries = 10000;
constexpr size_t kCacheMaxWordBytes = 256;

// "<0x0A>": byte fallback's token for one byte.
std::string ByteToken(unsigned char byte) {
  constexpr char kHex[] = "0123456789ABCDEF";
  return absl::StrCat("<0x", std::string{kHex[byte >> 4], kHex[byte & 15]}, ">");
}

bool IsOther(char32_t c) { return !IsWhitespace(c) && !IsLetter(c) && !IsNumber(c); }

// The length of the contraction ('s 't 're 've 'm 'll 'd) at text[i], or 0.
size_t ContractionAt(std::u32string_view text, size_t i) {
  if (text[i] != '\'' || i + 1 >= text.size()) return 0;
  const char32_t a = text[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= text.size()) return 0;
  const char32_t b = text[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// The end of the run of characters of `cls` starting at `i`.
template <typename Class>
size_t RunEnd(std::u32string_view text, size_t i, Class cls) {
  while (i < text.size() && cls(text[i])) ++i;
  return i;
}

// The end of the piece of GPT-2's pattern that starts at `i` (< text.size()).
size_t PieceEnd(std::u32string_view text, size_t i) {
  if (size_t n = ContractionAt(text, i)) return i + n;
  const char32_t c = text[i];
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': the optional space, then a non-empty run.
  const size_t j = (c == ' ' && i + 1 < text.size()) ? i + 1 : i;
  for (size_t start : {j, i}) {
    const char32_t d = text[start];
    if (IsLetter(d)) return RunEnd(text, start, IsLetter);
    if (IsNumber(d)) return RunEnd(text, start, IsNumber);
    if (IsOther(d)) return RunEnd(text, start, IsOther);
  }
  // c is whitespace. '\s+(?!\S)': the run, less its last character when a non-space follows
  // (the run then ends before whitespace); a single one before a non-space is '\s+'.
  const size_t end = RunEnd(text, i, IsWhitespace);
  if (end == text.size() || end - i == 1) return end;
  return end - 1;
}

const std::array<char32_t, 256>& ByteTable() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

}  // namespace

std::vector<std::u32string> Gpt2Split(std::u32string_view text) {
  std::vector<std::u32string> pieces;
  for (size_t i = 0; i < text.size();) {
    const size_t end = PieceEnd(text, i);
    pieces.emplace_back(text.substr(i, end - i));
    i = end;
  }
  return pieces;
}

char32_t ByteToUnicode(uint8_t byte) { return ByteTable()[byte]; }

std::string ByteLevelEncode(std::u32string_view piece) {
  std::string out;
  for (unsigned char byte : text_internal::EncodeUtf8(piece)) {
    text_internal::AppendUtf8(ByteToUnicode(byte), &out);
  }
  return out;
}

std::vector<std::string> ByteLevelPreTokenize(std::u32string_view text,
                                              const ByteLevelOptions& options) {
  std::u32string prefixed;
  if (options.add_prefix_space && (text.empty() || text[0] != ' ')) {
    prefixed = U" ";
    prefixed.append(text);
    text = prefixed;
  }
  std::vector<std::string> out;
  if (!options.use_regex) {
    if (!text.empty()) out.push_back(ByteLevelEncode(text));
    return out;
  }
  for (const auto& piece : Gpt2Split(text)) out.push_back(ByteLevelEncode(piece));
  return out;
}

absl::StatusOr<std::vector<BpeMerge>> LoadMergesTxt(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadTokenizerFile(path));
  std::vector<BpeMerge> merges;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_number == 1 && absl::StartsWith(line, "#version"))) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": line ", line_number, ": expected two tokens separated by one space, got \"",
          line.substr(0, 80), "\""));
    }
    merges.emplace_back(std::string(parts[0]), std::string(parts[1]));
  }
  return merges;
}

absl::StatusOr<std::unique_ptr<Bpe>> Bpe::Create(TokenVocab vocab,
                                                 const std::vector<BpeMerge>& merges,
                                                 BpeOptions options, absl::string_view what) {
  auto id_of = [&](const std::string& token, size_t rank) -> absl::StatusOr<int64_t> {
    auto it = vocab.find(token);
    if (it == vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": merge ", rank + 1, " (\"", merges[rank].first, " ", merges[rank].second,
          "\") names the token \"", token, "\", which is not in the vocabulary"));
    }
    return it->second;
  };
  PairMap map;
  map.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    ASSIGN_OR_RETURN(int64_t left_id, id_of(left, rank));
    ASSIGN_OR_RETURN(int64_t right_id, id_of(right, rank));
    ASSIGN_OR_RETURN(int64_t merged_id, id_of(left + right, rank));
    // A repeated merge keeps its last rank, as Hugging Face's loaders do.
    map[{left_id, right_id}] = Merge{static_cast<int64_t>(rank), merged_id};
  }
  std::optional<int64_t> unk_id;
  if (options.unk_token) {
    auto it = vocab.find(*options.unk_token);
    if (it == vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": the unk token \"",
                                                     *options.unk_token,
                                                     "\" is not in the vocabulary"));
    }
    unk_id = it->second;
  }
  return std::unique_ptr<Bpe>(new Bpe(std::move(vocab), std::move(map), std::move(options),
                                      unk_id));
}

std::vector<int64_t> Bpe::MergeWord(absl::string_view word) const {
  // A doubly linked list of symbols; a symbol missing from the vocabulary (id -1) never merges.
  struct Symbol {
    int64_t id;
    int prev;
    int next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  std::string scratch;
  for (size_t i = 0; i < word.size();) {
    size_t len = 1;
    const auto lead = static_cast<unsigned char>(word[i]);
    if (lead >= 0xF0) {
      len = 4;
    } else if (lead >= 0xE0) {
      len = 3;
    } else if (lead >= 0xC0) {
      len = 2;
    }
    len = std::min(len, word.size() - i);
    scratch.assign(word.data() + i, len);
    i += len;
    auto it = vocab_.find(scratch);
    std::vector<int64_t> found;
    if (it != vocab_.end()) {
      found.push_back(it->second);
    } else if (options_.byte_fallback) {
      for (unsigned char byte : scratch) {
        auto b = vocab_.find(ByteToken(byte));
        if (b == vocab_.end()) break;
        found.push_back(b->second);
      }
      if (found.size() != scratch.size()) found.clear();
    }
    if (found.empty()) {
      // Unknown (-1): never merges; the unk token or nothing at the end.
      if (options_.fuse_unk && !symbols.empty() && symbols.back().id < 0) continue;
      found.push_back(-1);
    }
    for (int64_t id : found) {
      const int index = static_cast<int>(symbols.size());
      symbols.push_back({id, index - 1, index + 1, true});
    }
  }
  if (!symbols.empty()) symbols.back().next = -1;

  struct Candidate {
    int64_t rank;
    int pos;
    int64_t left_id;
    int64_t right_id;
    int64_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int pos) {
    if (pos < 0 || symbols[pos].next < 0) return;
    const int64_t left = symbols[pos].id;
    const int64_t right = symbols[symbols[pos].next].id;
    if (left < 0 || right < 0) return;
    auto it = merges_.find({left, right});
    if (it != merges_.end()) {
      queue.push({it->second.rank, pos, left, right, it->second.merged_id});
    }
  };
  for (int pos = 0; pos < static_cast<int>(symbols.size()); ++pos) consider(pos);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.id != top.left_id || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (right.id != top.right_id) continue;
    left.id = top.merged_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }

  std::vector<int64_t> ids;
  for (const Symbol& s : symbols) {
    if (!s.alive) continue;
    if (s.id >= 0) {
      ids.push_back(s.id);
    } else if (unk_id_) {
      ids.push_back(*unk_id_);
    }
  }
  return ids;
}

void Bpe::Tokenize(absl::string_view word, std::vector<int64_t>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int64_t> merged = MergeWord(word);
  ids->insert(ids->end(), merged.begin(), merged.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() < kCacheMaxEntries) cache_.emplace(std::string(word), std::move(merged));
  }
}

}  // namespace twin
