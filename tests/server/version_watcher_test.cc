#include "server/version_watcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fake server: "publishes" versions, fails on demand, records every load it was asked for.
class FakeLoader {
 public:
  absl::StatusOr<LoadOutcome> Load(const std::string& target) {
    absl::MutexLock lock(&mu_);
    calls_.push_back(target);
    if (failures_left_ > 0) {
      --failures_left_;
      return absl::UnavailableError("store is down");
    }
    const std::string resolved = target == "LATEST" ? latest_ : target;
    if (resolved.empty()) return absl::NotFoundError("nothing published");
    LoadOutcome outcome{serving_, resolved, resolved != serving_, 0.0};
    serving_ = resolved;
    return outcome;
  }
  void Publish(const std::string& version) {
    absl::MutexLock lock(&mu_);
    latest_ = version;
  }
  void FailNext(int n) {
    absl::MutexLock lock(&mu_);
    failures_left_ = n;
  }
  // Blocks until at least `n` loads were attempted.
  void AwaitCalls(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return calls_.size() >= n; };
    mu_.Await(absl::Condition(&enough));
  }
  void AwaitServing(const std::string& version) {
    absl::MutexLock lock(&mu_);
    auto done = [&] { return serving_ == version; };
    mu_.Await(absl::Condition(&done));
  }
  std::string serving() {
    absl::MutexLock lock(&mu_);
    return serving_;
  }
  std::vector<std::string> calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  std::string latest_, serving_;
  int failures_left_ = 0;
  std::vector<std::string> calls_;
};

VersionWatcherOptions FastOptions(absl::Duration poll) {
  VersionWatcherOptions o;
  o.retry_interval = absl::Milliseconds(5);
  o.poll_interval = poll;
  return o;
}

absl::StatusOr<LoadOutcome> ReloadAndWait(VersionWatcher& watcher, const std::string& version) {
  absl::Notification done;
  absl::StatusOr<LoadOutcome> result;
  watcher.RequestReload(version, [&](absl::StatusOr<LoadOutcome> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

TEST(VersionWatcherTest, RetriesUntilTheFirstLoadSucceeds) {
  FakeLoader loader;
  loader.FailNext(3);
  loader.Publish("v1");
  VersionWatcher watcher(FastOptions(absl::Hours(1)),
                         [&](const std::string& v) { return loader.Load(v); });
  EXPECT_FALSE(watcher.loaded());
  watcher.Start();
  loader.AwaitServing("v1");
  EXPECT_THAT(loader.calls(), ElementsAre("LATEST", "LATEST", "LATEST", "LATEST"));
  watcher.Stop();
  EXPECT_TRUE(watcher.loaded());
}

TEST(VersionWatcherTest, PollingFollowsLatest) {
  FakeLoader loader;
  loader.Publish("v1");
  VersionWatcher watcher(FastOptions(absl::Milliseconds(5)),
                         [&](const std::string& v) { return loader.Load(v); });
  watcher.Start();
  loader.AwaitServing("v1");
  loader.Publish("v2");
  loader.AwaitServing("v2");
  watcher.Stop();
}

TEST(VersionWatcherTest, NoPollingWithAZeroInterval) {
  FakeLoader loader;
  loader.Publish("v1");
  VersionWatcher watcher(FastOptions(absl::ZeroDuration()),
                         [&](const std::string& v) { return loader.Load(v); });
  watcher.Start();
  loader.AwaitServing("v1");
  loader.Publish("v2");
  // An operator request is the only way to move now; it loads exactly once more.
  auto r = ReloadAndWait(watcher, "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version, "v2");
  EXPECT_EQ(r->previous_version, "v1");
  EXPECT_THAT(loader.calls(), ElementsAre("LATEST", "LATEST"));
  watcher.Stop();
}

TEST(VersionWatcherTest, ExplicitVersionPinsAndLatestUnpins) {
  FakeLoader loader;
  loader.Publish("v2");
  VersionWatcher watcher(FastOptions(absl::Milliseconds(2)),
                         [&](const std::string& v) { return loader.Load(v); });
  watcher.Start();
  loader.AwaitServing("v2");
  auto pinned = ReloadAndWait(watcher, "v1");
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_TRUE(pinned->changed);
  EXPECT_EQ(watcher.target(), "v1");
  // Polls now re-load the pin, never LATEST.
  const size_t before = loader.calls().size();
  loader.AwaitCalls(before + 3);
  EXPECT_EQ(loader.serving(), "v1");
  auto unpinned = ReloadAndWait(watcher, "LATEST");
  ASSERT_TRUE(unpinned.ok());
  EXPECT_EQ(unpinned->version, "v2");
  EXPECT_EQ(watcher.target(), "LATEST");
  watcher.Stop();
}

TEST(VersionWatcherTest, FailedRequestKeepsTheTargetAndReportsTheError) {
  FakeLoader loader;
  loader.Publish("v1");
  VersionWatcher watcher(FastOptions(absl::Hours(1)),
                         [&](const std::string& v) { return loader.Load(v); });
  watcher.Start();
  loader.AwaitServing("v1");
  loader.FailNext(1);
  auto r = ReloadAndWait(watcher, "v9");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("store is down"));
  EXPECT_EQ(watcher.target(), "LATEST");
  EXPECT_EQ(loader.serving(), "v1");
  watcher.Stop();
}

TEST(VersionWatcherTest, StopAnswersQueuedAndLaterRequests) {
  FakeLoader loader;  // nothing published: the first load keeps failing
  VersionWatcher watcher(FastOptions(absl::Hours(1)),
                         [&](const std::string& v) { return loader.Load(v); });
  watcher.Stop();  // before Start: Start is then a no-op
  watcher.Start();
  auto r = ReloadAndWait(watcher, "v1");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(loader.calls(), ::testing::IsEmpty());
}

TEST(VersionWatcherTest, StopWhileRetryingJoinsPromptly) {
  FakeLoader loader;
  VersionWatcherOptions o = FastOptions(absl::Hours(1));
  o.retry_interval = absl::Hours(1);  // would sleep for an hour if Stop did not wake it
  VersionWatcher watcher(o, [&](const std::string& v) { return loader.Load(v); });
  watcher.Start();
  loader.AwaitCalls(1);
  watcher.Stop();
  EXPECT_FALSE(watcher.loaded());
  EXPECT_EQ(loader.calls().size(), 1u);
}

}  // namespace
}  // namespace twin
