#include "bench/eval/eval.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/eval/evaluator.h"
#include "bench/eval/twin_factors.h"
#include "core/merge/merge_methods.h"
#include "core/status_macros.h"
#include "server/cluster_key.h"

namespace twin::eval {
namespace {

// How the rows of one routing mode are mixed and which head they get in task-unknown mode.
struct Routing {
  std::string name;                 // "router", "oracle", "key_g10", ...
  std::vector<at::Tensor> weights;  // per task [n_t, T] double
  std::vector<at::Tensor> routed;   // per task bool [n_t]: top task == true task
};

MethodResult Method(std::string id, std::string label, std::string family, std::string policy = "",
                    std::string routing = "") {
  MethodResult m;
  m.id = std::move(id);
  m.label = std::move(label);
  m.family = std::move(family);
  m.policy = std::move(policy);
  m.routing = std::move(routing);
  return m;
}

std::vector<double> Accuracies(const Correct& correct) {
  std::vector<double> out;
  for (const at::Tensor& c : correct) out.push_back(MeanOf(c));
  return out;
}

std::vector<double> UnknownAccuracies(const Correct& correct,
                                      const std::vector<at::Tensor>& routed) {
  std::vector<double> out;
  for (size_t t = 0; t < correct.size(); ++t)
    out.push_back(MeanOf(correct[t].logical_and(routed[t])));
  return out;
}

class Run {
 public:
  Run(const EvalInputs& in, const EvalOptions& o, Evaluator* ev, EvalResult* r)
      : in_(in), o_(o), ev_(ev), r_(r), start_(std::chrono::steady_clock::now()) {}

  absl::Status Baselines();
  absl::Status StaticMerges();
  absl::Status Routings();
  absl::Status TwinSweep();

 private:
  void Log(const std::string& line) const {
    if (!o_.progress) return;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "twin-eval: [%7.1f s] %s\n", s, line.c_str());
  }
  absl::StatusOr<NamedTensors> Merge(MergeMethod method, double lambda) const;
  absl::StatusOr<double> ChooseLambda(MergeMethod method, const std::vector<double>& grid);
  // Per task and class, the mean of `per_row` (bool [n_t]) over the class's test rows.
  std::vector<std::vector<double>> ByClass(const std::vector<at::Tensor>& per_row) const {
    std::vector<std::vector<double>> out;
    for (size_t t = 0; t < per_row.size(); ++t) {
      const at::Tensor& labels = ev_->labels(t, Split::kTest);
      std::vector<double> per_class;
      for (size_t c = 0; c < in_.tasks[t].labels.size(); ++c) {
        const at::Tensor of_class = labels.eq(static_cast<int64_t>(c));
        per_class.push_back(of_class.any().item<bool>() ? MeanOf(per_row[t].index({of_class}))
                                                        : std::nan(""));
      }
      out.push_back(std::move(per_class));
    }
    return out;
  }

  void Add(MethodResult m, const Correct& correct, const std::vector<at::Tensor>& routed) {
    m.given = Accuracies(correct);
    m.unknown = UnknownAccuracies(correct, routed);
    m.class_given = ByClass(correct);
    Log(absl::StrFormat("%-34s mean accuracy %.4f given, %.4f unknown", m.id, Mean(m.given),
                        Mean(m.unknown)));
    r_->methods.push_back(std::move(m));
  }

