// twin-zoo: builds the tiny zoo (a base model and fine-tuned experts on synthetic token tasks)
// and a merge.yaml for it.
//
//   twin-zoo --out DIR [--store file:///DIR/store] [--tasks 4] [--dim 32] [--seed 7]

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "bench/zoo/tiny_zoo.h"

ABSL_FLAG(std::string, out, "", "Output directory (required).");
ABSL_FLAG(std::string, store, "", "Object store URI written into merge.yaml (default: OUT/store).");
ABSL_FLAG(int, tasks, 4, "Number of tasks / experts.");
ABSL_FLAG(int, dim, 32, "Model width.");
ABSL_FLAG(int, vocab, 128, "Vocabulary size.");
ABSL_FLAG(int, seed, 7, "Seed for data and training.");
ABSL_FLAG(std::string, merge_method, "task_arithmetic", "merge_method written into merge.yaml.");
ABSL_FLAG(double, ratio, 0.25, "Twin rank ratio written into merge.yaml.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Builds the tiny zoo and its merge.yaml.\n"
                               "Usage: twin-zoo --out DIR");
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fprintf(stderr, "twin-zoo: --out is required\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_tasks) < 2 || absl::GetFlag(FLAGS_dim) < 2 ||
      absl::GetFlag(FLAGS_vocab) < 2 * absl::GetFlag(FLAGS_tasks) * 3) {
    std::fprintf(stderr, "twin-zoo: need --tasks >= 2, --dim >= 2, --vocab >= 6 * tasks\n");
    return 2;
  }
  std::filesystem::create_directories(out);
  twin::zoo::TinyZooOptions options;
  options.num_tasks = absl::GetFlag(FLAGS_tasks);
  options.dim = absl::GetFlag(FLAGS_dim);
  options.vocab = absl::GetFlag(FLAGS_vocab);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.train_steps = 80;
  options.router_examples = 200;
  options.test_examples = 300;
  auto zoo = twin::zoo::BuildTinyZoo(out, options);
  if (!zoo.ok()) {
    std::fprintf(stderr, "twin-zoo: %s\n", zoo.status().ToString().c_str());
    return 1;
  }
  std::string store = absl::GetFlag(FLAGS_store);
  if (store.empty()) store = absl::StrCat("file://", std::filesystem::absolute(out).string(), "/store");
  std::ofstream yaml(out + "/merge.yaml");
  yaml << "# Twin-Merging of the tiny zoo (written by twin-zoo).\n"
       << "merge_method: " << absl::GetFlag(FLAGS_merge_method) << "\n"
       << "base_model: base.pt\nmodels:\n";
  for (size_t t = 0; t < zoo->task_names.size(); ++t) {
    const auto& name = zoo->task_names[t];
    yaml << "  - model: " << name << ".pt\n    name: " << name << "\n    labels: [";
    for (int64_t c = 0; c < zoo->num_classes[t]; ++c) yaml << (c ? ", " : "") << "class" << c;
    yaml << "]\n    router_data: " << name << ".router.safetensors\n";
  }
  yaml << "twin: {rank_policy: ratio, ratio: " << absl::GetFlag(FLAGS_ratio) << "}\n"
       << "router: {max_epochs: 100, patience: 10}\n"
       << "output: " << store << "\nseed: " << absl::GetFlag(FLAGS_seed) << "\n";
  yaml.close();
  if (!yaml) {
    std::fprintf(stderr, "twin-zoo: cannot write %s/merge.yaml\n", out.c_str());
    return 1;
  }
  std::printf("%s/merge.yaml\n", out.c_str());
  return 0;
}
