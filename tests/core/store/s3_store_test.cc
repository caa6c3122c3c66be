// S3ObjectStore against the in-process fake S3 server (tests/testing/fake_s3_server.h), or,
// for the S3ContractTest suite, against a real S3-compatible server when TWIN_TEST_S3_ENDPOINT
// is set (CTest s3_store_s3rver runs it against s3rver; see tests/s3/README.md):
//   TWIN_TEST_S3_ENDPOINT=http://127.0.0.1:4569 TWIN_TEST_S3_BUCKET=twin-test
//   AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
//   build/tests/s3_store_test --gtest_filter='S3ContractTest.*'
#include "core/store/s3_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/store/artifact_set.h"
#include "core/store/internal/s3_transport.h"
#include "core/io/sha256.h"
#include "tests/testing/fake_s3_server.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using twin::testing::FakeS3Server;
using twin::testing::ReadFileOrDie;
using twin::testing::TempDir;
using twin::testing::WriteFileOrDie;
using Fault = FakeS3Server::Fault;

constexpr uint64_t kTestMultipartThreshold = 1 << 20;
constexpr uint64_t kTestPartSize = 256 << 10;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::vector<std::string> KeysOf(const std::vector<ObjectInfo>& objects) {
  std::vector<std::string> keys;
  for (const ObjectInfo& o : objects) keys.push_back(o.key);
  return keys;
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

// Bytes that are not text: every byte value, in a pseudo-random order.
std::string BinaryBytes(size_t size, uint32_t seed) {
  std::string bytes(size, '\0');
  uint32_t x = seed;
  for (char& c : bytes) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return bytes;
}

int CountContaining(const std::vector<std::string>& lines, absl::string_view needle) {
  int n = 0;
  for (const std::string& line : lines) n += absl::StrContains(line, needle) ? 1 : 0;
  return n;
}

// Options every test starts from: fast retries, small pages and parts.
S3Options BaseOptions() {
  S3Options options;
  options.retry.max_attempts = 3;
  options.retry.base_delay_ms = 1;
  options.retry.max_delay_ms = 5;
  options.connect_timeout_ms = 5000;
  options.stall_timeout_ms = 1000;
  options.list_page_size = 2;
  options.multipart_threshold_bytes = kTestMultipartThreshold;
  options.multipart_part_size_bytes = kTestPartSize;
  return options;
}

class S3StoreTestBase : public ::testing::Test {
 protected:
  std::unique_ptr<S3ObjectStore> Open(const std::string& uri, const S3Options& options) {
    auto store = S3ObjectStore::Create(uri, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  TempDir tmp_;
};

// The ObjectStore contract: runs against the fake, or a real server (TWIN_TEST_S3_ENDPOINT).
class S3ContractTest : public S3StoreTestBase {
 protected:
  void SetUp() override {
    options_ = BaseOptions();
    const std::string endpoint = Env("TWIN_TEST_S3_ENDPOINT");
    if (endpoint.empty()) {
      FakeS3Server::Options fake;
      fake.max_keys_per_page = 2;
      fake_ = std::make_unique<FakeS3Server>(fake);
      options_.endpoint = fake_->endpoint();
      options_.credentials = {fake.access_key_id, fake.secret_access_key, ""};
      bucket_ = fake.bucket;
    } else {
      options_.endpoint = endpoint;
      options_.credentials = {Env("AWS_ACCESS_KEY_ID"), Env("AWS_SECRET_ACCESS_KEY"), ""};
      bucket_ = Env("TWIN_TEST_S3_BUCKET");
      ASSERT_FALSE(bucket_.empty()) << "TWIN_TEST_S3_BUCKET is not set";
    }
    // A fresh prefix per test keeps tests apart on a shared server.
    absl::BitGen gen;
    root_ = absl::StrCat("run-", absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
    store_ = Open(absl::StrCat("s3://", bucket_, "/", root_), options_);
    ASSERT_NE(store_, nullptr);
  }

  std::unique_ptr<FakeS3Server> fake_;  // null against a real server
  S3Options options_;
  std::string bucket_;
  std::string root_;
  std::unique_ptr<S3ObjectStore> store_;
};

TEST_F(S3ContractTest, PutGetHeadRoundTripBinaryAndEmptyObjects) {
  const std::string bytes = BinaryBytes(70000, 1) + std::string("\0end", 4);
  ASSERT_TRUE(store_->Put("v1/blob.bin", bytes).ok());
  ASSERT_TRUE(store_->Put("empty", "").ok());
  auto got = store_->Get("v1/blob.bin");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  auto empty = store_->Get("empty");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
  auto info = store_->Head("v1/blob.bin");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->key, "v1/blob.bin");
  EXPECT_EQ(info->size_bytes, bytes.size());
  auto empty_info = store_->Head("empty");
  ASSERT_TRUE(empty_info.ok()) << empty_info.status();
  EXPECT_EQ(empty_info->size_bytes, 0u);
  ASSERT_TRUE(store_->Put("v1/blob.bin", "replaced").ok());
  EXPECT_EQ(*store_->Get("v1/blob.bin"), "replaced");
  if (fake_ != nullptr) {
    EXPECT_EQ(fake_->Objects().at(root_ + "/v1/blob.bin"), "replaced");
    EXPECT_THAT(fake_->AuthFailures(), IsEmpty());
  }
}

TEST_F(S3ContractTest, MissingKeyIsNotFoundNamingItsUri) {
  const std::string uri = absl::StrCat("s3://", bucket_, "/", root_, "/v1/missing.bin");
  EXPECT_EQ(store_->UriOf("v1/missing.bin"), uri);
  auto got = store_->Get("v1/missing.bin");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(got.status()), HasSubstr(uri));
  auto head = store_->Head("v1/missing.bin");
  EXPECT_EQ(head.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(head.status()), HasSubstr(uri));
  const std::string local = tmp_.Join("out/missing.bin");
  const absl::Status to_file = store_->GetToFile("v1/missing.bin", local);
  EXPECT_EQ(to_file.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(to_file), HasSubstr(uri));
  EXPECT_TRUE(fs::is_empty(tmp_.Join("out"))) << "no temporary file is left behind";
  auto range = store_->GetRange("v1/missing.bin", 0, 1);
  EXPECT_EQ(range.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(S3ContractTest, KeysWithSpecialCharactersRoundTripAndList) {
  const std::vector<std::string> keys = {"dir/a b+c=d&e;f.txt", "dir/ünï/çødé", "dir/x~y_z-1.2",
                                         "dir/q%3F'\"<>!$*(),:@"};
  for (const std::string& key : keys) {
    ASSERT_TRUE(store_->Put(key, "value of " + key).ok()) << key;
  }
  for (const std::string& key : keys) {
    auto got = store_->Get(key);
    ASSERT_TRUE(got.ok()) << key << ": " << got.status();
    EXPECT_EQ(*got, "value of " + key);
  }
  auto listed = store_->List("dir/");
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(KeysOf(*listed), sorted);
}

TEST_F(S3ContractTest, ListIsSortedRecursivePaginatedAndUsesPlainStringPrefixes) {
  const std::map<std::string, std::string> objects = {
      {"v1/a", "1"},    {"v1/b/c", "22"}, {"v10/x", "333"}, {"v2/y", "4444"},
      {"LATEST", "v2"}, {"v1/b/d", "5"},  {"v1/e", "66"}};
  for (const auto& [key, value] : objects) ASSERT_TRUE(store_->Put(key, value).ok()) << key;
  // Outside the store's prefix: a sibling prefix that shares the same leading characters.
  auto sibling = Open(absl::StrCat("s3://", bucket_, "/", root_, "-sibling"), options_);
  ASSERT_TRUE(sibling->Put("v1/a", "not mine").ok());

  auto all = store_->List("");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(KeysOf(*all),
              ElementsAre("LATEST", "v1/a", "v1/b/c", "v1/b/d", "v1/e", "v10/x", "v2/y"));
  for (const ObjectInfo& info : *all) EXPECT_EQ(info.size_bytes, objects.at(info.key).size());

  auto v1 = store_->List("v1");
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_THAT(KeysOf(*v1), ElementsAre("v1/a", "v1/b/c", "v1/b/d", "v1/e", "v10/x"));
  auto v1_dir = store_->List("v1/");
  ASSERT_TRUE(v1_dir.ok()) << v1_dir.status();
  EXPECT_THAT(KeysOf(*v1_dir), ElementsAre("v1/a", "v1/b/c", "v1/b/d", "v1/e"));
  auto partial = store_->List("v1/b/");
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_THAT(KeysOf(*partial), ElementsAre("v1/b/c", "v1/b/d"));
  auto none = store_->List("v3/");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(*none, IsEmpty());
  if (fake_ != nullptr) {
    // Seven keys in pages of two: four ListObjectsV2 requests for the whole listing.
    EXPECT_GE(CountContaining(fake_->RequestLog(), "continuation-token="), 3);
  }
}

TEST_F(S3ContractTest, DeleteRemovesAndIsIdempotent) {
  ASSERT_TRUE(store_->Put("v1/a", "x").ok());
  ASSERT_TRUE(store_->Delete("v1/a").ok());
  EXPECT_EQ(store_->Head("v1/a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->Delete("v1/a").ok());
  EXPECT_TRUE(store_->Delete("never/existed").ok());
  auto listed = store_->List("");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(*listed, IsEmpty());
}

TEST_F(S3ContractTest, InvalidKeysAreRejectedBeforeAnyRequest) {
  const std::string local = tmp_.Join("f");
  WriteFileOrDie(local, "x");
  for (const std::string& key :
       {std::string(""), std::string("/abs"), std::string("a//b"), std::string("a/../b"),
        std::string("./a"), std::string("a\\b"), std::string("a\0b", 3),
        std::string("v1/blob.tmp.0123456789abcdef")}) {
    EXPECT_EQ(store_->Get(key).status().code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store_->Put(key, "x").code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store_->PutFile(key, local).code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store_->GetToFile(key, tmp_.Join("o")).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Head(key).status().code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store_->Delete(key).code(), absl::StatusCode::kInvalidArgument) << key;
  }
  EXPECT_EQ(store_->List("/v1").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List("a//b").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutFile("k", tmp_.Join("no-such-file")).code(), absl::StatusCode::kNotFound);
  if (fake_ != nullptr) {
    EXPECT_THAT(fake_->RequestLog(), IsEmpty());
  }
}

TEST_F(S3ContractTest, PutFileAndGetToFileStreamWholeFiles) {
  const std::string bytes = BinaryBytes(kTestMultipartThreshold - 1, 7);  // one plain PUT
  const std::string in = tmp_.Join("in.bin");
  WriteFileOrDie(in, bytes);
  ASSERT_TRUE(store_->PutFile("v1/shared.safetensors", in).ok());
  const std::string out = tmp_.Join("fetched/deep/shared.safetensors");
  ASSERT_TRUE(store_->GetToFile("v1/shared.safetensors", out).ok());
  EXPECT_EQ(ReadFileOrDie(out), bytes);
  // Overwriting an existing local file replaces it; no temporary file remains.
  ASSERT_TRUE(store_->Put("v1/small", "small").ok());
  ASSERT_TRUE(store_->GetToFile("v1/small", out).ok());
  EXPECT_EQ(ReadFileOrDie(out), "small");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(tmp_.Join("fetched/deep"))) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ElementsAre("shared.safetensors"));
  if (fake_ != nullptr) {
    EXPECT_EQ(CountContaining(fake_->RequestLog(), "uploads"), 0);
  }
}

TEST_F(S3ContractTest, LargeFilesGoUpInParts) {
  const std::string bytes = BinaryBytes(4 * kTestPartSize + 123, 3);  // five parts
  const std::string in = tmp_.Join("big.bin");
  WriteFileOrDie(in, bytes);
  ASSERT_TRUE(store_->PutFile("v1/big.bin", in).ok());
  auto info = store_->Head("v1/big.bin");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size_bytes, bytes.size());
  const std::string out = tmp_.Join("big.out");
  ASSERT_TRUE(store_->GetToFile("v1/big.bin", out).ok());
  EXPECT_EQ(Sha256Hex(ReadFileOrDie(out)), Sha256Hex(bytes));
  if (fake_ != nullptr) {
    const std::vector<std::string> log = fake_->RequestLog();
    EXPECT_EQ(CountContaining(log, "POST /test-bucket/" + root_ + "/v1/big.bin?uploads="), 1);
    EXPECT_EQ(CountContaining(log, "partNumber="), 5);
    EXPECT_EQ(fake_->OpenMultipartUploads(), 0u);
  }
}

TEST_F(S3ContractTest, GetRangeReadsSlices) {
  ASSERT_TRUE(store_->Put("r", "0123456789").ok());
  EXPECT_EQ(*store_->GetRange("r", 2, 3), "234");
  EXPECT_EQ(*store_->GetRange("r", 0, 10), "0123456789");
  EXPECT_EQ(*store_->GetRange("r", 8, 100), "89");
  EXPECT_EQ(*store_->GetRange("r", 9, UINT64_MAX), "9");
  EXPECT_EQ(*store_->GetRange("r", 4, 0), "");
  EXPECT_EQ(store_->GetRange("r", 10, 1).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(S3ContractTest, PublishesAndFetchesAnArtifactSet) {
  const std::map<std::string, std::string> blobs = {{"architecture.pt", "module"},
                                                    {"shared.safetensors", BinaryBytes(5000, 9)},
                                                    {"twin/spam.safetensors", "spam"},
                                                    {"router.safetensors", "router"},
                                                    {"report.md", "# report\n"}};
  ArtifactPublisher publisher(store_.get(), "v7");
  for (const auto& [name, bytes] : blobs) {
    const std::string path = tmp_.Join("stage/" + name);
    WriteFileOrDie(path, bytes);
    ASSERT_TRUE(publisher.AddFile(name, path).ok()) << name;
  }
  Manifest manifest;
  manifest.created_at = "2026-01-01T00:00:00Z";
  manifest.tool_version = "0.1.0";
  manifest.merge_method = "task_arithmetic";
  manifest.tasks = {TaskEntry{"spam", {"ham", "spam"}, {}, "twin/spam.safetensors", {}}};
  manifest.router.spec.input_dim = 4;
  manifest.router.spec.hidden_dim = 8;
  manifest.router.spec.num_tasks = 1;
  const absl::Status published = publisher.Publish(manifest);
  ASSERT_TRUE(published.ok()) << published;
  EXPECT_EQ(*ResolveVersion(store_.get(), "LATEST"), "v7");
  auto versions = ListVersions(store_.get());
  ASSERT_TRUE(versions.ok()) << versions.status();
  EXPECT_THAT(*versions, ElementsAre("v7"));
  auto set = FetchArtifactSet(store_.get(), "LATEST", tmp_.Join("cache"));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->version, "v7");
  for (const auto& [name, bytes] : blobs) EXPECT_EQ(ReadFileOrDie(set->PathOf(name)), bytes);
}

TEST_F(S3ContractTest, ConcurrentCallsAreSafe) {
  constexpr int kThreads = 6;
  constexpr int kKeysPerThread = 5;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kKeysPerThread; ++k) {
        const std::string key = absl::StrCat("t", t, "/k", k);
        const std::string value = BinaryBytes(1000 + k, t * 100 + k);
        if (!store_->Put(key, value).ok()) ++failures[t];
        auto got = store_->Get(key);
        if (!got.ok() || *got != value) ++failures[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(failures, ::testing::Each(0));
  auto listed = store_->List("");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->size(), static_cast<size_t>(kThreads * kKeysPerThread));
}

TEST_F(S3ContractTest, BadCredentialsArePermissionDeniedWithoutTheSecret) {
  S3Options options = options_;
  options.credentials = {"AKIDNOTKNOWNHERE", "top/Secret+Value=do-not-print", "token-not-printed"};
  auto store = Open(absl::StrCat("s3://", bucket_, "/", root_), options);
  for (const absl::Status& status :
       {store->Get("v1/a").status(), store->Put("v1/a", "x"), store->List("").status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
    EXPECT_THAT(Message(status), HasSubstr("InvalidAccessKeyId"));
    EXPECT_THAT(Message(status), HasSubstr(absl::StrCat("s3://", bucket_, "/", root_)));
    EXPECT_THAT(Message(status), Not(HasSubstr("top/Secret+Value=do-not-print")));
    EXPECT_THAT(Message(status), Not(HasSubstr("token-not-printed")));
  }
}

TEST_F(S3ContractTest, MissingBucketIsNotFound) {
  auto store = Open("s3://no-such-bucket-for-twin-tests/p", options_);
  auto got = store->Get("k");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(got.status()), HasSubstr("NoSuchBucket"));
  EXPECT_EQ(store->Delete("k").code(), absl::StatusCode::kNotFound);
}

// Behaviour that needs the fake: fault injection, request inspection, other addressing.
class S3FakeTest : public S3StoreTestBase {
 protected:
  void SetUp() override {
    FakeS3Server::Options fake;
    fake.max_keys_per_page = 3;
    fake.session_token = "session/token+value";
    server_ = std::make_unique<FakeS3Server>(fake);
    options_ = BaseOptions();
    options_.endpoint = server_->endpoint();
    options_.credentials = {fake.access_key_id, fake.secret_access_key, fake.session_token};
    store_ = Open("s3://test-bucket/root", options_);
    ASSERT_NE(store_, nullptr);
  }

  int Requests(absl::string_view needle) { return CountContaining(server_->RequestLog(), needle); }

  std::unique_ptr<FakeS3Server> server_;
  S3Options options_;
  std::unique_ptr<S3ObjectStore> store_;
};

TEST_F(S3FakeTest, EveryRequestIsSignedAndCarriesThePayloadHash) {
  const std::string in = tmp_.Join("big");
  WriteFileOrDie(in, BinaryBytes(kTestMultipartThreshold + 10, 5));
  ASSERT_TRUE(store_->Put("a/b c", "x").ok());
  ASSERT_TRUE(store_->PutFile("a/big", in).ok());
  ASSERT_TRUE(store_->Head("a/big").ok());
  ASSERT_TRUE(store_->List("a/").ok());
  ASSERT_TRUE(store_->Delete("a/b c").ok());
  EXPECT_THAT(server_->AuthFailures(), IsEmpty());
  EXPECT_GE(server_->RequestLog().size(), 10u);
}

TEST_F(S3FakeTest, SessionTokenIsRequiredAndSent) {
  S3Options options = options_;
  options.credentials.session_token.clear();
  auto store = Open("s3://test-bucket/root", options);
  const absl::Status status = store->Put("k", "v");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(status), HasSubstr("InvalidToken"));
  EXPECT_TRUE(store_->Put("k", "v").ok());
}

TEST_F(S3FakeTest, WrongSecretIsSignatureMismatchAndNeverPrinted) {
  S3Options options = options_;
  options.credentials.secret_access_key = "wrong/secret+value";
  auto store = Open("s3://test-bucket/root", options);
  const absl::Status status = store->Put("k", "v");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(status), HasSubstr("SignatureDoesNotMatch"));
  EXPECT_THAT(Message(status), HasSubstr("s3://test-bucket/root/k"));
  EXPECT_THAT(Message(status), Not(HasSubstr("wrong/secret+value")));
  EXPECT_THAT(Message(status), Not(HasSubstr(options_.credentials.secret_access_key)));
  EXPECT_EQ(Requests("PUT "), 1) << "a 403 is not retried";
}

TEST_F(S3FakeTest, TransientServerErrorsAreRetried) {
  server_->InjectFault(Fault::kSlowDown, 2, "PUT ");
  ASSERT_TRUE(store_->Put("k", "v").ok());
  EXPECT_EQ(Requests("PUT "), 3);
  server_->InjectFault(Fault::kInternalError, 1, "GET ");
  server_->InjectFault(Fault::kTooManyRequests, 1, "GET ");
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "v");
  EXPECT_EQ(Requests("GET "), 3);
}

// A server that alternates continuation tokens once kept List looping forever.
TEST_F(S3FakeTest, ListingWithCyclingContinuationTokensFails) {
  ASSERT_TRUE(store_->Put("k", "v").ok());
  server_->InjectFault(Fault::kCyclingListToken, 1000, "list-type");
  auto listed = store_->List("");
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(Message(listed.status()), HasSubstr("without a new continuation token"));
  EXPECT_LE(Requests("list-type"), 3);  // cycle-a, cycle-b, then cycle-a again: stop
}

// GetToFileAtMost stops downloading at the declared size instead of checking afterwards.
TEST_F(S3FakeTest, GetToFileAtMostRefusesLargerObjectsAndLeavesNoFile) {
  const std::string bytes(10000, 'x');
  ASSERT_TRUE(store_->Put("blob", bytes).ok());
  TempDir dir;
  const std::string path = dir.Join("out/blob");
  absl::Status status = store_->GetToFileAtMost("blob", path, 1000);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  EXPECT_THAT(Message(status), HasSubstr("exceeds 1000 bytes"));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(store_->GetToFileAtMost("blob", path, 0).code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(std::filesystem::exists(path));
  ASSERT_TRUE(store_->GetToFileAtMost("blob", path, bytes.size()).ok());
  std::ifstream in(path, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bytes);
  ASSERT_TRUE(store_->Put("empty", "").ok());
  EXPECT_TRUE(store_->GetToFileAtMost("empty", dir.Join("empty"), 0).ok());
}

// A reply held in memory (an object read with Get, a listing page) stops at
// kMaxInMemoryResponseBytes however large a body the server declares or sends.
TEST_F(S3FakeTest, InMemoryResponsesStopAtTheirCap) {
  ASSERT_TRUE(store_->Put("k", "v").ok());
  const int gets_before = Requests("GET ");
  server_->InjectFault(Fault::kEndlessBody, 1, "GET ");
  auto got = store_->Get("k");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kOutOfRange) << got.status();
  EXPECT_THAT(Message(got.status()),
              HasSubstr(absl::StrCat("exceeds ", s3_internal::kMaxInMemoryResponseBytes)));
  EXPECT_EQ(Requests("GET ") - gets_before, 1) << "a body over the cap is not retried";
  server_->InjectFault(Fault::kEndlessBody, 1, "list-type");
  auto listed = store_->List("");
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kOutOfRange) << listed.status();
  // The store still works afterwards.
  auto again = store_->Get("k");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "v");
}

