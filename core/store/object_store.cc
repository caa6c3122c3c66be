#include "core/store/object_store.h"

#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/store/file_store.h"
#include "core/store/s3_store.h"
#include "core/status_macros.h"

namespace twin {
namespace {

constexpr absl::string_view kSchemeSeparator = "://";
constexpr absl::string_view kTemporaryInfix = ".tmp.";
constexpr size_t kTemporaryRandomHexDigits = 16;

absl::Status InvalidKey(absl::string_view key, absl::string_view why) {
  // CEscape so that a key holding NUL or control bytes stays readable in the message.
  return absl::InvalidArgumentError(
      absl::StrCat("invalid object key \"", absl::CEscape(key), "\": ", why));
}

// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
bool IsSchemeName(absl::string_view s) {
  if (s.empty() || !absl::ascii_isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenFileStore(const std::string& dir) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileObjectStore> store, FileObjectStore::Create(dir));
  return std::unique_ptr<ObjectStore>(std::move(store));
}

}  // namespace

bool IsTemporaryObjectName(absl::string_view name) {
  const size_t suffix_size = kTemporaryInfix.size() + kTemporaryRandomHexDigits;
  if (name.size() <= suffix_size) return false;
  const absl::string_view suffix = name.substr(name.size() - suffix_size);
  if (!absl::StartsWith(suffix, kTemporaryInfix)) return false;
  for (char c : suffix.substr(kTemporaryInfix.size())) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::string TemporaryObjectName(absl::string_view name) {
  absl::BitGen gen;
  return absl::StrCat(name, kTemporaryInfix,
                      absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
}

absl::Status ObjectStore::GetToFileAtMost(absl::string_view key, const std::string& local_path,
                                          uint64_t max_bytes) {
  RETURN_IF_ERROR(GetToFile(key, local_path));
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(local_path, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot stat ", local_path, ": ", ec.message()));
  }
  if (size > max_bytes) {
    std::filesystem::remove(local_path, ec);
    return absl::OutOfRangeError(absl::StrCat(UriOf(key), " is ", size,
                                              " bytes; at most ", max_bytes, " were expected"));
  }
  return absl::OkStatus();
}

std::string ObjectStore::UriOf(absl::string_view key) const {
  std::string root = uri();
  if (!root.empty() && root.back() == '/') return absl::StrCat(root, key);
  return absl::StrCat(root, "/", key);
}

absl::Status ValidateObjectKey(absl::string_view key) {
  if (key.empty()) return InvalidKey(key, "empty key");
  if (key.find('\0') != absl::string_view::npos) return InvalidKey(key, "contains a NUL byte");
  if (key.find('\\') != absl::string_view::npos) return InvalidKey(key, "contains a backslash");
  if (key.front() == '/') return InvalidKey(key, "leading '/'");
  for (absl::string_view segment : absl::StrSplit(key, '/')) {
    if (segment.empty()) return InvalidKey(key, "empty path segment");
    if (segment == "." || segment == "..") {
      return InvalidKey(key, absl::StrCat("'", segment, "' segment"));
    }
    // Stores hide their in-flight temporary files; a key with such a name could never be
    // listed, so it is refused up front.
    if (IsTemporaryObjectName(segment)) {
      return InvalidKey(key, "name is reserved for temporary files (*.tmp.<16 hex digits>)");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateListPrefix(absl::string_view prefix) {
  if (prefix.empty()) return absl::OkStatus();
  if (prefix.front() == '/' || prefix.find('\0') != absl::string_view::npos ||
      prefix.find('\\') != absl::string_view::npos) {
    return Annotate(ValidateObjectKey(prefix), "invalid list prefix");
  }
  const size_t last_slash = prefix.rfind('/');
  if (last_slash == absl::string_view::npos) return absl::OkStatus();
  return Annotate(ValidateObjectKey(prefix.substr(0, last_slash)), "invalid list prefix");
}

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(const std::string& uri) {
  if (uri.empty()) return absl::InvalidArgumentError("object store URI is empty");
  const size_t separator = absl::string_view(uri).find(kSchemeSeparator);
  const absl::string_view scheme_part = separator == std::string::npos
                                            ? absl::string_view()
                                            : absl::string_view(uri).substr(0, separator);
  // A "://" after something that is not a scheme name (e.g. "/data/a://b") is just a path.
  if (!IsSchemeName(scheme_part)) return OpenFileStore(uri);
  const std::string scheme = absl::AsciiStrToLower(scheme_part);
  const std::string rest = uri.substr(separator + kSchemeSeparator.size());
  if (scheme == "file") {
    if (rest.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("object store URI \"", uri, "\" names no directory"));
    }
    return OpenFileStore(rest);
  }
  if (scheme == "s3") {
    absl::StatusOr<S3Options> options = S3Options::FromEnvironment();
    if (!options.ok()) return Annotate(options.status(), absl::StrCat("opening ", uri));
    ASSIGN_OR_RETURN(std::unique_ptr<S3ObjectStore> store,
                     S3ObjectStore::Create(uri, *std::move(options)));
    return std::unique_ptr<ObjectStore>(std::move(store));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown object store scheme \"", scheme_part,
                                                 "\" in \"", uri,
                                                 "\" (supported: file://, s3://)"));
}

}  // namespace twin
