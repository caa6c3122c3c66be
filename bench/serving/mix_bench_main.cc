// twin-mix-bench: the native engine's forward of one batch, fused against unfused, side by side
// on the same synthetic weights, to measure the crossover the per-batch mode choice relies on.
//
//   twin-mix-bench [--family roberta] [--hidden 256] [--layers 4] [--heads 4] [--ff 1024]
//                  [--vocab 8000] [--seq 64] [--tasks 5] [--ratio 0.1] [--top_k 2]
//                  [--batches 1,8,32] [--keys 1,2,4,8,0] [--reps 9] [--threads 1]
//                  [--out_json FILE]
//
// An encoder of the family with random weights (theta*), and per task random factors of rank
// ratio * min(m, n) for every 2-D tensor and dense deltas for the 1-D ones (TwinWeights, as a
// merge publishes them). For a batch of B rows whose router weights fall on K distinct cluster
// keys (0 = every row its own key), each with top_k tasks, the median time of:
//   static    one forward of B rows with theta* (the one-model baseline);
//   fused     K forwards of B / K rows, each with its key's fused weights (cached: no fusion);
//   fused+miss the same plus fusing each key's weights (a cold cache);
//   stacked   one unfused forward of B rows, all tasks' factors in two GEMMs per linear;
//   grouped   one unfused forward of B rows, per task only the rows that use it.
// Rows/s, each relative to static, and the weights resident: theta* + the factors, against T
// experts. Prints a table and, with --out_json, the same figures as JSON.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/merge/twin_weights.h"
#include "core/model/hf_config.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "core/model/mixed_params.h"
#include "bench/serving/median_time.h"
#include "core/model/torch_runtime.h"

ABSL_FLAG(std::string, family, "roberta", "bert or roberta.");
ABSL_FLAG(int, hidden, 256, "hidden_size.");
ABSL_FLAG(int, layers, 4, "num_hidden_layers.");
ABSL_FLAG(int, heads, 4, "num_attention_heads.");
ABSL_FLAG(int, ff, 1024, "intermediate_size.");
ABSL_FLAG(int, vocab, 8000, "vocab_size.");
ABSL_FLAG(int, seq, 64, "Tokens per row.");
ABSL_FLAG(int, tasks, 5, "Tasks (T).");
ABSL_FLAG(double, ratio, 0.1, "Twin rank as a fraction of min(m, n).");
ABSL_FLAG(int, top_k, 2, "Tasks with a non-zero weight per row.");
ABSL_FLAG(std::string, batches, "1,8,32", "Batch sizes B.");
ABSL_FLAG(std::string, keys, "1,2,4,8,0", "Distinct keys K per batch (0: one per row).");
ABSL_FLAG(int, reps, 9, "Repetitions per measurement (the median is reported).");
ABSL_FLAG(int, threads, 1, "LibTorch intra-op threads.");
ABSL_FLAG(std::string, out_json, "", "Also write the figures as JSON here.");

namespace twin {
namespace {

// Every measurement here starts with one untimed call.
template <typename F>
double WarmMedianSeconds(int reps, F&& f) {
  return MedianSeconds(reps, std::forward<F>(f), /*warm_up=*/true);
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int v = 0;
    if (absl::SimpleAtoi(part, &v)) out.push_back(v);
  }
  return out;
}

void Die(const absl::Status& status) {
  std::cerr << "twin-mix-bench: " << status << "\n";
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> v) {
  if (!v.ok()) Die(v.status());
  return *std::move(v);
}

std::string ConfigJson() {
  const bool bert = absl::GetFlag(FLAGS_family) == "bert";
  return absl::StrFormat(
      R"({"model_type": "%s", "architectures": ["%s"], "vocab_size": %d, "hidden_size": %d,
          "num_hidden_layers": %d, "num_attention_heads": %d, "intermediate_size": %d,
          "max_position_embeddings": %d, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
          "pad_token_id": 1, "id2label": {"0": "a", "1": "b"}})",
      bert ? "bert" : "roberta",
      bert ? "BertForSequenceClassification" : "RobertaForSequenceClassification",
      absl::GetFlag(FLAGS_vocab), absl::GetFlag(FLAGS_hidden), absl::GetFlag(FLAGS_layers),
      absl::GetFlag(FLAGS_heads), absl::GetFlag(FLAGS_ff), absl::GetFlag(FLAGS_seq) + 2);
}

struct Setup {
  std::unique_ptr<HfEncoder> encoder;
  std::unique_ptr<TwinWeights> twins;
  std::unique_ptr<DenseParams> shared;
  std::unique_ptr<DenseParams> head;
  uint64_t model_bytes = 0;
};

