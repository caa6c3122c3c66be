// Hot reload of twin-server, in process on loopback: LATEST polling, Admin.Reload, pins, the
// digest-keyed cache, and the faults (store down at start and during a reload, a corrupted
// blob, a version without a manifest, shutdown during a reload).
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "core/store/manifest.h"
#include "core/status_macros.h"
#include "server/twin_server.h"
#include "tests/testing/forwarding_store.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/temp_dir.h"
#include "twinmerge/v1/admin.grpc.pb.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using twin::testing::ReadFileOrDie;
using twin::testing::TempDir;
using twin::testing::WriteFileOrDie;

// What the tests do to the store the server sees.
struct StoreControl {
  std::atomic<bool> down{false};
  absl::Mutex mu;
  bool block_fetches ABSL_GUARDED_BY(mu) = false;  // GetToFile waits until unblocked
  int blocked ABSL_GUARDED_BY(mu) = 0;             // fetches waiting now
};

// A file store that can be "unreachable" or made to hang in blob downloads.
class ControlledStore : public twin::testing::ForwardingObjectStore {
 public:
  ControlledStore(std::unique_ptr<ObjectStore> inner, std::shared_ptr<StoreControl> control)
      : ForwardingObjectStore(std::move(inner)), control_(std::move(control)) {}
  absl::StatusOr<std::string> Get(absl::string_view key) override {
    if (control_->down) return Down();
    return ForwardingObjectStore::Get(key);
  }
  absl::Status GetToFile(absl::string_view key, const std::string& path) override {
    if (control_->down) return Down();
    {
      absl::MutexLock lock(&control_->mu);
      ++control_->blocked;
      control_->mu.Await(absl::Condition(+[](StoreControl* c) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return !c->block_fetches;
      }, control_.get()));
      --control_->blocked;
    }
    return ForwardingObjectStore::GetToFile(key, path);
  }
  absl::Status Put(absl::string_view key, absl::string_view bytes) override {
    if (control_->down) return Down();
    return ForwardingObjectStore::Put(key, bytes);
  }
  absl::Status PutFile(absl::string_view key, const std::string& path) override {
    if (control_->down) return Down();
    return ForwardingObjectStore::PutFile(key, path);
  }
  absl::StatusOr<ObjectInfo> Head(absl::string_view key) override {
    if (control_->down) return Down();
    return ForwardingObjectStore::Head(key);
  }
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) override {
    if (control_->down) return Down();
    return ForwardingObjectStore::List(prefix);
  }
  absl::Status Delete(absl::string_view key) override {
    if (control_->down) return Down();
    return ForwardingObjectStore::Delete(key);
  }

 private:
  absl::Status Down() const {
    return absl::UnavailableError(absl::StrCat(uri(), ": connection refused (test)"));
  }
  std::shared_ptr<StoreControl> control_;
};

class ReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::copy(twin::testing::ServedArtifacts::Get().store(), store_root(),
             fs::copy_options::recursive);
    auto store = FileObjectStore::Create(store_root());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  std::string store_root() const { return dir_.Join("store"); }
  std::string cache_dir() const { return dir_.Join("cache"); }

  ServerConfig Config() {
    ServerConfig c = twin::testing::LoopbackServerConfig(cache_dir());
    c.artifact_uri = store_root();
    c.reload.retry_interval_ms = 20;
    c.reload.poll_interval_ms = 0;  // tests that poll set it
    return c;
  }

  void Start(const ServerConfig& config, bool watch) {
    auto control = control_;
    const std::string root = store_root();
    using StoreOr = absl::StatusOr<std::unique_ptr<ObjectStore>>;
    auto server = TwinServer::Start(
        config, [control, root](const std::string&) -> StoreOr {
          ASSIGN_OR_RETURN(std::unique_ptr<FileObjectStore> inner, FileObjectStore::Create(root));
          return std::unique_ptr<ObjectStore>(
              std::make_unique<ControlledStore>(std::move(inner), control));
        });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    if (watch) server_->StartWatching();
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                       grpc::InsecureChannelCredentials());
    infer_ = twinmerge::v1::TwinMerge::NewStub(channel);
    admin_ = twinmerge::v1::Admin::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->admin_port()),
                            grpc::InsecureChannelCredentials()));
  }

  // Publishes `version` with v1's blobs (so every digest is already cached once v1 is).
  void PublishCopyOfV1(const std::string& version, bool update_latest = true) {
    auto manifest = Manifest::FromJson(ReadFileOrDie(store_root() + "/v1/manifest.json"));
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    ArtifactPublisher publisher(store_.get(), version);
    for (const auto& [name, ref] : manifest->blobs) {
      ASSERT_TRUE(publisher.AddFile(name, store_root() + "/v1/" + name).ok());
    }
    ASSERT_TRUE(publisher.Publish(*manifest, update_latest).ok());
  }

  bool WaitForVersion(const std::string& version, absl::Duration limit = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + limit;
    while (absl::Now() < deadline) {
      if (server_->version() == version && server_->serving()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  grpc::Status Reload(const std::string& version, twinmerge::v1::ReloadResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    twinmerge::v1::ReloadRequest request;
    request.set_version(version);
    return admin_->Reload(&context, request, response);
  }

  twinmerge::v1::ServingStatus Status() {
    grpc::ClientContext context;
    twinmerge::v1::ServingStatus status;
    EXPECT_TRUE(admin_->GetServingStatus(&context, {}, &status).ok());
    return status;
  }

  // One Infer call with text input; returns the version that answered ("" on error).
  std::string InferVersion() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    twinmerge::v1::InferRequest request;
    request.set_text("hello world");
    twinmerge::v1::InferResponse response;
    grpc::Status status = infer_->Infer(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.artifact_version();
  }

  double Metric(const std::string& series) {
    const std::string text = server_->metrics().Scrape();
    const size_t at = text.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + series.size() + 2));
  }

  TempDir dir_;
  std::unique_ptr<FileObjectStore> store_;
  std::shared_ptr<StoreControl> control_ = std::make_shared<StoreControl>();
  std::unique_ptr<TwinServer> server_;
  std::unique_ptr<twinmerge::v1::TwinMerge::Stub> infer_;
  std::unique_ptr<twinmerge::v1::Admin::Stub> admin_;
};

TEST_F(ReloadTest, PollingFollowsLatestAndRequestsKeepTheirVersion) {
  ServerConfig c = Config();
  c.reload.poll_interval_ms = 20;
  Start(c, /*watch=*/true);
  ASSERT_TRUE(WaitForVersion("v1"));
  EXPECT_EQ(InferVersion(), "v1");

  // Requests admitted before the swap answer from v1, whatever the timing of the swap.
  std::vector<std::string> before(8);
  std::vector<absl::Notification> done(8);
  for (int i = 0; i < 8; ++i) {
    twinmerge::v1::InferRequest request;
    request.set_text(absl::StrCat("request ", i));
    server_->Submit(request, absl::InfiniteFuture(), std::make_shared<std::atomic<bool>>(false), "",
                    [&, i](absl::StatusOr<twinmerge::v1::InferResponse> r) {
                      before[i] = r.ok() ? r->artifact_version() : r.status().ToString();
                      done[i].Notify();
                    });
  }
  PublishCopyOfV1("v2");
  ASSERT_TRUE(WaitForVersion("v2"));
  for (int i = 0; i < 8; ++i) {
    done[i].WaitForNotification();
    EXPECT_EQ(before[i], "v1") << i;
  }
  EXPECT_EQ(InferVersion(), "v2");
  EXPECT_EQ(Metric("twin_reloads_total{outcome=\"loaded\"}"), 2);
  EXPECT_EQ(Metric("twin_artifact_info{version=\"v2\"}"), 1);
  EXPECT_EQ(Metric("twin_reload_failures_total"), 0);
  const auto status = Status();
  EXPECT_EQ(status.version(), "v2");
  EXPECT_EQ(status.target(), "LATEST");
  EXPECT_EQ(status.reloads(), 2u);
  EXPECT_GT(status.last_reload_unix_ms(), 0);
  // v2 shares every blob with v1: the cache holds each digest once, linked from both versions.
  const auto manifest = Manifest::FromJson(ReadFileOrDie(cache_dir() + "/v2/manifest.json"));
  ASSERT_TRUE(manifest.ok());
  for (const auto& [name, ref] : manifest->blobs) {
    EXPECT_TRUE(fs::equivalent(cache_dir() + "/v1/" + name, cache_dir() + "/v2/" + name)) << name;
  }
}

