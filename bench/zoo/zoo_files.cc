#include "bench/zoo/zoo_files.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/io/safetensors.h"
#include "core/status_macros.h"

namespace twin::zoo {
namespace {

// Width of the router's hidden layers written into merge.yaml; the default (twice the input)
// would be ~4000 for route_features' ~2000 inputs, far more than five tasks need.
constexpr int64_t kZooRouterHidden = 256;
// Router examples per task: the train split's rows up to this many (the full zoo has 2500 to
// 14000 per task); more rows than twin-merge's default 2000 raised routing accuracy.
constexpr int64_t kZooRouterExamples = 6000;

}  // namespace

absl::StatusOr<ZooTask> ReadZooTask(const std::string& dir, const std::string& task,
                                    int64_t max_train) {
  ZooTask data;
  data.name = task;
  for (int s = 0; s < 3; ++s) {
    ASSIGN_OR_RETURN(
        data.split[s],
        ReadTsvSplit(absl::StrCat(dir, "/", task, ".", kZooSplits[s], ".tsv"), &data.labels));
  }
  TextSplit& train = data.split[0];
  if (max_train > 0 && static_cast<int64_t>(train.texts.size()) > max_train) {
    train.texts.resize(max_train);
    train.labels.resize(max_train);
  }
  if (data.labels.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("task ", task, ": needs at least 2 labels in ", dir, "/", task, ".train.tsv"));
  }
  return data;
}

absl::StatusOr<std::vector<ZooTask>> ReadZooTasks(const std::string& dir,
                                                  const ByteZooOptions& o) {
  std::vector<ZooTask> tasks;
  for (const std::string& task : o.tasks) {
    ASSIGN_OR_RETURN(ZooTask data, ReadZooTask(dir, task, o.max_train_per_task));
    tasks.push_back(std::move(data));
  }
  if (tasks.size() < 2) return absl::InvalidArgumentError("the zoo needs at least 2 tasks");
  return tasks;
}

TextSplit PretrainingCorpus(const std::vector<ZooTask>& tasks) {
  TextSplit corpus;
  for (const ZooTask& t : tasks) {
    corpus.texts.insert(corpus.texts.end(), t.split[0].texts.begin(), t.split[0].texts.end());
  }
  return corpus;
}

absl::StatusOr<TrainStats> PretrainZooModel(torch::jit::Module& module,
                                            const TokenizedExamples& corpus,
                                            const ByteZooOptions& o, const std::string& what) {
  TrainOptions pretrain = o.pretrain;
  pretrain.seed = o.seed;
  std::fprintf(stderr, "twin-zoo: pretraining%s on %lld texts, %lld steps\n", what.c_str(),
               static_cast<long long>(corpus.input_ids.size(0)),
               static_cast<long long>(pretrain.steps));
  ASSIGN_OR_RETURN(TrainStats stats, PretrainMaskedBytes(module, corpus, pretrain));
  std::fprintf(stderr, "twin-zoo: pretraining loss %.3f, %.1f s\n", stats.final_loss,
               stats.seconds);
  return stats;
}

absl::Status FineTuneZooExpert(torch::jit::Module& expert, const TokenizedExamples& train,
                               const TokenizedExamples& validation, const ByteZooOptions& o,
                               uint64_t seed, ByteZooTask* result, ByteZooReport* report) {
  TrainOptions finetune = o.finetune;
  finetune.seed = seed;
  ASSIGN_OR_RETURN(result->training, FineTune(expert, train, finetune));
  ASSIGN_OR_RETURN(result->validation_accuracy, ClassifierAccuracy(expert, validation));
  std::fprintf(stderr, "twin-zoo: %s: validation accuracy %.4f (%zu classes), %.1f s\n",
               result->name.c_str(), result->validation_accuracy, result->labels.size(),
               result->training.seconds);
  if (report->parameters == 0) {
    for (const auto& p : expert.parameters()) report->parameters += p.numel();
  }
  return absl::OkStatus();
}

absl::Status WriteZooTaskData(const std::string& prefix, const TokenizedExamples& train,
                              const TokenizedExamples& test) {
  RETURN_IF_ERROR(WriteSafetensors(
      prefix + ".router.safetensors",
      {{"input_ids", train.input_ids}, {"attention_mask", train.attention_mask}}));
  return WriteSafetensors(prefix + ".test.safetensors", {{"input_ids", test.input_ids},
                                                         {"attention_mask", test.attention_mask},
                                                         {"labels", test.labels}});
}

std::string ZooStoreUri(const std::string& store, const std::string& out_dir) {
  if (!store.empty()) return store;
  return absl::StrCat("file://", std::filesystem::absolute(out_dir).string(), "/store");
}

std::string ZooMergeYamlModels(const std::vector<ByteZooTask>& tasks,
                               const std::string& model_suffix) {
  std::string y;
  for (const ByteZooTask& t : tasks) {
    std::vector<std::string> labels;
    for (const auto& l : t.labels) labels.push_back(YamlQuoted(l));
    absl::StrAppend(&y, "  - model: ", t.name, model_suffix, "\n    name: ", t.name,
                    "\n    labels: [", absl::StrJoin(labels, ", "), "]\n    router_data: ",
                    t.name, ".router.safetensors\n");
  }
  return y;
}

std::string ZooMergeYamlSettings(double twin_ratio, const std::string& router_features,
                                 const std::string& store, uint64_t seed) {
  const std::string features =
      router_features.empty() ? "" : absl::StrCat("features: ", router_features, ", ");
  return absl::StrCat(
      "parameters: {lambda: 0.3}\n", "twin: {rank_policy: ratio, ratio: ", twin_ratio, "}\n",
      "router: {", features, "hidden_dim: ", kZooRouterHidden,
      ", max_epochs: 100, patience: 10, max_examples_per_task: ", kZooRouterExamples, "}\n",
      "output: ", store, "\nseed: ", seed, "\n");
}

std::string YamlQuoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

absl::Status WriteTextFile(const std::string& path, const std::string& content) {
  std::ofstream out(path);
  out << content;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace twin::zoo
