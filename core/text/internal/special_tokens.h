// The special tokens that tokenizer_config.json and special_tokens_map.json name, shared by the
// directory forms without a tokenizer.json (special_tokens.cc, sentencepiece_dir.cc).
//
//   ASSIGN_OR_RETURN(DirConfig config, ReadDirConfig(dir));
//   SetDefault(&config, "unk_token", "[UNK]");
//   ... build the pipeline's model ...
//   ASSIGN_OR_RETURN(auto ids, AddSpecialTokens(config, "vocab.txt", pipeline.get()));
//
// Thread-safety: pure functions.
#ifndef TWIN_CORE_TEXT_INTERNAL_SPECIAL_TOKENS_H_
#define TWIN_CORE_TEXT_INTERNAL_SPECIAL_TOKENS_H_

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/text/internal/hf_config.h"

namespace twin {
namespace text_internal {

inline constexpr const char* kTokenizerConfig = "tokenizer_config.json";

struct SpecialToken {
  std::string content;
  bool lstrip = false;
  bool rstrip = false;
  std::string source;  // "special_tokens_map.json: mask_token", or "default mask_token"
};

struct DirConfig {
  nlohmann::json tokenizer_config = nlohmann::json::object();
  absl::flat_hash_map<std::string, SpecialToken> special;  // by key ("unk_token", ...)
  std::vector<SpecialToken> additional;                   // additional_special_tokens
};

// tokenizer_config.json, then special_tokens_map.json over it (either may be absent).
absl::StatusOr<DirConfig> ReadDirConfig(const std::string& dir);

// `key` is `content` unless the files name it.
void SetDefault(DirConfig* config, const std::string& key, const std::string& content,
                bool lstrip = false);

// Registers every special token of `config` as a special added token (never split, never
// normalized) of `pipeline`, whose model must be set; returns the ids by key. A token that is
// neither an added token nor in the vocabulary is INVALID_ARGUMENT naming its source and
// `vocab_file`.
absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> AddSpecialTokens(
    const DirConfig& config, absl::string_view vocab_file, TokenizerPipeline* pipeline);

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_SPECIAL_TOKENS_H_
