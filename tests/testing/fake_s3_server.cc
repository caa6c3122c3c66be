#include "tests/testing/fake_s3_server.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "core/store/internal/s3_xml.h"
#include "core/io/sha256.h"
#include "tests/testing/http_test_server.h"
#include "tests/testing/sigv4_check.h"

namespace twin::testing {
namespace {

constexpr int kDefaultMaxKeys = 1000;
// Continuation tokens hold characters that need URL-encoding and XML-escaping on purpose.
constexpr char kTokenPrefix[] = "tok &/+=";
constexpr char kXmlHeader[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
constexpr char kS3Namespace[] = "http://s3.amazonaws.com/doc/2006-03-01/";

// Escaping is the one piece shared with the client: the fake's parsing stays its own.
std::string Escape(absl::string_view text) { return s3_internal::XmlEscape(text); }

std::string Unescape(std::string text) {
  for (const auto& [entity, c] : std::vector<std::pair<std::string, std::string>>{
           {"&quot;", "\""}, {"&apos;", "'"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}}) {
    size_t pos = 0;
    while ((pos = text.find(entity, pos)) != std::string::npos) {
      text.replace(pos, entity.size(), c);
      pos += c.size();
    }
  }
  return text;
}

HttpResponse Error(int status, const std::string& code, const std::string& message) {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/xml");
  r.body = absl::StrCat(kXmlHeader, "<Error><Code>", code, "</Code><Message>", Escape(message),
                        "</Message><RequestId>fake</RequestId></Error>");
  return r;
}

HttpResponse Xml(std::string body) {
  HttpResponse r;
  r.headers.emplace_back("Content-Type", "application/xml");
  r.body = absl::StrCat(kXmlHeader, body);
  return r;
}

std::string ETagOf(absl::string_view bytes) {
  return absl::StrCat("\"", Sha256Hex(bytes).substr(0, 32), "\"");
}

}  // namespace

struct FakeS3Server::State {
  struct FaultRule {
    Fault fault;
    int remaining;
    std::string contains;
  };
  struct Upload {
    std::string key;
    std::map<int, std::string> parts;  // part number -> bytes
  };

  Options options;
  mutable absl::Mutex mu;
  std::map<std::string, std::string> objects ABSL_GUARDED_BY(mu);
  std::map<std::string, Upload> uploads ABSL_GUARDED_BY(mu);
  int next_upload ABSL_GUARDED_BY(mu) = 1;
  std::vector<FaultRule> faults ABSL_GUARDED_BY(mu);
  std::vector<std::string> log ABSL_GUARDED_BY(mu);
  std::vector<std::string> hosts ABSL_GUARDED_BY(mu);
  std::vector<std::string> auth_failures ABSL_GUARDED_BY(mu);
  // Last, so that it stops (joining the threads that use the state above) first.
  std::unique_ptr<HttpTestServer> http;