  const EvalInputs& in_;
  const EvalOptions& o_;
  Evaluator* ev_;
  EvalResult* r_;
  std::chrono::steady_clock::time_point start_;
  std::vector<Routing> routings_;  // router first, then oracle, then keys
};

absl::StatusOr<NamedTensors> Run::Merge(MergeMethod method, double lambda) const {
  return StaticMerge(in_, o_, method, lambda);
}

absl::StatusOr<double> Run::ChooseLambda(MergeMethod method, const std::vector<double>& grid) {
  LambdaSearch search;
  search.method = MergeMethodName(method);
  search.grid = grid;
  search.chosen = DefaultLambda(method);
  int64_t validation_rows = 0;
  for (size_t t = 0; t < ev_->num_tasks(); ++t) validation_rows += ev_->rows(t, Split::kValidation);
  if (validation_rows > 0 && !grid.empty()) {
    double best = -1;
    for (double lambda : grid) {
      ASSIGN_OR_RETURN(NamedTensors theta, Merge(method, lambda));
      ASSIGN_OR_RETURN(Correct c, ev_->Static(theta, Split::kValidation));
      search.validation_mean.push_back(Mean(Accuracies(c)));
      if (search.validation_mean.back() > best) {
        best = search.validation_mean.back();
        search.chosen = lambda;
      }
    }
    Log(absl::StrFormat("%s: lambda %.2f (validation mean accuracy %.4f)", search.method,
                        search.chosen, best));
  }
  r_->searches.push_back(search);
  return search.chosen;
}

absl::Status Run::Routings() {
  const size_t T = ev_->num_tasks();
  ASSIGN_OR_RETURN(std::vector<at::Tensor> router,
                   ev_->RouterWeights(o_.temperature, Split::kTest));
  Routing exact{"router", {}, {}};
  Routing oracle{"oracle", {}, {}};
  for (size_t t = 0; t < T; ++t) {
    exact.weights.push_back(router[t].to(at::kDouble));
    exact.routed.push_back(router[t].argmax(1).eq(static_cast<int64_t>(t)));
    const int64_t n = ev_->rows(t, Split::kTest);
    oracle.weights.push_back(at::zeros({n, static_cast<int64_t>(T)}, at::kDouble));
    oracle.weights.back().select(1, t).fill_(1.0);
    oracle.routed.push_back(at::ones({n}, at::kBool));
  }
  routings_.push_back(std::move(exact));
  routings_.push_back(std::move(oracle));
  for (int grid : o_.key_grids) {
    const ClusterKeyOptions key_options{o_.key_top_k, grid};
    RETURN_IF_ERROR(ValidateClusterKeyOptions(key_options, static_cast<int>(T)));
    Routing key{absl::StrCat("key_g", grid), {}, {}};
    for (size_t t = 0; t < T; ++t) {
      at::Tensor w = routings_[0].weights[t].contiguous();
      const int64_t n = w.size(0);
      at::Tensor quantised = at::zeros({n, static_cast<int64_t>(T)}, at::kDouble);
      at::Tensor routed = at::zeros({n}, at::kBool);
      double* q = quantised.data_ptr<double>();
      bool* top_is_true = routed.data_ptr<bool>();
      for (int64_t i = 0; i < n; ++i) {
        const double* p = w.data_ptr<double>() + i * T;
        ClusterKey k = QuantizeWeights(std::vector<double>(p, p + T), key_options);
        std::copy(k.weights.begin(), k.weights.end(), q + i * T);
        top_is_true[i] = k.top_task == static_cast<int>(t);
      }
      key.weights.push_back(quantised);
      key.routed.push_back(routed);
    }
    routings_.push_back(std::move(key));
  }
  for (const Routing& routing : routings_) {
    if (routing.name == "oracle") continue;
    RoutingResult rr{routing.name, {}, ByClass(routing.routed), {}};
    for (size_t t = 0; t < routing.routed.size(); ++t) {
      rr.accuracy.push_back(MeanOf(routing.routed[t]));
      if (routing.name == "router") {
        const int64_t tasks = static_cast<int64_t>(routing.routed.size());
        const at::Tensor counts =
            at::bincount(routing.weights[t].argmax(1), {}, tasks).to(at::kLong).contiguous();
        rr.confusion.emplace_back(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + tasks);
      }
    }
    Log(absl::StrFormat("routing %-8s mean accuracy %.4f", rr.routing, Mean(rr.accuracy)));
    r_->routing.push_back(std::move(rr));
  }
  return absl::OkStatus();
}

absl::Status Run::Baselines() {
  const std::vector<at::Tensor>& routed = routings_[0].routed;
  ASSIGN_OR_RETURN(Correct base, ev_->Static(in_.base, Split::kTest));
  Add(Method("base", "pretrained base + expert heads", "base"), base, routed);
  Correct expert;
  for (size_t t = 0; t < ev_->num_tasks(); ++t) {
    ASSIGN_OR_RETURN(at::Tensor c, ev_->StaticTask(in_.experts[t], t, Split::kTest));
    expert.push_back(c);
  }
  Add(Method("expert", "individual experts", "expert"), expert, routed);
  ASSIGN_OR_RETURN(Correct shared, ev_->Static(in_.shared, Split::kTest));
  Add(Method("shared", absl::StrCat("published shared expert (", in_.shared_method, ")"), "static"),
      shared, routed);
  return absl::OkStatus();
}

absl::Status Run::StaticMerges() {
  const std::vector<at::Tensor>& routed = routings_[0].routed;
  ASSIGN_OR_RETURN(NamedTensors linear, Merge(MergeMethod::kLinear, 1.0));
  ASSIGN_OR_RETURN(Correct c, ev_->Static(linear, Split::kTest));
  Add(Method("linear", "weight averaging", "static"), c, routed);
  const std::pair<MergeMethod, const std::vector<double>*> searched[] = {
      {MergeMethod::kTaskArithmetic, &o_.lambdas},
      {MergeMethod::kTies, &o_.ties_lambdas},
      {MergeMethod::kDareTaskArithmetic, &o_.lambdas}};
  for (const auto& [method, grid] : searched) {
    ASSIGN_OR_RETURN(double lambda, ChooseLambda(method, *grid));
    ASSIGN_OR_RETURN(NamedTensors theta, Merge(method, lambda));
    ASSIGN_OR_RETURN(Correct correct, ev_->Static(theta, Split::kTest));
    const std::string label = StaticMethodLabel(method, o_);
    MethodResult m = Method(MergeMethodName(method), label, "static");
    m.lambda = lambda;
    Add(std::move(m), correct, routed);
  }
  return absl::OkStatus();
}

absl::Status Run::TwinSweep() {
  const std::vector<RankPolicy> policies = SweepPolicies(o_);
  const StorageResult fixed = FixedStorage(in_);
  SvdOptions svd;
  svd.seed = o_.seed;
  for (const RankPolicy& policy : policies) {
    ASSIGN_OR_RETURN(TwinBuild build, BuildTwin(in_, policy, svd));
    const StorageResult storage = TwinStorage(fixed, build);
    r_->storage.push_back(storage);
    Log(absl::StrFormat("twin %s: kept rank %.3f, mean relative error %.4f, %.2f MiB", build.policy,
                        build.kept_rank_fraction, build.mean_rel_error,
                        storage.total_bytes() / 1048576.0));
    for (const Routing& routing : routings_) {
      const std::string id = absl::StrCat("twin:", build.policy, ":", routing.name);
      int64_t step = 0;
      auto progress = [&](int64_t done, int64_t total) {
        const int64_t every = std::max<int64_t>(1, total / 4);
        if (total >= 100 && done % every == 0 && done < total && ++step) {
          Log(absl::StrFormat("%s: %d/%d fusions", id, done, total));
        }
      };
      int64_t fusions = 0;
      ASSIGN_OR_RETURN(
          Correct c, ev_->Fused(*build.weights, routing.weights, Split::kTest, progress, &fusions));
      MethodResult m = Method(id, absl::StrCat("Twin-Merging, ", build.policy, ", ", routing.name),
                              "twin", build.policy, routing.name);
      m.fusions = fusions;
      Add(std::move(m), c, routing.routed);
    }
  }
  const MethodResult* expert = r_->Find("expert");
  std::vector<double> ratios = o_.ratios;
  std::sort(ratios.rbegin(), ratios.rend());
  for (const Routing& routing : routings_) {
    EvalResult::MinRatio min{routing.name};
    for (bool unknown : {false, true}) {
      double& found = unknown ? min.unknown : min.given;
      for (double ratio : ratios) {
        const MethodResult* m = r_->Find(absl::StrCat("twin:ratio=", ratio, ":", routing.name));
        if (NormalizedScore(unknown ? m->unknown : m->given, expert->given) <
            o_.target_normalized) {
          break;
        }
        found = ratio;
      }
    }
    r_->min_ratios.push_back(min);
  }
  return absl::OkStatus();
}

}  // namespace

