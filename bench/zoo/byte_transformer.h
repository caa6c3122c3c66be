// A byte-level Transformer encoder in TorchScript, defined from C++, and its training loops:
// masked-byte-modelling pretraining and full fine-tuning with a classification head. The
// benchmark zoo's base model and experts are built with it.
//
// Model (follows docs/model-convention.md; ids are bytes + 4 as in core/text/tokenizer.h):
//   x = tok[ids] + pos[0:L]; layers x pre-norm block; norm
//   block: x += proj(attention(ln1(x))); x += fc2(gelu(fc1(ln2(x))))
//   embed(ids, mask)   -> masked mean of the final states   [B, dim]
//   forward(ids, mask) -> head(embed(ids, mask))             [B, classes]
//   classify(features) -> head(features)                    [B, classes]
//   route_features(ids, mask) -> the router's input           [B, (layers + 1) * dim + buckets]
//     masked means of the embeddings and of every block's output (the last one normed), then
//     log(1 + count) of the byte 1/2/3-grams hashed into route_ngram_buckets buckets.
// Parameters: tok.weight [vocab, dim], pos.weight [max_len, dim], layer<i>.{ln1,qkv,proj,ln2,
// fc1,fc2}.{weight,bias}, norm.{weight,bias}, head.{weight,bias}. With `with_mlm` the module
// also has mlm.dense.*, mlm.norm.*, mlm.bias and a method mlm_logits(ids, mask) -> [B, L, vocab]
// (decoder tied to tok.weight); ExportClassifier drops them.
//
//   ASSIGN_OR_RETURN(auto module, MakeByteTransformer(options));
//   ASSIGN_OR_RETURN(TrainStats s, PretrainMaskedBytes(module, corpus, train_options));
//
// Thread-safety: free functions; a module must not be shared across threads while training.
#ifndef TWIN_BENCH_ZOO_BYTE_TRANSFORMER_H_
#define TWIN_BENCH_ZOO_BYTE_TRANSFORMER_H_

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace twin::zoo {

// Token ids below the byte offset: 0 pad, 1 bos (core/text/tokenizer.h), 2 mask (pretraining only).
inline constexpr int64_t kByteOffset = 4;
inline constexpr int64_t kMaskId = 2;
inline constexpr int64_t kByteVocab = 256 + kByteOffset;

struct ByteTransformerOptions {
  int64_t layers = 2;
  int64_t dim = 64;
  int64_t heads = 4;     // must divide dim
  int64_t ff_dim = 128;  // width of the feed-forward layer
  int64_t max_len = 64;  // learned positions; inputs may be shorter, never longer
  int64_t num_classes = 2;
  double dropout = 0.1;   // residual and attention-output dropout, only in train()
  bool with_mlm = false;  // adds the masked-byte-modelling head
  // Hashed byte n-gram buckets of route_features(); 0 leaves the method out (the router then
  // reads embed()).
  int64_t route_ngram_buckets = 1024;
  uint64_t seed = 1;      // initialisation
};

absl::StatusOr<torch::jit::Module> MakeByteTransformer(const ByteTransformerOptions& options);

// A new module without the mlm head whose encoder parameters are copied from `trained` and
// whose head is freshly initialised for `num_classes` (seeded by options.seed).
absl::StatusOr<torch::jit::Module> ExportClassifier(const torch::jit::Module& trained,
                                                    const ByteTransformerOptions& options);

// A module built by this build's code (e.g. with route_features) holding every parameter of
// `saved` (a base or expert written by an earlier build with the same preset); the head's class
// count comes from `saved`. Lets a zoo pick up new methods without training again.
absl::StatusOr<torch::jit::Module> RebuildWithCurrentCode(const torch::jit::Module& saved,
                                                          const ByteTransformerOptions& options);

// Replaces the head of `module` with a fresh one for `num_classes` classes.
absl::Status ResetHead(torch::jit::Module& module, int64_t num_classes, uint64_t seed);

struct TokenizedExamples {
  at::Tensor input_ids;       // [N, L] int64, padded with 0
  at::Tensor attention_mask;  // [N, L] int64
  at::Tensor labels;          // [N] int64 (undefined for unlabeled text)
};

struct TrainOptions {
  int64_t steps = 100;
  int64_t batch_size = 32;
  double learning_rate = 1e-3;  // peak; linear warm-up, then linear decay to 10%
  double warmup_fraction = 0.1;
  double weight_decay = 0.01;   // AdamW
  double mask_fraction = 0.15;  // pretraining: share of byte positions predicted
  uint64_t seed = 1;            // batch order, masking and dropout
};

struct TrainStats {
  int64_t steps = 0;
  double final_loss = 0;  // mean over the last 10% of steps
  double seconds = 0;
  double seconds_per_step = 0;
};

// The scalar loss of one batch: the examples `rows` ([batch] int64) of the data set; `gen` is
// the loop's generator (masking, noise).
using BatchLossFn = std::function<at::Tensor(const at::Tensor& rows, at::Generator& gen)>;

// The zoo's training loop over `params` (they require gradients while it runs, and not after):
// AdamW (weight_decay), linear warm-up over warmup_fraction of the steps then linear decay to
// 10%, gradient clipping at norm 1.0, batches of batch_size of the n examples from reshuffled
// epochs; batch order and LibTorch's global generator (dropout) seeded by options.seed. Every
// trainer of the zoo runs it (TorchScript modules here, the torch::nn Llama of
// llama_byte_model.h). `what` names the loop in errors.
absl::StatusOr<TrainStats> TrainParameters(std::vector<at::Tensor> params, int64_t n,
                                           const TrainOptions& options, const std::string& what,
                                           const BatchLossFn& loss_of);

// Masked-byte modelling on `corpus` (labels ignored): 15% of real byte positions are predicted;
// of those 80% become the mask id, 10% a random byte, 10% stay. `module` needs with_mlm.
absl::StatusOr<TrainStats> PretrainMaskedBytes(torch::jit::Module& module,
                                               const TokenizedExamples& corpus,
                                               const TrainOptions& options);

// Full fine-tuning (every parameter) with cross-entropy on `data.labels`.
absl::StatusOr<TrainStats> FineTune(torch::jit::Module& module, const TokenizedExamples& data,
                                    const TrainOptions& options);

// Accuracy of forward() on `data`, in eval mode and without gradients.
absl::StatusOr<double> ClassifierAccuracy(torch::jit::Module& module,
                                          const TokenizedExamples& data);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_BYTE_TRANSFORMER_H_
