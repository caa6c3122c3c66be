// twin-decode-bench: one decode step of a published causal LM, theta* alone against the unfused
// twin path, side by side on the same caches, to see what the per-row mixtures cost per token.
//
//   twin-decode-bench --store file://ZOO/store [--version LATEST] [--batches 1,8,32]
//                     [--context 32] [--prefill 0] [--top_k 2] [--reps 31] [--threads 1]
//
// B sequences whose caches hold `context` positions each decode one token (with --prefill P,
// row 0 reads a P-token prompt instead, as when a sequence joins the batch). Each row's router
// weights put top_k tasks (round-robin over the tasks, so a batch mixes every task) at equal
// weight. The median time of:
//   static          Extend with theta* (what serving.mode: static runs per step);
//   stacked/grouped Extend with MixedParams of that strategy, made once (a step whose batch
//                   did not change since the last one);
//   +create         the same plus MixedParams::Create for the step's rows.
// and, on the line below, the ATen operator calls of one such step (nested calls counted).
// Every step's caches are rolled back after it, so each repetition sees the same context.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/serving/median_time.h"
#include "core/merge/twin_weights.h"
#include "core/model/hf_decoder.h"
#include "core/model/hf_decoder_config.h"
#include "core/model/layer_params.h"
#include "core/model/mixed_params.h"
#include "core/model/torch_runtime.h"
#include "core/store/artifact_set.h"
#include "core/store/object_store.h"

ABSL_FLAG(std::string, store, "", "Object store URI of a causal LM's artifact sets (required).");
ABSL_FLAG(std::string, version, "LATEST", "Artifact set version.");
ABSL_FLAG(std::string, cache, "/tmp/twin-decode-bench", "Local directory for fetched blobs.");
ABSL_FLAG(std::string, batches, "1,8,32", "Batch sizes B.");
ABSL_FLAG(int, context, 32, "Positions in each cache before the timed step.");
ABSL_FLAG(int, prefill, 0,
          "Row 0 reads a prompt of this many tokens in the step instead (0: every row decodes).");
ABSL_FLAG(int, top_k, 2, "Tasks with a non-zero weight per row.");
ABSL_FLAG(int, reps, 31, "Repetitions per measurement (the median is reported).");
ABSL_FLAG(int, threads, 1, "LibTorch intra-op threads.");
ABSL_FLAG(std::string, clock, "wall",
          "wall: elapsed time; thread: this thread's CPU time, which time slices lost to other "
          "processes on a shared machine do not inflate.");
ABSL_FLAG(bool, op_names, false,
          "Also list, per batch size, the operators whose call counts differ between a static "
          "step and a stacked one.");
ABSL_FLAG(bool, group_linears, true,
          "Pack each layer's q/k/v and gate/up projections (TwinWeights::GroupLinears), as "
          "twin-server does.");