TEST_F(S3FakeTest, GivesUpAfterMaxAttempts) {
  ASSERT_TRUE(store_->Put("k", "v").ok());
  server_->InjectFault(Fault::kInternalError, 100, "GET ");
  auto got = store_->Get("k");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Message(got.status()), HasSubstr("s3://test-bucket/root/k"));
  EXPECT_THAT(Message(got.status()), HasSubstr("3 attempt"));
  EXPECT_THAT(Message(got.status()), HasSubstr("InternalError"));
  EXPECT_EQ(Requests("GET "), 3);

  server_->ClearFaults();
  server_->InjectFault(Fault::kSlowDown, 100, "GET ");
  auto throttled = store_->Get("k");
  EXPECT_EQ(throttled.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Message(throttled.status()), HasSubstr("SlowDown"));
}

TEST_F(S3FakeTest, DroppedAndTruncatedConnectionsAreRetried) {
  const std::string bytes = BinaryBytes(300000, 11);
  ASSERT_TRUE(store_->Put("k", bytes).ok());
  server_->InjectFault(Fault::kDropConnection, 2, "GET ");
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);

  // A body cut off halfway is fetched again from the start, into a file truncated first.
  server_->InjectFault(Fault::kTruncateBody, 2, "GET ");
  const std::string out = tmp_.Join("out");
  ASSERT_TRUE(store_->GetToFile("k", out).ok());
  EXPECT_EQ(ReadFileOrDie(out), bytes);

  server_->InjectFault(Fault::kDropConnection, 100, "GET ");
  auto failed = store_->Get("k");
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
}

