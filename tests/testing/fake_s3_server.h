// An in-process fake of the S3 REST API for tests: a small threaded HTTP/1.1 server on
// 127.0.0.1 (ephemeral port) holding one bucket in memory.
//
// It serves GetObject (with Range), PutObject, HeadObject, DeleteObject, ListObjectsV2
// (continuation tokens; pages capped at Options::max_keys_per_page to force pagination) and
// multipart uploads (CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
// AbortMultipartUpload), path-style ("/bucket/key") and virtual-hosted style
// ("Host: bucket.localhost:port").
//
// Every request must be signed: the fake checks the AWS4-HMAC-SHA256 Authorization header in
// full (access key, scope, canonical request, signature, with its own implementation of the
// algorithm), x-amz-content-sha256 (UNSIGNED-PAYLOAD or the body's real digest) and, when
// Options::session_token is set, x-amz-security-token. Rejections are recorded
// (AuthFailures()) and answered like S3 (403 SignatureDoesNotMatch, InvalidAccessKeyId, ...).
//
// Faults can be programmed for the next requests: 503 SlowDown, 500, 429, 403, a dropped
// connection (closed without an answer), an answer cut off halfway through its body, or a
// stall (no answer until the client gives up).
//
//   FakeS3Server server;
//   server.InjectFault(FakeS3Server::Fault::kSlowDown, 2);   // the next two requests get 503
//   options.endpoint = server.endpoint();
//
// Thread-safety: all methods are safe to call concurrently with the server's threads.
#ifndef TWIN_TESTS_TESTING_FAKE_S3_SERVER_H_
#define TWIN_TESTS_TESTING_FAKE_S3_SERVER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace twin::testing {

class FakeS3Server {
 public:
  struct Options {
    std::string bucket = "test-bucket";
    std::string region = "us-east-1";
    std::string access_key_id = "AKIDFAKES3TEST";
    std::string secret_access_key = "fake/Secret+Key=Never-Printed";
    std::string session_token;  // when set, requests must carry it
    int max_keys_per_page = 1000;
    uint64_t min_part_size_bytes = 0;  // parts but the last smaller than this: EntityTooSmall
  };

  enum class Fault {
    kSlowDown,               // 503 SlowDown
    kInternalError,          // 500 InternalError
    kTooManyRequests,        // 429 TooManyRequests
    kSignatureDoesNotMatch,  // 403 SignatureDoesNotMatch
    kDropConnection,         // the connection is closed without an answer
    kStall,                  // no answer; the connection stays open until the client leaves
    kTruncateBody,           // the real answer, cut off halfway through its body
    kCyclingListToken,       // an empty truncated listing page whose next token alternates
                             // between two values ("cycle-a", "cycle-b")
    kEndlessBody,            // 200 declaring a 1 TiB body, zeros streamed until the client leaves
  };

  FakeS3Server();
  explicit FakeS3Server(Options options);  // starts serving; aborts the test binary on failure
  ~FakeS3Server();
  FakeS3Server(const FakeS3Server&) = delete;
  FakeS3Server& operator=(const FakeS3Server&) = delete;

  int port() const;
  std::string endpoint() const;  // "http://127.0.0.1:<port>"
  const Options& options() const;

  // The next `count` requests whose "METHOD /path?query" line contains `request_contains`
  // ("" matches all) get `fault` instead of an answer. Rules apply in the order given.
  void InjectFault(Fault fault, int count, const std::string& request_contains = "");
  void ClearFaults();

  // Objects by full bucket key.
  std::map<std::string, std::string> Objects() const;
  void SetObject(const std::string& bucket_key, const std::string& bytes);
  size_t OpenMultipartUploads() const;

  // Every request's "METHOD /path?query" as received, in arrival order.
  std::vector<std::string> RequestLog() const;
  // The Host header of every request.
  std::vector<std::string> HostsSeen() const;
  // Why requests were refused by the signature and header checks.
  std::vector<std::string> AuthFailures() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_FAKE_S3_SERVER_H_
