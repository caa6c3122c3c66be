// The inference engine: one loaded artifact set on one device.
//
// It keeps the shared expert theta* resident (as a TorchScript model used for routing
// features unless the router reads n-gram counts), the twin factors (for fusion), the router, the
// tokenizer and every task's head. Route() computes router weights for a batch from the shared
// model's embed(); Fuse() builds a model whose parameters are theta(w); Forward() runs a batch
// through a fused model with one task's head; ForwardTasks() runs one embed() for rows of several
// tasks and each task's head on its rows, when the architecture defines classify()
// (splits_heads()).
//
//   ASSIGN_OR_RETURN(auto engine, Engine::Load(set, {.device = "cpu"}));
//   ASSIGN_OR_RETURN(at::Tensor w, engine->RouterWeights(ids, mask, temperatures));
//   ASSIGN_OR_RETURN(auto fused, engine->Fuse({0.7, 0.3}));
//   ASSIGN_OR_RETURN(at::Tensor logits, engine->Forward(*fused, ids, mask, task));
//
// A version with a native model (manifest `model.native`, a Hugging Face family) is served by
// the engine's own layers (core/model/hf_encoder.h) unless options.model says "torchscript":
// fused weight sets are then plain tensors (no TorchScript clone), heads are never swapped,
// and ForwardMixed() answers a batch whose rows have different router weights exactly, with
// theta* plus each row's mixture of the task factors inside every layer (the unfused path,
// core/model/mixed_params.h).
//
// A version whose native model is a causal language model (model.native.family llama, qwen2
// or mistral) is generative(): it answers Generate, not Infer. GenerationParams() gives the
// weights of one generation step: theta* alone (static mode), or theta* plus each sequence's
// own mixture of the task factors (twin mode, the unfused path).
//
// Thread-safety: an Engine is immutable after Load() and safe to share. A FusedModel
// serialises its own forwards (head swaps) with an internal mutex.
#ifndef TWIN_SERVER_ENGINE_H_
#define TWIN_SERVER_ENGINE_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/generation.h"
#include "core/model/hf_encoder.h"
#include "core/model/mixed_params.h"
#include "core/router/router_input.h"
#include "core/store/artifact_set.h"
#include "core/store/manifest.h"
#include "server/fused_cache.h"

namespace twin {

class DenseParams;
class HfDecoder;
class HfEncoder;
class ScriptModel;
class Router;
class Tokenizer;
class TwinWeights;

struct EngineOptions {
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  // auto: the native model when the version has one, else TorchScript; torchscript; native
  // (a version without a native model is refused).
  std::string model = "auto";
  MixStrategy mix_strategy = MixStrategy::kGrouped;  // the unfused path's kernels
  // The unfused kernels of Generate's steps (small batches: few kernels beat fewer FLOPs).
  MixStrategy generation_mix_strategy = MixStrategy::kStacked;
};

// A model with fused parameters theta(w); cached per cluster key.
class FusedModel : public FusedValue {
 public:
  // `own_head`: the model carries its task's head (an expert); Forward() leaves it in place.
  FusedModel(std::unique_ptr<ScriptModel> model, std::vector<double> weights, uint64_t bytes,
             bool own_head = false);
  // A native model's weight set; `own_head` set: an expert with its own head.
  FusedModel(std::unique_ptr<DenseParams> body, std::vector<double> weights, uint64_t bytes,
             std::unique_ptr<DenseParams> own_head);
  ~FusedModel() override;
  uint64_t bytes() const override { return bytes_; }
  const std::vector<double>& weights() const { return weights_; }

 private:
  friend class Engine;
  std::unique_ptr<ScriptModel> model_;  // TorchScript
  std::unique_ptr<DenseParams> body_;   // native
  std::unique_ptr<DenseParams> head_;   // native expert's own head
  std::vector<double> weights_;
  uint64_t bytes_;
  bool own_head_;
  std::mutex mu_;  // head swap + forward
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const LocalArtifactSet& set,
                                                      const EngineOptions& options);
  ~Engine();

