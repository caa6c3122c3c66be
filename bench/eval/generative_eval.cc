#include "bench/eval/generative_eval.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/eval/twin_factors.h"
#include "bench/zoo/causal_eval.h"
#include "core/model/hf_decoder.h"
#include "core/model/hf_decoder_config.h"
#include "core/model/layer_params.h"
#include "core/model/mixed_params.h"
#include "core/model/task_heads.h"
#include "core/router/ngram_features.h"
#include "core/status_macros.h"
#include "server/cluster_key.h"

namespace twin::eval {
namespace {

constexpr char kRouter[] = "router";
constexpr char kTaskGiven[] = "task";

using Scores = std::vector<zoo::CausalScores>;        // per task
using RowWeights = std::vector<std::vector<double>>;  // per example: T weights

GenerativeMethod Method(std::string id, std::string label, std::string family,
                        std::string policy = "", std::string routing = "") {
  GenerativeMethod m;
  m.id = std::move(id);
  m.label = std::move(label);
  m.family = std::move(family);
  m.policy = std::move(policy);
  m.routing = std::move(routing);
  return m;
}

std::map<std::string, at::Tensor> ByName(const NamedTensors& tensors) {
  return std::map<std::string, at::Tensor>(tensors.begin(), tensors.end());
}

class GenerativeRun {
 public:
  GenerativeRun(const EvalInputs& in, const EvalOptions& o, const HfDecoder& decoder,
                GenerativeResult* r)
      : in_(in), o_(o), decoder_(decoder), r_(r), start_(std::chrono::steady_clock::now()) {
    scoring_.batch_size = o.batch_size;
    for (const NamedTensors& head : in_.heads) {
      if (head.empty()) continue;
      head_params_.push_back(std::make_unique<DenseParams>(ByName(head)));
      heads_.push_back(head_params_.back().get());
      head_names_.insert(kHfLmHead);
    }
  }

  absl::Status Route();
  absl::Status Baselines();
  absl::Status StaticMerges();
  absl::Status TwinSweep();

 private:
  void Log(const std::string& line) const {
    if (!o_.progress) return;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "twin-eval: [%7.1f s] %s\n", s, line.c_str());
  }
  const std::vector<zoo::CausalExample>& Examples(size_t t, bool validation) const {
    return validation ? in_.tasks[t].causal_validation : in_.tasks[t].causal_test;
  }
  // `body` with task t's head (the tensors kept per task, if any: an untied LM head).
  DenseParams WithHead(const NamedTensors& body, size_t t) const {
    std::map<std::string, at::Tensor> tensors = ByName(body);
    for (const auto& [name, tensor] : in_.heads[t]) tensors[name] = tensor;
    return DenseParams(std::move(tensors));
  }
  bool TaskHeads() const { return !in_.heads.empty() && !in_.heads[0].empty(); }
  // `theta` (with each task's own head) for every task's examples of the split.
  absl::StatusOr<Scores> Dense(const NamedTensors& theta, bool validation) const {
    Scores out;
    for (size_t t = 0; t < in_.tasks.size(); ++t) {
      const DenseParams params = WithHead(theta, t);
      ASSIGN_OR_RETURN(zoo::CausalScores s,
                       zoo::ScoreCausalLm(decoder_, params, Examples(t, validation), scoring_));
      out.push_back(s);
    }
    return out;
  }
  // Each test example of task t with theta* plus its own mixture weights[t][i], unfused, and
  // (when the version keeps them) the LM head of its top task top_tasks[t][i], as the server's
  // sequences read theirs.
  absl::StatusOr<Scores> Mixed(const TwinWeights& twin, const std::vector<RowWeights>& weights,
                               const std::vector<std::vector<int>>& top_tasks) const {
    Scores out;
    for (size_t t = 0; t < in_.tasks.size(); ++t) {
      const RowWeights& rows = weights[t];
      zoo::ExampleParams params = [&](const std::vector<size_t>& index)
          -> absl::StatusOr<std::shared_ptr<const LayerParams>> {
        RowWeights batch;
        batch.reserve(index.size());
        for (size_t i : index) batch.push_back(rows[i]);
        try {
          ASSIGN_OR_RETURN(MixedParams mixed,
                           MixedParams::Create(twin, batch, MixStrategy::kGrouped));
          auto body = std::make_unique<MixedParams>(std::move(mixed));
          if (!TaskHeads()) return std::shared_ptr<const LayerParams>(std::move(body));
          std::vector<int> row_tasks;
          for (size_t i : index) row_tasks.push_back(top_tasks[t][i]);
          return std::shared_ptr<const LayerParams>(std::make_shared<TaskHeadParams>(
              std::move(body), heads_, std::move(row_tasks), head_names_));
        } catch (const std::exception& e) {
          return absl::InternalError(absl::StrCat("mixing weights: ", e.what()));
        }
      };
      ASSIGN_OR_RETURN(zoo::CausalScores s,
                       zoo::ScoreCausalLm(decoder_, params, in_.tasks[t].causal_test, scoring_));
      out.push_back(s);
    }
    return out;
  }
  void Add(GenerativeMethod m, const Scores& scores) {
    for (const zoo::CausalScores& s : scores) {
      m.exact.push_back(s.exact_match);
      m.loss.push_back(s.mean_loss);
    }
    Log(absl::StrFormat("%-28s mean exact match %.4f, mean loss %.4f", m.id, Mean(m.exact),
                        Mean(m.loss)));
    r_->methods.push_back(std::move(m));
  }
  absl::StatusOr<double> ChooseLambda(MergeMethod method, const std::vector<double>& grid);