namespace twin {
namespace {

void Die(const absl::Status& status) {
  std::cerr << "twin-decode-bench: " << status << "\n";
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> v) {
  if (!v.ok()) Die(v.status());
  return *std::move(v);
}

// ATen operator calls (every dispatch, nested ones too) made by f: on a model this small a
// step's time follows its operator count more than its FLOPs.
// Seconds on the --clock.
double Now() {
  static const bool thread = absl::GetFlag(FLAGS_clock) == "thread";
  if (thread) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// With --op_names, also by operator name (the bench's one thread records them).
std::atomic<int64_t> op_calls{0};
std::map<std::string, int64_t>* op_names = nullptr;

template <typename F>
int64_t CountOps(F&& f, std::map<std::string, int64_t>* names = nullptr) {
  at::enableRecordFunction(true);
  op_names = names;
  const at::CallbackHandle handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(
          [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
            op_calls.fetch_add(1, std::memory_order_relaxed);
            if (op_names != nullptr) ++(*op_names)[fn.name()];
            return nullptr;
          })
          .scopes({at::RecordScope::FUNCTION}));
  op_calls = 0;
  f();
  const int64_t n = op_calls.load();
  at::removeCallback(handle);
  op_names = nullptr;
  return n;
}

int Run() {
  const std::string uri = absl::GetFlag(FLAGS_store);
  if (uri.empty()) Die(absl::InvalidArgumentError("--store is required"));
  TorchRuntimeOptions runtime;
  runtime.intra_op_threads = absl::GetFlag(FLAGS_threads);
  std::cerr << "twin-decode-bench: " << ConfigureTorchRuntime(runtime) << "\n";
  auto store = OrDie(OpenObjectStore(uri));
  LocalArtifactSet set = OrDie(
      FetchArtifactSet(store.get(), absl::GetFlag(FLAGS_version), absl::GetFlag(FLAGS_cache)));
  const HfDecoderConfig config =
      OrDie(LoadHfDecoderConfigFile(set.PathOf(set.manifest.native.config_blob)));
  auto decoder = OrDie(HfDecoder::Create(config));
  auto twins = OrDie(TwinWeights::Load(set, c10::kCPU));
  const int packed =
      absl::GetFlag(FLAGS_group_linears) ? OrDie(twins->GroupLinears(decoder->linear_groups())) : 0;
  const DenseParams shared(
      std::map<std::string, at::Tensor>(twins->shared().begin(), twins->shared().end()));
  const int64_t tasks = static_cast<int64_t>(twins->num_tasks());
  const int context = absl::GetFlag(FLAGS_context);
  const int top_k = std::max(1, std::min<int>(absl::GetFlag(FLAGS_top_k), tasks));
  const int reps = absl::GetFlag(FLAGS_reps);
  const int prefill = std::max(0, absl::GetFlag(FLAGS_prefill));
  if (context < 1 || context + 1 + prefill > decoder->max_positions()) {
    Die(absl::InvalidArgumentError(
        absl::StrFormat("--context + --prefill must be in [1, %d]", decoder->max_positions() - 1)));
  }
  std::printf(
      "version %s: %s, %lld tasks, hidden %lld, %lld layers; context %d, prefill %d, top_k %d; "
      "%d linear groups\n",
      set.version.c_str(), decoder->family_name(), static_cast<long long>(tasks),
      static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_hidden_layers),
      context, prefill, top_k, packed);
  std::printf("%6s %12s %12s %12s %12s %12s   (ms per step; x static)\n", "B", "static", "stacked",
              "+create", "grouped", "+create");
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int b = 0;
    if (!absl::SimpleAtoi(part, &b) || b < 1) continue;
    c10::InferenceMode guard;
    std::vector<KvCache> caches;
    std::vector<KvCache*> cache_ptrs;
    std::vector<std::vector<int64_t>> prompts, step;
    std::vector<std::vector<double>> weights;
    for (int r = 0; r < b; ++r) {
      caches.push_back(OrDie(decoder->NewCache(context + 1 + prefill)));
      std::vector<int64_t> prompt;
      for (int i = 0; i < context; ++i) prompt.push_back((r * 31 + i * 7) % 200 + 10);
      prompts.push_back(prompt);
      step.push_back({(r * 13) % 200 + 10});
      if (r == 0 && prefill > 0) step.back().assign(prefill, 42);
      std::vector<double> w(tasks, 0.0);
      for (int k = 0; k < top_k; ++k) w[(r + k) % tasks] = 1.0 / top_k;
      weights.push_back(w);
    }
    for (KvCache& c : caches) cache_ptrs.push_back(&c);
    // Fill the caches once; each timed step appends one token and is then rolled back by
    // refilling (the fill itself is not timed).
    auto refill = [&] {
      for (KvCache& c : caches) c.Clear();
      OrDie(decoder->Extend(prompts, shared, cache_ptrs));
      if (prefill > 0) caches[0].Clear();  // row 0 reads its prompt in the step
    };
    auto time_step = [&](auto&& params_of) {
      std::vector<double> times;
      for (int i = 0; i < reps + 1; ++i) {
        refill();
        const double start = Now();
        auto params = params_of();
        OrDie(decoder->Extend(step, *params, cache_ptrs));
        const double s = Now() - start;
        if (i > 0) times.push_back(s);  // the first is a warm-up
      }
      std::sort(times.begin(), times.end());
      return times[times.size() / 2];
    };
    // Not owned: `shared` and `made` outlive the steps.
    auto borrow = [](const LayerParams& p) {
      return std::shared_ptr<const LayerParams>(std::shared_ptr<void>(), &p);
    };
    // One untimed step's operator calls.
    auto count_step = [&](auto&& params_of, std::map<std::string, int64_t>* names = nullptr) {
      refill();
      return CountOps(
          [&] {
            auto params = params_of();
            OrDie(decoder->Extend(step, *params, cache_ptrs));
          },
          names);
    };
    const double t_static = time_step([&] { return borrow(shared); });
    const int64_t ops_static = count_step([&] { return borrow(shared); });
    double cols[4];
    int64_t ops[4];
    int c = 0;
    for (MixStrategy strategy : {MixStrategy::kStacked, MixStrategy::kGrouped}) {
      const MixedParams made = OrDie(MixedParams::Create(*twins, weights, strategy));
      auto fresh = [&] {
        return std::shared_ptr<const LayerParams>(
            std::make_shared<MixedParams>(OrDie(MixedParams::Create(*twins, weights, strategy))));
      };
      ops[c] = count_step([&] { return borrow(made); });
      cols[c++] = time_step([&] { return borrow(made); });
      ops[c] = count_step(fresh);
      cols[c++] = time_step(fresh);
    }
    std::printf("%6d %12.3f", b, 1e3 * t_static);
    for (double t : cols) std::printf(" %7.3f %4.2fx", 1e3 * t, t_static / t);
    std::printf("\n%6s %12lld", "ops", static_cast<long long>(ops_static));
    for (int64_t n : ops) std::printf(" %13lld", static_cast<long long>(n));
    std::printf("\n");
    if (absl::GetFlag(FLAGS_op_names)) {
      std::map<std::string, int64_t> a, b;
      count_step([&] { return borrow(shared); }, &a);
      const MixedParams made = OrDie(MixedParams::Create(*twins, weights, MixStrategy::kStacked));
      count_step([&] { return borrow(made); }, &b);
      for (const auto& [name, n] : b) a[name] -= n;
      for (const auto& [name, n] : a) {
        if (n != 0) std::printf("%12s %-32s %+lld\n", "", name.c_str(), static_cast<long long>(-n));
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace twin

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "One decode step of a causal LM, theta* against the unfused twin path.\n"
      "Usage: twin-decode-bench --store URI [--batches 1,8,32] [--context 32]");
  absl::ParseCommandLine(argc, argv);
  return twin::Run();
}
