#include "core/text/token_vocab.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/io/bounded_json.h"
#include "core/status_macros.h"
#include "core/text/internal/unicode.h"

namespace twin {
namespace {

// vocab.json is one flat object.
constexpr int kVocabJsonMaxDepth = 2;

}  // namespace

absl::StatusOr<std::string> ReadTokenizerFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": missing file (cannot open it)"));
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read it"));
  if (size > kMaxTokenizerFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", size, " bytes, more than the ",
                                                   kMaxTokenizerFileBytes, " allowed"));
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read it"));
  }
  return bytes;
}

absl::StatusOr<TokenVocab> LoadVocabTxt(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadTokenizerFile(path));
  TokenVocab vocab;
  int64_t line = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    absl::string_view token(text.data() + start, end - start);
    if (!token.empty() && token.back() == '\r') token.remove_suffix(1);
    RETURN_IF_ERROR(
        text_internal::DecodeUtf8(token, absl::StrCat(path, ": line ", line + 1)).status());
    vocab[std::string(token)] = line;
    ++line;
    start = end + 1;
  }
  if (vocab.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens"));
  return vocab;
}

absl::StatusOr<TokenVocab> VocabFromJson(const nlohmann::json& value, absl::string_view what) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an object of token -> id, got ", ShortDump(value)));
  }
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no tokens"));
  TokenVocab vocab;
  vocab.reserve(value.size());
  for (const auto& [token, id] : value.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": token \"", token, "\" has id ", ShortDump(id), ", not a non-negative integer"));
    }
    vocab[token] = id.get<int64_t>();
  }
  return vocab;
}

absl::StatusOr<TokenVocab> LoadVocabJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadTokenizerFile(path));
  ASSIGN_OR_RETURN(nlohmann::json value,
                   ParseBoundedJson(text, {.max_depth = kVocabJsonMaxDepth}, path));
  return VocabFromJson(value, path);
}

}  // namespace twin
