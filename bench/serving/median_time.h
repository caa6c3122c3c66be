// The median wall time of a callable over repetitions, for the serving micro-benchmarks.
//
//   double s = MedianSeconds(9, [&] { engine.Fuse(w); }, /*warm_up=*/true);
//
// Thread-safety: a pure function template.
#ifndef TWIN_BENCH_SERVING_MEDIAN_TIME_H_
#define TWIN_BENCH_SERVING_MEDIAN_TIME_H_

#include <algorithm>
#include <chrono>
#include <vector>

namespace twin {

// `warm_up`: one untimed call first (caches, lazy initialisation).
template <typename F>
double MedianSeconds(int reps, F&& f, bool warm_up = false) {
  using Clock = std::chrono::steady_clock;
  if (warm_up) f();
  std::vector<double> times;
  for (int i = 0; i < std::max(1, reps); ++i) {
    const auto start = Clock::now();
    f();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace twin

#endif  // TWIN_BENCH_SERVING_MEDIAN_TIME_H_
