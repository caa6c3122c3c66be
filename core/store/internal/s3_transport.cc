#include "core/store/internal/s3_transport.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/store/internal/s3_url.h"
#include "core/store/internal/s3_xml.h"
#include "core/io/sha256.h"

namespace twin::s3_internal {

// The state of one attempt, shared with libcurl's callbacks.
struct Transfer {
  const Request* request = nullptr;
  CURL* curl = nullptr;
  uint64_t body_pos = 0;      // bytes of the body handed to libcurl
  uint64_t response_pos = 0;  // bytes written to request->response_fd
  Response response;
  absl::Status local_error;  // reading or writing a local file failed
  CURLcode code = CURLE_OK;
  char error_buffer[CURL_ERROR_SIZE] = {};
};

namespace {

constexpr char kUnsignedPayload[] = "UNSIGNED-PAYLOAD";
// Error bodies are small XML documents; anything longer is cut (only the code matters).
constexpr size_t kMaxErrorBodyBytes = 64 << 10;
// Server messages quoted in a Status are cut to this length.
constexpr size_t kMaxQuotedMessageChars = 300;
constexpr int64_t kMillisPerSecond = 1000;

absl::once_flag curl_init_once;

bool IsSuccess(long http_status) { return http_status >= 200 && http_status < 300; }

// Failures that another attempt may cure: the network, the server's health, throttling.
bool IsRetryableCurlCode(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

bool IsThrottling(long http_status, const S3Error& error) {
  return http_status == 429 || error.code == "SlowDown" || absl::StrContains(error.code, "Throttl");
}

bool IsRetryableHttp(long http_status, const S3Error& error) {
  return http_status >= 500 || IsThrottling(http_status, error) || error.code == "RequestTimeout";
}

// "HTTP 403 SignatureDoesNotMatch: The request signature ..." (message cut and escaped).
std::string DescribeHttp(long http_status, const S3Error& error) {
  std::string out = absl::StrCat("HTTP ", http_status);
  if (!error.code.empty()) absl::StrAppend(&out, " ", absl::CEscape(error.code));
  if (!error.message.empty()) {
    absl::StrAppend(
        &out, ": ",
        absl::CEscape(absl::string_view(error.message).substr(0, kMaxQuotedMessageChars)));
  }
  return out;
}

size_t ReadBody(char* buffer, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const Request& r = *t->request;
  const uint64_t total = r.body_fd >= 0 ? r.body_size : r.body.size();
  const size_t want = static_cast<size_t>(std::min<uint64_t>(size * count, total - t->body_pos));
  if (want == 0) return 0;
  if (r.body_fd < 0) {
    std::memcpy(buffer, r.body.data() + t->body_pos, want);
    t->body_pos += want;
    return want;
  }
  ssize_t got;
  do {
    got = ::pread(r.body_fd, buffer, want, static_cast<off_t>(r.body_offset + t->body_pos));
  } while (got < 0 && errno == EINTR);
  if (got <= 0) {
    t->local_error = got == 0 ? absl::FailedPreconditionError(absl::StrCat(
                                    "local file ", r.body_path, " shrank while uploading"))
                              : absl::InternalError(absl::StrCat("cannot read ", r.body_path, ": ",
                                                                 std::strerror(errno)));
    return CURL_READFUNC_ABORT;
  }
  t->body_pos += static_cast<uint64_t>(got);
  return static_cast<size_t>(got);
}

// libcurl rewinds the body itself when it must resend it (e.g. after a refused 100-continue).
int SeekBody(void* user, curl_off_t offset, int origin) {
  auto* t = static_cast<Transfer*>(user);
  const uint64_t total = t->request->body_fd >= 0 ? t->request->body_size : t->request->body.size();
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > total) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  t->body_pos = static_cast<uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

size_t WriteResponse(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * count;
  long http_status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &http_status);
  const Request& r = *t->request;
  if (!IsSuccess(http_status)) {
    const size_t room = kMaxErrorBodyBytes - std::min(kMaxErrorBodyBytes, t->response.body.size());
    t->response.body.append(data, std::min(bytes, room));
    return bytes;
  }
  const uint64_t limit = r.max_response_bytes > 0 ? r.max_response_bytes
                         : r.response_fd < 0    ? kMaxInMemoryResponseBytes
                                                : 0;
  const uint64_t received =
      (r.response_fd < 0 ? t->response.body.size() : t->response_pos) + bytes;
  if (limit > 0 && received > limit) {
    t->local_error = absl::OutOfRangeError(absl::StrCat(
        r.target, ": the response exceeds ", limit, " bytes (", received, " received so far)"));
    return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
  }
  if (r.response_fd < 0) {
    t->response.body.append(data, bytes);
    return bytes;
  }
  size_t done = 0;
  while (done < bytes) {
    const ssize_t written =
        ::pwrite(r.response_fd, data + done, bytes - done, static_cast<off_t>(t->response_pos));
    if (written < 0) {
      if (errno == EINTR) continue;
      t->local_error = absl::InternalError(
          absl::StrCat("cannot write ", r.response_path, ": ", std::strerror(errno)));
      return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
    }
    done += static_cast<size_t>(written);
    t->response_pos += static_cast<uint64_t>(written);
  }
  return bytes;
}

size_t ReadHeader(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const absl::string_view line(data, size * count);
  if (absl::StartsWith(line, "HTTP/")) {
    t->response.etag.clear();  // a new response (after "100 Continue")
  } else if (absl::StartsWithIgnoreCase(line, "etag:")) {
    t->response.etag = std::string(absl::StripAsciiWhitespace(line.substr(5)));
  }
  return size * count;
}

std::string DescribeCurl(const Transfer& t) {
  return absl::StrCat(curl_easy_strerror(t.code), t.error_buffer[0] != '\0' ? ": " : "",
                      t.error_buffer);
}

// The Status of a libcurl failure that is not worth retrying.
absl::Status CurlErrorStatus(const Transfer& t, absl::string_view what) {
  const std::string detail = DescribeCurl(t);
  switch (t.code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
      return absl::FailedPreconditionError(absl::StrCat(what, ": TLS verification failed (", detail,
                                                        "); set AWS_CA_BUNDLE to the CA bundle"));
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", detail));
    default:
      return absl::UnavailableError(absl::StrCat(what, ": ", detail));
  }
}

// The backoff ceiling before attempt `attempt + 1`: base * 2^(attempt - 1), capped.
int64_t BackoffCeilingMs(const S3RetryPolicy& retry, int attempt) {
  int64_t ceiling_ms = retry.base_delay_ms;
  for (int i = 1; i < attempt && ceiling_ms < retry.max_delay_ms; ++i) ceiling_ms *= 2;
  return std::min(ceiling_ms, retry.max_delay_ms);
}

// An owned curl_slist.
class HeaderList {
 public:
  HeaderList() = default;
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;
  ~HeaderList() { curl_slist_free_all(list_); }
  void Add(const std::string& line) { list_ = curl_slist_append(list_, line.c_str()); }
  curl_slist* get() const { return list_; }

