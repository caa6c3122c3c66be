#include "tests/testing/sigv4_check.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/io/sha256.h"

namespace twin::testing {
namespace {

constexpr char kAlgorithm[] = "AWS4-HMAC-SHA256";
constexpr char kUnsignedPayload[] = "UNSIGNED-PAYLOAD";
constexpr char kScopeTerminator[] = "aws4_request";
constexpr size_t kCredentialParts = 5;  // key/date/region/service/aws4_request

std::string PercentEncode(absl::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(c);
    } else {
      out += {'%', kHex[u >> 4], kHex[u & 0xF]};
    }
  }
  return out;
}

std::string HmacSha256(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &size);
  return std::string(reinterpret_cast<char*>(out), size);
}

bool IsLowerHex64(absl::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

SigV4Failure Failure(int status, std::string code, std::string message) {
  return SigV4Failure{status, std::move(code), std::move(message)};
}

std::string CanonicalRequest(const HttpRequest& r, const std::string& signed_headers_text,
                             const std::vector<std::string>& signed_headers,
                             const std::string& payload_hash) {
  std::vector<std::string> query;
  for (const auto& [name, value] : DecodeQuery(r.query)) {
    query.push_back(absl::StrCat(PercentEncode(name, false), "=", PercentEncode(value, false)));
  }
  std::sort(query.begin(), query.end());
  std::string headers;
  for (const std::string& name : signed_headers) {
    const std::vector<std::string> words = absl::StrSplit(r.Header(name), ' ', absl::SkipEmpty());
    absl::StrAppend(&headers, name, ":", absl::StrJoin(words, " "), "\n");
  }
  return absl::StrJoin({r.method, PercentEncode(PercentDecode(r.path), true),
                        absl::StrJoin(query, "&"), headers, signed_headers_text, payload_hash},
                       "\n");
}

}  // namespace

std::string PercentDecode(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    int value = 0;
    if (text[i] == '%' && i + 2 < text.size() &&
        absl::SimpleHexAtoi(text.substr(i + 1, 2), &value)) {
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> DecodeQuery(absl::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  for (absl::string_view part : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    const size_t eq = part.find('=');
    params.emplace_back(PercentDecode(part.substr(0, eq)),
                        eq == absl::string_view::npos ? "" : PercentDecode(part.substr(eq + 1)));
  }
  return params;
}

std::optional<SigV4Failure> CheckSigV4(const HttpRequest& r, const SigV4Expectation& expected) {
  const std::string payload = r.Header("x-amz-content-sha256");
  if (payload.empty()) return Failure(400, "InvalidRequest", "missing x-amz-content-sha256");
  if (payload != kUnsignedPayload) {
    if (!IsLowerHex64(payload)) return Failure(400, "InvalidArgument", "bad x-amz-content-sha256");
    if (payload != Sha256Hex(r.body)) {
      return Failure(400, "XAmzContentSHA256Mismatch", "the body's digest differs");
    }
  }
  const std::string authorization = r.Header("authorization");
  absl::string_view auth = authorization;
  if (!absl::ConsumePrefix(&auth, kAlgorithm) || !absl::ConsumePrefix(&auth, " ")) {
    return Failure(403, "AccessDenied", "no AWS4-HMAC-SHA256 Authorization header");
  }
  std::map<std::string, std::string> fields;
  for (absl::string_view field : absl::StrSplit(auth, ',')) {
    field = absl::StripAsciiWhitespace(field);
    const size_t eq = field.find('=');
    if (eq != absl::string_view::npos) {
      fields[std::string(field.substr(0, eq))] = std::string(field.substr(eq + 1));
    }
  }
  const std::vector<std::string> credential = absl::StrSplit(fields["Credential"], '/');
  if (credential.size() != kCredentialParts || credential[4] != kScopeTerminator ||
      credential[3] != expected.service) {
    return Failure(400, "AuthorizationHeaderMalformed", "bad credential scope");
  }
  if (credential[0] != expected.access_key_id) {
    return Failure(403, "InvalidAccessKeyId", "unknown access key " + credential[0]);
  }
  if (credential[2] != expected.region) {
    return Failure(400, "AuthorizationHeaderMalformed", "wrong region " + credential[2]);
  }
  const std::string amz_date = r.Header("x-amz-date");
  if (!absl::StartsWith(amz_date, credential[1])) {
    return Failure(403, "AccessDenied", "x-amz-date does not match the credential scope");
  }
  const std::vector<std::string> signed_headers = absl::StrSplit(fields["SignedHeaders"], ';');
  for (const char* required : {"host", "x-amz-content-sha256", "x-amz-date"}) {
    if (std::find(signed_headers.begin(), signed_headers.end(), required) == signed_headers.end()) {
      return Failure(403, "AccessDenied", absl::StrCat(required, " is not signed"));
    }
  }
  if (!expected.session_token.empty() &&
      r.Header("x-amz-security-token") != expected.session_token) {
    return Failure(403, "InvalidToken", "missing or wrong x-amz-security-token");
  }
  const std::string canonical_request =
      CanonicalRequest(r, fields["SignedHeaders"], signed_headers, payload);
  const std::string scope = absl::StrJoin(credential.begin() + 1, credential.end(), "/");
  const std::string string_to_sign =
      absl::StrJoin({std::string(kAlgorithm), amz_date, scope, Sha256Hex(canonical_request)}, "\n");
  std::string key = absl::StrCat("AWS4", expected.secret_access_key);
  for (size_t i = 1; i < credential.size(); ++i) key = HmacSha256(key, credential[i]);
  if (absl::BytesToHexString(HmacSha256(key, string_to_sign)) != fields["Signature"]) {
    return Failure(403, "SignatureDoesNotMatch",
                   absl::StrCat("canonical request was:\n", canonical_request));
  }
  return std::nullopt;
}

}  // namespace twin::testing
