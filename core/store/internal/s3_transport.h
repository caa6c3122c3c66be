// HTTP for S3ObjectStore: signed requests through libcurl, with retries.
//
// libcurl (7.88) signs with SigV4 itself (CURLOPT_AWS_SIGV4) and takes the payload hash from
// the x-amz-content-sha256 header that Send always sets: the body's digest, or
// UNSIGNED-PAYLOAD for bodies streamed from files. URLs must come from BuildUrl (s3_url.h).
//
// Thread-safety: Transport is safe to call concurrently; the free functions have no state.
#ifndef TWIN_CORE_STORE_INTERNAL_S3_TRANSPORT_H_
#define TWIN_CORE_STORE_INTERNAL_S3_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/store/internal/s3_url.h"
#include "core/store/s3_store.h"

struct curl_slist;

namespace twin::s3_internal {

struct Request {
  std::string method = "GET";  // GET, HEAD, PUT, POST or DELETE
  std::string url;
  std::string target;                // what the request is about, for messages: "s3://bucket/key"
  std::vector<std::string> headers;  // extra "Name: value" lines
  // The body: `body`, or `body_size` bytes of the file `body_fd` (named `body_path`) from
  // `body_offset`, re-read from the start for every attempt.
  absl::string_view body;
  int body_fd = -1;
  std::string body_path;
  uint64_t body_offset = 0;
  uint64_t body_size = 0;
  // A 2xx response body goes to Response::body, or into `response_fd` (named `response_path`)
  // from offset 0, truncated again before every attempt.
  int response_fd = -1;
  std::string response_path;
  // A 2xx body longer than this stops the transfer with OUT_OF_RANGE (0: no limit; a body
  // held in memory always has one, kMaxInMemoryResponseBytes).
  uint64_t max_response_bytes = 0;
};

// Bodies read into memory (Get, listings) are capped so that a misbehaving server cannot
// exhaust memory; blobs are streamed to files with the size the manifest declares.
inline constexpr uint64_t kMaxInMemoryResponseBytes = uint64_t{256} << 20;

struct Response {
  long http_status = 0;
  std::string body;             // empty when streamed into Request::response_fd
  std::string etag;             // the ETag header, as sent (quotes included)
  int64_t content_length = -1;  // the Content-Length header; -1 when absent
};

// The Status for a final non-2xx answer: NOT_FOUND, PERMISSION_DENIED, ... naming `target`
// and the S3 error code parsed from `body`.
absl::Status HttpErrorStatus(long http_status, absl::string_view body, absl::string_view method,
                             absl::string_view target);

class CurlHandlePool;
struct Transfer;

class Transport {
 public:
  // Validates the options (INVALID_ARGUMENT naming the field).
  static absl::StatusOr<std::unique_ptr<Transport>> Create(const S3Options& options);
  ~Transport();

  // Sends `request`, retrying as S3Options::retry says. A 2xx answer is returned; anything
  // else becomes a Status (HttpErrorStatus, or UNAVAILABLE / RESOURCE_EXHAUSTED once the
  // attempts are spent).
  absl::StatusOr<Response> Send(const Request& request);

  const Endpoint& endpoint() const { return endpoint_; }
  bool virtual_host() const { return virtual_host_; }

 private:
  Transport(const S3Options& options, Endpoint endpoint);
  // Sets every libcurl option of one attempt on t->curl.
  void Configure(curl_slist* headers, Transfer* t) const;

  const S3Options options_;
  const Endpoint endpoint_;
  const bool virtual_host_;
  const std::string sigv4_;  // "aws:amz:<region>:s3"
  std::unique_ptr<CurlHandlePool> pool_;
};

}  // namespace twin::s3_internal

#endif  // TWIN_CORE_STORE_INTERNAL_S3_TRANSPORT_H_
