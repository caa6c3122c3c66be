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
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/store/ngram_spec.h"
#include "core/router/router.h"
#include "core/merge/twin_weights.h"

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
};

struct EvalInputs {
  std::vector<EvalTask> tasks;
  // The merged (non-head) tensors, all in the shared expert's order and with its names.
  NamedTensors base;
  std::vector<NamedTensors> experts;  // per task
  std::vector<NamedTensors> heads;    // per task: the expert's head tensors
  NamedTensors shared;                // theta* as published
  std::unique_ptr<Router> router;     // as published
  bool ngram_router = false;          // the router reads n-gram counts (router.features ngram)
  NgramSpec router_ngram;
  std::string architecture_path;      // TorchScript module that runs every parameter set
  std::string native_config_path;     // the version's native model config (model.native), or ""
  std::string version;                // artifact set version ("" when built in memory)
  std::string shared_method;          // how theta* was merged, e.g. "task_arithmetic"
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
