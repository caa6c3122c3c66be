#include "core/text/internal/precompiled.h"

#include "absl/strings/str_cat.h"
#include "core/text/internal/unicode.h"

namespace twin {
namespace text_internal {
namespace {

// Darts-clone's unit: a child's label (the key byte, bit 31 set on a value unit so that no byte
// matches it), whether the node holds a value (bit 8), the offset to its children (bits 10-31,
// times 256 when bit 9 is set), or on a value unit the value (bits 0-30).
bool HasLeaf(uint32_t unit) { return ((unit >> 8) & 1) != 0; }
uint32_t Value(uint32_t unit) { return unit & ((1u << 31) - 1); }
uint32_t Label(uint32_t unit) { return unit & ((1u << 31) | 0xFF); }
uint32_t Offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

constexpr size_t kHeaderBytes = 4;
constexpr size_t kUnitBytes = 4;

uint32_t ReadLittleEndian32(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
}

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Walks the key bytes of `bytes` through the trie `units` (stopping at a NUL byte, as
// SentencePiece does), calling on_match(length, value) for each key that is a prefix, shortest
// first, until it returns false. Steps outside the array end the walk.
template <typename OnMatch>
void Walk(const std::vector<uint32_t>& units, absl::string_view bytes, OnMatch on_match) {
  const size_t size = units.size();
  size_t pos = Offset(units[0]);
  for (size_t i = 0; i < bytes.size(); ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == 0) return;
    pos ^= c;
    if (pos >= size) return;
    const uint32_t unit = units[pos];
    if (Label(unit) != c) return;
    pos ^= Offset(unit);
    if (HasLeaf(unit)) {
      if (pos >= size) return;
      if (!on_match(i + 1, Value(units[pos]))) return;
    }
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const PrecompiledCharsmap>> PrecompiledCharsmap::Parse(
    absl::string_view blob, absl::string_view what) {
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", parts...));
  };
  if (blob.size() > kMaxBytes) {
    return bad(blob.size(), " bytes, more than the ", kMaxBytes, " allowed");
  }
  if (blob.size() < kHeaderBytes) {
    return bad(blob.size(), " bytes, shorter than the 4-byte trie size that starts it");
  }
  const uint32_t trie_bytes = ReadLittleEndian32(blob.data());
  if (trie_bytes == 0 || trie_bytes % kUnitBytes != 0) {
    return bad("trie size ", trie_bytes, " is not a positive multiple of 4 bytes");
  }
  if (trie_bytes > blob.size() - kHeaderBytes) {
    return bad("trie size ", trie_bytes, " is larger than the ", blob.size() - kHeaderBytes,
               " bytes after the header");
  }
  std::shared_ptr<PrecompiledCharsmap> map(new PrecompiledCharsmap());
  map->units_.resize(trie_bytes / kUnitBytes);
  for (size_t i = 0; i < map->units_.size(); ++i) {
    map->units_[i] = ReadLittleEndian32(blob.data() + kHeaderBytes + i * kUnitBytes);
  }
  map->replacements_ = std::string(blob.substr(kHeaderBytes + trie_bytes));
  if (!IsValidUtf8(map->replacements_)) {
    return bad("the replacement strings after the trie are not valid UTF-8");
  }

  // Every node a key can reach, depth first. A node is the position of its children's base;
  // positions up to 255 past the array can still step back into it.
  const std::vector<uint32_t>& units = map->units_;
  const size_t size = units.size();
  std::vector<bool> visited(size + 256, false);
  std::vector<size_t> stack;
  const size_t root = Offset(units[0]);
  if (root < visited.size()) {
    visited[root] = true;
    stack.push_back(root);
  }
  while (!stack.empty()) {
    const size_t base = stack.back();
    stack.pop_back();
    for (uint32_t c = 1; c <= 0xFF; ++c) {
      const size_t pos = base ^ c;
      if (pos >= size || Label(units[pos]) != c) continue;
      const size_t child = pos ^ Offset(units[pos]);
      if (HasLeaf(units[pos])) {
        if (child >= size) {
          return bad("a key's value is at unit ", child, ", past the trie's ", size, " units");
        }
        const uint32_t value = Value(units[child]);
        if (value > map->replacements_.size() ||
            (value < map->replacements_.size() && IsContinuationByte(map->replacements_[value]))) {
          return bad("a key's replacement starts at byte ", value, ", which is not the start of a "
                     "character of the ", map->replacements_.size(), " replacement bytes");
        }
        ++map->num_keys_;
      }
      if (child < visited.size() && !visited[child]) {
        visited[child] = true;
        stack.push_back(child);
      }
    }
  }
  return std::shared_ptr<const PrecompiledCharsmap>(std::move(map));
}

absl::string_view PrecompiledCharsmap::ReplacementAt(uint32_t offset) const {
  absl::string_view rest = absl::string_view(replacements_).substr(offset);
  return rest.substr(0, rest.find('\0'));
}

std::optional<absl::string_view> PrecompiledCharsmap::ShortestMatch(absl::string_view bytes) const {
  std::optional<absl::string_view> found;
  Walk(units_, bytes, [&](size_t, uint32_t value) {
    found = ReplacementAt(value);
    return false;
  });
  return found;
}

std::optional<std::pair<size_t, absl::string_view>> PrecompiledCharsmap::LongestMatch(
    absl::string_view bytes) const {
  std::optional<std::pair<size_t, absl::string_view>> found;
  Walk(units_, bytes, [&](size_t length, uint32_t value) {
    found.emplace(length, ReplacementAt(value));
    return true;
  });
  return found;
}

std::u32string PrecompiledCharsmap::Normalize(std::u32string_view text) const {
  // Hugging Face's cut-off: a cluster of this many UTF-8 bytes or more goes by character.
  constexpr size_t kWholeClusterBelowBytes = 6;
  std::string out;
  out.reserve(text.size() + 8);
  std::string cluster;
  std::string character;
  size_t start = 0;
  for (size_t end : GraphemeEnds(text)) {
    const std::u32string_view chars = text.substr(start, end - start);
    start = end;
    cluster = EncodeUtf8(chars);
    if (cluster.size() < kWholeClusterBelowBytes) {
      if (std::optional<absl::string_view> replacement = ShortestMatch(cluster)) {
        out.append(replacement->data(), replacement->size());
        continue;
      }
    }
    for (char32_t c : chars) {
      character.clear();
      AppendUtf8(c, &character);
      std::optional<absl::string_view> replacement = ShortestMatch(character);
      if (replacement) {
        out.append(replacement->data(), replacement->size());
      } else {
        out += character;
      }
    }
  }
  // The replacements are whole characters of valid UTF-8 (Parse checks), so this decodes.
  absl::StatusOr<std::u32string> decoded = DecodeUtf8(out, "precompiled normalization");
  return decoded.ok() ? *std::move(decoded) : std::u32string(text);
}

}  // namespace text_internal
}  // namespace twin
