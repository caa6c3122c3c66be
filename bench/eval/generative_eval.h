// twin-eval for causal language models (EvalInputs::generative(): the generative zoo,
// `twin-zoo --format llama`): every method scored on the same (prompt, target) test examples of
// every task, in one run, through the native decoder (core/model/hf_decoder.h):
//
//   base             the pretrained base
//   expert           each task's own expert on its task (the upper bound)
//   shared           the published shared expert theta*
//   linear, task_arithmetic, ties, dare_task_arithmetic
//                    static merges (eval.h's StaticMerge); lambda chosen on the validation
//                    examples (the highest mean exact match, then the lowest mean loss), or
//                    the method's default without validation examples
//   twin:<policy>:router
//                    Twin-Merging as the server's Generate serves it when no task is named:
//                    the published router on the prompt's n-gram counts, softmax at the
//                    temperature, its top_k weights renormalised (server/generator.cc), and
//                    the example decoded with theta* plus its own mixture of the twin factors
//                    inside every layer (core/model/mixed_params.h), rows of different
//                    mixtures in one batch; twin factors recomputed per rank policy
//                    (twin_factors.h)
//   twin:<policy>:task
//                    the task given (routing.task_given: task): one-hot on the true task
//
// Scores per task (bench/zoo/causal_eval.h): exact match (the greedy continuation is the
// target, eos included) and the mean loss of the target's tokens. Normalized scores, averaged
// over tasks:
//   exact  100 x exact match / the expert's, over the tasks whose expert's exact match is at
//          least min_expert_exact (a task the expert did not learn says nothing of a merge);
//   loss   100 x (base loss - loss) / (base loss - expert loss): the share of the expert's
//          loss reduction a method keeps, over every task whose expert improved on the base.
//
//   ASSIGN_OR_RETURN(EvalInputs in, LoadEvalInputs(sources));      // in.generative()
//   ASSIGN_OR_RETURN(GenerativeResult r, RunGenerativeEvaluation(in, EvalOptions{}));
//   std::string md = GenerativeMarkdown(r, info);
//
// Versions that keep heads per task (merge.yaml head_pattern) are refused, as the server
// refuses them.
//
// Thread-safety: RunGenerativeEvaluation is reentrant; progress goes to stderr.
#ifndef TWIN_BENCH_EVAL_GENERATIVE_EVAL_H_
#define TWIN_BENCH_EVAL_GENERATIVE_EVAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/eval/eval.h"
#include "bench/eval/eval_inputs.h"
#include "bench/eval/eval_report.h"

namespace twin::eval {

struct GenerativeMethod {
  std::string id;             // "base", "expert", "task_arithmetic", "twin:ratio=0.1:router", ...
  std::string label;          // for tables
  std::string family;         // "base", "expert", "static", "twin"
  std::string policy;         // twin: PolicyLabel(); else empty
  std::string routing;        // twin: "router" or "task"; else empty
  double lambda = -1;         // static merges with a lambda; -1 = none
  std::vector<double> exact;  // per task: exact match
  std::vector<double> loss;   // per task: mean target loss, nats per token
};

struct GenerativeResult {
  std::vector<std::string> tasks;
  std::vector<int64_t> test_examples, validation_examples, target_tokens;  // per task
  std::string version, shared_method, family;
  std::string lm_head_pattern;  // the head_pattern when each task keeps its own LM head, else ""
  int router_top_k = 0;
  double temperature = 1;
  std::vector<GenerativeMethod> methods;
  std::vector<LambdaSearch> searches;  // validation_mean: mean exact match
  RoutingResult routing;               // "router": top task == true task, with the confusion
  std::vector<StorageResult> storage;  // one per twin policy
  double min_expert_exact = 0.1;
  double target_normalized = 95;
  double seconds = 0;

  const GenerativeMethod* Find(const std::string& id) const;
  // The normalized scores of `m` (see above); 0 when no task counts.
  double NormalizedExact(const GenerativeMethod& m) const;
  double NormalizedLoss(const GenerativeMethod& m) const;
  // Whether task t counts in NormalizedExact.
  bool Counted(size_t t) const;
};

absl::StatusOr<GenerativeResult> RunGenerativeEvaluation(const EvalInputs& inputs,
                                                         const EvalOptions& options);

// JSON layout:
//   {"run": {...as ResultJson's}, "tasks": [{"name", "test_examples", "validation_examples",
//    "target_tokens", "counted"}],
//    "methods": [{"id", "label", "family", "policy", "routing", "lambda" (or null),
//                 "exact": {"<task>": em}, "loss": {"<task>": nats}, "mean_exact", "mean_loss",
//                 "normalized_exact", "normalized_loss"}],
//    "lambda_search": [...], "routing": {"accuracy": {"<task>": acc}, "mean", "confusion"},
//    "storage": [...as ResultJson's], "min_expert_exact", "target_normalized"}
std::string GenerativeMarkdown(const GenerativeResult& result, const RunInfo& info);
std::string GenerativeJson(const GenerativeResult& result, const RunInfo& info);

}  // namespace twin::eval

#endif  // TWIN_BENCH_EVAL_GENERATIVE_EVAL_H_
