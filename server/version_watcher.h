// VersionWatcher: the one thread that loads artifact versions into a running server.
//
// It loads the target version until the first load succeeds (retrying every retry_interval),
// then re-checks it every poll_interval (a target of "LATEST" follows new publications), and
// runs operator reload requests in between. Loads never overlap: one thread runs them all.
// The load function is expected to be cheap when the resolved version is already serving.
//
//   VersionWatcher watcher(options, [&](const std::string& v) { return server.Load(v); });
//   watcher.Start();
//   watcher.RequestReload("v7", [](absl::StatusOr<LoadOutcome> r) { ... });  // pins v7
//   watcher.Stop();
//
// Targets: the initial target is options.target. A request with an explicit version makes it
// the target (a pin, e.g. a rollback); "" or "LATEST" makes "LATEST" the target again. The
// target changes only when the requested load succeeds.
//
// Thread-safety: all methods are thread-safe. Callbacks run on the watcher thread, or inline
// from RequestReload/Stop with UNAVAILABLE once the watcher is stopping.
#ifndef TWIN_SERVER_VERSION_WATCHER_H_
#define TWIN_SERVER_VERSION_WATCHER_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace twin {

struct LoadOutcome {
  std::string previous_version;
  std::string version;   // serving after the load
  bool changed = false;  // false when the version was already serving
  double seconds = 0.0;
};

struct VersionWatcherOptions {
  std::string target = "LATEST";
  absl::Duration retry_interval = absl::Seconds(2);  // until the first load succeeds
  absl::Duration poll_interval = absl::Seconds(30);  // afterwards; zero = never poll
};

class VersionWatcher {
 public:
  using LoadFunction = std::function<absl::StatusOr<LoadOutcome>(const std::string& version)>;
  using Done = std::function<void(absl::StatusOr<LoadOutcome>)>;

  VersionWatcher(VersionWatcherOptions options, LoadFunction load);
  ~VersionWatcher();  // Stop()

  void Start();
  // Queues an operator reload; `done` is called exactly once.
  void RequestReload(const std::string& version, Done done);
  // Wakes the thread, answers queued requests with UNAVAILABLE and joins. Idempotent. A load
  // in progress is not interrupted here (the load function watches for shutdown itself).
  void Stop();

  std::string target() const;
  bool loaded() const;  // a load has succeeded

 private:
  struct Request {
    std::string version;
    Done done;
  };
  void Run();
  bool Wake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !requests_.empty(); }

  const VersionWatcherOptions options_;
  const LoadFunction load_;
  mutable absl::Mutex mu_;
  std::deque<Request> requests_ ABSL_GUARDED_BY(mu_);
  std::string target_ ABSL_GUARDED_BY(mu_);
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// "" and "LATEST" both mean LATEST.
std::string NormalizeTarget(const std::string& version);

}  // namespace twin

#endif  // TWIN_SERVER_VERSION_WATCHER_H_
