// S3 store configuration and helpers without a server: URI and option checks, URL building,
// the XML parser, environment and shared-credentials-file parsing. OpenObjectStore("s3://")
// is exercised against the in-process fake.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/store/internal/aws_credentials.h"
#include "core/store/internal/s3_transport.h"
#include "core/store/internal/s3_url.h"
#include "core/store/internal/s3_xml.h"
#include "core/store/object_store.h"
#include "core/store/s3_store.h"
#include "tests/testing/fake_s3_server.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using twin::testing::TempDir;
using twin::testing::WriteFileOrDie;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// Clears every variable the S3 options read for the test's lifetime, then restores them.
class ScopedS3Environment {
 public:
  ScopedS3Environment() {
    for (const char* name : kNames) {
      const char* value = std::getenv(name);
      if (value != nullptr) saved_[name] = value;
      ::unsetenv(name);
    }
  }
  ~ScopedS3Environment() {
    for (const char* name : kNames) {
      const auto it = saved_.find(name);
      if (it == saved_.end()) {
        ::unsetenv(name);
      } else {
        ::setenv(name, it->second.c_str(), 1);
      }
    }
  }
  void Set(const char* name, const std::string& value) { ::setenv(name, value.c_str(), 1); }

 private:
  static constexpr const char* kNames[] = {"TWIN_S3_ENDPOINT",   "AWS_ENDPOINT_URL_S3",
                                           "AWS_ENDPOINT_URL",   "AWS_REGION",
                                           "AWS_DEFAULT_REGION", "TWIN_S3_ADDRESSING",
                                           "AWS_CA_BUNDLE",      "TWIN_S3_MAX_ATTEMPTS",
                                           "AWS_ACCESS_KEY_ID",  "AWS_SECRET_ACCESS_KEY",
                                           "AWS_SESSION_TOKEN",  "AWS_SHARED_CREDENTIALS_FILE",
                                           "AWS_PROFILE",        "HOME"};
  std::map<std::string, std::string> saved_;
};

S3Options WithCredentials(S3Options options = {}) {
  options.credentials = {"AKID", "secret", ""};
  return options;
}

TEST(S3UrlTest, UriEncodingKeepsOnlyUnreservedCharacters) {
  using s3_internal::UriEncode;
  EXPECT_EQ(UriEncode("aZ09-._~", false), "aZ09-._~");
  EXPECT_EQ(UriEncode("a b+c/d=é", true), "a%20b%2Bc/d%3D%C3%A9");
  EXPECT_EQ(UriEncode("a/b", false), "a%2Fb");
}

TEST(S3UrlTest, CanonicalQueryIsSortedAndAlwaysHasValues) {
  EXPECT_EQ(s3_internal::CanonicalQuery({{"uploads", ""}}), "uploads=");
  EXPECT_EQ(s3_internal::CanonicalQuery({{"prefix", "a b/c"},
                                         {"list-type", "2"},
                                         {"continuation-token", "x+y=="},
                                         {"max-keys", "2"}}),
            "continuation-token=x%2By%3D%3D&list-type=2&max-keys=2&prefix=a%20b%2Fc");
}

TEST(S3UrlTest, PathStyleForCustomEndpointsVirtualForAws) {
  S3Options custom = WithCredentials();
  custom.endpoint = "http://127.0.0.1:4569/";
  auto path = S3ObjectStore::Create("s3://bkt/pre/fix/", custom);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ((*path)->uri(), "s3://bkt/pre/fix");
  EXPECT_EQ((*path)->prefix(), "pre/fix");
  EXPECT_EQ((*path)->UrlOf("v1/a b+c"), "http://127.0.0.1:4569/bkt/pre/fix/v1/a%20b%2Bc");

  S3Options aws = WithCredentials();
  aws.region = "eu-west-1";
  auto virtual_host = S3ObjectStore::Create("s3://bkt", aws);
  ASSERT_TRUE(virtual_host.ok()) << virtual_host.status();
  EXPECT_EQ((*virtual_host)->uri(), "s3://bkt");
  EXPECT_EQ((*virtual_host)->UrlOf("v1/x"), "https://bkt.s3.eu-west-1.amazonaws.com/v1/x");

  S3Options forced = custom;
  forced.endpoint = "https://minio.local:9000/base";
  forced.addressing = S3Addressing::kVirtual;
  EXPECT_EQ((*S3ObjectStore::Create("s3://bkt/p", forced))->UrlOf("k"),
            "https://bkt.minio.local:9000/base/p/k");
  forced.addressing = S3Addressing::kPath;
  EXPECT_EQ((*S3ObjectStore::Create("s3://bkt/p", forced))->UrlOf("k"),
            "https://minio.local:9000/base/bkt/p/k");

  const s3_internal::Endpoint endpoint = *s3_internal::ParseEndpoint("http://h:1");
  EXPECT_EQ(s3_internal::BuildUrl(endpoint, false, "bkt", "", {{"list-type", "2"}}),
            "http://h:1/bkt?list-type=2");
  EXPECT_EQ(s3_internal::BuildUrl(endpoint, true, "bkt", "", {{"list-type", "2"}}),
            "http://bkt.h:1/?list-type=2");
}

