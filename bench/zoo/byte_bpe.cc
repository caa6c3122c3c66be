#include "bench/zoo/byte_bpe.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/text/bpe.h"

namespace twin::zoo {
namespace {

using Json = nlohmann::ordered_json;

constexpr int kJsonIndent = 2;
constexpr int kBytes = 256;

// GPT-2's printable spelling of one byte (bytes_to_unicode), as UTF-8: the vocabulary's key.
std::string ByteSymbol(uint8_t byte) {
  const char32_t cp = ByteToUnicode(byte);  // below U+0800: one or two UTF-8 bytes
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  return {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
}

}  // namespace

std::string ByteBpeTokenizerJson(const std::vector<ByteBpeSpecial>& specials, int64_t byte_offset,
                                 const std::string& post_processor_json) {
  Json added = Json::array();
  Json vocab = Json::object();
  for (const ByteBpeSpecial& s : specials) {
    added.push_back({{"id", s.id},
                     {"content", s.content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  // Specials below the bytes come first in the vocabulary, those above it last (id order).
  for (const ByteBpeSpecial& s : specials) {
    if (s.id < byte_offset) vocab[s.content] = s.id;
  }
  for (int b = 0; b < kBytes; ++b) vocab[ByteSymbol(static_cast<uint8_t>(b))] = byte_offset + b;
  for (const ByteBpeSpecial& s : specials) {
    if (s.id >= byte_offset) vocab[s.content] = s.id;
  }
  const Json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", false}};
  Json t = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", Json::parse(post_processor_json)},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", Json::array()}}},
  };
  return t.dump(kJsonIndent) + "\n";
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << content;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status MakeDirectories(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace twin::zoo
