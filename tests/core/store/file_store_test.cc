#include "core/store/file_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/store/object_store.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using twin::testing::ReadFileOrDie;
using twin::testing::WriteFileOrDie;

std::vector<std::string> KeysOf(const std::vector<ObjectInfo>& objects) {
  std::vector<std::string> keys;
  for (const ObjectInfo& o : objects) keys.push_back(o.key);
  return keys;
}

// Every file name under `dir`, recursively (to spot leftover temporary files).
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path().filename().string());
  }
  return files;
}

class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/file_store_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    tmp_ = pattern;
    root_ = tmp_ + "/store";
    auto store = FileObjectStore::Create(root_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  std::string tmp_;
  std::string root_;
  std::unique_ptr<FileObjectStore> store_;
};

TEST_F(FileStoreTest, PutThenGetReturnsSameBytes) {
  const std::string bytes("binary\0with\xffzeros", 17);
  ASSERT_TRUE(store_->Put("blob.bin", bytes).ok());
  auto got = store_->Get("blob.bin");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  EXPECT_EQ(ReadFileOrDie(root_ + "/blob.bin"), bytes);
}

TEST_F(FileStoreTest, EmptyObjectRoundTrips) {
  ASSERT_TRUE(store_->Put("empty", "").ok());
  auto got = store_->Get("empty");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "");
  auto info = store_->Head("empty");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size_bytes, 0u);
}

TEST_F(FileStoreTest, NestedKeysCreateDirectories) {
  ASSERT_TRUE(store_->Put("v1/twin/spam.safetensors", "spam").ok());
  EXPECT_EQ(ReadFileOrDie(root_ + "/v1/twin/spam.safetensors"), "spam");
  auto got = store_->Get("v1/twin/spam.safetensors");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "spam");
}

TEST_F(FileStoreTest, OverwriteReplacesContentAndLeavesNoTemporaryFiles) {
  ASSERT_TRUE(store_->Put("v1/LATEST", "old old old").ok());
  ASSERT_TRUE(store_->Put("v1/LATEST", "new").ok());
  auto got = store_->Get("v1/LATEST");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "new");
  EXPECT_THAT(FilesUnder(root_), ElementsAre("LATEST"));
}

TEST_F(FileStoreTest, HeadReportsSize) {
  ASSERT_TRUE(store_->Put("a/b", std::string(1234, 'x')).ok());
  auto info = store_->Head("a/b");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->key, "a/b");
  EXPECT_EQ(info->size_bytes, 1234u);
}

TEST_F(FileStoreTest, MissingKeysAreNotFoundNamingTheKey) {
  ASSERT_TRUE(store_->Put("a/present", "x").ok());
  for (const std::string key : {"absent", "a/absent", "a/present/below", "a"}) {
    auto got = store_->Get(key);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << key;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(store_->UriOf(key)));
    auto info = store_->Head(key);
    EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound) << key;
    EXPECT_THAT(std::string(info.status().message()), HasSubstr(key));
  }
}

TEST_F(FileStoreTest, ListIsRecursiveSortedAndRelativeToRoot) {
  for (const std::string key :
       {"v2/shared", "v1/twin/b", "LATEST", "v1/twin/a", "v1/manifest.json", "v10/x"}) {
    ASSERT_TRUE(store_->Put(key, key).ok());
  }
  auto all = store_->List("");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(KeysOf(*all), ElementsAre("LATEST", "v1/manifest.json", "v1/twin/a", "v1/twin/b",
                                        "v10/x", "v2/shared"));
  EXPECT_EQ((*all)[1].size_bytes, std::string("v1/manifest.json").size());

  auto v1 = store_->List("v1/");
  ASSERT_TRUE(v1.ok());
  EXPECT_THAT(KeysOf(*v1), ElementsAre("v1/manifest.json", "v1/twin/a", "v1/twin/b"));
  // A prefix is a string prefix of keys, not only a directory.
  auto partial = store_->List("v1");
  ASSERT_TRUE(partial.ok());
  EXPECT_THAT(KeysOf(*partial), ElementsAre("v1/manifest.json", "v1/twin/a", "v1/twin/b", "v10/x"));
  auto twin_a = store_->List("v1/twin/a");
  ASSERT_TRUE(twin_a.ok());
  EXPECT_THAT(KeysOf(*twin_a), ElementsAre("v1/twin/a"));
  auto none = store_->List("nowhere/");
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
}

