#include "core/store/artifact_set.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "core/store/file_store.h"
#include "core/io/sha256.h"
#include "tests/testing/forwarding_store.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using twin::testing::ReadFileOrDie;
using twin::testing::WriteFileOrDie;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// Blob name -> content of the files a version is published from.
const std::map<std::string, std::string>& BlobContents() {
  static const auto* contents = new std::map<std::string, std::string>{
      {"architecture.pt", "torchscript module bytes"},
      {"shared.safetensors", std::string(70000, 's')},
      {"twin/spam.safetensors", "spam twin vector"},
      {"twin/lang.safetensors", "lang twin vector, a little longer"},
      {"router.safetensors", "router weights"},
      {"report.md", "# report\n"},
  };
  return *contents;
}

Manifest TwoTaskManifest() {
  Manifest m;
  m.created_at = "2024-05-01T00:00:00Z";
  m.tool_version = "0.1.0";
  m.merge_method = "task_arithmetic";
  m.tasks = {TaskEntry{"spam", {"ham", "spam"}, {}, "twin/spam.safetensors", {"head.weight"}},
             TaskEntry{"lang", {"en", "de"}, {}, "twin/lang.safetensors", {"head.weight"}}};
  m.router.spec.input_dim = 4;
  m.router.spec.hidden_dim = 8;
  m.router.spec.num_tasks = 2;
  return m;
}

class ArtifactSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/artifact_set_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    tmp_ = pattern;
    auto store = FileObjectStore::Create(tmp_ + "/store");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    for (const auto& [name, content] : BlobContents()) WriteFileOrDie(StagedPath(name), content);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  std::string StagedPath(const std::string& name) const { return tmp_ + "/stage/" + name; }
  std::string StorePath(const std::string& key) const { return tmp_ + "/store/" + key; }
  std::string CacheDir() const { return tmp_ + "/cache"; }

  absl::Status PublishVersion(const std::string& version, bool update_latest = true) {
    ArtifactPublisher publisher(store_.get(), version);
    for (const auto& [name, content] : BlobContents()) {
      absl::Status added = publisher.AddFile(name, StagedPath(name));
      if (!added.ok()) return added;
    }
    return publisher.Publish(TwoTaskManifest(), update_latest);
  }

  std::vector<std::string> StoreKeys() {
    std::vector<std::string> keys;
    auto listed = store_->List("");
    EXPECT_TRUE(listed.ok()) << listed.status();
    if (listed.ok()) {
      for (const ObjectInfo& o : *listed) keys.push_back(o.key);
    }
    return keys;
  }

  std::string tmp_;
  std::unique_ptr<FileObjectStore> store_;
};

TEST(VersionNameTest, AcceptsAndRejects) {
  for (const std::string& ok :
       std::vector<std::string>{"v1", "2024-05-01_a", "1.2.3", "A-b_c.d", std::string(128, 'x')}) {
    EXPECT_TRUE(ValidateVersionName(ok).ok()) << ok;
  }
  for (const std::string& bad : std::vector<std::string>{"", ".", "..", "v/1", "v 1", "v1\n",
                                                         "LATEST", "ü", std::string(129, 'x')}) {
    const absl::Status status = ValidateVersionName(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(Message(ValidateVersionName("v/1")), HasSubstr("\"v/1\""));
}

TEST_F(ArtifactSetTest, PublishUploadsBlobsThenManifestThenLatest) {
  const absl::Status published = PublishVersion("v1");
  ASSERT_TRUE(published.ok()) << published;
  EXPECT_THAT(StoreKeys(),
              ElementsAre("LATEST", "v1/architecture.pt", "v1/manifest.json", "v1/report.md",
                          "v1/router.safetensors", "v1/shared.safetensors",
                          "v1/twin/lang.safetensors", "v1/twin/spam.safetensors"));
  EXPECT_EQ(ReadFileOrDie(StorePath("LATEST")), "v1\n");
  EXPECT_EQ(ReadFileOrDie(StorePath("v1/twin/spam.safetensors")), "spam twin vector");

  auto text = store_->Get("v1/manifest.json");
  ASSERT_TRUE(text.ok());
  auto manifest = Manifest::FromJson(*text);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->version, "v1");
  ASSERT_EQ(manifest->blobs.size(), BlobContents().size());
  for (const auto& [name, content] : BlobContents()) {
    uint64_t size_bytes = 0;
    auto digest = Sha256File(StagedPath(name), &size_bytes);
    ASSERT_TRUE(digest.ok());
    EXPECT_EQ(manifest->blobs.at(name).sha256, *digest) << name;
    EXPECT_EQ(manifest->blobs.at(name).size_bytes, content.size()) << name;
    EXPECT_EQ(size_bytes, content.size());
  }
}

TEST_F(ArtifactSetTest, RepublishingAVersionIsAlreadyExists) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  const std::string manifest_before = ReadFileOrDie(StorePath("v1/manifest.json"));
  const absl::Status again = PublishVersion("v1");
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Message(again), HasSubstr("v1"));
  EXPECT_EQ(ReadFileOrDie(StorePath("v1/manifest.json")), manifest_before);
}