Setup Build() {
  Setup s;
  HfEncoderConfig config = OrDie(ParseHfEncoderConfig(ConfigJson(), "synthetic config.json"));
  s.encoder = OrDie(HfEncoder::Create(config));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const auto& shapes = s.encoder->tensor_spec().shapes;
  NamedTensors shared;
  std::map<std::string, at::Tensor> head;
  for (const std::string& name : s.encoder->body_names()) {
    const at::Tensor t = shapes.at(name).size() == 1
                             ? (absl::EndsWith(name, "weight")
                                    ? at::ones(shapes.at(name))
                                    : at::zeros(shapes.at(name)))
                             : 0.02 * at::randn(shapes.at(name), gen);
    shared.emplace_back(name, t);
    s.model_bytes += t.nbytes();
  }
  for (const std::string& name : s.encoder->head_names()) {
    head[name] = 0.02 * at::randn(shapes.at(name), gen);
    s.model_bytes += head[name].nbytes();
  }
  const double ratio = absl::GetFlag(FLAGS_ratio);
  std::vector<TaskTwin> tasks;
  for (int t = 0; t < absl::GetFlag(FLAGS_tasks); ++t) {
    TaskTwin twin;
    twin.task = absl::StrCat("task", t);
    for (const auto& [name, base] : shared) {
      if (base.dim() == 1) {
        twin.dense[name] = 0.01 * at::randn(base.sizes(), gen);
        continue;
      }
      const int64_t m = base.size(0), n = base.size(1);
      const int64_t r = std::max<int64_t>(1, static_cast<int64_t>(ratio * std::min(m, n)));
      twin.factors[name] = {0.01 * at::randn({m, r}, gen), 0.01 * at::randn({n, r}, gen)};
    }
    for (const auto& [name, value] : head) twin.head.emplace_back(name, value);
    tasks.push_back(std::move(twin));
  }
  s.twins = OrDie(TwinWeights::Create(std::move(shared), std::move(tasks)));
  std::map<std::string, at::Tensor> shared_map(s.twins->shared().begin(),
                                               s.twins->shared().end());
  s.shared = std::make_unique<DenseParams>(std::move(shared_map));
  s.head = std::make_unique<DenseParams>(std::move(head));
  return s;
}

// Key k's weights: top_k consecutive tasks from k, weights decreasing, summing to 1.
std::vector<double> KeyWeights(int key, int tasks, int top_k) {
  std::vector<double> w(static_cast<size_t>(tasks), 0.0);
  double total = 0;
  for (int j = 0; j < top_k; ++j) total += top_k - j;
  for (int j = 0; j < top_k; ++j) w[static_cast<size_t>((key + j) % tasks)] = (top_k - j) / total;
  return w;
}

struct Row {
  int batch = 0, keys = 0;
  double static_s = 0, fused_s = 0, fused_miss_s = 0, stacked_s = 0, grouped_s = 0;
};

}  // namespace
}  // namespace twin