TEST_F(S3FakeTest, StalledResponsesTimeOutAndAreRetried) {
  ASSERT_TRUE(store_->Put("k", "v").ok());
  server_->InjectFault(Fault::kStall, 1, "GET ");
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "v");
  EXPECT_EQ(Requests("GET "), 2);
}

TEST_F(S3FakeTest, StreamedUploadsAreResentFromTheStart) {
  const std::string bytes = BinaryBytes(kTestMultipartThreshold - 7, 13);
  const std::string in = tmp_.Join("in");
  WriteFileOrDie(in, bytes);
  server_->InjectFault(Fault::kInternalError, 1, "PUT ");
  server_->InjectFault(Fault::kDropConnection, 1, "PUT ");
  ASSERT_TRUE(store_->PutFile("k", in).ok());
  EXPECT_EQ(server_->Objects().at("root/k"), bytes);
  EXPECT_EQ(Requests("PUT "), 3);
}

TEST_F(S3FakeTest, ConnectionRefusedIsUnavailable) {
  int port;
  {
    FakeS3Server gone;
    port = gone.port();
  }
  S3Options options = options_;
  options.endpoint = absl::StrCat("http://127.0.0.1:", port);
  auto store = Open("s3://test-bucket/root", options);
  auto got = store->Get("k");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  EXPECT_THAT(Message(got.status()), HasSubstr("s3://test-bucket/root/k"));
}