TEST_F(ArtifactSetTest, MissingNamedBlobUploadsNothing) {
  ArtifactPublisher publisher(store_.get(), "v1");
  for (const auto& [name, content] : BlobContents()) {
    if (name == "router.safetensors") continue;
    ASSERT_TRUE(publisher.AddFile(name, StagedPath(name)).ok());
  }
  const absl::Status status = publisher.Publish(TwoTaskManifest());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(status), HasSubstr("router.safetensors"));
  EXPECT_THAT(StoreKeys(), IsEmpty());
}

TEST_F(ArtifactSetTest, InvalidManifestIsRefusedBeforeUpload) {
  ArtifactPublisher publisher(store_.get(), "v1");
  for (const auto& [name, content] : BlobContents()) {
    ASSERT_TRUE(publisher.AddFile(name, StagedPath(name)).ok());
  }
  Manifest manifest = TwoTaskManifest();
  manifest.router.spec.num_tasks = 3;
  const absl::Status status = publisher.Publish(manifest);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("router.spec.num_tasks"));
  EXPECT_THAT(StoreKeys(), IsEmpty());
}

TEST_F(ArtifactSetTest, AddFileRejectsBadInput) {
  ArtifactPublisher publisher(store_.get(), "v1");
  ASSERT_TRUE(publisher.AddFile("shared.safetensors", StagedPath("shared.safetensors")).ok());
  const absl::Status duplicate = publisher.AddFile("shared.safetensors", StagedPath("report.md"));
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Message(duplicate), HasSubstr("shared.safetensors"));

  const absl::Status bad_name = publisher.AddFile("../escape", StagedPath("report.md"));
  EXPECT_EQ(bad_name.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(bad_name), HasSubstr("../escape"));

  const absl::Status reserved = publisher.AddFile("manifest.json", StagedPath("report.md"));
  EXPECT_EQ(reserved.code(), absl::StatusCode::kInvalidArgument);

  const absl::Status missing = publisher.AddFile("extra.bin", tmp_ + "/nope.bin");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing), HasSubstr("nope.bin"));

  ArtifactPublisher bad_version(store_.get(), "../v1");
  const absl::Status version = bad_version.AddFile("report.md", StagedPath("report.md"));
  EXPECT_EQ(version.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(version), HasSubstr("../v1"));
  EXPECT_EQ(bad_version.Publish(TwoTaskManifest()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ArtifactSetTest, PublishWithoutUpdatingLatest) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(PublishVersion("v2", /*update_latest=*/false).ok());
  EXPECT_EQ(ReadFileOrDie(StorePath("LATEST")), "v1\n");
  auto latest = ResolveVersion(store_.get(), "LATEST");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, "v1");
}