int main(int argc, char** argv) {
  using namespace twin;
  absl::SetProgramUsageMessage("Fused against unfused forwards of the native engine.");
  absl::ParseCommandLine(argc, argv);
  ConfigureTorchRuntime({absl::GetFlag(FLAGS_threads)});
  c10::InferenceMode guard;
  Setup s = Build();
  const int tasks = absl::GetFlag(FLAGS_tasks), top_k = std::min(absl::GetFlag(FLAGS_top_k), tasks);
  const int reps = absl::GetFlag(FLAGS_reps), seq = absl::GetFlag(FLAGS_seq);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  std::vector<Row> rows;
  for (int batch : ParseList(absl::GetFlag(FLAGS_batches))) {
    const at::Tensor ids = at::randint(3, absl::GetFlag(FLAGS_vocab), {batch, seq}, gen);
    const at::Tensor mask = at::ones({batch, seq}, at::kLong);
    for (int keys : ParseList(absl::GetFlag(FLAGS_keys))) {
      const int k = keys == 0 ? batch : std::min(keys, batch);
      if (keys != 0 && keys > batch) continue;
      Row row;
      row.batch = batch;
      row.keys = k;
      // The i-th key is order[i]; its rows are contiguous: rows [i * B / K, (i + 1) * B / K).
      // Keys are ordered by their top task (key j's is j mod T), as twin-server orders an
      // unfused batch (by the task whose head answers), so each task's primary rows are one run.
      std::vector<int> order(static_cast<size_t>(k));
      for (int j = 0; j < k; ++j) order[static_cast<size_t>(j)] = j;
      std::stable_sort(order.begin(), order.end(),
                       [tasks](int a, int b) { return a % tasks < b % tasks; });
      std::vector<std::vector<double>> row_weights;
      std::vector<std::pair<int64_t, int64_t>> spans;
      for (int i = 0; i < k; ++i) {
        const int64_t begin = static_cast<int64_t>(i) * batch / k;
        const int64_t end = static_cast<int64_t>(i + 1) * batch / k;
        spans.emplace_back(begin, end - begin);
        for (int64_t r = begin; r < end; ++r) {
          row_weights.push_back(KeyWeights(order[static_cast<size_t>(i)], tasks, top_k));
        }
      }
      std::vector<std::unique_ptr<DenseParams>> fused;
      for (int i = 0; i < k; ++i) {
        NamedTensors f = OrDie(s.twins->Fuse(KeyWeights(order[static_cast<size_t>(i)], tasks, top_k)));
        fused.push_back(
            std::make_unique<DenseParams>(std::map<std::string, at::Tensor>(f.begin(), f.end())));
      }
      row.static_s = WarmMedianSeconds(reps, [&] {
        OrDie(s.encoder->Forward(ids, mask, *s.shared, *s.head));
      });
      row.fused_s = WarmMedianSeconds(reps, [&] {
        for (int j = 0; j < k; ++j) {
          OrDie(s.encoder->Forward(ids.narrow(0, spans[j].first, spans[j].second),
                                   mask.narrow(0, spans[j].first, spans[j].second), *fused[j],
                                   *s.head));
        }
      });
      row.fused_miss_s = WarmMedianSeconds(std::max(3, reps / 3), [&] {
        for (int j = 0; j < k; ++j) {
          NamedTensors f = OrDie(s.twins->Fuse(KeyWeights(order[static_cast<size_t>(j)], tasks, top_k)));
          DenseParams p(std::map<std::string, at::Tensor>(f.begin(), f.end()));
          OrDie(s.encoder->Forward(ids.narrow(0, spans[j].first, spans[j].second),
                                   mask.narrow(0, spans[j].first, spans[j].second), p, *s.head));
        }
      });
      for (MixStrategy strategy : {MixStrategy::kStacked, MixStrategy::kGrouped}) {
        const double t = WarmMedianSeconds(reps, [&] {
          MixedParams p = OrDie(MixedParams::Create(*s.twins, row_weights, strategy));
          OrDie(s.encoder->Forward(ids, mask, p, *s.head));
        });
        (strategy == MixStrategy::kStacked ? row.stacked_s : row.grouped_s) = t;
      }
      rows.push_back(row);
      std::fprintf(stderr, "B=%d K=%d done\n", batch, k);
    }
  }

  const uint64_t resident = s.twins->shared_bytes() + s.twins->twin_bytes();
  const uint64_t experts = s.model_bytes * static_cast<uint64_t>(tasks);
  std::printf("%s hidden %d, %d layers, ff %d, seq %d, T = %d, ratio %.2f, top-%d, %d thread(s)\n",
              absl::GetFlag(FLAGS_family).c_str(), absl::GetFlag(FLAGS_hidden),
              absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_ff), seq, tasks,
              absl::GetFlag(FLAGS_ratio), top_k, absl::GetFlag(FLAGS_threads));
  std::printf("weights resident (theta* + factors): %.1f MiB = %.2fx of the %d experts (%.1f MiB)\n",
              resident / 1048576.0, static_cast<double>(resident) / experts, tasks,
              experts / 1048576.0);
  std::printf("| B | K | static rows/s | fused | fused+miss | stacked | grouped |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    auto rel = [&](double t) { return r.static_s / t; };
    std::printf("| %d | %d | %.0f | %.2fx | %.2fx | %.2fx | %.2fx |\n", r.batch, r.keys,
                r.batch / r.static_s, rel(r.fused_s), rel(r.fused_miss_s), rel(r.stacked_s),
                rel(r.grouped_s));
  }
  const std::string out = absl::GetFlag(FLAGS_out_json);
  if (!out.empty()) {
    std::ofstream f(out);
    f << "{\"family\": \"" << absl::GetFlag(FLAGS_family) << "\", \"hidden\": "
      << absl::GetFlag(FLAGS_hidden) << ", \"layers\": " << absl::GetFlag(FLAGS_layers)
      << ", \"ff\": " << absl::GetFlag(FLAGS_ff) << ", \"seq\": " << seq
      << ", \"tasks\": " << tasks << ", \"ratio\": " << absl::GetFlag(FLAGS_ratio)
      << ", \"top_k\": " << top_k << ", \"threads\": " << absl::GetFlag(FLAGS_threads)
      << ", \"resident_bytes\": " << resident << ", \"experts_bytes\": " << experts
      << ", \"rows\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      f << (i ? ", " : "") << "{\"batch\": " << r.batch << ", \"keys\": " << r.keys
        << ", \"static_s\": " << r.static_s << ", \"fused_s\": " << r.fused_s
        << ", \"fused_miss_s\": " << r.fused_miss_s << ", \"stacked_s\": " << r.stacked_s
        << ", \"grouped_s\": " << r.grouped_s << "}";
    }
    f << "]}\n";
  }
  return 0;
}
