// twin-eval: the quality evaluation of a zoo and its published Twin-Merging artifact set:
// base, experts, weight averaging, task arithmetic, TIES, DARE and Twin-Merging (learned
// router, oracle routing, the server's cluster keys) over a rank sweep, side by side on the
// test splits, with and without the task given. See bench/eval/eval.h.
//
//   twin-eval --zoo bench/zoo/work/zoo-lite --data bench/zoo/work/data-lite
//       --out_md bench/results/quality-lite.md --out_json /tmp/quality-lite.json
//
// A causal language model's version (the generative zoo, twin-zoo --format llama) gets the
// generative evaluation (bench/eval/generative_eval.h: exact match and target loss of
// (prompt, target) examples; no --data: the validation examples are ZOO/<task>.validation.jsonl):
//
//   twin-eval --zoo bench/zoo/work/zoo-gen --out_md bench/results/quality-generative.md
//
// The store defaults to file://ZOO/store (where twin-zoo's merge.yaml publishes), the cache
// to ZOO/cache. Progress goes to stderr; the markdown also goes to stdout without --out_md.

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/eval/eval.h"
#include "bench/eval/eval_inputs.h"
#include "bench/eval/eval_report.h"
#include "bench/eval/generative_eval.h"
#include "core/model/torch_runtime.h"
#include "torch/csrc/jit/python/update_graph_executor_opt.h"

ABSL_FLAG(std::string, zoo, "", "Zoo directory written by twin-zoo --size (required).");
ABSL_FLAG(std::string, data, "",
          "Directory with <task>.validation.tsv, for choosing lambdas (empty: default lambdas).");
ABSL_FLAG(std::string, store, "", "Artifact store URI (default: file://ZOO/store).");
ABSL_FLAG(std::string, version, "LATEST", "Artifact set version.");
ABSL_FLAG(std::string, cache, "", "Local directory for fetched blobs (default: ZOO/cache).");
ABSL_FLAG(int, max_test, 0, "Test rows per task (0 = all; the first rows interleave classes).");
ABSL_FLAG(int, max_val, 0, "Validation rows per task for the lambda search (0 = all).");
ABSL_FLAG(std::string, out_md, "", "Markdown report (default: stdout).");
ABSL_FLAG(std::string, out_json, "", "JSON results.");
ABSL_FLAG(int, threads, 1, "Intra-op threads (at::set_num_threads; 0 = all cores).");
ABSL_FLAG(int, batch_size, 256, "Rows per forward pass.");
ABSL_FLAG(std::string, lambdas, "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
          "Lambda grid of task arithmetic and DARE.");
ABSL_FLAG(std::string, ties_lambdas, "0.6,0.8,1.0,1.2,1.4", "Lambda grid of TIES.");
ABSL_FLAG(double, ties_density, 0.2, "TIES: fraction of each task vector kept.");
ABSL_FLAG(double, dare_drop, 0.9, "DARE: drop probability.");
ABSL_FLAG(std::string, ratios, "0.01,0.05,0.1,0.25,1.0", "Twin rank ratios to sweep.");
ABSL_FLAG(double, energy, 0.9, "Also the energy rank policy at this fraction (0 = not).");
ABSL_FLAG(std::string, key_grids, "10,4", "Cluster key grids (server/cluster_key.h).");
ABSL_FLAG(int, key_top_k, 2, "Cluster key top_k (the server's default).");
ABSL_FLAG(double, temperature, 1.0, "Router softmax temperature.");
ABSL_FLAG(double, target, 95.0, "Normalized score the smallest rank ratio must keep.");
ABSL_FLAG(double, min_expert_exact, 0.1,
          "Generative: tasks whose expert's exact match is below this are left out of the "
          "exact-match normalized score.");
ABSL_FLAG(int, seed, 7, "Seed of DARE masks and the randomized SVD.");
ABSL_FLAG(bool, jit_optimize, false,
          "Let the TorchScript executor profile and specialise (slower with varying lengths).");
ABSL_FLAG(std::string, engine, "auto",
          "auto (the version's native model when it has one, else TorchScript), torchscript "
          "or native.");
ABSL_FLAG(bool, quiet, false, "No progress on stderr.");

