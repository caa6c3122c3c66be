// ObjectStore over an S3 bucket (AWS S3 or any S3-compatible server), addressed as
// "s3://bucket" or "s3://bucket/prefix". Keys are relative to the prefix: key "v1/manifest.json"
// of "s3://models/twin" is the bucket key "twin/v1/manifest.json".
//
//   ASSIGN_OR_RETURN(S3Options options, S3Options::FromEnvironment());
//   ASSIGN_OR_RETURN(auto store, S3ObjectStore::Create("s3://models/twin", options));
//   RETURN_IF_ERROR(store->PutFile("v1/shared.safetensors", "/tmp/shared.safetensors"));
//
// OpenObjectStore("s3://...") does the same with S3Options::FromEnvironment().
//
// Requests are signed with AWS Signature Version 4 (libcurl's implementation) and carry
// x-amz-content-sha256: the body's digest for in-memory bodies, UNSIGNED-PAYLOAD for bodies
// streamed from files. Uploads from files never hold the file in memory; files of at least
// multipart_threshold_bytes go up as a multipart upload that is aborted on failure, so no
// partial object is ever visible. Downloads to files land under a temporary name and are
// renamed into place when complete.
//
// Errors: NOT_FOUND naming the object's URI (404, NoSuchKey, NoSuchBucket); PERMISSION_DENIED
// for 401/403 with the S3 error code (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied);
// UNAVAILABLE for connection failures, timeouts and 5xx, and RESOURCE_EXHAUSTED for throttling
// (429, 503 SlowDown), both only once the retries are spent; INVALID_ARGUMENT for bad keys or
// URIs; FAILED_PRECONDITION for missing credentials. No message ever holds the secret key or
// the session token.
//
// Retries: connection errors, timeouts, 5xx and throttling are retried up to
// retry.max_attempts times in all, sleeping a random time in [0, min(max_delay,
// base_delay * 2^attempt)] between attempts ("full jitter"); streamed bodies are re-read from
// the start of the file (or part) for each attempt.
//
// Thread-safety: safe to call concurrently; each call borrows its own libcurl handle from a
// locked pool (idle handles keep their connections open for reuse).
#ifndef TWIN_CORE_STORE_S3_STORE_H_
#define TWIN_CORE_STORE_S3_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/store/object_store.h"

namespace twin {

namespace s3_internal {
class Transport;
}  // namespace s3_internal

struct S3Credentials {
  std::string access_key_id;
  std::string secret_access_key;  // never logged or put into a Status message
  std::string session_token;      // optional (temporary credentials); sent as x-amz-security-token
};

struct S3RetryPolicy {
  int max_attempts = 5;          // attempts in all, including the first (>= 1)
  int64_t base_delay_ms = 100;   // the backoff ceiling before attempt 2; it doubles per attempt
  int64_t max_delay_ms = 10000;  // the backoff ceiling is capped at this
};

enum class S3Addressing {
  kAuto,     // path style when a custom endpoint is set, virtual-hosted style otherwise
  kPath,     // https://host/bucket/key
  kVirtual,  // https://bucket.host/key
};

struct S3Options {
  // "http(s)://host[:port][/base]"; empty means https://s3.<region>.amazonaws.com.
  std::string endpoint;
  std::string region = "us-east-1";
  S3Addressing addressing = S3Addressing::kAuto;
  std::string ca_file;     // PEM bundle to verify the server with; empty: the system's
  bool verify_tls = true;  // false only for test servers with self-signed certificates
  S3Credentials credentials;
  S3RetryPolicy retry;
  int64_t connect_timeout_ms = 10000;
  // A transfer is aborted as stalled (and retried) when it moves fewer than
  // stall_min_bytes_per_s bytes per second for stall_timeout_ms (curl's "low speed" limit;
  // whole seconds).
  int64_t stall_timeout_ms = 60000;
  int64_t stall_min_bytes_per_s = 1;
  // Files of at least this size are uploaded in parts of multipart_part_size_bytes (AWS needs
  // >= 5 MiB parts except the last; tests set both lower). A file that would need more than
  // 10000 parts gets larger parts.
  uint64_t multipart_threshold_bytes = uint64_t{64} << 20;
  uint64_t multipart_part_size_bytes = uint64_t{16} << 20;
  int list_page_size = 1000;        // max-keys of each ListObjectsV2 request (1..1000)
  size_t max_idle_connections = 8;  // libcurl handles kept for connection reuse

  // Reads the standard variables (never logging them):
  //   TWIN_S3_ENDPOINT, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL -> endpoint
  //   AWS_REGION, else AWS_DEFAULT_REGION                              -> region
  //   TWIN_S3_ADDRESSING=path|virtual                                  -> addressing
  //   AWS_CA_BUNDLE                                                    -> ca_file
  //   TWIN_S3_MAX_ATTEMPTS                                             -> retry.max_attempts
  //   AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), else the profile
  //   AWS_PROFILE (default "default") of AWS_SHARED_CREDENTIALS_FILE (default
  //   ~/.aws/credentials)                                              -> credentials
  // INVALID_ARGUMENT for a malformed value (naming the variable), FAILED_PRECONDITION when no
  // credentials are found (naming the variables and the file looked at).
  static absl::StatusOr<S3Options> FromEnvironment();
};

class S3ObjectStore : public ObjectStore {
 public:
  // `uri` is "s3://bucket[/prefix]". Checks the options (INVALID_ARGUMENT) and that credentials
  // are set (FAILED_PRECONDITION); contacts no server.
  static absl::StatusOr<std::unique_ptr<S3ObjectStore>> Create(const std::string& uri,
                                                               S3Options options);
  ~S3ObjectStore() override;

  absl::StatusOr<std::string> Get(absl::string_view key) override;
  absl::Status GetToFile(absl::string_view key, const std::string& local_path) override;
  absl::Status GetToFileAtMost(absl::string_view key, const std::string& local_path,
                               uint64_t max_bytes) override;
  absl::Status Put(absl::string_view key, absl::string_view bytes) override;
  absl::Status PutFile(absl::string_view key, const std::string& local_path) override;
  absl::StatusOr<ObjectInfo> Head(absl::string_view key) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) override;
  absl::Status Delete(absl::string_view key) override;
  std::string uri() const override;

  // Up to `length_bytes` bytes from `offset_bytes` (fewer at the end of the object);
  // OUT_OF_RANGE when `offset_bytes` is at or past the end of a non-empty object.
  absl::StatusOr<std::string> GetRange(absl::string_view key, uint64_t offset_bytes,
                                       uint64_t length_bytes);

  // The request URL of `key` (for tests and messages): path or virtual-hosted style.
  std::string UrlOf(absl::string_view key) const;

  const std::string& bucket() const { return bucket_; }
  const std::string& prefix() const { return prefix_; }

 private:
  S3ObjectStore(std::string bucket, std::string prefix, S3Options options,
                std::unique_ptr<s3_internal::Transport> transport);
  std::string BucketKey(absl::string_view key) const;
  absl::Status PutSingle(absl::string_view key, int fd, uint64_t size_bytes,
                         const std::string& local_path);
  absl::Status PutMultipart(absl::string_view key, int fd, uint64_t size_bytes,
                            const std::string& local_path);

  std::string bucket_;
  std::string prefix_;  // without leading or trailing '/'; may be empty
  S3Options options_;
  std::unique_ptr<s3_internal::Transport> transport_;
};

}  // namespace twin

#endif  // TWIN_CORE_STORE_S3_STORE_H_