StorageResult FixedStorage(const EvalInputs& in) {
  StorageResult fixed;
  fixed.shared_bytes = BytesOf(in.shared);
  for (const NamedTensors& head : in.heads) fixed.head_bytes += BytesOf(head);
  fixed.router_bytes = BytesOf(in.router->tensors());
  fixed.experts_bytes = fixed.head_bytes;
  for (const NamedTensors& expert : in.experts) fixed.experts_bytes += BytesOf(expert);
  return fixed;
}

StorageResult TwinStorage(const StorageResult& fixed, const TwinBuild& build) {
  StorageResult storage = fixed;
  storage.policy = build.policy;
  storage.kept_rank_fraction = build.kept_rank_fraction;
  storage.mean_rel_error = build.mean_rel_error;
  storage.twin_bytes = build.factor_bytes;
  storage.twin_fp16_bytes = build.factor_bytes_fp16;
  return storage;
}

std::vector<RankPolicy> SweepPolicies(const EvalOptions& options) {
  std::vector<RankPolicy> policies;
  for (double ratio : options.ratios) {
    RankPolicy p;
    p.kind = RankPolicy::kRatio;
    p.ratio = ratio;
    policies.push_back(p);
  }
  if (options.energy > 0) {
    RankPolicy p;
    p.kind = RankPolicy::kEnergy;
    p.energy = options.energy;
    policies.push_back(p);
  }
  return policies;
}