TEST_F(ReloadTest, AdminReloadPinsAVersionAndWarmsTheNewCache) {
  PublishCopyOfV1("v2", /*update_latest=*/false);
  ServerConfig c = Config();
  c.reload.keep_versions = 1;
  Start(c, /*watch=*/true);
  ASSERT_TRUE(WaitForVersion("v1"));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(InferVersion(), "v1");  // fuses and caches a key
  ASSERT_GT(Metric("twin_cache_entries"), 0);

  twinmerge::v1::ReloadResponse response;
  grpc::Status status = Reload("v2", &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.previous_version(), "v1");
  EXPECT_EQ(response.version(), "v2");
  EXPECT_TRUE(response.changed());
  EXPECT_EQ(Status().target(), "v2");
  // The hot cluster key was pre-fused into v2's own cache before it served anything.
  EXPECT_GT(Metric("twin_cache_entries"), 0);
  EXPECT_EQ(InferVersion(), "v2");
  // keep_versions: 1 removed v1 from the local cache.
  EXPECT_FALSE(fs::exists(cache_dir() + "/v1"));
  EXPECT_TRUE(fs::exists(cache_dir() + "/v2/manifest.json"));

  // Reloading the serving version changes nothing; "" goes back to following LATEST (v1).
  ASSERT_TRUE(Reload("v2", &response).ok());
  EXPECT_FALSE(response.changed());
  ASSERT_TRUE(Reload("", &response).ok());
  EXPECT_EQ(response.version(), "v1");
  EXPECT_EQ(Status().target(), "LATEST");
}

TEST_F(ReloadTest, CorruptedBlobIsRejectedAndTheOldVersionKeepsServing) {
  Start(Config(), /*watch=*/true);
  ASSERT_TRUE(WaitForVersion("v1"));
  PublishCopyOfV1("v2");
  // A blob whose digest v1 never had: the router of v2, with one byte flipped.
  std::string bytes = ReadFileOrDie(store_root() + "/v2/router.safetensors");
  bytes.back() ^= 0x01;
  // Give it a digest not in the cache by altering a copy the cache never saw.
  fs::remove_all(cache_dir());
  WriteFileOrDie(store_root() + "/v2/router.safetensors", bytes);

  twinmerge::v1::ReloadResponse response;
  grpc::Status status = Reload("", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(status.error_message(), HasSubstr("router.safetensors"));
  EXPECT_THAT(status.error_message(), HasSubstr("sha256 mismatch"));
  EXPECT_EQ(server_->version(), "v1");
  EXPECT_TRUE(server_->serving());
  EXPECT_EQ(InferVersion(), "v1");
  EXPECT_EQ(Metric("twin_reload_failures_total"), 1);
  EXPECT_EQ(Metric("twin_artifact_info{version=\"v1\"}"), 1);
  const auto s = Status();
  EXPECT_EQ(s.reload_failures(), 1u);
  EXPECT_THAT(s.last_error(), HasSubstr("router.safetensors"));
  EXPECT_FALSE(fs::exists(cache_dir() + "/v2/manifest.json"));
}

TEST_F(ReloadTest, VersionWithoutManifestIsNeverServed) {
  Start(Config(), /*watch=*/false);
  ASSERT_TRUE(server_->LoadVersion().ok());
  // A half-published version: blobs but no manifest, and LATEST pointing at it anyway.
  fs::create_directories(store_root() + "/v3");
  fs::copy_file(store_root() + "/v1/shared.safetensors", store_root() + "/v3/shared.safetensors");
  ASSERT_TRUE(store_->Put("LATEST", "v3\n").ok());
  auto outcome = server_->Load("");
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(outcome.status().message()), HasSubstr("version v3 has no manifest"));
  EXPECT_EQ(server_->version(), "v1");
  EXPECT_EQ(InferVersion(), "v1");
}

