// twin-zoo: builds a zoo (a base model, fine-tuned experts, router examples, test splits) and
// a merge.yaml for it.
//
//   twin-zoo --out DIR [--store file:///DIR/store] [--tasks 4] [--dim 32] [--seed 7]
//       the tiny zoo: synthetic token tasks, seconds (tests and the demo)
//   twin-zoo --size lite|full --data DIR --out DIR [--store URI] [--seed 7] [--threads 1]
//       the byte-level Transformer zoo on the corpora written by bench/zoo/prepare_data.sh
//   twin-zoo --size lite|full --format hf --data DIR --out DIR
//       the same zoo as Hugging Face RoBERTa directories (bench/zoo/hf_byte_zoo.h)
//   twin-zoo --size smoke|lite --format llama --data DIR --out DIR
//       the generative zoo: Hugging Face Llama directories on the same corpora
//       (bench/zoo/llama_zoo.h)

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/zoo/byte_zoo.h"
#include "bench/zoo/hf_byte_zoo.h"
#include "bench/zoo/llama_zoo.h"
#include "bench/zoo/tiny_zoo.h"
#include "core/model/torch_runtime.h"
#include "torch/csrc/jit/python/update_graph_executor_opt.h"

ABSL_FLAG(std::string, out, "", "Output directory (required).");
ABSL_FLAG(std::string, store, "", "Object store URI written into merge.yaml (default: OUT/store).");
ABSL_FLAG(int, tasks, 4, "Number of tasks / experts.");
ABSL_FLAG(int, dim, 32, "Model width.");
ABSL_FLAG(int, vocab, 288,
          "Vocabulary size (288: every byte-tokenized text, ids 1 to 259, is valid input).");
ABSL_FLAG(int, seed, 7, "Seed for data and training.");
ABSL_FLAG(std::string, merge_method, "task_arithmetic", "merge_method written into merge.yaml.");
ABSL_FLAG(double, ratio, 0.25, "Twin rank ratio written into merge.yaml (tiny zoo).");
ABSL_FLAG(std::string, size, "", "Byte-level zoo size: lite or full (empty: the tiny zoo).");
ABSL_FLAG(std::string, data, "", "Directory with <task>.{train,validation,test}.tsv (--size).");
ABSL_FLAG(std::string, format, "torchscript",
          "Byte-level zoo: torchscript (base.pt, <task>.pt), hf (Hugging Face RoBERTa "
          "directories base/, <task>/) or llama (generative tasks, Hugging Face Llama "
          "directories; --size smoke or lite).");
ABSL_FLAG(std::string, zoo_tasks, "",
          "Tasks of the byte-level zoo (default: the format's, lang,topic,spam,manual,code; for "
          "llama spam,lang,manual,brackets,upper).");
ABSL_FLAG(int, max_eval, 0,
          "Generative zoo: validation examples scored per task (0 = the size's).");
ABSL_FLAG(int, threads, 1,
          "Byte-level zoo: intra-op threads (0 = all cores). 1 by default: a second thread "
          "measured no faster on an idle 2-core machine and 4-10x slower on a busy one");
ABSL_FLAG(int, max_train, 0,
          "Byte-level zoo: at most this many train examples per task (0 = all).");
ABSL_FLAG(int, pretrain_steps, 0, "Byte-level zoo: override the size's pretraining steps.");
ABSL_FLAG(int, finetune_steps, 0, "Byte-level zoo: override the size's fine-tuning steps.");
ABSL_FLAG(int, measure_steps, 0,
          "Byte-level zoo: only time this many training steps of the size and print s/step.");
ABSL_FLAG(std::string, router_data_only, "",
          "Byte-level zoo: only (re)write <out>/<task>.router.safetensors from this split "
          "(train or validation) and exit; no training.");
ABSL_FLAG(bool, untied_lm_head, false,
          "--format llama: give the decoder an LM head of its own instead of tying it to the "
          "embeddings, so that merge.yaml's head_pattern: '^lm_head\\.' can keep it per task.");