TEST_F(FileStoreTest, ListSkipsTemporaryFilesAndDirectories) {
  ASSERT_TRUE(store_->Put("v1/blob", "x").ok());
  WriteFileOrDie(root_ + "/v1/blob.tmp.0123456789abcdef", "half written");
  fs::create_directories(root_ + "/v1/empty_dir");
  auto listed = store_->List("");
  ASSERT_TRUE(listed.ok());
  EXPECT_THAT(KeysOf(*listed), ElementsAre("v1/blob"));
}

TEST_F(FileStoreTest, DeleteIsIdempotentAndPrunesEmptyParents) {
  ASSERT_TRUE(store_->Put("v1/twin/a", "a").ok());
  ASSERT_TRUE(store_->Put("v1/keep", "k").ok());
  ASSERT_TRUE(store_->Delete("v1/twin/a").ok());
  EXPECT_EQ(store_->Get("v1/twin/a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(root_ + "/v1/twin"));
  EXPECT_TRUE(fs::exists(root_ + "/v1/keep"));
  ASSERT_TRUE(store_->Delete("v1/twin/a").ok());  // again: still fine
  ASSERT_TRUE(store_->Delete("v1/keep").ok());
  EXPECT_FALSE(fs::exists(root_ + "/v1"));
  EXPECT_TRUE(fs::is_directory(root_));  // the root itself stays
  ASSERT_TRUE(store_->Delete("never/existed").ok());
}

TEST_F(FileStoreTest, InvalidKeysAreRejectedNamingTheKey) {
  const std::vector<std::string> printable = {"/abs",
                                              "a//b",
                                              "a/",
                                              "..",
                                              "../x",
                                              "a/../b",
                                              ".",
                                              "./a",
                                              "a/./b",
                                              "a\\b",
                                              "x.tmp.0123456789abcdef"};
  for (const std::string& key : printable) {
    for (const absl::Status& status :
         {store_->Put(key, "x"), store_->Get(key).status(), store_->Head(key).status(),
          store_->Delete(key), store_->PutFile(key, "/dev/null"),
          store_->GetToFile(key, tmp_ + "/out")}) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << key;
      const std::string quoted = key == "a\\b" ? "a\\\\b" : key;  // CEscape'd in messages
      EXPECT_THAT(std::string(status.message()), HasSubstr("\"" + quoted + "\"")) << key;
    }
  }
  const absl::Status empty = store_->Put("", "x");
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.message()), HasSubstr("empty"));
  const absl::Status nul = store_->Put(std::string("a\0b", 3), "x");
  EXPECT_EQ(nul.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(nul.message()), HasSubstr("a\\000b"));
  EXPECT_EQ(store_->List("../").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List("/etc").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FilesUnder(root_), IsEmpty());
}

TEST_F(FileStoreTest, ValidKeysAccepted) {
  for (const std::string key : {"a", "v1/manifest.json", "a..b", ".hidden", "x.tmp.1", "LATEST"}) {
    EXPECT_TRUE(ValidateObjectKey(key).ok()) << key;
  }
}

TEST_F(FileStoreTest, PutFileAndGetToFileStreamSeveralMiB) {
  const size_t size_bytes = (3u << 20) + 123;
  std::string bytes(size_bytes, '\0');
  std::mt19937 rng(42);
  for (char& c : bytes) c = static_cast<char>(rng());
  const std::string input = tmp_ + "/input.bin";
  WriteFileOrDie(input, bytes);

  ASSERT_TRUE(store_->PutFile("v1/shared.safetensors", input).ok());
  auto info = store_->Head("v1/shared.safetensors");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size_bytes, size_bytes);

  const std::string output = tmp_ + "/cache/deep/shared.safetensors";
  const absl::Status fetched = store_->GetToFile("v1/shared.safetensors", output);
  ASSERT_TRUE(fetched.ok()) << fetched;
  EXPECT_EQ(ReadFileOrDie(output), bytes);
  EXPECT_THAT(FilesUnder(tmp_ + "/cache"), ElementsAre("shared.safetensors"));
}

