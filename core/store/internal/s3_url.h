// URLs of S3 requests, in the canonical form that SigV4 signs.
//
// libcurl (7.88) signs the query string exactly as sent, so it must already be canonical: path
// segments and query names/values percent-encoded (RFC 3986 unreserved characters kept),
// parameters sorted, each written as "name=value" (also when the value is empty).
//
// Thread-safety: free functions without state.
#ifndef TWIN_CORE_STORE_INTERNAL_S3_URL_H_
#define TWIN_CORE_STORE_INTERNAL_S3_URL_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/store/s3_store.h"

namespace twin::s3_internal {

// Percent-encodes every byte but A-Z a-z 0-9 - . _ ~ (and '/' when `keep_slash`), as %XX.
std::string UriEncode(absl::string_view text, bool keep_slash);

using QueryParams = std::vector<std::pair<std::string, std::string>>;
// The canonical query string: "a=1&b=&c=x%2Fy", sorted by encoded name, then value.
std::string CanonicalQuery(const QueryParams& params);

struct Endpoint {
  std::string scheme;     // "http" or "https"
  std::string authority;  // "host[:port]"
  std::string base_path;  // "" or "/base" (no trailing '/')
};
// Parses "http(s)://host[:port][/base]"; INVALID_ARGUMENT naming the endpoint otherwise.
absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view endpoint);

// The URL of `bucket_key` ("" for the bucket itself) with the canonical `query`.
std::string BuildUrl(const Endpoint& endpoint, bool virtual_host, absl::string_view bucket,
                     absl::string_view bucket_key, const QueryParams& query = {});

// Whether requests of `options` use virtual-hosted style (resolves S3Addressing::kAuto).
bool UsesVirtualHost(const S3Options& options);

}  // namespace twin::s3_internal

#endif  // TWIN_CORE_STORE_INTERNAL_S3_URL_H_
