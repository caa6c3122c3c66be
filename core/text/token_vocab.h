// Token vocabularies of Hugging Face tokenizers, and the files they are read from.
//
//   ASSIGN_OR_RETURN(TokenVocab vocab, LoadVocabTxt(dir + "/vocab.txt"));   // BERT: id = line
//   ASSIGN_OR_RETURN(TokenVocab vocab, LoadVocabJson(dir + "/vocab.json")); // {"token": id}
//
// Errors name the file (and the line or key): NOT_FOUND for a missing file, INVALID_ARGUMENT
// for malformed content.
// Thread-safety: pure functions.
#ifndef TWIN_CORE_TEXT_TOKEN_VOCAB_H_
#define TWIN_CORE_TEXT_TOKEN_VOCAB_H_

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {

// Token (UTF-8) -> id.
using TokenVocab = absl::flat_hash_map<std::string, int64_t>;

// Tokenizer files larger than this are refused (the largest public tokenizer.json files are
// tens of MiB).
inline constexpr int64_t kMaxTokenizerFileBytes = int64_t{512} << 20;

// The whole file; NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadTokenizerFile(const std::string& path);

// One token per line, id = line number (from 0); "\n" or "\r\n" line ends. A token that occurs
// twice keeps its last line, as Hugging Face's loaders do. Tokens must be valid UTF-8.
absl::StatusOr<TokenVocab> LoadVocabTxt(const std::string& path);

// A JSON object of token -> non-negative integer id.
absl::StatusOr<TokenVocab> LoadVocabJson(const std::string& path);
// The same for an already parsed value; `what` names it in errors ("tokenizer.json: model.vocab").
absl::StatusOr<TokenVocab> VocabFromJson(const nlohmann::json& value, absl::string_view what);

}  // namespace twin

#endif  // TWIN_CORE_TEXT_TOKEN_VOCAB_H_
