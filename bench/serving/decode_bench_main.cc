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
// Every step's caches are rolled back after it, so each repetition sees the same context.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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
      "version %s: %s, %lld tasks, hidden %lld, %lld layers; context %d, prefill %d, top_k %d\n",
      set.version.c_str(), decoder->family_name(), static_cast<long long>(tasks),
      static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_hidden_layers),
      context, prefill, top_k);
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
        const auto start = std::chrono::steady_clock::now();
        auto params = params_of();
        OrDie(decoder->Extend(step, *params, cache_ptrs));
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (i > 0) times.push_back(s);  // the first is a warm-up
      }
      std::sort(times.begin(), times.end());
      return times[times.size() / 2];
    };
    // Not owned: `shared` and `made` outlive the steps.
    auto borrow = [](const LayerParams& p) {
      return std::shared_ptr<const LayerParams>(std::shared_ptr<void>(), &p);
    };
    const double t_static = time_step([&] { return borrow(shared); });
    double cols[4];
    int c = 0;
    for (MixStrategy strategy : {MixStrategy::kStacked, MixStrategy::kGrouped}) {
      const MixedParams made = OrDie(MixedParams::Create(*twins, weights, strategy));
      cols[c++] = time_step([&] { return borrow(made); });
      cols[c++] = time_step([&] {
        return std::shared_ptr<const LayerParams>(
            std::make_shared<MixedParams>(OrDie(MixedParams::Create(*twins, weights, strategy))));
      });
    }
    std::printf("%6d %12.3f", b, 1e3 * t_static);
    for (double t : cols) std::printf(" %7.3f %4.2fx", 1e3 * t, t_static / t);
    std::printf("\n");
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
