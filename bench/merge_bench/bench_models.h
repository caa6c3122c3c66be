// Synthetic models for the merge benchmark: a TorchScript architecture that follows the model
// convention, a base model and T experts as safetensors, router examples per expert, and
// merge.yaml files for subsets of the experts. Nothing is trained, so building is fast.
//
// Model: token embedding [vocab, dim] -> masked mean pool -> `layers` x tanh(Linear dim->dim)
// = embed(); forward() = Linear(head) over embed(). Parameters: emb.weight,
// layer<i>.weight, layer<i>.bias, head.weight, head.bias.
//
// Expert t = base + a fine-tuning-like delta per tensor: a rank-`delta_rank` part with
// decaying singular values (Frobenius norm `delta_scale` x the base tensor's) plus dense
// Gaussian noise (`noise_fraction` x the low-rank part's norm), so a truncated SVD at a rank
// ratio of 0.1 has a small but nonzero error. Expert t has its own head with 2 + t % 3 classes.
// Router examples of expert t draw their tokens from the t-th band of the vocabulary.
//
//   BenchModelOptions o; o.experts = 8;
//   ASSIGN_OR_RETURN(BenchModels m, WriteBenchModels("/tmp/bench", o));
//
// Thread-safety: free functions.
#ifndef TWIN_BENCH_MERGE_BENCH_BENCH_MODELS_H_
#define TWIN_BENCH_MERGE_BENCH_BENCH_MODELS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace twin::bench {

struct BenchModelOptions {
  int64_t vocab = 4096;
  int64_t dim = 1024;
  int64_t layers = 16;           // square layers of embed()
  int64_t experts = 8;
  int64_t delta_rank = 16;       // rank of the structured part of each delta
  double delta_scale = 0.05;     // ||low-rank part||_F / ||base tensor||_F
  double noise_fraction = 0.3;   // ||dense noise||_F / ||low-rank part||_F
  int64_t router_examples = 64;  // per expert
  int64_t seq_len = 16;
  uint64_t seed = 1;
};

struct BenchModels {
  std::string architecture_path;          // arch.pt (base weights)
  std::string base_path;                  // base.safetensors
  std::vector<std::string> expert_paths;  // expert<t>.safetensors
  std::vector<std::string> router_paths;  // expert<t>.router.safetensors
  std::vector<int64_t> num_classes;
  int64_t num_parameters = 0;             // of the base model
};

// Writes the architecture, base, experts and router data under `dir` (which must exist).
absl::StatusOr<BenchModels> WriteBenchModels(const std::string& dir,
                                             const BenchModelOptions& options);

struct MergeYamlOptions {
  int64_t num_experts = 0;  // the first num_experts experts of `models`
  double lambda = 0.3;
  double ratio = 0.1;
  int64_t router_max_epochs = 20;
  // A narrow router: 64 examples per task need no 2 x feature-width MLP, and the reference
  // algorithm the benchmark compares against trains no router at all.
  int64_t router_hidden_dim = 256;
  std::string output;       // object store URI
};

// Writes a task_arithmetic merge.yaml for a subset of `models` to `path` (paths relative to
// the YAML's directory, which is where the models are).
absl::Status WriteMergeYaml(const std::string& path, const BenchModels& models,
                            const MergeYamlOptions& options);

}  // namespace twin::bench

#endif  // TWIN_BENCH_MERGE_BENCH_BENCH_MODELS_H_