TEST_F(ReloadTest, StoreUnreachableAtStartThenUp) {
  control_->down = true;
  Start(Config(), /*watch=*/true);
  // Not ready while the store is down, and the watcher keeps trying.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(server_->serving());
  EXPECT_EQ(server_->version(), "");
  EXPECT_GE(Metric("twin_reload_failures_total"), 2);
  EXPECT_THAT(Status().last_error(), HasSubstr("connection refused"));
  control_->down = false;
  ASSERT_TRUE(WaitForVersion("v1"));
  EXPECT_EQ(InferVersion(), "v1");
  EXPECT_EQ(Status().last_error(), "");
}

TEST_F(ReloadTest, StoreDownDuringReloadKeepsServing) {
  ServerConfig c = Config();
  c.reload.poll_interval_ms = 20;
  Start(c, /*watch=*/true);
  ASSERT_TRUE(WaitForVersion("v1"));
  control_->down = true;
  PublishCopyOfV1("v2");  // through our own handle: the server cannot see it
  const double failures_before = Metric("twin_reload_failures_total");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Metric("twin_reload_failures_total") < failures_before + 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(Metric("twin_reload_failures_total"), failures_before + 2);
  EXPECT_EQ(InferVersion(), "v1");
  EXPECT_TRUE(server_->serving());
  control_->down = false;
  ASSERT_TRUE(WaitForVersion("v2"));
}

TEST_F(ReloadTest, ShutdownDuringReloadCancelsItAndDrains) {
  Start(Config(), /*watch=*/true);
  ASSERT_TRUE(WaitForVersion("v1"));
  PublishCopyOfV1("v2", /*update_latest=*/false);
  fs::remove_all(cache_dir() + "/" + kBlobCacheDirName);  // v2 must download its blobs
  {
    absl::MutexLock lock(&control_->mu);
    control_->block_fetches = true;
  }
  absl::Notification answered;
  absl::StatusOr<LoadOutcome> reload;
  server_->RequestReload("v2", [&](absl::StatusOr<LoadOutcome> r) {
    reload = std::move(r);
    answered.Notify();
  });
  {
    absl::MutexLock lock(&control_->mu);
    control_->mu.Await(absl::Condition(
        +[](StoreControl* c) ABSL_NO_THREAD_SAFETY_ANALYSIS { return c->blocked > 0; },
        control_.get()));
  }
  std::thread shutdown([this] { server_->Shutdown(); });
  // Shutdown waits for the load; let the blocked download finish: the load stops at the next
  // blob instead of completing.
  absl::SleepFor(absl::Milliseconds(50));
  {
    absl::MutexLock lock(&control_->mu);
    control_->block_fetches = false;
  }
  shutdown.join();
  ASSERT_TRUE(answered.HasBeenNotified());
  EXPECT_FALSE(reload.ok());
  EXPECT_TRUE(absl::IsCancelled(reload.status()) || absl::IsUnavailable(reload.status()))
      << reload.status();
  EXPECT_EQ(server_->version(), "v1");
  EXPECT_FALSE(server_->serving());
  EXPECT_FALSE(fs::exists(cache_dir() + "/v2/manifest.json"));
}

}  // namespace
}  // namespace twin
