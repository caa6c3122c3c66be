#include "core/store/internal/s3_url.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace twin::s3_internal {
namespace {

bool IsUnreserved(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~';
}

}  // namespace

std::string UriEncode(absl::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out.push_back(c);
    } else {
      const auto byte = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xF]);
    }
  }
  return out;
}

std::string CanonicalQuery(const QueryParams& params) {
  std::vector<std::pair<std::string, std::string>> encoded;
  encoded.reserve(params.size());
  for (const auto& [name, value] : params) {
    encoded.emplace_back(UriEncode(name, false), UriEncode(value, false));
  }
  std::sort(encoded.begin(), encoded.end());
  std::string out;
  for (const auto& [name, value] : encoded) {
    absl::StrAppend(&out, out.empty() ? "" : "&", name, "=", value);
  }
  return out;
}

absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view endpoint) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 endpoint \"", absl::CEscape(endpoint), "\": ", why));
  };
  Endpoint out;
  const size_t separator = endpoint.find("://");
  if (separator == absl::string_view::npos) return invalid("expected http://host[:port][/path]");
  out.scheme = absl::AsciiStrToLower(endpoint.substr(0, separator));
  if (out.scheme != "http" && out.scheme != "https") return invalid("scheme is not http or https");
  absl::string_view rest = endpoint.substr(separator + 3);
  const size_t slash = rest.find('/');
  out.authority = std::string(rest.substr(0, slash));
  if (out.authority.empty()) return invalid("no host");
  for (char c : out.authority) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':' &&
        c != '[' && c != ']' && c != '_') {
      return invalid("bad character in the host (credentials do not belong in the URL)");
    }
  }
  if (slash != absl::string_view::npos) {
    absl::string_view path = rest.substr(slash);
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    if (path.find_first_of("?#") != absl::string_view::npos) return invalid("has a query");
    out.base_path = std::string(path);
  }
  return out;
}

bool UsesVirtualHost(const S3Options& options) {
  switch (options.addressing) {
    case S3Addressing::kPath:
      return false;
    case S3Addressing::kVirtual:
      return true;
    case S3Addressing::kAuto:
      break;
  }
  return options.endpoint.empty();
}

std::string BuildUrl(const Endpoint& endpoint, bool virtual_host, absl::string_view bucket,
                     absl::string_view bucket_key, const QueryParams& query) {
  std::string url = absl::StrCat(endpoint.scheme, "://");
  if (virtual_host) {
    absl::StrAppend(&url, bucket, ".", endpoint.authority, endpoint.base_path, "/");
  } else {
    absl::StrAppend(&url, endpoint.authority, endpoint.base_path, "/", UriEncode(bucket, false));
    // The bucket itself is "/bucket" (no trailing slash), an object "/bucket/key".
    if (!bucket_key.empty()) url.push_back('/');
  }
  absl::StrAppend(&url, UriEncode(bucket_key, true));
  if (!query.empty()) absl::StrAppend(&url, "?", CanonicalQuery(query));
  return url;
}

}  // namespace twin::s3_internal
