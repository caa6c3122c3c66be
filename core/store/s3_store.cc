#include "core/store/s3_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/store/internal/aws_credentials.h"
#include "core/store/internal/s3_transport.h"
#include "core/store/internal/s3_url.h"
#include "core/store/internal/s3_xml.h"
#include "core/status_macros.h"

namespace twin {
namespace {

// A listing that has not ended after this many pages (a million keys at 1000 a page) is a
// server fault, not a store.
constexpr int64_t kMaxListPages = 100000;

using s3_internal::QueryParams;
using s3_internal::Request;
using s3_internal::Response;

constexpr absl::string_view kScheme = "s3://";
constexpr uint64_t kMaxMultipartParts = 10000;  // S3's limit
constexpr int kMaxListPageSize = 1000;
constexpr size_t kMaxBucketNameChars = 255;
constexpr mode_t kFileMode = 0644;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

std::string FirstEnv(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    std::string value = Env(name);
    if (!value.empty()) return value;
  }
  return std::string();
}

absl::Status LocalIoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  int get() const { return fd_; }
  int Close() {
    if (fd_ < 0) return 0;
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

absl::Status FsyncDirectoryOf(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) return LocalIoError("cannot fsync directory", dir);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<S3Options> S3Options::FromEnvironment() {
  S3Options options;
  options.endpoint = FirstEnv({"TWIN_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"});
  const std::string region = FirstEnv({"AWS_REGION", "AWS_DEFAULT_REGION"});
  if (!region.empty()) options.region = region;
  const std::string addressing = absl::AsciiStrToLower(Env("TWIN_S3_ADDRESSING"));
  if (addressing == "path") {
    options.addressing = S3Addressing::kPath;
  } else if (addressing == "virtual") {
    options.addressing = S3Addressing::kVirtual;
  } else if (!addressing.empty() && addressing != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "TWIN_S3_ADDRESSING=\"", absl::CEscape(addressing), "\": expected path, virtual or auto"));
  }
  options.ca_file = Env("AWS_CA_BUNDLE");
  const std::string max_attempts = Env("TWIN_S3_MAX_ATTEMPTS");
  if (!max_attempts.empty() && (!absl::SimpleAtoi(max_attempts, &options.retry.max_attempts) ||
                                options.retry.max_attempts < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TWIN_S3_MAX_ATTEMPTS=\"", absl::CEscape(max_attempts), "\": expected an integer >= 1"));
  }
  ASSIGN_OR_RETURN(options.credentials, s3_internal::LoadAwsCredentials());
  return options;
}

absl::StatusOr<std::unique_ptr<S3ObjectStore>> S3ObjectStore::Create(const std::string& uri,
                                                                     S3Options options) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("S3 URI \"", absl::CEscape(uri), "\": ", why,
                                                   " (expected s3://bucket[/prefix])"));
  };
  if (uri.size() < kScheme.size() ||
      absl::AsciiStrToLower(uri.substr(0, kScheme.size())) != kScheme) {
    return invalid("not an s3:// URI");
  }
  absl::string_view rest = absl::string_view(uri).substr(kScheme.size());
  const size_t slash = rest.find('/');
  const std::string bucket(rest.substr(0, slash));
  absl::string_view prefix = slash == absl::string_view::npos ? "" : rest.substr(slash + 1);
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  if (bucket.empty()) return invalid("no bucket");
  if (bucket.size() > kMaxBucketNameChars) return invalid("bucket name too long");
  const bool virtual_host = s3_internal::UsesVirtualHost(options);
  for (char c : bucket) {
    const bool dns_char = absl::ascii_islower(static_cast<unsigned char>(c)) ||
                          absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.' ||
                          c == '-';
    const bool legacy_char = absl::ascii_isupper(static_cast<unsigned char>(c)) || c == '_';
    if (!dns_char && !(legacy_char && !virtual_host)) {
      return invalid(virtual_host ? "bucket name is not a DNS name (use TWIN_S3_ADDRESSING=path)"
                                  : "bad character in the bucket name");
    }
  }
  if (!prefix.empty()) {
    RETURN_IF_ERROR(
        Annotate(ValidateObjectKey(prefix), absl::StrCat("S3 URI \"", uri, "\" prefix")));
  }
  if (options.credentials.access_key_id.empty() || options.credentials.secret_access_key.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "S3 store ", uri, ": no credentials (access key id and secret access key are required)"));
  }
  if (options.multipart_part_size_bytes == 0 || options.multipart_threshold_bytes == 0) {
    return absl::InvalidArgumentError("S3 options: multipart sizes must be > 0");
  }
  if (options.list_page_size < 1 || options.list_page_size > kMaxListPageSize) {
    return absl::InvalidArgumentError("S3 options: list_page_size must be in [1, 1000]");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<s3_internal::Transport> transport,
                   s3_internal::Transport::Create(options));
  return std::unique_ptr<S3ObjectStore>(
      new S3ObjectStore(bucket, std::string(prefix), std::move(options), std::move(transport)));
}