TEST_F(ArtifactSetTest, ResolveVersion) {
  auto none = ResolveVersion(store_.get(), "");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(none.status()), HasSubstr("no published version in " + store_->uri()));

  ASSERT_TRUE(store_->Put("LATEST", "  v2 \n").ok());
  for (const std::string alias : {"", "LATEST"}) {
    auto resolved = ResolveVersion(store_.get(), alias);
    ASSERT_TRUE(resolved.ok()) << resolved.status();
    EXPECT_EQ(*resolved, "v2");
  }
  auto explicit_version = ResolveVersion(store_.get(), "v9");
  ASSERT_TRUE(explicit_version.ok());
  EXPECT_EQ(*explicit_version, "v9");
  EXPECT_EQ(ResolveVersion(store_.get(), "v/9").status().code(),
            absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(store_->Put("LATEST", "../etc\n").ok());
  EXPECT_EQ(ResolveVersion(store_.get(), "").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(ArtifactSetTest, ListVersionsOnlyCountsPublishedOnes) {
  ASSERT_TRUE(PublishVersion("v2").ok());
  ASSERT_TRUE(PublishVersion("v1-2").ok());
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(store_->Put("v3/shared.safetensors", "incomplete").ok());
  ASSERT_TRUE(store_->Put("misc/deep/manifest.json", "{}").ok());
  auto versions = ListVersions(store_.get());
  ASSERT_TRUE(versions.ok()) << versions.status();
  EXPECT_THAT(*versions, ElementsAre("v1", "v1-2", "v2"));
}

TEST_F(ArtifactSetTest, FetchVerifiesAndWritesEveryBlobAndTheManifest) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  auto set = FetchArtifactSet(store_.get(), "LATEST", CacheDir());
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->version, "v1");
  EXPECT_EQ(set->dir, CacheDir() + "/v1");
  EXPECT_EQ(set->manifest.version, "v1");
  EXPECT_EQ(set->manifest.tasks.size(), 2u);
  for (const auto& [name, content] : BlobContents()) {
    EXPECT_EQ(ReadFileOrDie(set->PathOf(name)), content) << name;
  }
  EXPECT_EQ(ReadFileOrDie(set->PathOf("manifest.json")), ReadFileOrDie(StorePath("v1/manifest.json")));
}

TEST_F(ArtifactSetTest, FetchDetectsACorruptedBlob) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  std::string bytes = ReadFileOrDie(StorePath("v1/shared.safetensors"));
  bytes[1000] ^= 0x01;
  WriteFileOrDie(StorePath("v1/shared.safetensors"), bytes);

  auto set = FetchArtifactSet(store_.get(), "v1", CacheDir());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(set.status()), HasSubstr("blob shared.safetensors of version v1"));
  EXPECT_THAT(Message(set.status()), HasSubstr("sha256 mismatch"));
  EXPECT_FALSE(fs::exists(CacheDir() + "/v1/shared.safetensors"));
  EXPECT_FALSE(fs::exists(CacheDir() + "/v1/manifest.json"));
}

TEST_F(ArtifactSetTest, FetchDetectsATruncatedBlob) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  WriteFileOrDie(StorePath("v1/twin/lang.safetensors"), "lang twin");
  auto set = FetchArtifactSet(store_.get(), "v1", CacheDir());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(set.status()), HasSubstr("twin/lang.safetensors"));
  EXPECT_THAT(Message(set.status()), HasSubstr("size mismatch"));
  EXPECT_FALSE(fs::exists(CacheDir() + "/v1/manifest.json"));
}

TEST_F(ArtifactSetTest, FetchOfABlobMissingFromTheStoreIsDataLoss) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(store_->Delete("v1/report.md").ok());
  auto set = FetchArtifactSet(store_.get(), "v1", CacheDir());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(set.status()), HasSubstr("report.md"));
}

TEST_F(ArtifactSetTest, VersionWithoutManifestIsNotFound) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(store_->Put("v2/shared.safetensors", "half published").ok());
  auto set = FetchArtifactSet(store_.get(), "v2", CacheDir());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(set.status()),
              HasSubstr("version v2 has no manifest (unpublished or incomplete)"));
  auto versions = ListVersions(store_.get());
  ASSERT_TRUE(versions.ok());
  EXPECT_THAT(*versions, ElementsAre("v1"));
}

TEST_F(ArtifactSetTest, ManifestUnderTheWrongVersionIsDataLoss) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(store_->Put("v9/manifest.json", ReadFileOrDie(StorePath("v1/manifest.json"))).ok());
  auto set = FetchArtifactSet(store_.get(), "v9", CacheDir());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(set.status()), HasSubstr("\"v1\""));
}

TEST_F(ArtifactSetTest, VerifiedCachedBlobsAreReused) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(FetchArtifactSet(store_.get(), "v1", CacheDir()).ok());
  // The store copy is gone; the verified local copy is enough.
  ASSERT_TRUE(store_->Delete("v1/twin/spam.safetensors").ok());
  auto again = FetchArtifactSet(store_.get(), "v1", CacheDir());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ReadFileOrDie(again->PathOf("twin/spam.safetensors")), "spam twin vector");
}

