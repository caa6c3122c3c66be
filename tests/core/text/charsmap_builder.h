// Test helper: a SentencePiece precompiled_charsmap from key -> replacement rules, laid out as
// SentencePiece writes one ([trie size][Darts-clone double array][replacements, NUL-ended]), so
// that tests can exercise the Precompiled normalizer without a trained model.
//
//   std::string blob = BuildCharsmap({{"\uFB01", "fi"}, {"\r", " "}});
#ifndef TWIN_TESTS_CORE_TEXT_CHARSMAP_BUILDER_H_
#define TWIN_TESTS_CORE_TEXT_CHARSMAP_BUILDER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

namespace twin {
namespace testing {

inline void AppendLittleEndian32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// The double array's units for a trie of `keys` (non-empty, no NUL byte) and their values:
// unit 0 is the root; a node at position p with children base b stores
// offset p ^ b (bits 10-30) and, when a key ends there, bit 8, the value sitting at b (bit 31
// set, so that no label matches it); a child reached by byte c sits at b ^ c with label c.
inline std::vector<uint32_t> BuildDoubleArray(
    const std::vector<std::pair<std::string, uint32_t>>& keys) {
  struct Node {
    std::map<unsigned char, size_t> children;
    std::optional<uint32_t> value;
  };
  std::vector<Node> nodes(1);
  for (const auto& [key, value] : keys) {
    size_t n = 0;
    for (char ch : key) {
      const auto c = static_cast<unsigned char>(ch);
      auto it = nodes[n].children.find(c);
      if (it == nodes[n].children.end()) {
        nodes.emplace_back();
        it = nodes[n].children.emplace(c, nodes.size() - 1).first;
      }
      n = it->second;
    }
    nodes[n].value = value;
  }
  std::vector<uint32_t> units(256, 0);
  std::vector<bool> used(256, false);       // positions taken by a unit
  std::vector<bool> base_taken(256, false);  // bases given to a node: each node needs its own,
                                             // or a key could walk into another node's children
  used[0] = true;
  auto grow = [&](size_t pos) {
    if (pos >= units.size()) {
      const size_t size = (pos | 0xFF) + 1;
      units.resize(size, 0);
      used.resize(size, false);
      base_taken.resize(size, false);
    }
  };
  std::queue<std::pair<size_t, size_t>> pending;  // node, position
  pending.push({0, 0});
  while (!pending.empty()) {
    const auto [n, pos] = pending.front();
    pending.pop();
    const Node& node = nodes[n];
    if (node.children.empty() && !node.value) continue;
    size_t base = 1;
    for (;; ++base) {
      grow(base | 0xFF);
      bool free = !base_taken[base] && !(node.value && used[base]);
      for (const auto& [c, child] : node.children) free = free && !used[base ^ c];
      if (free) break;
    }
    base_taken[base] = true;
    units[pos] |= static_cast<uint32_t>(pos ^ base) << 10 | (node.value ? 1u << 8 : 0u);
    if (node.value) {
      used[base] = true;
      units[base] = (1u << 31) | *node.value;
    }
    for (const auto& [c, child] : node.children) {
      used[base ^ c] = true;
      units[base ^ c] = c;
      pending.push({child, base ^ c});
    }
  }
  return units;
}

inline std::string CharsmapBlob(const std::vector<uint32_t>& units,
                                const std::string& replacements) {
  std::string blob;
  AppendLittleEndian32(static_cast<uint32_t>(units.size() * 4), &blob);
  for (uint32_t unit : units) AppendLittleEndian32(unit, &blob);
  return blob + replacements;
}

inline std::string BuildCharsmap(const std::map<std::string, std::string>& rules) {
  std::string replacements;
  std::vector<std::pair<std::string, uint32_t>> keys;
  for (const auto& [key, replacement] : rules) {
    keys.emplace_back(key, static_cast<uint32_t>(replacements.size()));
    replacements += replacement;
    replacements.push_back('\0');
  }
  return CharsmapBlob(BuildDoubleArray(keys), replacements);
}

}  // namespace testing
}  // namespace twin

#endif  // TWIN_TESTS_CORE_TEXT_CHARSMAP_BUILDER_H_