S3ObjectStore::S3ObjectStore(std::string bucket, std::string prefix, S3Options options,
                             std::unique_ptr<s3_internal::Transport> transport)
    : bucket_(std::move(bucket)),
      prefix_(std::move(prefix)),
      options_(std::move(options)),
      transport_(std::move(transport)) {}

S3ObjectStore::~S3ObjectStore() = default;

std::string S3ObjectStore::uri() const {
  return prefix_.empty() ? absl::StrCat(kScheme, bucket_)
                         : absl::StrCat(kScheme, bucket_, "/", prefix_);
}

std::string S3ObjectStore::BucketKey(absl::string_view key) const {
  return prefix_.empty() ? std::string(key) : absl::StrCat(prefix_, "/", key);
}

std::string S3ObjectStore::UrlOf(absl::string_view key) const {
  return s3_internal::BuildUrl(transport_->endpoint(), transport_->virtual_host(), bucket_,
                               BucketKey(key));
}

absl::StatusOr<std::string> S3ObjectStore::Get(absl::string_view key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  Request request;
  request.url = UrlOf(key);
  request.target = UriOf(key);
  ASSIGN_OR_RETURN(Response response, transport_->Send(request));
  return std::move(response.body);
}

absl::StatusOr<std::string> S3ObjectStore::GetRange(absl::string_view key, uint64_t offset_bytes,
                                                    uint64_t length_bytes) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  if (length_bytes == 0) {
    ASSIGN_OR_RETURN(ObjectInfo info, Head(key));
    if (offset_bytes > info.size_bytes) {
      return absl::OutOfRangeError(absl::StrCat("offset ", offset_bytes, " is past the end of ",
                                                UriOf(key), " (", info.size_bytes, " bytes)"));
    }
    return std::string();
  }
  const bool to_end = length_bytes - 1 > std::numeric_limits<uint64_t>::max() - offset_bytes;
  Request request;
  request.url = UrlOf(key);
  request.target = UriOf(key);
  request.headers.push_back(
      to_end ? absl::StrCat("Range: bytes=", offset_bytes, "-")
             : absl::StrCat("Range: bytes=", offset_bytes, "-", offset_bytes + length_bytes - 1));
  ASSIGN_OR_RETURN(Response response, transport_->Send(request));
  if (response.http_status == 206) return std::move(response.body);
  // A server that ignores Range sends the whole object (200).
  if (offset_bytes >= response.body.size()) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset_bytes, " is past the end of ",
                                              UriOf(key), " (", response.body.size(), " bytes)"));
  }
  return response.body.substr(offset_bytes, length_bytes);
}

absl::Status S3ObjectStore::GetToFile(absl::string_view key, const std::string& local_path) {
  return GetToFileAtMost(key, local_path, std::numeric_limits<uint64_t>::max());
}

absl::Status S3ObjectStore::GetToFileAtMost(absl::string_view key, const std::string& local_path,
                                            uint64_t max_bytes) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  if (local_path.empty()) return absl::InvalidArgumentError("GetToFile: empty local path");
  const std::filesystem::path parent = std::filesystem::path(local_path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot create directory ", parent.string(), ": ", ec.message()));
    }
  }
  const std::string temp_path = TemporaryObjectName(local_path);
  Fd fd(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kFileMode));
  if (fd.get() < 0) return LocalIoError("cannot create", temp_path);
  Request request;
  request.url = UrlOf(key);
  request.target = UriOf(key);
  request.response_fd = fd.get();
  request.response_path = temp_path;
  // The transport's 0 means no limit: GetToFile's "any size" maps to it, a limit of 0 bytes
  // to 1 byte plus the size check after the transfer.
  const bool unlimited = max_bytes == std::numeric_limits<uint64_t>::max();
  request.max_response_bytes = unlimited ? 0 : std::max<uint64_t>(max_bytes, 1);
  absl::Status status = transport_->Send(request).status();
  struct stat written;
  if (status.ok() && !unlimited && ::fstat(fd.get(), &written) == 0 &&
      static_cast<uint64_t>(written.st_size) > max_bytes) {
    status = absl::OutOfRangeError(absl::StrCat(UriOf(key), " is ", written.st_size,
                                                " bytes; at most ", max_bytes, " were expected"));
  }
  if (status.ok() && ::fsync(fd.get()) != 0) status = LocalIoError("cannot fsync", temp_path);
  if (fd.Close() != 0 && status.ok()) status = LocalIoError("cannot close", temp_path);
  if (status.ok() && ::rename(temp_path.c_str(), local_path.c_str()) != 0) {
    status = LocalIoError(absl::StrCat("cannot rename ", temp_path, " to"), local_path);
  }
  if (!status.ok()) {
    ::unlink(temp_path.c_str());
    return status;
  }
  return FsyncDirectoryOf(local_path);
}