 private:
  curl_slist* list_ = nullptr;
};

}  // namespace

// Idle easy handles; curl_easy_reset keeps their open connections for the next request.
class CurlHandlePool {
 public:
  explicit CurlHandlePool(size_t max_idle) : max_idle_(max_idle) {}
  ~CurlHandlePool() {
    for (CURL* curl : idle_) curl_easy_cleanup(curl);
  }
  CURL* Acquire() {
    {
      absl::MutexLock lock(&mu_);
      if (!idle_.empty()) {
        CURL* curl = idle_.back();
        idle_.pop_back();
        curl_easy_reset(curl);
        return curl;
      }
    }
    return curl_easy_init();
  }
  void Release(CURL* curl) {
    {
      absl::MutexLock lock(&mu_);
      if (idle_.size() < max_idle_) {
        idle_.push_back(curl);
        return;
      }
    }
    curl_easy_cleanup(curl);
  }

 private:
  const size_t max_idle_;
  absl::Mutex mu_;
  std::vector<CURL*> idle_ ABSL_GUARDED_BY(mu_);
};

namespace {

// Borrows a handle from the pool for one attempt.
class CurlLease {
 public:
  explicit CurlLease(CurlHandlePool* pool) : pool_(pool), curl_(pool->Acquire()) {}
  CurlLease(const CurlLease&) = delete;
  CurlLease& operator=(const CurlLease&) = delete;
  ~CurlLease() {
    if (curl_ != nullptr) pool_->Release(curl_);
  }
  CURL* get() const { return curl_; }