TEST_F(S3FakeTest, MultipartPartsAreRetriedIndividually) {
  const std::string bytes = BinaryBytes(3 * kTestPartSize + kTestMultipartThreshold, 17);
  const std::string in = tmp_.Join("in");
  WriteFileOrDie(in, bytes);
  server_->InjectFault(Fault::kSlowDown, 1, "partNumber=2&");
  server_->InjectFault(Fault::kDropConnection, 1, "partNumber=5&");
  ASSERT_TRUE(store_->PutFile("big", in).ok());
  EXPECT_EQ(server_->Objects().at("root/big"), bytes);
  EXPECT_EQ(Requests("partNumber=2&"), 2);
  EXPECT_EQ(Requests("partNumber=1&"), 1);
  EXPECT_EQ(server_->OpenMultipartUploads(), 0u);
}

TEST_F(S3FakeTest, FailedMultipartUploadIsAbortedAndLeavesNoObject) {
  const std::string in = tmp_.Join("in");
  WriteFileOrDie(in, BinaryBytes(kTestMultipartThreshold + 1, 19));
  server_->InjectFault(Fault::kInternalError, 100, "partNumber=3&");
  const absl::Status status = store_->PutFile("big", in);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Message(status), HasSubstr("aborted"));
  EXPECT_EQ(server_->OpenMultipartUploads(), 0u);
  EXPECT_EQ(server_->Objects().count("root/big"), 0u);
  EXPECT_EQ(Requests("DELETE /test-bucket/root/big?uploadId="), 1);

  server_->ClearFaults();
  server_->InjectFault(Fault::kSignatureDoesNotMatch, 1, "POST /test-bucket/root/big?uploadId=");
  EXPECT_EQ(store_->PutFile("big", in).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(server_->OpenMultipartUploads(), 0u);
  EXPECT_EQ(server_->Objects().count("root/big"), 0u);
}