TEST_F(ArtifactSetTest, DamagedCachedBlobIsFetchedAgain) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(FetchArtifactSet(store_.get(), "v1", CacheDir()).ok());
  const std::string cached = CacheDir() + "/v1/router.safetensors";
  WriteFileOrDie(cached, "router weightz");  // same size, other bytes
  auto again = FetchArtifactSet(store_.get(), "v1", CacheDir());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ReadFileOrDie(cached), "router weights");
}

TEST_F(ArtifactSetTest, BlobCacheIsKeyedByDigestAndSharedAcrossVersions) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(PublishVersion("v2").ok());  // the same blobs under another version
  auto v1 = FetchArtifactSet(store_.get(), "v1", CacheDir());
  ASSERT_TRUE(v1.ok()) << v1.status();
  // v2's blobs all have digests already cached: v2 loads with its store copies gone.
  for (const auto& [name, content] : BlobContents()) {
    ASSERT_TRUE(store_->Delete("v2/" + name).ok());
  }
  auto v2 = FetchArtifactSet(store_.get(), "v2", CacheDir());
  ASSERT_TRUE(v2.ok()) << v2.status();
  for (const auto& [name, content] : BlobContents()) {
    EXPECT_EQ(ReadFileOrDie(v2->PathOf(name)), content) << name;
    const std::string digest = v2->manifest.blobs.at(name).sha256;
    const std::string cached = CacheDir() + "/" + kBlobCacheDirName + "/" + digest;
    EXPECT_TRUE(fs::equivalent(cached, v2->PathOf(name))) << name;
    EXPECT_TRUE(fs::equivalent(cached, v1->PathOf(name))) << name;
  }
}

TEST_F(ArtifactSetTest, DamagedBlobCacheEntryIsNotUsed) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ASSERT_TRUE(PublishVersion("v2").ok());
  auto v1 = FetchArtifactSet(store_.get(), "v1", CacheDir());
  ASSERT_TRUE(v1.ok()) << v1.status();
  const std::string digest = v1->manifest.blobs.at("report.md").sha256;
  const std::string cached = CacheDir() + "/" + kBlobCacheDirName + "/" + digest;
  fs::remove_all(CacheDir() + "/v1");
  WriteFileOrDie(cached, "# repor!\n");  // same size, other bytes
  auto v2 = FetchArtifactSet(store_.get(), "v2", CacheDir());
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(ReadFileOrDie(v2->PathOf("report.md")), "# report\n");
  EXPECT_EQ(ReadFileOrDie(cached), "# report\n");
  // And with the store copy gone as well, the damaged entry is refused, not served.
  fs::remove_all(CacheDir());
  ASSERT_TRUE(FetchArtifactSet(store_.get(), "v2", CacheDir()).ok());
  WriteFileOrDie(cached, "# repor!\n");
  fs::remove_all(CacheDir() + "/v2");
  ASSERT_TRUE(store_->Delete("v2/report.md").ok());
  auto again = FetchArtifactSet(store_.get(), "v2", CacheDir());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(again.status()), HasSubstr("report.md"));
}

TEST_F(ArtifactSetTest, FetchStopsWhenCancelled) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  int checks = 0;
  FetchOptions options;
  options.cancelled = [&checks] { return ++checks > 2; };
  auto set = FetchArtifactSet(store_.get(), "v1", CacheDir(), options);
  EXPECT_EQ(set.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(Message(set.status()), HasSubstr("version v1"));
  EXPECT_FALSE(fs::exists(CacheDir() + "/v1/manifest.json"));
}