 private:
  CurlHandlePool* pool_;
  CURL* curl_;
};

}  // namespace

absl::Status HttpErrorStatus(long http_status, absl::string_view body, absl::string_view method,
                             absl::string_view target) {
  const S3Error error = ParseS3Error(body);
  const std::string detail = DescribeHttp(http_status, error);
  if (http_status == 404) {
    if (error.code == "NoSuchBucket") {
      return absl::NotFoundError(absl::StrCat("bucket of ", target, " not found (", detail, ")"));
    }
    if (error.code == "NoSuchUpload") {
      return absl::NotFoundError(absl::StrCat(method, " ", target, ": upload gone (", detail, ")"));
    }
    return absl::NotFoundError(absl::StrCat("object ", target, " not found (", detail, ")"));
  }
  const std::string what = absl::StrCat(method, " ", target, ": ");
  if (http_status == 401 || http_status == 403) {
    return absl::PermissionDeniedError(absl::StrCat(
        what, "access denied (", detail, "); check the credentials, region and bucket policy"));
  }
  if (http_status >= 300 && http_status < 400) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, "redirected (", detail, "); check the region and endpoint"));
  }
  if (http_status == 416) return absl::OutOfRangeError(absl::StrCat(what, detail));
  if (http_status == 409) return absl::AbortedError(absl::StrCat(what, detail));
  if (http_status == 412) return absl::FailedPreconditionError(absl::StrCat(what, detail));
  if (IsThrottling(http_status, error)) return absl::ResourceExhaustedError(what + detail);
  if (http_status >= 500) return absl::UnavailableError(what + detail);
  if (http_status >= 400) return absl::InvalidArgumentError(what + detail);
  return absl::InternalError(absl::StrCat(what, "unexpected answer (", detail, ")"));
}

absl::StatusOr<std::unique_ptr<Transport>> Transport::Create(const S3Options& options) {
  const auto invalid = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("S3 option ", field, ": ", why));
  };
  if (options.region.empty()) return invalid("region", "empty");
  for (char c : options.region) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
      return invalid("region",
                     absl::StrCat("\"", absl::CEscape(options.region), "\" is not a region name"));
    }
  }
  if (options.retry.max_attempts < 1) return invalid("retry.max_attempts", "must be >= 1");
  if (options.retry.base_delay_ms < 0 || options.retry.max_delay_ms < 0) {
    return invalid("retry delays", "must be >= 0");
  }
  if (options.connect_timeout_ms <= 0) return invalid("connect_timeout_ms", "must be > 0");
  if (options.stall_timeout_ms <= 0) return invalid("stall_timeout_ms", "must be > 0");
  const std::string endpoint_text =
      options.endpoint.empty() ? absl::StrCat("https://s3.", options.region, ".amazonaws.com")
                               : options.endpoint;
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(endpoint_text);
  if (!endpoint.ok()) return endpoint.status();
  absl::call_once(curl_init_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  return std::unique_ptr<Transport>(new Transport(options, *std::move(endpoint)));
}

Transport::Transport(const S3Options& options, Endpoint endpoint)
    : options_(options),
      endpoint_(std::move(endpoint)),
      virtual_host_(UsesVirtualHost(options)),
      sigv4_(absl::StrCat("aws:amz:", options.region, ":s3")),
      pool_(std::make_unique<CurlHandlePool>(options.max_idle_connections)) {}

Transport::~Transport() = default;

