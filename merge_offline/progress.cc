#include "merge_offline/progress.h"

#include <cstdio>

namespace twin {

void Progress::Stage(const std::string& stage) {
  stage_ = stage;
  stage_start_ = std::chrono::steady_clock::now();
  last_print_ = {};
  if (!quiet_) std::fprintf(stderr, "[twin-merge] %s\n", stage.c_str());
}

void Progress::Step(int64_t done, int64_t total, const std::string& item) {
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto since_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now - last_print_).count();
  if (done != total && since_ms < kMinIntervalMs) return;
  last_print_ = now;
  const double elapsed_s = std::chrono::duration<double>(now - stage_start_).count();
  const double eta_s = done > 0 ? elapsed_s / done * (total - done) : 0.0;
  std::fprintf(stderr, "[twin-merge] %s: %lld/%lld %s, elapsed %.1fs, ETA %.1fs\n",
               stage_.c_str(), static_cast<long long>(done), static_cast<long long>(total),
               item.c_str(), elapsed_s, eta_s);
}

void Progress::Info(const std::string& line) {
  if (!quiet_) std::fprintf(stderr, "[twin-merge] %s\n", line.c_str());
}

}  // namespace twin