absl::Status S3ObjectStore::Put(absl::string_view key, absl::string_view bytes) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  Request request;
  request.method = "PUT";
  request.url = UrlOf(key);
  request.target = UriOf(key);
  request.body = bytes;
  return transport_->Send(request).status();
}

absl::Status S3ObjectStore::PutFile(absl::string_view key, const std::string& local_path) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  Fd fd(::open(local_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("local file ", local_path, " not found"));
    }
    return LocalIoError("cannot open", local_path);
  }
  struct stat info;
  if (::fstat(fd.get(), &info) != 0) return LocalIoError("cannot stat", local_path);
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(local_path, " is not a regular file"));
  }
  const auto size_bytes = static_cast<uint64_t>(info.st_size);
  if (size_bytes >= options_.multipart_threshold_bytes) {
    return PutMultipart(key, fd.get(), size_bytes, local_path);
  }
  return PutSingle(key, fd.get(), size_bytes, local_path);
}

absl::Status S3ObjectStore::PutSingle(absl::string_view key, int fd, uint64_t size_bytes,
                                      const std::string& local_path) {
  Request request;
  request.method = "PUT";
  request.url = UrlOf(key);
  request.target = UriOf(key);
  request.body_fd = fd;
  request.body_path = local_path;
  request.body_size = size_bytes;
  return transport_->Send(request).status();
}

absl::Status S3ObjectStore::PutMultipart(absl::string_view key, int fd, uint64_t size_bytes,
                                         const std::string& local_path) {
  const std::string bucket_key = BucketKey(key);
  const auto url = [&](const QueryParams& query) {
    return s3_internal::BuildUrl(transport_->endpoint(), transport_->virtual_host(), bucket_,
                                 bucket_key, query);
  };
  Request initiate;
  initiate.method = "POST";
  initiate.url = url({{"uploads", ""}});
  initiate.target = UriOf(key);
  ASSIGN_OR_RETURN(Response initiated, transport_->Send(initiate));
  absl::StatusOr<std::string> upload_id = s3_internal::ParseUploadId(initiated.body);
  if (!upload_id.ok()) {
    return Annotate(upload_id.status(),
                    absl::StrCat("starting the multipart upload of ", UriOf(key)));
  }

  // Uploads the parts and completes the upload; any failure aborts it below.
  const auto upload = [&]() -> absl::Status {
    const uint64_t part_size = std::max(options_.multipart_part_size_bytes,
                                        (size_bytes + kMaxMultipartParts - 1) / kMaxMultipartParts);
    std::vector<std::string> etags;
    for (uint64_t offset = 0; offset < size_bytes || etags.empty(); offset += part_size) {
      const std::string part_number = absl::StrCat(etags.size() + 1);
      Request part;
      part.method = "PUT";
      part.url = url({{"partNumber", part_number}, {"uploadId", *upload_id}});
      part.target = absl::StrCat(UriOf(key), " (part ", part_number, ")");
      part.body_fd = fd;
      part.body_path = local_path;
      part.body_offset = offset;
      part.body_size = std::min(part_size, size_bytes - offset);
      ASSIGN_OR_RETURN(Response uploaded, transport_->Send(part));
      if (uploaded.etag.empty()) {
        return absl::InternalError(absl::StrCat("PUT ", part.target, ": no ETag in the answer"));
      }
      etags.push_back(std::move(uploaded.etag));
    }
    const std::string body = s3_internal::CompleteMultipartUploadBody(etags);
    Request complete;
    complete.method = "POST";
    complete.url = url({{"uploadId", *upload_id}});
    complete.target = UriOf(key);
    complete.body = body;
    complete.headers.push_back("Content-Type: application/xml");
    ASSIGN_OR_RETURN(Response completed, transport_->Send(complete));
    // S3 may answer 200 and still report a failure in the body.
    const s3_internal::S3Error error = s3_internal::ParseS3Error(completed.body);
    if (!error.code.empty()) {
      return absl::UnavailableError(absl::StrCat("completing the multipart upload of ", UriOf(key),
                                                 ": ", absl::CEscape(error.code), " ",
                                                 absl::CEscape(error.message)));
    }
    return absl::OkStatus();
  };
  const absl::Status status = upload();
  if (status.ok()) return status;
  Request abort;
  abort.method = "DELETE";
  abort.url = url({{"uploadId", *upload_id}});
  abort.target = UriOf(key);
  const absl::Status aborted = transport_->Send(abort).status();
  return Annotate(status,
                  absl::StrCat("multipart upload of ", local_path, " to ", UriOf(key),
                               aborted.ok() ? " aborted"
                                            : absl::StrCat(" failed; aborting it failed too (",
                                                           aborted.message(), ")")));
}