  const EvalInputs& in_;
  const EvalOptions& o_;
  const HfDecoder& decoder_;
  std::vector<std::unique_ptr<DenseParams>> head_params_;  // per task, when heads are kept
  std::vector<const LayerParams*> heads_;
  std::set<std::string> head_names_;
  GenerativeResult* r_;
  zoo::CausalEvalOptions scoring_;
  std::chrono::steady_clock::time_point start_;
  std::vector<RowWeights> router_;  // per task, per test example: the router's top-k weights
  std::vector<RowWeights> given_;   // per task, per test example: one-hot on the task
  // Per task, per test example: the top task of router_'s and of given_'s weights.
  std::vector<std::vector<int>> router_top_;
  std::vector<std::vector<int>> given_top_;
};

absl::Status GenerativeRun::Route() {
  const size_t T = in_.tasks.size();
  ClusterKeyOptions exact;  // the server's Generate routing: top_k weights, renormalised
  exact.top_k = o_.key_top_k;
  exact.grid = 0;
  r_->routing.routing = kRouter;
  for (size_t t = 0; t < T; ++t) {
    RowWeights routed, given;
    std::vector<int> routed_top;
    std::vector<int64_t> confusion(T, 0);
    int64_t right = 0;
    for (const zoo::CausalExample& e : in_.tasks[t].causal_test) {
      at::Tensor probs;
      {
        const at::Tensor ids = at::tensor(e.prompt, at::kLong).unsqueeze(0);
        ASSIGN_OR_RETURN(at::Tensor features,
                         NgramFeatures(ids, at::ones_like(ids), in_.router_input.ngram));
        ASSIGN_OR_RETURN(at::Tensor logits, in_.router->Logits(features));
        c10::InferenceMode guard;
        probs = at::softmax(logits / o_.temperature, 1).to(at::kDouble).contiguous();
      }
      const double* p = probs.data_ptr<double>();
      const ClusterKey key = QuantizeWeights(std::vector<double>(p, p + T), exact);
      routed.push_back(key.weights);
      routed_top.push_back(key.top_task);
      ++confusion[key.top_task];
      right += key.top_task == static_cast<int>(t) ? 1 : 0;
      std::vector<double> one_hot(T, 0.0);
      one_hot[t] = 1.0;
      given.push_back(std::move(one_hot));
    }
    r_->routing.accuracy.push_back(static_cast<double>(right) /
                                   std::max<size_t>(1, in_.tasks[t].causal_test.size()));
    r_->routing.confusion.push_back(std::move(confusion));
    given_top_.emplace_back(given.size(), static_cast<int>(t));
    router_.push_back(std::move(routed));
    given_.push_back(std::move(given));
    router_top_.push_back(std::move(routed_top));
  }
  Log(absl::StrFormat("routing: mean accuracy %.4f", Mean(r_->routing.accuracy)));
  return absl::OkStatus();
}

absl::Status GenerativeRun::Baselines() {
  ASSIGN_OR_RETURN(Scores base, Dense(in_.base, false));
  Add(Method("base", TaskHeads() ? "pretrained base + expert LM heads" : "pretrained base",
             "base"),
      base);
  Scores expert;
  for (size_t t = 0; t < in_.tasks.size(); ++t) {
    const DenseParams params = WithHead(in_.experts[t], t);
    ASSIGN_OR_RETURN(zoo::CausalScores s,
                     zoo::ScoreCausalLm(decoder_, params, in_.tasks[t].causal_test, scoring_));
    expert.push_back(s);
  }
  Add(Method("expert", "individual experts", "expert"), expert);
  ASSIGN_OR_RETURN(Scores shared, Dense(in_.shared, false));
  Add(Method("shared", absl::StrCat("published shared expert (", in_.shared_method, ")"), "static"),
      shared);
  return absl::OkStatus();
}

absl::StatusOr<double> GenerativeRun::ChooseLambda(MergeMethod method,
                                                   const std::vector<double>& grid) {
  LambdaSearch search;
  search.method = MergeMethodName(method);
  search.grid = grid;
  search.chosen = DefaultLambda(method);
  bool validation = !grid.empty();
  for (const EvalTask& t : in_.tasks) validation = validation && !t.causal_validation.empty();
  if (validation) {
    double best_exact = -1, best_loss = 0;
    for (double lambda : grid) {
      ASSIGN_OR_RETURN(NamedTensors theta, StaticMerge(in_, o_, method, lambda));
      ASSIGN_OR_RETURN(Scores scores, Dense(theta, true));
      double exact = 0, loss = 0;
      for (const zoo::CausalScores& s : scores) {
        exact += s.exact_match / scores.size();
        loss += s.mean_loss / scores.size();
      }
      search.validation_mean.push_back(exact);
      if (exact > best_exact || (exact == best_exact && loss < best_loss)) {
        best_exact = exact;
        best_loss = loss;
        search.chosen = lambda;
      }
    }
    Log(absl::StrFormat("%s: lambda %.2f (validation mean exact match %.4f, loss %.4f)",
                        search.method, search.chosen, best_exact, best_loss));
  }
  r_->searches.push_back(search);
  return search.chosen;
}

absl::Status GenerativeRun::StaticMerges() {
  ASSIGN_OR_RETURN(NamedTensors linear, StaticMerge(in_, o_, MergeMethod::kLinear, 1.0));
  ASSIGN_OR_RETURN(Scores linear_scores, Dense(linear, false));
  Add(Method("linear", "weight averaging", "static"), linear_scores);
  const std::pair<MergeMethod, const std::vector<double>*> searched[] = {
      {MergeMethod::kTaskArithmetic, &o_.lambdas},
      {MergeMethod::kTies, &o_.ties_lambdas},
      {MergeMethod::kDareTaskArithmetic, &o_.lambdas}};
  for (const auto& [method, grid] : searched) {
    ASSIGN_OR_RETURN(double lambda, ChooseLambda(method, *grid));
    ASSIGN_OR_RETURN(NamedTensors theta, StaticMerge(in_, o_, method, lambda));
    ASSIGN_OR_RETURN(Scores scores, Dense(theta, false));
    const std::string label = StaticMethodLabel(method, o_);
    GenerativeMethod m = Method(MergeMethodName(method), label, "static");
    m.lambda = lambda;
    Add(std::move(m), scores);
  }
  return absl::OkStatus();
}

absl::Status GenerativeRun::TwinSweep() {
  const std::vector<RankPolicy> policies = SweepPolicies(o_);
  const StorageResult fixed = FixedStorage(in_);
  SvdOptions svd;
  svd.seed = o_.seed;
  for (const RankPolicy& policy : policies) {
    ASSIGN_OR_RETURN(TwinBuild build, BuildTwin(in_, policy, svd));
    const StorageResult storage = TwinStorage(fixed, build);
    r_->storage.push_back(storage);
    Log(absl::StrFormat("twin %s: kept rank %.3f, mean relative error %.4f, %.3f MiB", build.policy,
                        build.kept_rank_fraction, build.mean_rel_error,
                        storage.total_bytes() / 1048576.0));
    for (const char* routing : {kRouter, kTaskGiven}) {
      const bool router = std::string(routing) == kRouter;
      ASSIGN_OR_RETURN(Scores scores, Mixed(*build.weights, router ? router_ : given_,
                                                router ? router_top_ : given_top_));
      Add(Method(
              absl::StrCat("twin:", build.policy, ":", routing),
              absl::StrCat("Twin-Merging, ", build.policy, ", ", router ? "router" : "task given"),
              "twin", build.policy, routing),
          scores);
    }
  }
  return absl::OkStatus();
}

std::string Fixed(double v, int digits) { return absl::StrFormat("%.*f", digits, v); }

// exact or loss per task, their mean and both normalized scores.
std::string MethodTable(const GenerativeResult& r, bool loss) {
  std::vector<std::string> head = {"method", "lambda"};
  head.insert(head.end(), r.tasks.begin(), r.tasks.end());
  head.insert(head.end(), {"mean", "normalized (exact)", "normalized (loss)"});
  std::string out = MarkdownHeader(head);
  for (const GenerativeMethod& m : r.methods) {
    std::vector<std::string> cells = {m.label, m.lambda >= 0 ? Fixed(m.lambda, 2) : ""};
    const std::vector<double>& values = loss ? m.loss : m.exact;
    for (double v : values) cells.push_back(Fixed(v, 4));
    cells.push_back(Fixed(Mean(values), 4));
    cells.push_back(Fixed(r.NormalizedExact(m), 1));
    cells.push_back(Fixed(r.NormalizedLoss(m), 1));
    out += MarkdownRow(cells);
  }
  return out;
}

std::string SweepTable(const GenerativeResult& r) {
  std::string out = MarkdownHeader({"policy", "kept rank", "rel. error", "router (exact / loss)",
                                    "task given (exact / loss)", "bytes (fp32 twin)",
                                    "bytes (fp16 twin)", "of T experts"});
  for (const StorageResult& s : r.storage) {
    std::vector<std::string> cells = {s.policy, Fixed(s.kept_rank_fraction, 3),
                                      Fixed(s.mean_rel_error, 3)};
    for (const char* routing : {kRouter, kTaskGiven}) {
      const GenerativeMethod* m = r.Find(absl::StrCat("twin:", s.policy, ":", routing));
      cells.push_back(m == nullptr ? ""
                                   : absl::StrFormat("%.1f / %.1f", r.NormalizedExact(*m),
                                                     r.NormalizedLoss(*m)));
    }
    cells.push_back(absl::StrFormat("%.3f MiB", s.total_bytes() / 1048576.0));
    cells.push_back(absl::StrFormat("%.3f MiB", s.total_fp16_bytes() / 1048576.0));
    cells.push_back(absl::StrFormat("%.1f%% / %.1f%%", 100.0 * s.total_bytes() / s.experts_bytes,
                                    100.0 * s.total_fp16_bytes() / s.experts_bytes));
    out += MarkdownRow(cells);
  }
  return out;
}

nlohmann::json PerTask(const GenerativeResult& r, const std::vector<double>& values) {
  nlohmann::json out = nlohmann::json::object();
  for (size_t t = 0; t < r.tasks.size() && t < values.size(); ++t) out[r.tasks[t]] = values[t];
  return out;
}

}  // namespace