TEST_F(S3FakeTest, ListSkipsNamesNoKeyCouldAddress) {
  server_->SetObject("root/v1/blob", "1");
  server_->SetObject("root/v1/blob.tmp.0123456789abcdef", "in flight");
  server_->SetObject("root/v1/folder/", "");
  server_->SetObject("root/v1//double", "x");
  server_->SetObject("rootless/v1/blob", "other prefix");
  auto listed = store_->List("");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(KeysOf(*listed), ElementsAre("v1/blob"));
}

TEST_F(S3FakeTest, VirtualHostedStyleNamesTheBucketInTheHost) {
  S3Options options = options_;
  options.endpoint = absl::StrCat("http://localhost:", server_->port());
  options.addressing = S3Addressing::kVirtual;
  auto store = Open("s3://test-bucket/root", options);
  EXPECT_EQ(store->UrlOf("a b/c"),
            absl::StrCat("http://test-bucket.localhost:", server_->port(), "/root/a%20b/c"));
  ASSERT_TRUE(store->Put("a b/c", "v").ok());
  EXPECT_EQ(*store->Get("a b/c"), "v");
  auto listed = store->List("");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(KeysOf(*listed), ElementsAre("a b/c"));
  EXPECT_THAT(server_->HostsSeen(),
              Contains(absl::StrCat("test-bucket.localhost:", server_->port())));
  EXPECT_EQ(server_->Objects().at("root/a b/c"), "v");
}

}  // namespace
}  // namespace twin
