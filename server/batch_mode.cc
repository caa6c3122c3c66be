#include "server/batch_mode.h"

#include <algorithm>
#include <limits>

namespace twin {
namespace {

// Rows per second of a batch of `rows` rows predicted to take `seconds`.
double Rate(int rows, double seconds) {
  return rows / std::max(seconds, 1e-9);
}

}  // namespace

const char* BatchModeName(BatchMode mode) {
  return mode == BatchMode::kFused ? "fused" : "unfused";
}

void LinearCostFit::Add(double n, double seconds) {
  weight_ = forgetting_ * weight_ + 1;
  sum_n_ = forgetting_ * sum_n_ + n;
  sum_s_ = forgetting_ * sum_s_ + seconds;
  sum_nn_ = forgetting_ * sum_nn_ + n * n;
  sum_ns_ = forgetting_ * sum_ns_ + n * seconds;
}

double LinearCostFit::slope() const {
  if (weight_ <= 0 || sum_n_ <= 0) return 0;
  const double mean_n = sum_n_ / weight_, mean_s = sum_s_ / weight_;
  const double var = sum_nn_ / weight_ - mean_n * mean_n;
  // One batch size so far (or nearly): the cost is taken as proportional to the rows.
  if (var <= 1e-6 * mean_n * mean_n) return sum_s_ / sum_n_;
  const double b = (sum_ns_ / weight_ - mean_n * mean_s) / var;
  if (b < 0) return 0;                                    // cost not growing with rows
  if (mean_s - b * mean_n < 0) return sum_ns_ / sum_nn_;  // through the origin
  return b;
}

double LinearCostFit::intercept() const {
  if (weight_ <= 0) return 0;
  const double mean_n = sum_n_ / weight_, mean_s = sum_s_ / weight_;
  return std::max(0.0, mean_s - slope() * mean_n);
}

double LinearCostFit::Predict(double n) const {
  return intercept() + slope() * n;
}

BatchModeChooser::BatchModeChooser(BatchModeOptions options)
    : options_(options), fused_(options.forgetting), unfused_(options.forgetting) {
  options_.max_batch_size = std::max(1, options_.max_batch_size);
  if (!options_.fused_available) options_.unfused_available = true;
}

void BatchModeChooser::RecordBatch(BatchMode mode, int rows, double seconds) {
  if (rows <= 0 || !(seconds >= 0)) return;
  (mode == BatchMode::kFused ? fused_ : unfused_).Add(rows, seconds);
}

void BatchModeChooser::SetModes(bool unfused_available, bool fused_available) {
  options_.unfused_available = unfused_available || !fused_available;
  options_.fused_available = fused_available;
}

void BatchModeChooser::RecordFusion(double seconds) {
  if (!(seconds >= 0)) return;
  fusion_seconds_ = fusion_seconds_ == 0 ? seconds : 0.9 * fusion_seconds_ + 0.1 * seconds;
}

BatchModeDecision BatchModeChooser::Choose(const std::vector<WaitingGroup>& groups,
                                           absl::Time now) {
  const int max_rows = options_.max_batch_size;
  int total = 0;
  const WaitingGroup* oldest = nullptr;
  for (const WaitingGroup& g : groups) {
    if (g.pending <= 0) continue;
    total += g.pending;
    if (oldest == nullptr || g.oldest < oldest->oldest) oldest = &g;
  }
  BatchModeDecision d;
  if (oldest == nullptr) return d;
  const int unfused_rows = std::min(total, max_rows);
  auto fused_rows = [&](const WaitingGroup& g) { return std::min(g.pending, max_rows); };
  auto fused_rate = [&](const WaitingGroup& g) {
    const int n = fused_rows(g);
    return Rate(n, fused_.Predict(n) + (g.resident ? 0.0 : fusion_seconds_));
  };
  // The weight of an option whose oldest request arrived at `since`.
  auto age = [&](absl::Time since) {
    if (options_.aging_us <= 0) return 1.0;
    return 1.0 + std::max(0.0, absl::ToDoubleMicroseconds(now - since)) /
                     static_cast<double>(options_.aging_us);
  };
  auto fused_priority = [&](const WaitingGroup& g) { return fused_rate(g) * age(g.oldest); };
  auto fused = [&](const WaitingGroup& g, const char* reason) {
    d.mode = BatchMode::kFused;
    d.key = g.key;
    d.rows = fused_rows(g);
    d.reason = reason;
  };
  auto unfused = [&](const char* reason) {
    d.mode = BatchMode::kUnfused;
    d.key.clear();
    d.rows = unfused_rows;
    d.reason = reason;
  };
  auto finish = [&]() {
    have_last_ = true;
    if (d.mode != last_) since_explore_ = 0;
    last_ = d.mode;
    ++since_explore_;
    return d;
  };

  if (!options_.unfused_available) {
    fused(*oldest, "only mode");
    return finish();
  }
  if (!options_.fused_available) {
    unfused("only mode");
    return finish();
  }

  // The best fused group by predicted rate weighed by its age, the older one on ties.
  const WaitingGroup* best = nullptr;
  for (const WaitingGroup& g : groups) {
    if (g.pending <= 0) continue;
    if (best == nullptr) {
      best = &g;
      continue;
    }
    const double r = fused_priority(g), rb = fused_priority(*best);
    if (r > rb || (r == rb && g.oldest < best->oldest)) best = &g;
  }
  d.fused_rate = fused_.measured() ? fused_rate(*best) : 0;
  d.unfused_rate = unfused_.measured() ? Rate(unfused_rows, unfused_.Predict(unfused_rows)) : 0;
  // What the choice compares: the rates weighed by the age of each option's oldest request.
  const double fused_score = d.fused_rate * age(best->oldest);
  const double unfused_score = d.unfused_rate * age(oldest->oldest);

  // Measure a mode never measured, or not chosen for explore_every batches, once.
  const bool stale = have_last_ && since_explore_ >= options_.explore_every;
  if (!fused_.measured() || (stale && last_ == BatchMode::kUnfused)) {
    fused(*best, "explore");
    return finish();
  }
  if (!unfused_.measured() || (stale && last_ == BatchMode::kFused)) {
    unfused("explore");
    return finish();
  }

  const bool prefer_unfused = unfused_score > fused_score;
  if (prefer_unfused) {
    unfused("rate");
  } else {
    fused(*best, "rate");
  }
  if (have_last_ && d.mode != last_) {
    const double winner = std::max(unfused_score, fused_score);
    const double loser = std::min(unfused_score, fused_score);
    if (winner <= loser * (1.0 + options_.hysteresis)) {
      if (last_ == BatchMode::kUnfused) {
        unfused("hysteresis");
      } else {
        fused(*best, "hysteresis");
      }
    }
  }
  // The oldest request must be in this batch once it has waited too long.
  if (now - oldest->oldest >= absl::Microseconds(options_.starvation_us) &&
      d.mode == BatchMode::kFused && d.key != oldest->key) {
    if (fused_rate(*oldest) >= d.unfused_rate) {
      fused(*oldest, "starvation");
    } else {
      unfused("starvation");
    }
  }
  return finish();
}

}  // namespace twin