TEST_F(FileStoreTest, PutFileOfMissingLocalFileIsNotFound) {
  const absl::Status status = store_->PutFile("k", tmp_ + "/no_such_file");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("no_such_file"));
  EXPECT_EQ(store_->Head("k").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FileStoreTest, GetToFileOfMissingKeyCreatesNothing) {
  const std::string output = tmp_ + "/out.bin";
  const absl::Status status = store_->GetToFile("v1/absent", output);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("v1/absent"));
  EXPECT_FALSE(fs::exists(output));
}

TEST_F(FileStoreTest, UriIsFileSchemeOverAbsoluteRoot) {
  EXPECT_EQ(store_->uri(), "file://" + root_);
  EXPECT_EQ(store_->UriOf("v1/x"), "file://" + root_ + "/v1/x");
  EXPECT_EQ(store_->root_dir(), root_);
}

TEST_F(FileStoreTest, CreateOverAFileFails) {
  WriteFileOrDie(tmp_ + "/plain_file", "x");
  EXPECT_FALSE(FileObjectStore::Create(tmp_ + "/plain_file").ok());
  EXPECT_EQ(FileObjectStore::Create("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FileStoreTest, OpenObjectStoreAcceptsFileUrisAndPlainPaths) {
  auto absolute = OpenObjectStore("file://" + tmp_ + "/abs");
  ASSERT_TRUE(absolute.ok()) << absolute.status();
  EXPECT_EQ((*absolute)->uri(), "file://" + tmp_ + "/abs");
  EXPECT_TRUE(fs::is_directory(tmp_ + "/abs"));

  auto upper = OpenObjectStore("FILE://" + tmp_ + "/upper/");
  ASSERT_TRUE(upper.ok()) << upper.status();
  EXPECT_EQ((*upper)->uri(), "file://" + tmp_ + "/upper");

  auto plain = OpenObjectStore(tmp_ + "/plain");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*plain)->uri(), "file://" + tmp_ + "/plain");

  // "file://relative" resolves against the working directory.
  const fs::path previous = fs::current_path();
  fs::current_path(tmp_);
  auto relative = OpenObjectStore("file://rel/dir");
  auto relative_plain = OpenObjectStore("rel2");
  fs::current_path(previous);
  ASSERT_TRUE(relative.ok()) << relative.status();
  EXPECT_EQ((*relative)->uri(), "file://" + tmp_ + "/rel/dir");
  ASSERT_TRUE(relative_plain.ok()) << relative_plain.status();
  EXPECT_EQ((*relative_plain)->uri(), "file://" + tmp_ + "/rel2");

  ASSERT_TRUE((*absolute)->Put("k", "v").ok());
  auto again = OpenObjectStore(tmp_ + "/abs");
  ASSERT_TRUE(again.ok());
  auto got = (*again)->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "v");
}

// s3:// is opened by S3ObjectStore (tests/core/s3_store_test.cc).
TEST_F(FileStoreTest, OpenObjectStoreRejectsOtherSchemes) {
  auto gs = OpenObjectStore("gs://bucket/prefix");
  EXPECT_EQ(gs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(gs.status().message()), HasSubstr("\"gs\""));

  auto http = OpenObjectStore("http://example.com/x");
  EXPECT_EQ(http.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(http.status().message()), HasSubstr("\"http\""));

  EXPECT_EQ(OpenObjectStore("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenObjectStore("file://").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TemporaryObjectNameTest, MatchesReservedPattern) {
  const std::string a = TemporaryObjectName("v1/blob");
  const std::string b = TemporaryObjectName("v1/blob");
  EXPECT_NE(a, b);
  EXPECT_TRUE(IsTemporaryObjectName(a));
  EXPECT_THAT(a, ::testing::StartsWith("v1/blob.tmp."));
  EXPECT_FALSE(IsTemporaryObjectName("blob.tmp.123"));
  EXPECT_FALSE(IsTemporaryObjectName("blob.tmp.0123456789abcdeg"));
  EXPECT_FALSE(IsTemporaryObjectName(".tmp.0123456789abcdef"));
}

}  // namespace
}  // namespace twin