const GenerativeMethod* GenerativeResult::Find(const std::string& id) const {
  for (const GenerativeMethod& m : methods) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

bool GenerativeResult::Counted(size_t t) const {
  const GenerativeMethod* expert = Find("expert");
  return expert != nullptr && t < expert->exact.size() && expert->exact[t] > 0 &&
         expert->exact[t] >= min_expert_exact;
}

double GenerativeResult::NormalizedExact(const GenerativeMethod& m) const {
  const GenerativeMethod* expert = Find("expert");
  if (expert == nullptr) return 0;
  double sum = 0;
  int counted = 0;
  for (size_t t = 0; t < m.exact.size(); ++t) {
    if (!Counted(t)) continue;
    sum += 100.0 * m.exact[t] / expert->exact[t];
    ++counted;
  }
  return counted ? sum / counted : 0;
}

double GenerativeResult::NormalizedLoss(const GenerativeMethod& m) const {
  const GenerativeMethod* expert = Find("expert");
  const GenerativeMethod* base = Find("base");
  if (expert == nullptr || base == nullptr) return 0;
  double sum = 0;
  int counted = 0;
  for (size_t t = 0; t < m.loss.size() && t < base->loss.size(); ++t) {
    const double gain = base->loss[t] - expert->loss[t];
    if (!(gain > 0)) continue;
    sum += 100.0 * (base->loss[t] - m.loss[t]) / gain;
    ++counted;
  }
  return counted ? sum / counted : 0;
}

absl::StatusOr<GenerativeResult> RunGenerativeEvaluation(const EvalInputs& inputs,
                                                         const EvalOptions& options) {
  if (!inputs.generative()) {
    return absl::InvalidArgumentError("the version is not a causal language model");
  }
  RETURN_IF_ERROR(ValidateEvalOptions(options, inputs.tasks.size()));
  if (options.key_top_k < 1 || options.key_top_k > static_cast<int>(inputs.tasks.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the router's top_k must be in [1, ", inputs.tasks.size(), "], got ", options.key_top_k));
  }
  if (!(options.temperature > 0) || options.batch_size < 1) {
    return absl::InvalidArgumentError("temperature and batch size must be positive");
  }
  if (inputs.experts.size() != inputs.tasks.size() || inputs.router == nullptr) {
    return absl::InvalidArgumentError("inputs need one expert per task and a router");
  }
  if (inputs.router_input.features != "ngram") {
    return absl::InvalidArgumentError(
        "a causal language model's router reads n-gram counts (router.features: ngram)");
  }
  const std::string lm_head_prefix = absl::StrCat(kHfLmHead, ".");
  for (size_t t = 0; t < inputs.tasks.size(); ++t) {
    for (const auto& [name, tensor] : inputs.heads[t]) {
      if (!absl::StartsWith(name, lm_head_prefix)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "version ", inputs.version, " keeps '", name, "' per task (head_pattern '",
            inputs.head_pattern, "'): a causal language model may keep only its LM head per "
            "task"));
      }
    }
    if (inputs.tasks[t].causal_test.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("task ", inputs.tasks[t].name, " has no test examples"));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(HfDecoderConfig config, LoadHfDecoderConfigFile(inputs.decoder_config_path));
  ASSIGN_OR_RETURN(std::unique_ptr<HfDecoder> decoder, HfDecoder::Create(config));
  GenerativeResult result;
  result.version = inputs.version;
  result.shared_method = inputs.shared_method;
  if (!inputs.heads.empty() && !inputs.heads[0].empty()) result.lm_head_pattern = inputs.head_pattern;
  result.family = decoder->family_name();
  result.router_top_k = options.key_top_k;
  result.temperature = options.temperature;
  result.min_expert_exact = options.min_expert_exact;
  result.target_normalized = options.target_normalized;
  for (const EvalTask& t : inputs.tasks) {
    result.tasks.push_back(t.name);
    result.test_examples.push_back(static_cast<int64_t>(t.causal_test.size()));
    result.validation_examples.push_back(static_cast<int64_t>(t.causal_validation.size()));
    int64_t tokens = 0;
    for (const zoo::CausalExample& e : t.causal_test) tokens += e.target.size();
    result.target_tokens.push_back(tokens);
  }
  GenerativeRun run(inputs, options, *decoder, &result);
  RETURN_IF_ERROR(run.Route());
  RETURN_IF_ERROR(run.Baselines());
  RETURN_IF_ERROR(run.StaticMerges());
  RETURN_IF_ERROR(run.TwinSweep());
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::string GenerativeMarkdown(const GenerativeResult& r, const RunInfo& info) {
  std::string out = "# Twin-Merging quality on the generative zoo (twin-eval)\n\n";
  absl::StrAppend(&out, "Command:\n\n```sh\n", info.command, "\n```\n\n");
  absl::StrAppend(&out, "Machine: ", info.machine, "; ", info.threads,
                  " intra-op thread(s). Date: ", info.date, ". Total time ", Fixed(r.seconds, 1),
                  " s.\n\n");
  std::vector<std::string> sizes, counted;
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    sizes.push_back(
        absl::StrCat(r.tasks[t], " ", r.test_examples[t], " / ", r.validation_examples[t]));
    if (r.Counted(t)) counted.push_back(r.tasks[t]);
  }
  absl::StrAppend(
      &out, "Zoo `", info.zoo_dir, "`, artifact set version `", r.version, "` (a ", r.family,
      " causal LM; shared expert: ", r.shared_method,
      "). Every method runs through the native decoder; Twin-Merging decodes each example with "
      "theta* plus its own mixture of the twin factors inside every layer (the server's "
      "unfused path), examples of different mixtures in one batch.",
      r.lm_head_pattern.empty()
          ? std::string()
          : absl::StrCat(" Each task keeps its expert's LM head (head_pattern `",
                         r.lm_head_pattern,
                         "`): the base, theta* and the static merges read each task's own head "
                         "for its examples, Twin-Merging the head of the example's top task."),
      "\n\n",
      "Examples per task (test / validation): ", absl::StrJoin(sizes, ", "),
      ". Exact match: the greedy continuation of the prompt is the target, eos included. "
      "Loss: nats per target token.\n\n",
      "Normalized (exact) = 100 x exact match / the expert's, averaged over the tasks whose "
      "expert reaches an exact match of ",
      Fixed(r.min_expert_exact, 2),
      " (here: ", counted.empty() ? std::string("none") : absl::StrJoin(counted, ", "),
      "). Normalized (loss) = 100 x (base loss - loss) / (base loss - expert loss), the share "
      "of each expert's loss reduction kept, averaged over every task.\n\n");
  absl::StrAppend(
      &out,
      "Twin-Merging rows: `router` routes the prompt as twin-server's Generate does when "
      "no task is named (n-gram router, softmax at temperature ",
      Fixed(r.temperature, 2), ", its top ", r.router_top_k,
      " weights renormalised, kept for the whole sequence); "
      "`task given` weights the named task's twin alone (`routing.task_given: task`).\n\n");
  absl::StrAppend(&out, "## Exact match\n\n", MethodTable(r, false), "\n");
  absl::StrAppend(&out, "## Mean target loss\n\n", MethodTable(r, true), "\n");
  absl::StrAppend(&out, "## Twin-Merging rank sweep (normalized exact / loss)\n\n", SweepTable(r),
                  "\n");
  std::vector<std::string> head = {"routing"};
  head.insert(head.end(), r.tasks.begin(), r.tasks.end());
  head.push_back("mean");
  absl::StrAppend(&out, "## Routing accuracy (top task = true task)\n\n", MarkdownHeader(head));
  std::vector<std::string> cells = {r.routing.routing};
  for (double a : r.routing.accuracy) cells.push_back(Fixed(a, 4));
  cells.push_back(Fixed(Mean(r.routing.accuracy), 4));
  absl::StrAppend(&out, MarkdownRow(cells));
  std::vector<std::string> confusion_head = {"true task \\ top task"};
  confusion_head.insert(confusion_head.end(), r.tasks.begin(), r.tasks.end());
  absl::StrAppend(&out, "\nConfusion (test examples):\n\n", MarkdownHeader(confusion_head));
  for (size_t t = 0; t < r.routing.confusion.size() && t < r.tasks.size(); ++t) {
    std::vector<std::string> row = {r.tasks[t]};
    for (int64_t c : r.routing.confusion[t]) row.push_back(absl::StrCat(c));
    absl::StrAppend(&out, MarkdownRow(row));
  }
  absl::StrAppend(&out, "\n## Lambda search (mean validation exact match over tasks)\n\n",
                  LambdaSearchList(r.searches));
  absl::StrAppend(&out, "\n## Storage\n\n", StorageTable(r.storage),
                  r.lm_head_pattern.empty()
                      ? "The LM head and embeddings are merged tensors (in theta* and the twins); "
                        "there are no per-task heads.\n"
                      : "The embeddings are merged tensors (in theta* and the twins); `heads` is "
                        "the T experts' own LM heads, kept whole.\n");
  return out;
}

std::string GenerativeJson(const GenerativeResult& r, const RunInfo& info) {
  nlohmann::json j;
  j["run"] = {{"command", info.command},
              {"machine", info.machine},
              {"date", info.date},
              {"threads", info.threads},
              {"zoo", info.zoo_dir},
              {"version", r.version},
              {"shared_method", r.shared_method},
              {"lm_head_pattern", r.lm_head_pattern},
              {"family", r.family},
              {"router_top_k", r.router_top_k},
              {"temperature", r.temperature},
              {"seconds", r.seconds}};
  j["tasks"] = nlohmann::json::array();
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    j["tasks"].push_back({{"name", r.tasks[t]},
                          {"test_examples", r.test_examples[t]},
                          {"validation_examples", r.validation_examples[t]},
                          {"target_tokens", r.target_tokens[t]},
                          {"counted", r.Counted(t)}});
  }
  j["methods"] = nlohmann::json::array();
  for (const GenerativeMethod& m : r.methods) {
    j["methods"].push_back(
        {{"id", m.id},
         {"label", m.label},
         {"family", m.family},
         {"policy", m.policy},
         {"routing", m.routing},
         {"lambda", m.lambda < 0 ? nlohmann::json(nullptr) : nlohmann::json(m.lambda)},
         {"exact", PerTask(r, m.exact)},
         {"loss", PerTask(r, m.loss)},
         {"mean_exact", Mean(m.exact)},
         {"mean_loss", Mean(m.loss)},
         {"normalized_exact", r.NormalizedExact(m)},
         {"normalized_loss", r.NormalizedLoss(m)}});
  }
  j["lambda_search"] = LambdaSearchJson(r.searches);
  j["routing"] = {{"accuracy", PerTask(r, r.routing.accuracy)},
                  {"mean", Mean(r.routing.accuracy)},
                  {"confusion", r.routing.confusion}};
  j["storage"] = StorageJson(r.storage);
  j["min_expert_exact"] = r.min_expert_exact;
  j["target_normalized"] = r.target_normalized;
  return j.dump(2) + "\n";
}

}  // namespace twin::eval