std::string StaticMethodLabel(MergeMethod method, const EvalOptions& options) {
  switch (method) {
    case MergeMethod::kTaskArithmetic:
      return "task arithmetic";
    case MergeMethod::kTies:
      return absl::StrCat("TIES (density ", options.ties_density, ")");
    case MergeMethod::kDareTaskArithmetic:
      return absl::StrCat("DARE + task arithmetic (drop ", options.dare_drop_rate, ")");
    default:
      return MergeMethodName(method);
  }
}

absl::StatusOr<NamedTensors> StaticMerge(const EvalInputs& in, const EvalOptions& o,
                                         MergeMethod method, double lambda) {
  const size_t experts = in.experts.size();
  MergeOptions options;
  options.method = method;
  options.lambda = lambda;
  options.densities.assign(experts, o.ties_density);
  options.drop_rates.assign(experts, o.dare_drop_rate);
  options.seed = o.seed;
  RETURN_IF_ERROR(ValidateMergeOptions(options, experts));
  NamedTensors merged;
  for (size_t i = 0; i < in.base.size(); ++i) {
    std::vector<at::Tensor> tensors;
    for (const NamedTensors& expert : in.experts) tensors.push_back(expert[i].second);
    ASSIGN_OR_RETURN(at::Tensor t, MergeTensor(in.base[i].second, tensors, options, i));
    merged.emplace_back(in.base[i].first, t);
  }
  return merged;
}

const MethodResult* EvalResult::Find(const std::string& id) const {
  for (const MethodResult& m : methods) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / values.size();
}

double NormalizedScore(const std::vector<double>& accuracy, const std::vector<double>& expert) {
  double sum = 0;
  int counted = 0;
  for (size_t t = 0; t < accuracy.size() && t < expert.size(); ++t) {
    if (expert[t] <= 0) continue;
    sum += 100.0 * accuracy[t] / expert[t];
    ++counted;
  }
  return counted ? sum / counted : 0;
}

absl::Status ValidateEvalOptions(const EvalOptions& o, size_t num_tasks) {
  if (o.ratios.empty()) return absl::InvalidArgumentError("at least one rank ratio is required");
  for (double ratio : o.ratios) {
    RankPolicy p;
    p.ratio = ratio;
    RETURN_IF_ERROR(ValidateRankPolicy(p));
  }
  if (o.energy < 0 || o.energy > 1) {
    return absl::InvalidArgumentError(absl::StrCat("energy must be in [0, 1], got ", o.energy));
  }
  for (int grid : o.key_grids) {
    RETURN_IF_ERROR(ValidateClusterKeyOptions({o.key_top_k, grid}, static_cast<int>(num_tasks)));
  }
  MergeOptions m;
  m.densities.assign(num_tasks, o.ties_density);
  m.drop_rates.assign(num_tasks, o.dare_drop_rate);
  return ValidateMergeOptions(m, num_tasks);
}

absl::StatusOr<EvalResult> RunEvaluation(const EvalInputs& inputs, const EvalOptions& options) {
  RETURN_IF_ERROR(ValidateEvalOptions(options, inputs.tasks.size()));
  if (inputs.generative()) {
    return absl::InvalidArgumentError(
        "a causal language model's version is evaluated by RunGenerativeEvaluation");
  }
  const auto start = std::chrono::steady_clock::now();
  if (inputs.experts.size() != inputs.tasks.size() || inputs.heads.size() != inputs.tasks.size() ||
      inputs.router == nullptr) {
    return absl::InvalidArgumentError("inputs need one expert and head per task and a router");
  }
  ASSIGN_OR_RETURN(EvalEngine engine, ParseEvalEngine(options.engine));
  ASSIGN_OR_RETURN(auto evaluator, Evaluator::Create(&inputs, options.batch_size, engine));
  EvalResult result;
  result.engine = evaluator->engine_name();
  result.version = inputs.version;
  result.shared_method = inputs.shared_method;
  result.target_normalized = options.target_normalized;
  for (size_t t = 0; t < inputs.tasks.size(); ++t) {
    result.tasks.push_back(inputs.tasks[t].name);
    result.class_names.push_back(inputs.tasks[t].labels);
    result.test_rows.push_back(evaluator->rows(t, Split::kTest));
    result.validation_rows.push_back(evaluator->rows(t, Split::kValidation));
  }
  Run run(inputs, options, evaluator.get(), &result);
  RETURN_IF_ERROR(run.Routings());
  RETURN_IF_ERROR(run.Baselines());
  RETURN_IF_ERROR(run.StaticMerges());
  RETURN_IF_ERROR(run.TwinSweep());
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace twin::eval