namespace {

template <typename T>
bool ParseList(const std::string& flag, const std::string& text, std::vector<T>* out) {
  out->clear();
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v = 0;
    if (!absl::SimpleAtod(part, &v)) {
      std::fprintf(stderr, "twin-eval: --%s: '%s' is not a number\n", flag.c_str(),
                   std::string(part).c_str());
      return false;
    }
    out->push_back(static_cast<T>(v));
  }
  return true;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) std::fprintf(stderr, "twin-eval: cannot write %s\n", path.c_str());
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Evaluates merging methods and Twin-Merging on a zoo's test splits.\n"
      "Usage: twin-eval --zoo DIR [--data DIR] [--out_md FILE] [--out_json FILE]");
  const std::string command = twin::eval::CommandLine(argc, argv);
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_zoo).empty()) {
    std::fprintf(stderr, "twin-eval: --zoo is required\n");
    return 2;
  }
  twin::eval::EvalOptions options;
  if (!ParseList("lambdas", absl::GetFlag(FLAGS_lambdas), &options.lambdas) ||
      !ParseList("ties_lambdas", absl::GetFlag(FLAGS_ties_lambdas), &options.ties_lambdas) ||
      !ParseList("ratios", absl::GetFlag(FLAGS_ratios), &options.ratios) ||
      !ParseList("key_grids", absl::GetFlag(FLAGS_key_grids), &options.key_grids)) {
    return 2;
  }
  options.ties_density = absl::GetFlag(FLAGS_ties_density);
  options.dare_drop_rate = absl::GetFlag(FLAGS_dare_drop);
  options.energy = absl::GetFlag(FLAGS_energy);
  options.key_top_k = absl::GetFlag(FLAGS_key_top_k);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.target_normalized = absl::GetFlag(FLAGS_target);
  options.min_expert_exact = absl::GetFlag(FLAGS_min_expert_exact);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.progress = !absl::GetFlag(FLAGS_quiet);
  options.engine = absl::GetFlag(FLAGS_engine);

  const int threads = absl::GetFlag(FLAGS_threads);
  const std::string runtime = twin::ConfigureTorchRuntime({threads});
  if (options.progress) std::fprintf(stderr, "twin-eval: %s\n", runtime.c_str());
  torch::jit::setGraphExecutorOptimize(absl::GetFlag(FLAGS_jit_optimize));

  twin::eval::EvalSources sources;
  sources.zoo_dir = absl::GetFlag(FLAGS_zoo);
  sources.data_dir = absl::GetFlag(FLAGS_data);
  sources.store_uri = absl::GetFlag(FLAGS_store);
  sources.version = absl::GetFlag(FLAGS_version);
  sources.cache_dir = absl::GetFlag(FLAGS_cache);
  sources.max_test = absl::GetFlag(FLAGS_max_test);
  sources.max_validation = absl::GetFlag(FLAGS_max_val);
  auto inputs = twin::eval::LoadEvalInputs(sources);
  if (!inputs.ok()) {
    std::fprintf(stderr, "twin-eval: %s\n", inputs.status().ToString().c_str());
    return 1;
  }
  twin::eval::RunInfo info;
  info.command = command;
  info.machine = twin::eval::DescribeMachine();
  info.date = twin::eval::NowUtc();
  info.threads = threads;
  info.zoo_dir = sources.zoo_dir;
  info.data_dir = sources.data_dir;
  std::string md, json;
  if (inputs->generative()) {
    auto result = twin::eval::RunGenerativeEvaluation(*inputs, options);
    if (!result.ok()) {
      std::fprintf(stderr, "twin-eval: %s\n", result.status().ToString().c_str());
      return 1;
    }
    md = twin::eval::GenerativeMarkdown(*result, info);
    json = twin::eval::GenerativeJson(*result, info);
  } else {
    auto result = twin::eval::RunEvaluation(*inputs, options);
    if (!result.ok()) {
      std::fprintf(stderr, "twin-eval: %s\n", result.status().ToString().c_str());
      return 1;
    }
    md = twin::eval::ResultMarkdown(*result, info);
    json = twin::eval::ResultJson(*result, info);
  }
  if (absl::GetFlag(FLAGS_out_md).empty()) {
    std::printf("%s", md.c_str());
  } else if (!WriteFile(absl::GetFlag(FLAGS_out_md), md)) {
    return 1;
  }
  if (!absl::GetFlag(FLAGS_out_json).empty() && !WriteFile(absl::GetFlag(FLAGS_out_json), json)) {
    return 1;
  }
  return 0;
}