ABSL_FLAG(bool, rebuild_models, false,
          "Byte-level zoo: rewrite OUT/base.pt and OUT/<task>.pt with this build's module code "
          "(e.g. route_features), keeping the trained weights; no training.");
ABSL_FLAG(bool, jit_optimize, false,
          "Let the TorchScript graph executor profile and specialise (slower here: every new "
          "batch length is a new shape).");

namespace {

// Whether a flag only --format torchscript has is set (and says so).
bool TorchScriptOnlyFlagsSet() {
  if (absl::GetFlag(FLAGS_measure_steps) > 0 || absl::GetFlag(FLAGS_rebuild_models) ||
      !absl::GetFlag(FLAGS_router_data_only).empty()) {
    std::fprintf(stderr,
                 "twin-zoo: --measure_steps, --rebuild_models and --router_data_only are for "
                 "--format torchscript\n");
    return true;
  }
  return false;
}

// --format hf: the byte-level zoo as Hugging Face directories; options are the preset's.
int BuildHfZoo(const std::string& out, const twin::zoo::ByteZooOptions& options) {
  if (TorchScriptOnlyFlagsSet()) return 2;
  std::fprintf(stderr, "twin-zoo: %s\n",
               twin::ConfigureTorchRuntime({absl::GetFlag(FLAGS_threads)}).c_str());
  torch::jit::setGraphExecutorOptimize(absl::GetFlag(FLAGS_jit_optimize));
  auto report = twin::zoo::BuildHfByteZoo(absl::GetFlag(FLAGS_data), out, options);
  if (!report.ok()) {
    std::fprintf(stderr, "twin-zoo: %s\n", report.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "twin-zoo: built in %.1f s\n", report->zoo.seconds);
  std::printf("%s/merge.yaml\n", out.c_str());
  return 0;
}

// --format llama: the generative zoo, with its own presets.
int BuildLlamaZoo(const std::string& out) {
  if (TorchScriptOnlyFlagsSet()) return 2;
  auto options = twin::zoo::LlamaZooPreset(absl::GetFlag(FLAGS_size));
  if (!options.ok()) {
    std::fprintf(stderr, "twin-zoo: %s\n", options.status().ToString().c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_zoo_tasks).empty()) {
    options->tasks = absl::StrSplit(absl::GetFlag(FLAGS_zoo_tasks), ',', absl::SkipEmpty());
  }
  options->seed = absl::GetFlag(FLAGS_seed);
  options->store = absl::GetFlag(FLAGS_store);
  if (absl::GetFlag(FLAGS_untied_lm_head)) options->model.tie_word_embeddings = false;
  if (absl::GetFlag(FLAGS_max_train) > 0) {
    options->max_train_per_task = absl::GetFlag(FLAGS_max_train);
  }
  if (absl::GetFlag(FLAGS_max_eval) > 0) options->max_eval_examples = absl::GetFlag(FLAGS_max_eval);
  if (absl::GetFlag(FLAGS_pretrain_steps) > 0) {
    options->pretrain.steps = absl::GetFlag(FLAGS_pretrain_steps);
  }
  if (absl::GetFlag(FLAGS_finetune_steps) > 0) {
    options->finetune.steps = absl::GetFlag(FLAGS_finetune_steps);
  }
  std::fprintf(stderr, "twin-zoo: %s\n",
               twin::ConfigureTorchRuntime({absl::GetFlag(FLAGS_threads)}).c_str());
  auto report = twin::zoo::BuildLlamaByteZoo(absl::GetFlag(FLAGS_data), out, *options);
  if (!report.ok()) {
    std::fprintf(stderr, "twin-zoo: %s\n", report.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "twin-zoo: built in %.1f s\n", report->seconds);
  std::printf("%s/merge.yaml\n", out.c_str());
  return 0;
}

int BuildByteLevelZoo(const std::string& out) {
  if (absl::GetFlag(FLAGS_data).empty()) {
    std::fprintf(stderr, "twin-zoo: --size needs --data (run bench/zoo/prepare_data.sh)\n");
    return 2;
  }
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "llama") return BuildLlamaZoo(out);
  if (format != "torchscript" && format != "hf") {
    std::fprintf(stderr, "twin-zoo: --format is torchscript, hf or llama, not '%s'\n",
                 format.c_str());
    return 2;
  }
  auto options = twin::zoo::ByteZooPreset(absl::GetFlag(FLAGS_size));
  if (!options.ok()) {
    std::fprintf(stderr, "twin-zoo: %s\n", options.status().ToString().c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_zoo_tasks).empty()) {
    options->tasks = absl::StrSplit(absl::GetFlag(FLAGS_zoo_tasks), ',', absl::SkipEmpty());
  }
  options->seed = absl::GetFlag(FLAGS_seed);
  options->store = absl::GetFlag(FLAGS_store);
  options->max_train_per_task = absl::GetFlag(FLAGS_max_train);
  if (absl::GetFlag(FLAGS_pretrain_steps) > 0) {
    options->pretrain.steps = absl::GetFlag(FLAGS_pretrain_steps);
  }
  if (absl::GetFlag(FLAGS_finetune_steps) > 0) {
    options->finetune.steps = absl::GetFlag(FLAGS_finetune_steps);
  }
  if (format == "hf") return BuildHfZoo(out, *options);
  if (!absl::GetFlag(FLAGS_router_data_only).empty()) {
    absl::Status written = twin::zoo::WriteRouterData(absl::GetFlag(FLAGS_data), *options, out,
                                                      absl::GetFlag(FLAGS_router_data_only));
    if (!written.ok()) {
      std::fprintf(stderr, "twin-zoo: %s\n", written.ToString().c_str());
      return 1;
    }
    return 0;
  }
  if (absl::GetFlag(FLAGS_rebuild_models)) {
    absl::Status rebuilt = twin::zoo::RebuildZooModels(out, *options);
    if (!rebuilt.ok()) {
      std::fprintf(stderr, "twin-zoo: %s\n", rebuilt.ToString().c_str());
      return 1;
    }
    return 0;
  }
  std::fprintf(stderr, "twin-zoo: %s\n",
               twin::ConfigureTorchRuntime({absl::GetFlag(FLAGS_threads)}).c_str());
  torch::jit::setGraphExecutorOptimize(absl::GetFlag(FLAGS_jit_optimize));
  if (absl::GetFlag(FLAGS_measure_steps) > 0) {
    auto times = twin::zoo::MeasureStepTimes(absl::GetFlag(FLAGS_data), *options,
                                             absl::GetFlag(FLAGS_measure_steps));
    if (!times.ok()) {
      std::fprintf(stderr, "twin-zoo: %s\n", times.status().ToString().c_str());
      return 1;
    }
    std::printf("%s: %.3f s/step pretraining, %.3f s/step fine-tuning (batch %lld)\n",
                options->size.c_str(), times->pretrain_seconds, times->finetune_seconds,
                static_cast<long long>(options->pretrain.batch_size));
    return 0;
  }
  auto report = twin::zoo::BuildByteZoo(absl::GetFlag(FLAGS_data), out, *options);
  if (!report.ok()) {
    std::fprintf(stderr, "twin-zoo: %s\n", report.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "twin-zoo: built in %.1f s\n", report->seconds);
  std::printf("%s/merge.yaml\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Builds a zoo of experts and its merge.yaml.\n"
      "Usage: twin-zoo --out DIR [--size lite|full --data DIR [--format torchscript|hf]]\n"
      "       twin-zoo --out DIR --size smoke|lite --format llama --data DIR");
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fprintf(stderr, "twin-zoo: --out is required\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_size).empty()) return BuildByteLevelZoo(out);
  if (absl::GetFlag(FLAGS_format) != "torchscript") {
    std::fprintf(stderr, "twin-zoo: --format is for the byte-level zoo (--size)\n");
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
  if (store.empty())
    store = absl::StrCat("file://", std::filesystem::absolute(out).string(), "/store");
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
