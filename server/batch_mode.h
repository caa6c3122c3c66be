// The per-batch choice between the fused path (one cluster key's cached theta(w), a batch of
// that key's requests) and the unfused path (theta* plus each row's own mixture, one batch of
// requests of any keys), from measured costs.
//
// Each mode's cost of a batch of n rows is modelled as a + b n, fitted by least squares with
// exponential forgetting over the batches it served (RecordBatch); a fused batch whose key has
// no resident weights also pays the measured fusion time. For the groups waiting now,
// Choose() compares the rows per second each option would serve:
//   fused(k):  min(n_k, M) / (a_f + b_f min(n_k, M) [+ fusion when k is not resident])
//   unfused:   min(N, M) / (a_u + b_u min(N, M))           N = all waiting rows, oldest first
// and takes the best, each option's rate weighed by the age of its oldest request,
// (1 + wait / aging_us): the unfused batch always holds the oldest request, a fused group its
// own; so among options of about the same rate the older goes first, and a key with few
// requests is not left waiting for the starvation bound behind larger groups of other keys
// (aging_us 0: by rate alone). Two corrections follow:
//   - hysteresis: the mode of the previous batch is kept unless the other is better by more
//     than `hysteresis` (relative), so noise in the measured costs does not flip the mode
//     every batch;
//   - no starvation: once the oldest waiting request has waited `starvation_us`, the batch must
//     include it (its key fused, or the unfused batch, which takes rows oldest first), so a
//     rare key is never left behind by popular ones.
// Before a mode has been measured its cost is unknown: the chooser then picks that mode when it
// is possible (so that it gets measured), at most once per `explore_every` batches.
//
//   BatchModeChooser chooser({.max_batch_size = 32, .unfused_available = true});
//   BatchModeDecision d = chooser.Choose(groups, now);
//   ... run the batch ...
//   chooser.RecordBatch(d.mode, rows, busy_seconds);
//
// Thread-safety: not thread-safe; the request queue calls it under its own lock.
#ifndef TWIN_SERVER_BATCH_MODE_H_
#define TWIN_SERVER_BATCH_MODE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace twin {

enum class BatchMode { kFused, kUnfused };
const char* BatchModeName(BatchMode mode);

struct BatchModeOptions {
  int max_batch_size = 8;
  bool unfused_available = false;  // native families only
  bool fused_available = true;     // false: always unfused
  double hysteresis = 0.1;
  int64_t starvation_us = 50000;
  double forgetting = 0.95;  // weight of older batches per new one in the cost fits
  int explore_every = 64;    // batches between explorations of an unmeasured mode
  int64_t aging_us = 10000;  // an option's rate counts (1 + its oldest wait / aging_us) times
};

// One cluster key's waiting requests.
struct WaitingGroup {
  std::string key;
  int pending = 0;
  absl::Time oldest;
  bool resident = true;  // fused weights cached (or the key needs no fusion)
};

struct BatchModeDecision {
  BatchMode mode = BatchMode::kFused;
  std::string key;     // fused: the group served
  int rows = 0;        // rows the batch takes
  std::string reason;  // "rate", "hysteresis", "starvation", "explore", "only mode"
  double fused_rate = 0;    // rows/s of the chosen (or best) fused option (0 if none)
  double unfused_rate = 0;  // rows/s of the unfused option (0 if unavailable)
};

// a + b n by weighted least squares with exponential forgetting.
class LinearCostFit {
 public:
  explicit LinearCostFit(double forgetting) : forgetting_(forgetting) {}
  void Add(double n, double seconds);
  bool measured() const { return weight_ > 0; }
  // Seconds for a batch of n rows. With one batch size seen so far the fit is proportional
  // (a = 0); the intercept and slope are never negative.
  double Predict(double n) const;
  double intercept() const;
  double slope() const;

 private:
  double forgetting_;
  double weight_ = 0, sum_n_ = 0, sum_s_ = 0, sum_nn_ = 0, sum_ns_ = 0;
};

class BatchModeChooser {
 public:
  explicit BatchModeChooser(BatchModeOptions options);

  // `groups` holds at least one group with pending > 0; groups with none are ignored.
  BatchModeDecision Choose(const std::vector<WaitingGroup>& groups, absl::Time now);
  // Reports a finished batch of `rows` rows in `mode` that took `seconds` (without fusion).
  void RecordBatch(BatchMode mode, int rows, double seconds);
  // Reports the time one fusion took (the fused cache's miss cost).
  void RecordFusion(double seconds);
  // Changes which modes are offered (a reload to a version with or without the unfused path).
  void SetModes(bool unfused_available, bool fused_available);

  const LinearCostFit& fused_cost() const { return fused_; }
  const LinearCostFit& unfused_cost() const { return unfused_; }
  const BatchModeOptions& options() const { return options_; }

 private:
  BatchModeOptions options_;
  LinearCostFit fused_;
  LinearCostFit unfused_;
  double fusion_seconds_ = 0;  // smoothed; 0 until measured
  bool have_last_ = false;
  BatchMode last_ = BatchMode::kFused;
  int64_t since_explore_ = 0;
};

}  // namespace twin

#endif  // TWIN_SERVER_BATCH_MODE_H_
