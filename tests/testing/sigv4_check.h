// Checks the AWS Signature Version 4 of a request received by a test server, with an
// implementation of the algorithm independent of the client under test: the canonical request
// is rebuilt from what arrived (path decoded and re-encoded, query parameters decoded,
// re-encoded and sorted, the signed headers with their values trimmed), then signed with the
// expected secret and compared.
//
// Also checked: x-amz-content-sha256 is present and is UNSIGNED-PAYLOAD or the body's real
// digest; the credential scope names the expected access key, region and service; host,
// x-amz-date and x-amz-content-sha256 are signed; and x-amz-security-token when one is expected.
//
// Thread-safety: free functions without state.
#ifndef TWIN_TESTS_TESTING_SIGV4_CHECK_H_
#define TWIN_TESTS_TESTING_SIGV4_CHECK_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "tests/testing/http_test_server.h"

namespace twin::testing {

struct SigV4Expectation {
  std::string access_key_id;
  std::string secret_access_key;
  std::string region;
  std::string service = "s3";
  std::string session_token;  // required when non-empty
};

// Why a request was refused, as S3 would answer it (e.g. 403 SignatureDoesNotMatch).
struct SigV4Failure {
  int http_status = 403;
  std::string code;
  std::string message;
};

// nullopt when the request is correctly signed.
std::optional<SigV4Failure> CheckSigV4(const HttpRequest& request,
                                       const SigV4Expectation& expected);

// "%41b" -> "Ab"; malformed escapes are kept as they are.
std::string PercentDecode(absl::string_view text);
// The decoded name/value pairs of a raw query string, in order ("a" without '=' has value "").
std::vector<std::pair<std::string, std::string>> DecodeQuery(absl::string_view query);

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_SIGV4_CHECK_H_