absl::StatusOr<Response> Transport::Send(const Request& request) {
  const std::string payload_hash =
      request.body_fd >= 0 ? kUnsignedPayload : Sha256Hex(request.body);
  const std::string what = absl::StrCat(request.method, " ", request.target);
  absl::BitGen gen;
  for (int attempt = 1;; ++attempt) {
    if (request.response_fd >= 0 && ::ftruncate(request.response_fd, 0) != 0) {
      return absl::InternalError(
          absl::StrCat("cannot truncate ", request.response_path, ": ", std::strerror(errno)));
    }
    HeaderList headers;
    headers.Add(absl::StrCat("x-amz-content-sha256: ", payload_hash));
    if (!options_.credentials.session_token.empty()) {
      headers.Add(absl::StrCat("x-amz-security-token: ", options_.credentials.session_token));
    }
    for (const std::string& line : request.headers) headers.Add(line);

    Transfer t;
    t.request = &request;
    CurlLease lease(pool_.get());
    if (lease.get() == nullptr)
      return absl::ResourceExhaustedError(what + ": curl_easy_init failed");
    t.curl = lease.get();
    Configure(headers.get(), &t);
    t.code = curl_easy_perform(t.curl);
    curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &t.response.http_status);
    curl_off_t content_length = -1;
    curl_easy_getinfo(t.curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &content_length);
    t.response.content_length = content_length;

    if (!t.local_error.ok()) return t.local_error;
    if (t.code == CURLE_OK && IsSuccess(t.response.http_status)) return std::move(t.response);
    std::string failure;
    bool throttled = false;
    if (t.code == CURLE_OK) {
      const S3Error error = ParseS3Error(t.response.body);
      if (!IsRetryableHttp(t.response.http_status, error)) {
        return HttpErrorStatus(t.response.http_status, t.response.body, request.method,
                               request.target);
      }
      throttled = IsThrottling(t.response.http_status, error);
      failure = DescribeHttp(t.response.http_status, error);
    } else {
      if (!IsRetryableCurlCode(t.code)) return CurlErrorStatus(t, what);
      failure = DescribeCurl(t);
    }
    if (attempt >= options_.retry.max_attempts) {
      const std::string message =
          absl::StrCat(what, ": gave up after ", attempt, " attempt(s); last: ", failure);
      return throttled ? absl::ResourceExhaustedError(message) : absl::UnavailableError(message);
    }
    // Full jitter: a uniform sleep up to the capped exponential ceiling spreads out clients
    // that failed together.
    absl::SleepFor(absl::Milliseconds(absl::Uniform<int64_t>(
        absl::IntervalClosed, gen, 0, BackoffCeilingMs(options_.retry, attempt))));
  }
}

void Transport::Configure(curl_slist* headers, Transfer* t) const {
  CURL* curl = t->curl;
  const Request& request = *t->request;
  const long stall_seconds = static_cast<long>(
      std::max<int64_t>(1, (options_.stall_timeout_ms + kMillisPerSecond - 1) / kMillisPerSecond));
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, t->error_buffer);
  curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4_.c_str());
  curl_easy_setopt(curl, CURLOPT_USERNAME, options_.credentials.access_key_id.c_str());
  curl_easy_setopt(curl, CURLOPT_PASSWORD, options_.credentials.secret_access_key.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout_ms));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT,
                   static_cast<long>(options_.stall_min_bytes_per_s));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, stall_seconds);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  if (!options_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
  if (!options_.verify_tls) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteResponse);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, ReadHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, t);
  if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.method == "PUT" || request.method == "POST") {
    // Every body goes through the read callback, so libcurl adds no Content-Type of its own.
    const uint64_t body_size = request.body_fd >= 0 ? request.body_size : request.body.size();
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body_size));
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, ReadBody);
    curl_easy_setopt(curl, CURLOPT_READDATA, t);
    curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, SeekBody);
    curl_easy_setopt(curl, CURLOPT_SEEKDATA, t);
    if (request.method == "POST") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "POST");
  } else if (request.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
}

}  // namespace twin::s3_internal
