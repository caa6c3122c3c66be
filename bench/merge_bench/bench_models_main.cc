// twin-bench-models: writes the merge benchmark's models (architecture .pt, base and expert
// safetensors, router data) and one merge.yaml per expert count.
//
//   twin-bench-models --out DIR [--experts 8] [--subsets 2,4,8] [--dim 1024] [--layers 16]
//
// merge_T<k>.yaml merges the first k experts; merge.yaml merges all of them.

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/merge_bench/bench_models.h"

ABSL_FLAG(std::string, out, "", "Output directory (required; created if missing).");
ABSL_FLAG(int, experts, 8, "Number of experts to write.");
ABSL_FLAG(std::string, subsets, "", "Comma-separated expert counts, one merge_T<k>.yaml each.");
ABSL_FLAG(int, vocab, 4096, "Vocabulary size.");
ABSL_FLAG(int, dim, 1024, "Model width.");
ABSL_FLAG(int, layers, 16, "Number of square layers.");
ABSL_FLAG(int, delta_rank, 16, "Rank of the structured part of each expert delta.");
ABSL_FLAG(double, noise_fraction, 0.3, "Dense noise norm relative to the low-rank delta's.");
ABSL_FLAG(double, ratio, 0.1, "Twin rank ratio written into the YAML files.");
ABSL_FLAG(int, router_max_epochs, 20, "router.max_epochs written into the YAML files.");
ABSL_FLAG(int, router_hidden_dim, 256, "router.hidden_dim written into the YAML files.");
ABSL_FLAG(int, seed, 1, "Seed of every random draw.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Writes the merge benchmark's models and merge.yaml files.\n"
                               "Usage: twin-bench-models --out DIR");
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fprintf(stderr, "twin-bench-models: --out is required\n");
    return 2;
  }
  std::vector<int64_t> subsets;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_subsets), ',', absl::SkipEmpty())) {
    int64_t k = 0;
    if (!absl::SimpleAtoi(part, &k) || k < 1 || k > absl::GetFlag(FLAGS_experts)) {
      std::fprintf(stderr, "twin-bench-models: --subsets entry '%s' is not in [1, --experts]\n",
                   std::string(part).c_str());
      return 2;
    }
    subsets.push_back(k);
  }
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) {
    std::fprintf(stderr, "twin-bench-models: cannot create %s: %s\n", out.c_str(),
                 ec.message().c_str());
    return 1;
  }

  twin::bench::BenchModelOptions options;
  options.experts = absl::GetFlag(FLAGS_experts);
  options.vocab = absl::GetFlag(FLAGS_vocab);
  options.dim = absl::GetFlag(FLAGS_dim);
  options.layers = absl::GetFlag(FLAGS_layers);
  options.delta_rank = absl::GetFlag(FLAGS_delta_rank);
  options.noise_fraction = absl::GetFlag(FLAGS_noise_fraction);
  options.seed = absl::GetFlag(FLAGS_seed);
  auto models = twin::bench::WriteBenchModels(out, options);
  if (!models.ok()) {
    std::fprintf(stderr, "twin-bench-models: %s\n", models.status().ToString().c_str());
    return 1;
  }

  twin::bench::MergeYamlOptions yaml;
  yaml.ratio = absl::GetFlag(FLAGS_ratio);
  yaml.router_max_epochs = absl::GetFlag(FLAGS_router_max_epochs);
  yaml.router_hidden_dim = absl::GetFlag(FLAGS_router_hidden_dim);
  yaml.output = absl::StrCat("file://", std::filesystem::absolute(out).string(), "/store");
  subsets.push_back(options.experts);
  for (size_t i = 0; i < subsets.size(); ++i) {
    yaml.num_experts = subsets[i];
    const bool all = i + 1 == subsets.size();
    const std::string path =
        all ? out + "/merge.yaml" : absl::StrCat(out, "/merge_T", subsets[i], ".yaml");
    auto status = twin::bench::WriteMergeYaml(path, *models, yaml);
    if (!status.ok()) {
      std::fprintf(stderr, "twin-bench-models: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  std::printf("%s: %lld parameters, %d experts\n", out.c_str(),
              static_cast<long long>(models->num_parameters), absl::GetFlag(FLAGS_experts));
  return 0;
}