absl::StatusOr<ObjectInfo> S3ObjectStore::Head(absl::string_view key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  Request request;
  request.method = "HEAD";
  request.url = UrlOf(key);
  request.target = UriOf(key);
  ASSIGN_OR_RETURN(Response response, transport_->Send(request));
  if (response.content_length < 0) {
    return absl::InternalError(absl::StrCat("HEAD ", UriOf(key), ": no Content-Length"));
  }
  return ObjectInfo{std::string(key), static_cast<uint64_t>(response.content_length)};
}

absl::StatusOr<std::vector<ObjectInfo>> S3ObjectStore::List(absl::string_view prefix) {
  RETURN_IF_ERROR(ValidateListPrefix(prefix));
  const std::string root = prefix_.empty() ? std::string() : absl::StrCat(prefix_, "/");
  const std::string bucket_prefix = absl::StrCat(root, prefix);
  std::vector<ObjectInfo> objects;
  std::string token;
  std::set<std::string> seen_tokens;
  int64_t pages = 0;
  do {
    QueryParams query = {{"list-type", "2"},
                         {"max-keys", absl::StrCat(options_.list_page_size)},
                         {"prefix", bucket_prefix}};
    if (!token.empty()) query.emplace_back("continuation-token", token);
    Request request;
    request.url = s3_internal::BuildUrl(transport_->endpoint(), transport_->virtual_host(), bucket_,
                                        "", query);
    request.target = absl::StrCat(UriOf(prefix), "*");
    ASSIGN_OR_RETURN(Response response, transport_->Send(request));
    absl::StatusOr<s3_internal::ListPage> page = s3_internal::ParseListObjectsV2(response.body);
    if (!page.ok()) return Annotate(page.status(), absl::StrCat("listing ", request.target));
    for (ObjectInfo& object : page->objects) {
      // Keys that no object key could name (temporary files, "a//b") are not listed.
      if (!absl::StartsWith(object.key, bucket_prefix)) continue;
      object.key.erase(0, root.size());
      if (!ValidateObjectKey(object.key).ok()) continue;
      objects.push_back(std::move(object));
    }
    // A token seen before (A, B, A, ...) would loop forever, as would a server that never
    // stops handing out new ones.
    if (page->is_truncated && (page->next_continuation_token.empty() ||
                               !seen_tokens.insert(page->next_continuation_token).second)) {
      return absl::InternalError(absl::StrCat("listing ", request.target,
                                              ": truncated page without a new continuation token"));
    }
    if (++pages > kMaxListPages) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "listing ", request.target, ": more than ", kMaxListPages, " pages"));
    }
    token = page->is_truncated ? page->next_continuation_token : std::string();
  } while (!token.empty());
  std::sort(objects.begin(), objects.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return objects;
}

absl::Status S3ObjectStore::Delete(absl::string_view key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  Request request;
  request.method = "DELETE";
  request.url = UrlOf(key);
  request.target = UriOf(key);
  const absl::Status status = transport_->Send(request).status();
  // S3 answers 204 for a missing key; other servers 404 (NoSuchKey). A missing bucket is an error.
  if (absl::IsNotFound(status) && !absl::StrContains(status.message(), "NoSuchBucket")) {
    return absl::OkStatus();
  }
  return status;
}

}  // namespace twin