  const Manifest& manifest() const { return manifest_; }
  const std::string& version() const { return manifest_.version; }
  const std::string& device() const { return device_name_; }
  int num_tasks() const { return static_cast<int>(manifest_.tasks.size()); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // Token ids must be in [0, vocab_size()); 0 when the model does not say (ScriptModel).
  int64_t vocab_size() const { return vocab_size_; }

  // Router weights [B, T] (float32, CPU) for a padded batch; temperatures has B entries (> 0).
  // With a prefix router (routes_on_prefix()), *prefix_hidden (when given) receives the
  // routing prefix's hidden states [B, L, d] (on the device), which the forwards below take
  // to continue from the prefix instead of computing it again; undefined otherwise.
  absl::StatusOr<at::Tensor> RouterWeights(const at::Tensor& input_ids,
                                           const at::Tensor& attention_mask,
                                           const std::vector<double>& temperatures,
                                           at::Tensor* prefix_hidden = nullptr) const;
  // Whether the router reads the native encoder's first prefix_layers() layers under theta*
  // (router.features prefix: multi-stage merging; the twins start after them).
  bool routes_on_prefix() const { return prefix_layers_ > 0; }
  int64_t prefix_layers() const { return prefix_layers_; }
  // A model with parameters theta(w); weights.size() == num_tasks().
  absl::StatusOr<std::shared_ptr<FusedModel>> Fuse(const std::vector<double>& weights) const;
  // theta* alone (weights all zero, no fusion): the static mode's one weight set.
  absl::StatusOr<std::shared_ptr<FusedModel>> SharedModel() const;
  // Task `task`'s fine-tuned model from a TorchScript file, checked against the version's
  // architecture (every parameter's name, shape and dtype); it answers with its own head.
  absl::StatusOr<std::shared_ptr<FusedModel>> LoadExpert(int task, const std::string& path) const;
  // Resident bytes of the version's weights: theta*, the twin factors, the heads, the router.
  uint64_t shared_bytes() const;
  uint64_t twin_bytes() const;
  uint64_t head_bytes() const;
  uint64_t router_bytes() const;
  // Logits [B, C_task] (CPU) of `task`'s head on the fused model (an expert's own head).
  // `prefix_hidden`: RouterWeights()'s hidden states of these rows (padded like input_ids),
  // or undefined (the forward computes the prefix); an expert always runs its own prefix.
  absl::StatusOr<at::Tensor> Forward(FusedModel& model, const at::Tensor& input_ids,
                                     const at::Tensor& attention_mask, int task,
                                     const at::Tensor& prefix_hidden = {}) const;

  // Whether the engine runs the version's native model (then unfused_available()).
  bool native() const { return encoder_ != nullptr || decoder_ != nullptr; }
  // Mixed-key classification batches (a native encoder).
  bool unfused_available() const { return encoder_ != nullptr; }
  // A causal language model version (Generate); decoder() only then.
  bool generative() const { return decoder_ != nullptr; }
  const HfDecoder& decoder() const { return *decoder_; }
  // The weights of one generation step whose rows (sequences, in order) have the mixtures
  // `rows[i].weights` (each num_tasks() weights): theta* alone with `shared_only`, else theta*
  // plus each row's mixture of the task factors in every layer. With task_lm_heads(), each row
  // reads the LM head of its task (rows[i].task; out of range: INVALID_ARGUMENT). The result
  // refers to the engine.
  absl::StatusOr<std::unique_ptr<LayerParams>> GenerationParams(const std::vector<StepRow>& rows,
                                                                bool shared_only) const;
  // Whether the causal LM keeps its LM head per task (merged with a head_pattern matching it):
  // every sequence then needs a task, given or routed, in static mode too.
  bool task_lm_heads() const { return !lm_head_names_.empty(); }
  // "native" or "torchscript".
  const char* model_kind() const { return native() ? "native" : "torchscript"; }
  MixStrategy mix_strategy() const { return mix_strategy_; }

  // Whether one body forward can serve rows of several tasks: the architecture defines
  // classify(features) and Load() found classify(embed(x)) equal to forward(x).
  bool splits_heads() const { return splits_heads_; }
  // Rows of several tasks in one batch: `runs` lists (task, rows) in batch order (consecutive
  // rows; the counts sum to B). One embed() over the batch, then each task's classify() on its
  // rows; returns the logits [rows, C_task] (CPU) of each run. Needs splits_heads() and a model
  // that is not an expert (own head).
  struct TaskRun {
    int task;
    int64_t rows;
  };
  absl::StatusOr<std::vector<at::Tensor>> ForwardTasks(FusedModel& model,
                                                       const at::Tensor& input_ids,
                                                       const at::Tensor& attention_mask,
                                                       const std::vector<TaskRun>& runs,
                                                       const at::Tensor& prefix_hidden = {}) const;
  // The unfused path (native only): row r of the batch is answered with theta* plus its own
  // mixture row_weights[r] ([B, T], non-negative) of the task factors; then each run's task
  // head on its rows. Logits [rows, C_task] (CPU) per run.
  absl::StatusOr<std::vector<at::Tensor>> ForwardMixed(const at::Tensor& input_ids,
                                                       const at::Tensor& attention_mask,
                                                       const at::Tensor& row_weights,
                                                       const std::vector<TaskRun>& runs,
                                                       const at::Tensor& prefix_hidden = {}) const;

 private:
  Engine() = default;
  // The router's input for a batch (core/router/router_input.h) with theta*.
  absl::StatusOr<RouterInput> RouterInputOf(const at::Tensor& input_ids,
                                            const at::Tensor& attention_mask) const;
  absl::StatusOr<at::Tensor> Features(const at::Tensor& input_ids,
                                      const at::Tensor& attention_mask) const;
  // Where a native forward starts given RouterWeights()'s prefix hidden states.
  HfStart StartOf(const at::Tensor& prefix_hidden) const;
  absl::StatusOr<std::shared_ptr<FusedModel>> FuseUnchecked(
      const std::vector<double>& weights) const;
  // The native model from the version's config blob, checked against theta* and the heads.
  absl::Status LoadNative(const LocalArtifactSet& set);
  // A causal LM's config blob: the decoder, checked against theta*.
  absl::Status LoadNativeDecoder(const LocalArtifactSet& set);
  // FAILED_PRECONDITION for a classification call on a generative version.
  absl::Status CheckClassifier() const;
  absl::StatusOr<std::shared_ptr<FusedModel>> LoadNativeExpert(int task,
                                                               const std::string& dir) const;
  absl::Status CheckRuns(const std::vector<TaskRun>& runs, int64_t batch) const;
  // Embeddings of the batch from `body`, then each run's head.
  absl::StatusOr<std::vector<at::Tensor>> NativeRuns(const at::Tensor& input_ids,
                                                     const at::Tensor& attention_mask,
                                                     const LayerParams& body,
                                                     const std::vector<TaskRun>& runs,
                                                     const at::Tensor& prefix_hidden) const;
  Manifest manifest_;
  std::string device_name_;
  std::unique_ptr<TwinWeights> twin_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ScriptModel> shared_model_;  // theta*, for routing features
  std::unique_ptr<ScriptModel> template_;      // weights stripped; cloned for each fusion
  std::string architecture_path_;
  int64_t vocab_size_ = 0;
  bool ngram_router_ = false;                        // manifest router.features == "ngram"
  std::unique_ptr<HfEncoder> encoder_;               // native model, or null
  std::unique_ptr<HfDecoder> decoder_;               // native causal LM, or null
  std::unique_ptr<DenseParams> shared_params_;       // theta* for the native model
  std::vector<std::unique_ptr<DenseParams>> heads_;  // per task, native model
  std::set<std::string> lm_head_names_;              // the decoder's per-task linears, if any
  MixStrategy mix_strategy_ = MixStrategy::kGrouped;
  MixStrategy generation_mix_strategy_ = MixStrategy::kStacked;
  bool splits_heads_ = false;
  int64_t prefix_layers_ = 0;  // router.features prefix: the routing prefix's layers
};

}  // namespace twin

#endif  // TWIN_SERVER_ENGINE_H_