TEST_F(ArtifactSetTest, PruneKeepsNamedVersionsAndTheirBlobs) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  ArtifactPublisher publisher(store_.get(), "v2");
  WriteFileOrDie(StagedPath("other/report.md"), "# another report\n");
  for (const auto& [name, content] : BlobContents()) {
    const std::string path = name == "report.md" ? StagedPath("other/report.md") : StagedPath(name);
    ASSERT_TRUE(publisher.AddFile(name, path).ok());
  }
  ASSERT_TRUE(publisher.Publish(TwoTaskManifest()).ok());
  auto v1 = FetchArtifactSet(store_.get(), "v1", CacheDir());
  auto v2 = FetchArtifactSet(store_.get(), "v2", CacheDir());
  ASSERT_TRUE(v1.ok() && v2.ok());
  const std::string blob_dir = CacheDir() + "/" + kBlobCacheDirName + "/";
  const std::string old_report = blob_dir + v1->manifest.blobs.at("report.md").sha256;
  const std::string shared = blob_dir + v1->manifest.blobs.at("shared.safetensors").sha256;

  auto pruned = PruneArtifactCache(CacheDir(), {"v2"});
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_THAT(pruned->removed_versions, ElementsAre("v1"));
  EXPECT_EQ(pruned->removed_blobs, 1);  // only v1's report was not shared with v2
  EXPECT_EQ(pruned->freed_bytes, BlobContents().at("report.md").size());
  EXPECT_FALSE(fs::exists(CacheDir() + "/v1"));
  EXPECT_FALSE(fs::exists(old_report));
  EXPECT_TRUE(fs::exists(shared));
  auto again = FetchArtifactSet(store_.get(), "v2", CacheDir());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ReadFileOrDie(again->PathOf("report.md")), "# another report\n");

  auto missing = PruneArtifactCache(tmp_ + "/no-such-cache", {});
  ASSERT_TRUE(missing.ok());
  EXPECT_THAT(missing->removed_versions, IsEmpty());
}

// A store that kills its process after a number of blob uploads: a publisher killed mid-way.
class DyingStore : public twin::testing::ForwardingObjectStore {
 public:
  static std::unique_ptr<DyingStore> Open(const std::string& root, int puts_before_death) {
    auto inner = FileObjectStore::Create(root);
    EXPECT_TRUE(inner.ok());
    return std::unique_ptr<DyingStore>(new DyingStore(std::move(*inner), puts_before_death));
  }
  absl::Status Put(absl::string_view key, absl::string_view bytes) override {
    Tick();
    return inner().Put(key, bytes);
  }
  absl::Status PutFile(absl::string_view key, const std::string& path) override {
    Tick();
    return inner().PutFile(key, path);
  }

 private:
  DyingStore(std::unique_ptr<FileObjectStore> inner, int puts)
      : ForwardingObjectStore(std::move(inner)), puts_left_(puts) {}
  void Tick() {
    if (puts_left_-- == 0) ::raise(SIGKILL);
  }
  int puts_left_;
};

TEST_F(ArtifactSetTest, PublisherKilledMidwayLeavesNothingVisibleAndRepublishes) {
  ASSERT_TRUE(PublishVersion("v1").ok());
  for (int puts : {0, 2, static_cast<int>(BlobContents().size())}) {
    EXPECT_EXIT(
        {
          auto dying = DyingStore::Open(tmp_ + "/store", puts);
          ArtifactPublisher publisher(dying.get(), "v2");
          for (const auto& [name, content] : BlobContents()) {
            if (!publisher.AddFile(name, StagedPath(name)).ok()) std::_Exit(3);
          }
          (void)publisher.Publish(TwoTaskManifest());
          std::_Exit(4);  // not reached: killed during the uploads or at the manifest
        },
        ::testing::KilledBySignal(SIGKILL), "")
        << puts;
    // Never visible: no manifest, LATEST unchanged, not listed, not fetchable.
    EXPECT_FALSE(fs::exists(StorePath("v2/manifest.json"))) << puts;
    EXPECT_EQ(ReadFileOrDie(StorePath("LATEST")), "v1\n") << puts;
    auto versions = ListVersions(store_.get());
    ASSERT_TRUE(versions.ok());
    EXPECT_THAT(*versions, ElementsAre("v1")) << puts;
    EXPECT_EQ(FetchArtifactSet(store_.get(), "v2", CacheDir()).status().code(),
              absl::StatusCode::kNotFound)
        << puts;
  }
  // The next run publishes the same version cleanly over the leftovers.
  ASSERT_TRUE(PublishVersion("v2").ok());
  auto set = FetchArtifactSet(store_.get(), "LATEST", CacheDir());
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->version, "v2");
  for (const auto& [name, content] : BlobContents()) {
    EXPECT_EQ(ReadFileOrDie(set->PathOf(name)), content) << name;
  }
}

}  // namespace
}  // namespace twin