TEST(S3OptionsTest, CreateRejectsBadUrisAndOptions) {
  const S3Options ok = WithCredentials();
  for (const char* uri : {"s3://", "s3:///prefix", "file:///x", "s3://bkt/a//b", "s3://bkt/../x",
                          "s3://Bad_Bucket/p", "s3://bkt/p.tmp.0123456789abcdef"}) {
    auto store = S3ObjectStore::Create(uri, ok);
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << uri;
  }
  S3Options path_style = ok;
  path_style.addressing = S3Addressing::kPath;
  EXPECT_TRUE(S3ObjectStore::Create("s3://Legacy_Bucket/p", path_style).ok());

  auto no_credentials = S3ObjectStore::Create("s3://bkt/p", S3Options());
  EXPECT_EQ(no_credentials.status().code(), absl::StatusCode::kFailedPrecondition);

  const auto invalid = [&](void (*change)(S3Options*)) {
    S3Options options = ok;
    change(&options);
    return S3ObjectStore::Create("s3://bkt", options).status().code();
  };
  EXPECT_EQ(invalid([](S3Options* o) { o->endpoint = "127.0.0.1:9000"; }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid([](S3Options* o) { o->endpoint = "ftp://h"; }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid([](S3Options* o) { o->endpoint = "http://user:pw@h"; }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid([](S3Options* o) { o->region = ""; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid([](S3Options* o) { o->retry.max_attempts = 0; }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid([](S3Options* o) { o->multipart_part_size_bytes = 0; }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid([](S3Options* o) { o->list_page_size = 1001; }),
            absl::StatusCode::kInvalidArgument);
}

TEST(S3XmlTest, ParsesListObjectsV2WithEntitiesAndPagination) {
  const std::string xml = R"(<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bkt</Name><Prefix/><KeyCount>3</KeyCount>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&amp;x</NextContinuationToken>
  <Contents><Key>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Key><Size>12</Size></Contents>
  <Contents><Key>caf&#233;/&#x1F600;</Key><Size> 0 </Size><ETag>&quot;x&quot;</ETag></Contents>
  <s3:Contents xmlns:s3="x"><s3:Key><![CDATA[raw <cdata> & key]]></s3:Key><s3:Size>5</s3:Size></s3:Contents>
</ListBucketResult>)";
  auto page = s3_internal::ParseListObjectsV2(xml);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->is_truncated);
  EXPECT_EQ(page->next_continuation_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&x");
  ASSERT_EQ(page->objects.size(), 3u);
  EXPECT_EQ(page->objects[0].key, "a & b <c> \"d\" 'e'");
  EXPECT_EQ(page->objects[0].size_bytes, 12u);
  EXPECT_EQ(page->objects[1].key, "café/\xF0\x9F\x98\x80");
  EXPECT_EQ(page->objects[1].size_bytes, 0u);
  EXPECT_EQ(page->objects[2].key, "raw <cdata> & key");

  auto last = s3_internal::ParseListObjectsV2(
      "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>");
  ASSERT_TRUE(last.ok());
  EXPECT_FALSE(last->is_truncated);
  EXPECT_TRUE(last->objects.empty());
}

TEST(S3XmlTest, RejectsMalformedDocuments) {
  for (const std::string& xml :
       {std::string("<ListBucketResult><Contents><Key>a</Key><Size>1</Size>"),  // truncated
        std::string("<ListBucketResult><Key>a</Size></ListBucketResult>"),
        std::string("<ListBucketResult>&bogus;</ListBucketResult>"),
        std::string("<ListBucketResult>&#xZZ;</ListBucketResult>"),
        std::string("<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents>"
                    "</ListBucketResult>"),
        std::string("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>"),
        std::string("<Other/>"), std::string(""), std::string("<a></a><b/>")}) {
    EXPECT_EQ(s3_internal::ParseListObjectsV2(xml).status().code(),
              absl::StatusCode::kInvalidArgument)
        << xml;
  }
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "<a>";
  EXPECT_FALSE(s3_internal::ParseXml(deep).ok());
}

TEST(S3XmlTest, ErrorsUploadIdsAndCompletionBodies) {
  const s3_internal::S3Error error = s3_internal::ParseS3Error(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>gone &amp; "
      "lost</Message></Error>");
  EXPECT_EQ(error.code, "NoSuchKey");
  EXPECT_EQ(error.message, "gone & lost");
  EXPECT_TRUE(s3_internal::ParseS3Error("not xml").code.empty());
  EXPECT_EQ(
      *s3_internal::ParseUploadId("<InitiateMultipartUploadResult><UploadId>u&amp;1</UploadId>"
                                  "</InitiateMultipartUploadResult>"),
      "u&1");
  EXPECT_FALSE(s3_internal::ParseUploadId("<InitiateMultipartUploadResult/>").ok());
  const std::string body = s3_internal::CompleteMultipartUploadBody({"\"e1\"", "\"e2\""});
  auto parsed = s3_internal::ParseXml(body);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->children.size(), 2u);
  EXPECT_EQ(parsed->children[1].ChildText("PartNumber"), "2");
  EXPECT_EQ(parsed->children[1].ChildText("ETag"), "\"e2\"");
}

TEST(S3ErrorStatusTest, MapsHttpAnswersToCodes) {
  using s3_internal::HttpErrorStatus;
  const std::string target = "s3://bkt/p/k";
  EXPECT_EQ(HttpErrorStatus(404, "", "HEAD", target).code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(HttpErrorStatus(404, "", "HEAD", target)), HasSubstr(target));
  EXPECT_EQ(HttpErrorStatus(403, "<Error><Code>AccessDenied</Code></Error>", "GET", target).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(
      HttpErrorStatus(301, "<Error><Code>PermanentRedirect</Code></Error>", "GET", target).code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(HttpErrorStatus(416, "", "GET", target).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(HttpErrorStatus(400, "", "GET", target).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpErrorStatus(503, "<Error><Code>SlowDown</Code></Error>", "GET", target).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(HttpErrorStatus(502, "", "GET", target).code(), absl::StatusCode::kUnavailable);
}

TEST(S3EnvironmentTest, ReadsEndpointRegionAddressingAndRetries) {
  ScopedS3Environment env;
  env.Set("AWS_ACCESS_KEY_ID", "AKIDENV");
  env.Set("AWS_SECRET_ACCESS_KEY", "env/secret");
  env.Set("AWS_SESSION_TOKEN", "env-token");
  env.Set("AWS_ENDPOINT_URL", "http://generic:1");
  env.Set("AWS_ENDPOINT_URL_S3", "http://s3-specific:2");
  env.Set("AWS_DEFAULT_REGION", "eu-central-1");
  env.Set("AWS_CA_BUNDLE", "/etc/ca.pem");
  env.Set("TWIN_S3_MAX_ATTEMPTS", "7");
  env.Set("TWIN_S3_ADDRESSING", "virtual");
  auto options = S3Options::FromEnvironment();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->endpoint, "http://s3-specific:2");
  EXPECT_EQ(options->region, "eu-central-1");
  EXPECT_EQ(options->addressing, S3Addressing::kVirtual);
  EXPECT_EQ(options->ca_file, "/etc/ca.pem");
  EXPECT_EQ(options->retry.max_attempts, 7);
  EXPECT_EQ(options->credentials.access_key_id, "AKIDENV");
  EXPECT_EQ(options->credentials.secret_access_key, "env/secret");
  EXPECT_EQ(options->credentials.session_token, "env-token");

  env.Set("TWIN_S3_ENDPOINT", "http://twin:3");
  env.Set("AWS_REGION", "ap-south-1");
  env.Set("TWIN_S3_ADDRESSING", "path");
  options = S3Options::FromEnvironment();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->endpoint, "http://twin:3");
  EXPECT_EQ(options->region, "ap-south-1");
  EXPECT_EQ(options->addressing, S3Addressing::kPath);

  env.Set("TWIN_S3_ADDRESSING", "sideways");
  EXPECT_EQ(S3Options::FromEnvironment().status().code(), absl::StatusCode::kInvalidArgument);
  env.Set("TWIN_S3_ADDRESSING", "path");
  env.Set("TWIN_S3_MAX_ATTEMPTS", "0");
  EXPECT_EQ(S3Options::FromEnvironment().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(S3EnvironmentTest, ReadsTheSharedCredentialsFile) {
  ScopedS3Environment env;
  TempDir tmp;
  WriteFileOrDie(tmp.Join("home/.aws/credentials"),
                 "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\n"
                 "aws_secret_access_key=default/secret\n\n"
                 "[profile ci]\n; another comment\n  AWS_ACCESS_KEY_ID = AKIDCI  \n"
                 "aws_secret_access_key = ci/secret\naws_session_token = ci-token\n"
                 "s3 =\n  max_concurrent_requests = 20\n"
                 "[broken]\naws_access_key_id = AKIDBROKEN\n");
  env.Set("HOME", tmp.Join("home"));
  auto options = S3Options::FromEnvironment();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->credentials.access_key_id, "AKIDDEFAULT");
  EXPECT_EQ(options->credentials.secret_access_key, "default/secret");
  EXPECT_EQ(options->region, "us-east-1");
  EXPECT_TRUE(options->endpoint.empty());

  env.Set("AWS_PROFILE", "ci");
  options = S3Options::FromEnvironment();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->credentials.access_key_id, "AKIDCI");
  EXPECT_EQ(options->credentials.session_token, "ci-token");

  env.Set("AWS_PROFILE", "broken");
  auto broken = S3Options::FromEnvironment();
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(broken.status()), HasSubstr("aws_secret_access_key"));

  env.Set("AWS_PROFILE", "absent");
  auto absent = S3Options::FromEnvironment();
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(absent.status()), HasSubstr("[absent]"));
  EXPECT_THAT(Message(absent.status()), Not(HasSubstr("default/secret")));

  // AWS_SHARED_CREDENTIALS_FILE wins over $HOME; the environment wins over both.
  WriteFileOrDie(tmp.Join("other"),
                 "[absent]\naws_access_key_id=AKIDOTHER\n"
                 "aws_secret_access_key=other/secret\n");
  env.Set("AWS_SHARED_CREDENTIALS_FILE", tmp.Join("other"));
  EXPECT_EQ(S3Options::FromEnvironment()->credentials.access_key_id, "AKIDOTHER");
  env.Set("AWS_ACCESS_KEY_ID", "AKIDENV");
  env.Set("AWS_SECRET_ACCESS_KEY", "env/secret");
  EXPECT_EQ(S3Options::FromEnvironment()->credentials.access_key_id, "AKIDENV");
}

TEST(S3EnvironmentTest, MissingCredentialsNameWhatWasLookedAt) {
  ScopedS3Environment env;
  TempDir tmp;
  env.Set("HOME", tmp.path());
  auto none = S3Options::FromEnvironment();
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(none.status()), HasSubstr("AWS_ACCESS_KEY_ID"));
  EXPECT_THAT(Message(none.status()), HasSubstr(tmp.Join(".aws/credentials")));

  env.Set("AWS_SECRET_ACCESS_KEY", "half/secret");
  auto half = S3Options::FromEnvironment();
  EXPECT_EQ(half.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(half.status()), HasSubstr("AWS_ACCESS_KEY_ID is not"));
  EXPECT_THAT(Message(half.status()), Not(HasSubstr("half/secret")));

  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  WriteFileOrDie(tmp.Join("bad"), "aws_access_key_id = x\n");
  env.Set("AWS_SHARED_CREDENTIALS_FILE", tmp.Join("bad"));
  auto bad = S3Options::FromEnvironment();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(bad.status()), HasSubstr(tmp.Join("bad") + ":1"));

  auto open = OpenObjectStore("s3://bkt/prefix");
  EXPECT_EQ(open.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(open.status()), HasSubstr("s3://bkt/prefix"));
}

TEST(S3EnvironmentTest, ParseIniHandlesSectionsCommentsAndNesting) {
  auto ini = s3_internal::ParseIni(
      "[a]\nk = v = w\n# c\n[profile b]\nK2=v2\nnested =\n  x = 1\n  y = 2\nafter = 3\n", "f");
  ASSERT_TRUE(ini.ok()) << ini.status();
  EXPECT_EQ(ini->at("a").at("k"), "v = w");
  EXPECT_EQ(ini->at("b").at("k2"), "v2");
  EXPECT_EQ(ini->at("b").at("after"), "3");
  EXPECT_EQ(ini->at("b").count("x"), 0u);
  EXPECT_EQ(s3_internal::ParseIni("[a\n", "f").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s3_internal::ParseIni("[a]\njunk\n", "f").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(S3EnvironmentTest, OpenObjectStoreUsesTheEnvironment) {
  twin::testing::FakeS3Server server;
  ScopedS3Environment env;
  env.Set("TWIN_S3_ENDPOINT", server.endpoint());
  env.Set("AWS_ACCESS_KEY_ID", server.options().access_key_id);
  env.Set("AWS_SECRET_ACCESS_KEY", server.options().secret_access_key);
  auto store = OpenObjectStore("s3://test-bucket/models/twin");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->uri(), "s3://test-bucket/models/twin");
  const absl::Status put = (*store)->Put("v1/x", "y");
  ASSERT_TRUE(put.ok()) << put;
  EXPECT_EQ(server.Objects().at("models/twin/v1/x"), "y");
  auto listed = (*store)->List("v1/");
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].key, "v1/x");

  ::unsetenv("AWS_ACCESS_KEY_ID");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  env.Set("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
  auto no_credentials = OpenObjectStore("s3://test-bucket/models/twin");
  EXPECT_EQ(no_credentials.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(no_credentials.status()), HasSubstr("/nonexistent/credentials"));
  EXPECT_THAT(Message(no_credentials.status()), HasSubstr("s3://test-bucket/models/twin"));
}

}  // namespace
}  // namespace twin
