#include "server/version_watcher.h"

#include <utility>

namespace twin {

std::string NormalizeTarget(const std::string& version) {
  return version.empty() ? "LATEST" : version;
}

VersionWatcher::VersionWatcher(VersionWatcherOptions options, LoadFunction load)
    : options_(std::move(options)), load_(std::move(load)),
      target_(NormalizeTarget(options_.target)) {}

VersionWatcher::~VersionWatcher() { Stop(); }

void VersionWatcher::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stop_) return;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void VersionWatcher::RequestReload(const std::string& version, Done done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      requests_.push_back(Request{version, std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError("server is shutting down"));
}

void VersionWatcher::Stop() {
  std::deque<Request> orphans;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    orphans.swap(requests_);
  }
  for (Request& r : orphans) r.done(absl::UnavailableError("server is shutting down"));
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

std::string VersionWatcher::target() const {
  absl::MutexLock lock(&mu_);
  return target_;
}

bool VersionWatcher::loaded() const {
  absl::MutexLock lock(&mu_);
  return loaded_;
}

void VersionWatcher::Run() {
  absl::Time next_check = absl::InfinitePast();
  while (true) {
    Request request;
    bool have_request = false;
    std::string target;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithDeadline(absl::Condition(this, &VersionWatcher::Wake), next_check);
      if (stop_) return;
      if (!requests_.empty()) {
        request = std::move(requests_.front());
        requests_.pop_front();
        have_request = true;
      }
      target = have_request ? NormalizeTarget(request.version) : target_;
    }
    absl::StatusOr<LoadOutcome> outcome = load_(target);
    {
      absl::MutexLock lock(&mu_);
      if (outcome.ok()) {
        loaded_ = true;
        if (have_request) target_ = target;
      }
      const bool retrying = !loaded_;
      if (!have_request || outcome.ok()) {
        next_check = absl::Now() + (retrying ? options_.retry_interval : options_.poll_interval);
        if (!retrying && options_.poll_interval <= absl::ZeroDuration()) {
          next_check = absl::InfiniteFuture();
        }
      }
    }
    if (have_request) request.done(std::move(outcome));
  }
}

}  // namespace twin