  HttpReply Serve(const HttpRequest& request);
  std::optional<Fault> TakeFault(const HttpRequest& request);
  HttpResponse Handle(const HttpRequest& request);
  HttpResponse List(const std::map<std::string, std::string>& params);
  HttpResponse GetObject(const HttpRequest& request, const std::string& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  HttpResponse Complete(const std::string& key, const std::string& upload_id,
                        const std::string& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
};

HttpReply FakeS3Server::State::Serve(const HttpRequest& request) {
  const std::optional<Fault> fault = TakeFault(request);
  if (fault == Fault::kDropConnection) return HttpReply{{}, HttpDisposition::kDrop};
  if (fault == Fault::kStall) return HttpReply{{}, HttpDisposition::kStall};
  if (fault == Fault::kEndlessBody) return HttpReply{{}, HttpDisposition::kEndlessBody};
  if (fault == Fault::kSlowDown) {
    return HttpReply{Error(503, "SlowDown", "Please reduce your request rate.")};
  }
  if (fault == Fault::kInternalError) {
    return HttpReply{Error(500, "InternalError", "We encountered an internal error.")};
  }
  if (fault == Fault::kTooManyRequests) {
    return HttpReply{Error(429, "TooManyRequests", "Too many requests.")};
  }
  if (fault == Fault::kSignatureDoesNotMatch) {
    return HttpReply{
        Error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")};
  }
  const SigV4Expectation expected{options.access_key_id, options.secret_access_key, options.region,
                                  "s3", options.session_token};
  if (const std::optional<SigV4Failure> refused = CheckSigV4(request, expected)) {
    absl::MutexLock lock(&mu);
    auth_failures.push_back(absl::StrCat(request.method, " ", request.target, ": ", refused->code,
                                         ": ", refused->message));
    return HttpReply{Error(refused->http_status, refused->code, refused->message)};
  }
  if (fault == Fault::kCyclingListToken) {
    const bool after_a = absl::StrContains(request.target, "cycle-a");
    return HttpReply{Xml(absl::StrCat(
        "<ListBucketResult xmlns=\"", kS3Namespace, "\"><Name>", options.bucket,
        "</Name><KeyCount>0</KeyCount><IsTruncated>true</IsTruncated><NextContinuationToken>",
        after_a ? "cycle-b" : "cycle-a", "</NextContinuationToken></ListBucketResult>"))};
  }
  return HttpReply{Handle(request), fault == Fault::kTruncateBody ? HttpDisposition::kTruncateBody
                                                                  : HttpDisposition::kRespond};
}

std::optional<FakeS3Server::Fault> FakeS3Server::State::TakeFault(const HttpRequest& request) {
  const std::string line = absl::StrCat(request.method, " ", request.target);
  absl::MutexLock lock(&mu);
  log.push_back(line);
  hosts.push_back(request.Header("host"));
  for (FaultRule& rule : faults) {
    if (rule.remaining > 0 && absl::StrContains(line, rule.contains)) {
      --rule.remaining;
      return rule.fault;
    }
  }
  return std::nullopt;
}

HttpResponse FakeS3Server::State::Handle(const HttpRequest& r) {
  // Virtual-hosted style names the bucket in the Host header, path style in the path.
  std::string bucket;
  std::string key = PercentDecode(r.path).substr(1);
  const std::string host = r.Header("host");
  if (absl::StartsWith(host, options.bucket + ".")) {
    bucket = options.bucket;
  } else {
    const size_t slash = key.find('/');
    bucket = key.substr(0, slash);
    key = slash == std::string::npos ? "" : key.substr(slash + 1);
  }
  if (bucket != options.bucket) return Error(404, "NoSuchBucket", "no bucket " + bucket);
  std::map<std::string, std::string> params;
  for (auto& [name, value] : DecodeQuery(r.query)) params[name] = value;
  const auto has = [&](const char* name) { return params.count(name) > 0; };

  if (key.empty()) {
    if (r.method == "GET" && params["list-type"] == "2") return List(params);
    return Error(400, "InvalidRequest", "unsupported bucket operation");
  }
  absl::MutexLock lock(&mu);
  if (r.method == "GET") return GetObject(r, key);
  if (r.method == "HEAD") {
    const auto it = objects.find(key);
    if (it == objects.end()) return HttpResponse{404, {}, "", 0};
    return HttpResponse{
        200, {{"ETag", ETagOf(it->second)}}, "", static_cast<int64_t>(it->second.size())};
  }
  if (r.method == "PUT" && has("uploadId")) {
    const auto upload = uploads.find(params["uploadId"]);
    int part_number = 0;
    if (upload == uploads.end() || upload->second.key != key) {
      return Error(404, "NoSuchUpload", "no upload " + params["uploadId"]);
    }
    if (!absl::SimpleAtoi(params["partNumber"], &part_number) || part_number < 1) {
      return Error(400, "InvalidArgument", "bad partNumber");
    }
    upload->second.parts[part_number] = r.body;
    return HttpResponse{200, {{"ETag", ETagOf(r.body)}}, ""};
  }
  if (r.method == "PUT") {
    objects[key] = r.body;
    return HttpResponse{200, {{"ETag", ETagOf(r.body)}}, ""};
  }
  if (r.method == "POST" && has("uploads")) {
    const std::string upload_id = absl::StrCat("upload-", next_upload++);
    uploads[upload_id] = Upload{key, {}};
    return Xml(absl::StrCat("<InitiateMultipartUploadResult xmlns=\"", kS3Namespace, "\"><Bucket>",
                            bucket, "</Bucket><Key>", Escape(key), "</Key><UploadId>", upload_id,
                            "</UploadId>", "</InitiateMultipartUploadResult>"));
  }
  if (r.method == "POST" && has("uploadId")) return Complete(key, params["uploadId"], r.body);
  if (r.method == "DELETE" && has("uploadId")) {
    if (uploads.erase(params["uploadId"]) == 0) {
      return Error(404, "NoSuchUpload", "no upload " + params["uploadId"]);
    }
    return HttpResponse{204, {}, ""};
  }
  if (r.method == "DELETE") {
    objects.erase(key);
    return HttpResponse{204, {}, ""};
  }
  return Error(400, "InvalidRequest", "unsupported operation " + r.method);
}

HttpResponse FakeS3Server::State::GetObject(const HttpRequest& r, const std::string& key) {
  const auto it = objects.find(key);
  if (it == objects.end()) return Error(404, "NoSuchKey", "The specified key does not exist.");
  const std::string& bytes = it->second;
  const std::string range_header = r.Header("range");
  absl::string_view range = range_header;
  if (!absl::ConsumePrefix(&range, "bytes=")) {
    return HttpResponse{200, {{"ETag", ETagOf(bytes)}}, bytes};
  }
  const size_t dash = range.find('-');
  uint64_t first = 0;
  uint64_t last = bytes.empty() ? 0 : bytes.size() - 1;
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(range.substr(0, dash), &first) ||
      (dash + 1 < range.size() && !absl::SimpleAtoi(range.substr(dash + 1), &last)) ||
      last < first) {
    return Error(400, "InvalidArgument", "bad Range");
  }
  if (first >= bytes.size()) return Error(416, "InvalidRange", "range past the end");
  last = std::min<uint64_t>(last, bytes.size() - 1);
  return HttpResponse{
      206,
      {{"Content-Range", absl::StrCat("bytes ", first, "-", last, "/", bytes.size())}},
      bytes.substr(first, last - first + 1)};
}

HttpResponse FakeS3Server::State::List(const std::map<std::string, std::string>& params) {
  const auto param = [&](const char* name) {
    const auto it = params.find(name);
    return it == params.end() ? std::string() : it->second;
  };
  const std::string prefix = param("prefix");
  int max_keys = kDefaultMaxKeys;
  if (!param("max-keys").empty() && !absl::SimpleAtoi(param("max-keys"), &max_keys)) {
    return Error(400, "InvalidArgument", "bad max-keys");
  }
  const int page = std::min(max_keys, options.max_keys_per_page);
  std::string after;
  if (!param("continuation-token").empty()) {
    const std::string token_param = param("continuation-token");
    absl::string_view token = token_param;
    if (!absl::ConsumePrefix(&token, kTokenPrefix)) {
      return Error(400, "InvalidArgument", "The continuation token provided is incorrect");
    }
    after = absl::HexStringToBytes(token);
  }
  absl::MutexLock lock(&mu);
  std::string contents;
  int count = 0;
  bool truncated = false;
  std::string last;
  for (auto it = after.empty() ? objects.lower_bound(prefix) : objects.upper_bound(after);
       it != objects.end() && absl::StartsWith(it->first, prefix); ++it) {
    if (count == page) {
      truncated = true;
      break;
    }
    absl::StrAppend(&contents, "<Contents><Key>", Escape(it->first),
                    "</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>",
                    Escape(ETagOf(it->second)), "</ETag><Size>", it->second.size(),
                    "</Size><StorageClass>STANDARD</StorageClass></Contents>");
    last = it->first;
    ++count;
  }
  std::string body = absl::StrCat(
      "<ListBucketResult xmlns=\"", kS3Namespace, "\"><Name>", options.bucket, "</Name><Prefix>",
      Escape(prefix), "</Prefix><KeyCount>", count, "</KeyCount><MaxKeys>", max_keys,
      "</MaxKeys><IsTruncated>", truncated ? "true" : "false", "</IsTruncated>");
  if (truncated) {
    absl::StrAppend(&body, "<NextContinuationToken>",
                    Escape(absl::StrCat(kTokenPrefix, absl::BytesToHexString(last))),
                    "</NextContinuationToken>");
  }
  absl::StrAppend(&body, contents, "</ListBucketResult>");
  return Xml(std::move(body));
}

HttpResponse FakeS3Server::State::Complete(const std::string& key, const std::string& upload_id,
                                           const std::string& body) {
  const auto upload = uploads.find(upload_id);
  if (upload == uploads.end() || upload->second.key != key) {
    return Error(404, "NoSuchUpload", "no upload " + upload_id);
  }
  const auto text_of = [](absl::string_view block, const std::string& tag) {
    const size_t start = block.find("<" + tag + ">");
    const size_t end = block.find("</" + tag + ">");
    if (start == absl::string_view::npos || end == absl::string_view::npos) return std::string();
    return Unescape(
        std::string(block.substr(start + tag.size() + 2, end - start - tag.size() - 2)));
  };
  std::vector<std::pair<int, std::string>> listed;
  for (absl::string_view block : absl::StrSplit(body, "<Part>", absl::SkipEmpty())) {
    if (!absl::StrContains(block, "</Part>")) continue;
    int number = 0;
    if (!absl::SimpleAtoi(text_of(block, "PartNumber"), &number)) {
      return Error(400, "MalformedXML", "bad PartNumber");
    }
    listed.emplace_back(number, text_of(block, "ETag"));
  }
  if (listed.empty()) return Error(400, "MalformedXML", "no parts");
  std::string assembled;
  for (size_t i = 0; i < listed.size(); ++i) {
    const auto& [number, etag] = listed[i];
    if (i > 0 && number <= listed[i - 1].first) return Error(400, "InvalidPartOrder", "order");
    const auto part = upload->second.parts.find(number);
    if (part == upload->second.parts.end() || ETagOf(part->second) != etag) {
      return Error(400, "InvalidPart", absl::StrCat("part ", number));
    }
    if (i + 1 < listed.size() && part->second.size() < options.min_part_size_bytes) {
      return Error(400, "EntityTooSmall", absl::StrCat("part ", number));
    }
    assembled += part->second;
  }
  objects[key] = std::move(assembled);
  uploads.erase(upload);
  return Xml(absl::StrCat("<CompleteMultipartUploadResult xmlns=\"", kS3Namespace, "\"><Bucket>",
                          options.bucket, "</Bucket><Key>", Escape(key),
                          "</Key><ETag>&quot;multipart-", listed.size(),
                          "&quot;</ETag></CompleteMultipartUploadResult>"));
}

FakeS3Server::FakeS3Server() : FakeS3Server(Options()) {}

FakeS3Server::FakeS3Server(Options options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  State* state = state_.get();
  state_->http =
      std::make_unique<HttpTestServer>([state](const HttpRequest& r) { return state->Serve(r); });
}

FakeS3Server::~FakeS3Server() { state_->http.reset(); }

int FakeS3Server::port() const { return state_->http->port(); }

std::string FakeS3Server::endpoint() const { return absl::StrCat("http://127.0.0.1:", port()); }

const FakeS3Server::Options& FakeS3Server::options() const { return state_->options; }

void FakeS3Server::InjectFault(Fault fault, int count, const std::string& request_contains) {
  absl::MutexLock lock(&state_->mu);
  state_->faults.push_back(State::FaultRule{fault, count, request_contains});
}

void FakeS3Server::ClearFaults() {
  absl::MutexLock lock(&state_->mu);
  state_->faults.clear();
}

std::map<std::string, std::string> FakeS3Server::Objects() const {
  absl::MutexLock lock(&state_->mu);
  return state_->objects;
}

void FakeS3Server::SetObject(const std::string& bucket_key, const std::string& bytes) {
  absl::MutexLock lock(&state_->mu);
  state_->objects[bucket_key] = bytes;
}

size_t FakeS3Server::OpenMultipartUploads() const {
  absl::MutexLock lock(&state_->mu);
  return state_->uploads.size();
}

std::vector<std::string> FakeS3Server::RequestLog() const {
  absl::MutexLock lock(&state_->mu);
  return state_->log;
}

std::vector<std::string> FakeS3Server::HostsSeen() const {
  absl::MutexLock lock(&state_->mu);
  return state_->hosts;
}

std::vector<std::string> FakeS3Server::AuthFailures() const {
  absl::MutexLock lock(&state_->mu);
  return state_->auth_failures;
}

}  // namespace twin::testing
