// What twin-eval evaluates, in memory: the base model and every expert split into merged
// tensors and heads, the published shared expert and router, and each task's labeled test and
// validation rows.
//
// LoadEvalInputs reads them from a zoo written by `twin-zoo --size` and the artifact set that
// `twin-merge` published from it:
//
//   ZOO/base.pt, ZOO/<task>.pt                   TorchScript base and experts (own heads), or
//   ZOO/base/, ZOO/<task>/                       Hugging Face directories (twin-zoo --format hf)
//   ZOO/<task>.test.safetensors                  input_ids, attention_mask, labels
//   DATA/<task>.validation.tsv                   label<TAB>escaped text (bench/zoo/DATA.md)
//   STORE/<version>/...                          shared expert, router, architecture, tokenizer
//
// A causal language model's version (manifest model.native.family llama, qwen2 or mistral:
// the generative zoo, `twin-zoo --format llama`) has no labels and no heads unless merge.yaml
// kept some; its examples are (prompt, target) pairs instead of labeled rows:
//
//   ZOO/base/, ZOO/<task>/                       Hugging Face causal-LM directories
//   ZOO/<task>.test.jsonl                        {"prompt", "target"} a line (causal_eval.h)
//   ZOO/<task>.validation.jsonl                  the same, for choosing lambdas (optional)
//
// encoded with the version's tokenizer (its bos added to the prompt, the config's eos after
// the target); EvalInputs::generative() is then true and generative_eval.h evaluates them.
//
// Tasks, their order, label names, the head pattern and the tokenizer come from the manifest.
// Test rows are the first max_test rows of each file (the zoo interleaves classes); validation
// rows the first max_validation lines, tokenized with the manifest's tokenizer.
//
//   EvalSources s{.zoo_dir = "bench/zoo/work/zoo-lite", .data_dir = "bench/zoo/work/data-lite"};
//   ASSIGN_OR_RETURN(EvalInputs in, LoadEvalInputs(s));
//
// Thread-safety: LoadEvalInputs is reentrant; EvalInputs is a plain value (its router is
// immutable).
#ifndef TWIN_BENCH_EVAL_EVAL_INPUTS_H_
#define TWIN_BENCH_EVAL_EVAL_INPUTS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/zoo/causal_eval.h"
#include "core/merge/twin_weights.h"
#include "core/router/router.h"
#include "core/store/manifest.h"

namespace twin::eval {

// Labeled rows of one split of one task; zero rows when the split is absent.
struct LabeledRows {
  at::Tensor input_ids;       // [N, L] int64
  at::Tensor attention_mask;  // [N, L] int64
  at::Tensor labels;          // [N] int64
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct EvalTask {
  std::string name;
  std::vector<std::string> labels;
  LabeledRows test;
  LabeledRows validation;
  // Causal LMs only: the task's examples, the first max_test / max_validation of each file
  // (validation empty when ZOO/<task>.validation.jsonl is absent).
  std::vector<zoo::CausalExample> causal_test;
  std::vector<zoo::CausalExample> causal_validation;
};

struct EvalInputs {
  std::vector<EvalTask> tasks;
  // The merged (non-head) tensors, all in the shared expert's order and with its names.
  NamedTensors base;
  std::vector<NamedTensors> experts;  // per task
  std::vector<NamedTensors> heads;    // per task: the expert's head tensors
  NamedTensors shared;                // theta* as published
  std::unique_ptr<Router> router;     // as published
  RouterEntry router_input;           // its manifest entry: what it reads (router_input.h)
  std::string architecture_path;    // TorchScript module that runs every parameter set
  std::string native_config_path;   // the version's native encoder config (model.native), or ""
  // Merged tensors that keep no twins (twin.from_layer: the embeddings and layers below it).
  std::set<std::string> shared_prefix;
  std::string decoder_config_path;  // the version's native causal-LM config, or ""
  std::string version;              // artifact set version ("" when built in memory)
  std::string shared_method;        // how theta* was merged, e.g. "task_arithmetic"
  std::string head_pattern;         // the manifest's

  // A causal language model: the tasks hold causal_test / causal_validation, not rows.
  bool generative() const { return !decoder_config_path.empty(); }
};

struct EvalSources {
  std::string zoo_dir;    // required
  std::string data_dir;   // empty: no validation rows (lambdas are not searched)
  std::string store_uri;  // empty: file://<zoo_dir>/store
  std::string version = "LATEST";
  std::string cache_dir;       // empty: <zoo_dir>/cache
  int64_t max_test = 0;        // per task; 0 = all
  int64_t max_validation = 0;  // per task; 0 = all
};

absl::StatusOr<EvalInputs> LoadEvalInputs(const EvalSources& sources);

// Splits `params` into merged tensors ordered and named as `order` and head tensors (names
// matching `head_pattern`). A missing tensor or a shape that differs from `order`'s is
// INVALID_ARGUMENT naming `label` and the tensor.
absl::Status SplitParameters(const NamedTensors& params, const NamedTensors& order,
                             const std::string& head_pattern, const std::string& label,
                             NamedTensors* merged, NamedTensors* head);

}  // namespace twin::eval

#endif  // TWIN_BENCH_EVAL_EVAL_INPUTS_H_
