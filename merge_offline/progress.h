// Progress lines on stderr for long jobs: "[twin-merge] merge: tensor 12/40 enc.weight, ETA 3s".
// Step lines are throttled (at most one per kMinIntervalMs, plus the last one).
//
// Thread-safety: not thread-safe; one per job.
#ifndef TWIN_MERGE_OFFLINE_PROGRESS_H_
#define TWIN_MERGE_OFFLINE_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace twin {

class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet) {}
  void Stage(const std::string& stage);
  void Step(int64_t done, int64_t total, const std::string& item);
  void Info(const std::string& line);

 private:
  static constexpr int64_t kMinIntervalMs = 500;
  bool quiet_;
  std::string stage_;
  std::chrono::steady_clock::time_point stage_start_;
  std::chrono::steady_clock::time_point last_print_;
};

}  // namespace twin

#endif  // TWIN_MERGE_OFFLINE_PROGRESS_H_
