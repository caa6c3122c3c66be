#include "server/infer_processor.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "core/text/tokenizer.h"

namespace twin {
namespace {

using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

InferPayload& PayloadOf(const PendingRequest& r) {
  return static_cast<InferPayload&>(*r.payload);
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }
int64_t Micros(double seconds) { return static_cast<int64_t>(std::llround(seconds * 1e6)); }

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

// `vocab_size` 0: the model does not say; only negative ids are refused.
absl::Status CheckTokens(const twinmerge::v1::TokenInput& tokens, int64_t max_length,
                         int64_t vocab_size, InferPayload* p) {
  const int64_t n = tokens.input_ids_size();
  if (n == 0) return Invalid("tokens.input_ids is empty");
  if (n > max_length) {
    return Invalid(absl::StrCat("tokens.input_ids has ", n, " tokens; the limit is ", max_length));
  }
  if (tokens.attention_mask_size() != 0 && tokens.attention_mask_size() != n) {
    return Invalid(absl::StrCat("tokens.attention_mask has ", tokens.attention_mask_size(),
                                " entries but input_ids has ", n));
  }
  at::Tensor ids = at::empty({n}, at::kLong);
  at::Tensor mask = at::ones({n}, at::kLong);
  int64_t* id_data = ids.data_ptr<int64_t>();
  int64_t* mask_data = mask.data_ptr<int64_t>();
  int64_t live = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens.input_ids(i) < 0) {
      return Invalid(absl::StrCat("tokens.input_ids[", i, "] is negative"));
    }
    // Out-of-range ids would reach the embedding lookup: an error on the CPU, a sticky
    // device-side assert on CUDA that breaks every later request.
    if (vocab_size > 0 && tokens.input_ids(i) >= vocab_size) {
      return Invalid(absl::StrCat("tokens.input_ids[", i, "] is ", tokens.input_ids(i),
                                  "; the model's vocabulary has ", vocab_size, " ids (0 to ",
                                  vocab_size - 1, ")"));
    }
    id_data[i] = tokens.input_ids(i);
    if (tokens.attention_mask_size() != 0) {
      const int64_t m = tokens.attention_mask(i);
      if (m != 0 && m != 1) {
        return Invalid(absl::StrCat("tokens.attention_mask[", i, "] is ", m, "; must be 0 or 1"));
      }
      mask_data[i] = m;
    }
    live += mask_data[i];
  }
  if (live == 0) return Invalid("tokens.attention_mask masks every token");
  p->input_ids = ids;
  p->attention_mask = mask;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<InferPayload>> MakePayload(const InferRequest& request,
                                                          std::shared_ptr<const Servable> servable,
                                                          const ServerConfig& config) {
  auto p = std::make_shared<InferPayload>();
  const Engine& engine = *servable->engine;
  if (engine.generative()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", engine.version(), " is a causal language model: use Generate, not Infer"));
  }
  if (static_cast<int>(request.request_id().size()) > config.max_request_id_bytes) {
    return Invalid(absl::StrCat("request_id is longer than ", config.max_request_id_bytes,
                                " bytes"));
  }
  p->request_id = request.request_id();
  const int64_t max_length =
      config.max_input_length > 0 ? config.max_input_length : engine.tokenizer().spec().max_length;
  switch (request.input_case()) {
    case InferRequest::kText: {
      const std::string& text = request.text();
      if (text.empty()) return Invalid("text is empty");
      if (static_cast<int>(text.size()) > config.max_text_bytes) {
        return Invalid(absl::StrCat("text is ", text.size(), " bytes; the limit is ",
                                    config.max_text_bytes));
      }
      ASSIGN_OR_RETURN(TokenBatch batch, engine.tokenizer().Encode({text}));
      // Text is cut to the operator's limit like the tokenizer cuts it to the model's.
      const int64_t length = std::min<int64_t>(batch.input_ids.size(1), max_length);
      p->input_ids = batch.input_ids[0].slice(0, 0, length);
      p->attention_mask = batch.attention_mask[0].slice(0, 0, length);
      if (engine.vocab_size() > 0) {
        // The tokenizer may map some bytes beyond a small model's vocabulary.
        RETURN_IF_ERROR(CheckTokenIds(p->input_ids, engine.vocab_size(), "text's token ids"));
      }
      break;
    }
    case InferRequest::kTokens:
      RETURN_IF_ERROR(CheckTokens(request.tokens(), max_length, engine.vocab_size(), p.get()));
      break;
    default:
      return Invalid("request has no input (set text or tokens)");
  }
  ASSIGN_OR_RETURN(p->task, TaskOf(*servable, request.task()));
  RETURN_IF_ERROR(
      ParseRouting(request.routing(), config, engine.num_tasks(), &p->top_k, &p->temperature));
  p->servable = std::move(servable);
  return p;
}

void AddRouterWeights(const std::vector<double>& weights, const Manifest& manifest,
                      google::protobuf::RepeatedPtrField<twinmerge::v1::RouterWeight>* out) {
  std::vector<std::pair<double, int>> kept;
  for (int k = 0; k < static_cast<int>(weights.size()); ++k) {
    if (weights[k] > 0) kept.emplace_back(weights[k], k);
  }
  std::sort(kept.begin(), kept.end(), [](auto& a, auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (const auto& [w, k] : kept) {
    twinmerge::v1::RouterWeight* rw = out->Add();
    rw->set_task(manifest.tasks[k].name);
    rw->set_weight(static_cast<float>(w));
  }
}

absl::StatusOr<int> TaskOf(const Servable& servable, const std::string& task) {
  if (task.empty()) return -1;
  auto it = servable.task_index.find(task);
  if (it == servable.task_index.end()) {
    std::vector<std::string> names;
    for (const auto& [name, index] : servable.task_index) names.push_back(name);
    return Invalid(
        absl::StrCat("unknown task '", task, "' (tasks: ", absl::StrJoin(names, ", "), ")"));
  }
  return it->second;
}

absl::Status ParseRouting(const twinmerge::v1::RoutingOptions& routing, const ServerConfig& config,
                          int num_tasks, int* top_k_out, double* temperature_out) {
  const int max_top_k = config.max_top_k > 0 ? std::min(config.max_top_k, num_tasks) : num_tasks;
  const int top_k = routing.top_k();
  if (top_k < 0 || top_k > max_top_k) {
    return Invalid(absl::StrCat("routing.top_k is ", top_k, "; must be in [0, ", max_top_k, "]"));
  }
  *top_k_out = top_k == 0 ? config.cluster_key.top_k : top_k;
  const double temperature = routing.temperature();
  if (std::isnan(temperature) || temperature < 0 ||
      (temperature != 0 &&
       (temperature < config.min_temperature || temperature > config.max_temperature))) {
    return Invalid(absl::StrCat("routing.temperature is ", temperature,
                                "; must be 0 (default) or in [", config.min_temperature, ", ",
                                config.max_temperature, "]"));
  }
  *temperature_out = temperature == 0 ? config.default_temperature : temperature;
  return absl::OkStatus();
}

void PadBatch(const std::vector<InferPayload*>& group, at::Tensor* ids, at::Tensor* mask) {
  int64_t longest = 1;
  for (const InferPayload* p : group) longest = std::max(longest, p->input_ids.size(0));
  const int64_t pad = group.front()->servable->engine->tokenizer().spec().pad_id;
  *ids = at::full({static_cast<int64_t>(group.size()), longest}, pad, at::kLong);
  *mask = at::zeros({static_cast<int64_t>(group.size()), longest}, at::kLong);
  for (size_t i = 0; i < group.size(); ++i) {
    const int64_t n = group[i]->input_ids.size(0);
    (*ids)[i].slice(0, 0, n).copy_(group[i]->input_ids);
    (*mask)[i].slice(0, 0, n).copy_(group[i]->attention_mask);
  }
}

at::Tensor PadPrefix(const std::vector<InferPayload*>& group) {
  int64_t longest = 1;
  for (const InferPayload* p : group) {
    if (!p->prefix_hidden.defined()) return at::Tensor();
    longest = std::max(longest, p->input_ids.size(0));
  }
  const at::Tensor& first = group.front()->prefix_hidden;
  at::Tensor out = at::zeros({static_cast<int64_t>(group.size()), longest, first.size(1)},
                             first.options());
  for (size_t i = 0; i < group.size(); ++i) {
    out[i].narrow(0, 0, group[i]->prefix_hidden.size(0)).copy_(group[i]->prefix_hidden);
  }
  return out;
}

void InferProcessor::Fail(InferPayload& payload, const absl::Status& status) {
  std::string task;
  if (payload.servable && payload.task >= 0) {
    task = payload.servable->engine->manifest().tasks[payload.task].name;
  }
  metrics_->RecordRequest(task, absl::StatusCodeToString(status.code()), {});
  payload.reply(status);
}

absl::Status InferProcessor::RouteGroup(std::vector<InferPayload*>& group) {
  const absl::Time start = absl::Now();
  const Engine& engine = *group.front()->servable->engine;
  at::Tensor ids, mask;
  PadBatch(group, &ids, &mask);
  std::vector<double> temperatures;
  for (const InferPayload* p : group) temperatures.push_back(p->temperature);
  at::Tensor hidden;
  ASSIGN_OR_RETURN(at::Tensor weights,
                   engine.RouterWeights(ids, mask, temperatures,
                                        engine.routes_on_prefix() ? &hidden : nullptr));
  at::Tensor w64 = weights.to(at::kDouble).contiguous();
  const double* data = w64.data_ptr<double>();
  const int t = engine.num_tasks();
  const absl::Time end = absl::Now();
  for (size_t i = 0; i < group.size(); ++i) {
    InferPayload* p = group[i];
    p->router_weights.assign(data + i * t, data + (i + 1) * t);
    // The row's own tokens: padding positions are not its.
    p->prefix_hidden =
        hidden.defined() ? hidden[i].narrow(0, 0, p->input_ids.size(0)) : at::Tensor();
    p->key = QuantizeWeights(p->router_weights, {p->top_k, config_.cluster_key.grid});
    if (p->servable->mode == ServingMode::kExperts) {
      // One expert answers: the router's top task's.
      std::vector<double> one_hot(t, 0.0);
      one_hot[p->key.top_task] = 1.0;
      p->key = QuantizeWeights(one_hot, {1, config_.cluster_key.grid});
    }
    p->route_s = Seconds(end - start);
    p->routed = end;
    metrics_->RecordRoute(engine.manifest().tasks[p->key.top_task].name);
  }
  return absl::OkStatus();
}

namespace {

// A key that needs no router forward: theta* alone (static mode), or the named task's twin or
// expert alone (the task-given policy, and experts mode).
ClusterKey FixedKey(const Servable& servable, const InferPayload& p, const ServerConfig& config) {
  const int t = servable.engine->num_tasks();
  if (servable.mode == ServingMode::kStatic) {
    ClusterKey key;
    key.text = "static";
    key.weights.assign(t, 0.0);
    key.top_task = p.task >= 0 ? p.task : 0;
    return key;
  }
  std::vector<double> one_hot(t, 0.0);
  one_hot[p.task] = 1.0;
  return QuantizeWeights(one_hot, {p.top_k, config.cluster_key.grid});
}

// The router's own weights as p's key keeps them (its top_k tasks, renormalised to sum 1) but
// without the key's grid rounding. Empty when the row was not routed (a fixed key).
std::vector<double> RouterMixture(const InferPayload& p, int tasks) {
  if (static_cast<int>(p.router_weights.size()) != tasks) return {};
  return QuantizeWeights(p.router_weights, {p.top_k, /*grid=*/0}).weights;
}

bool NeedsRouter(const Servable& servable, const InferPayload& p, const ServerConfig& config) {
  switch (servable.mode) {
    case ServingMode::kStatic:
      return false;
    case ServingMode::kExperts:
      return p.task < 0;
    case ServingMode::kTwin:
      return p.task < 0 || config.task_given == TaskGivenPolicy::kRouter;
  }
  return true;
}

}  // namespace

void InferProcessor::Route(std::vector<PendingRequest>& requests, std::vector<std::string>* keys) {
  keys->assign(requests.size(), "");
  std::map<const Servable*, std::vector<size_t>> by_servable;
  for (size_t i = 0; i < requests.size(); ++i) {
    by_servable[PayloadOf(requests[i]).servable.get()].push_back(i);
  }
  const absl::Time now = absl::Now();
  for (auto& [servable, all] : by_servable) {
    // A structured binding cannot be captured in C++17 (GCC allows it, clang does not).
    const std::string version = servable->engine->version();
    auto key_of = [&version](const InferPayload& p) {
      return absl::StrCat(version, "|", p.key.text);
    };
    std::vector<size_t> indices;
    for (size_t i : all) {
      InferPayload& p = PayloadOf(requests[i]);
      if (NeedsRouter(*servable, p, config_)) {
        indices.push_back(i);
        continue;
      }
      p.key = FixedKey(*servable, p, config_);
      p.route_s = 0.0;
      p.routed = now;
      (*keys)[i] = key_of(p);
    }
    if (indices.empty()) continue;
    std::vector<InferPayload*> group;
    for (size_t i : indices) group.push_back(&PayloadOf(requests[i]));
    absl::Status status = RouteGroup(group);
    if (!status.ok() && group.size() > 1) {
      // Find the culprit(s): route each request alone.
      for (size_t k = 0; k < group.size(); ++k) {
        std::vector<InferPayload*> one = {group[k]};
        absl::Status single = RouteGroup(one);
        if (single.ok()) {
          (*keys)[indices[k]] = key_of(*group[k]);
        } else {
          Fail(*group[k], single);
        }
      }
      continue;
    }
    for (size_t k = 0; k < group.size(); ++k) {
      if (status.ok()) {
        (*keys)[indices[k]] = key_of(*group[k]);
      } else {
        Fail(*group[k], status);
      }
    }
  }
}

absl::Status InferProcessor::RunGroup(const Servable& servable, FusedModel& model,
                                      std::vector<InferPayload*>& group, int task, double fuse_s,
                                      bool cache_hit) {
  const Engine& engine = *servable.engine;
  at::Tensor ids, mask;
  PadBatch(group, &ids, &mask);
  const absl::Time start = absl::Now();
  metrics_->RecordBodyForward();
  ASSIGN_OR_RETURN(at::Tensor logits, engine.Forward(model, ids, mask, task, PadPrefix(group)));
  const absl::Time end = absl::Now();
  return ReplyGroup(servable, group, task, logits, fuse_s, Seconds(end - start), end, cache_hit);
}

absl::Status InferProcessor::ReplyGroup(const Servable& servable,
                                        std::vector<InferPayload*>& group, int task,
                                        const at::Tensor& logits, double fuse_s, double forward_s,
                                        absl::Time end, bool cache_hit, BatchMode mode) {
  const Engine& engine = *servable.engine;
  const TaskEntry& entry = engine.manifest().tasks[task];
  if (logits.dim() != 2 || logits.size(0) != static_cast<int64_t>(group.size()) ||
      logits.size(1) != static_cast<int64_t>(entry.labels.size())) {
    return absl::InternalError(absl::StrCat("task ", entry.name, ": the head returned ",
                                            c10::str(logits.sizes()), " logits, not [",
                                            group.size(), ", ", entry.labels.size(), "]"));
  }
  at::Tensor probs = at::softmax(logits.to(at::kFloat), 1).contiguous();
  const float* pd = probs.data_ptr<float>();
  const int64_t c = probs.size(1);
  for (size_t i = 0; i < group.size(); ++i) {
    InferPayload* p = group[i];
    InferResponse r;
    r.set_request_id(p->request_id);
    r.set_task(entry.name);
    const float* row = pd + i * c;
    const int best = static_cast<int>(std::max_element(row, row + c) - row);
    r.set_label_index(best);
    r.set_label(entry.labels[best]);
    for (int64_t k = 0; k < c; ++k) r.add_probabilities(row[k]);
    AddRouterWeights(p->mixed_weights.empty() ? p->key.weights : p->mixed_weights,
                     engine.manifest(), r.mutable_router_weights());
    r.set_cluster_key(p->key.text);
    r.set_cache_hit(cache_hit);
    r.set_batch_mode(BatchModeName(mode));
    r.set_artifact_version(engine.version());
    StageTimes t;
    t.route_s = p->route_s;
    t.fuse_s = fuse_s;
    t.forward_s = forward_s;
    t.total_s = Seconds(end - p->received);
    t.queue_s = std::max(0.0, t.total_s - t.route_s - t.fuse_s - t.forward_s);
    auto* timing = r.mutable_timing();
    timing->set_queue_us(Micros(t.queue_s));
    timing->set_route_us(Micros(t.route_s));
    timing->set_fuse_us(Micros(t.fuse_s));
    timing->set_forward_us(Micros(t.forward_s));
    timing->set_total_us(Micros(t.total_s));
    metrics_->RecordRequest(entry.name, "OK", t);
    p->reply(std::move(r));
  }
  return absl::OkStatus();
}

void InferProcessor::Run(std::vector<PendingRequest> batch) {
  RunBatch(std::move(batch), BatchMode::kFused);
}

double InferProcessor::RunBatch(std::vector<PendingRequest> batch, BatchMode mode) {
  if (batch.empty()) return 0;
  std::vector<InferPayload*> payloads;
  for (auto& r : batch) payloads.push_back(&PayloadOf(r));
  if (mode == BatchMode::kFused) return RunFused(payloads);
  // An unfused batch may span versions (a reload) and keys: each servable's rows together;
  // rows of a servable without the unfused path go fused, one key at a time.
  std::map<const Servable*, std::vector<InferPayload*>> by_servable;
  for (InferPayload* p : payloads) by_servable[p->servable.get()].push_back(p);
  double fuse_s = 0;
  for (auto& [servable, rows] : by_servable) {
    if (servable->mode == ServingMode::kTwin && servable->engine->unfused_available()) {
      RunUnfused(*servable, rows);
      continue;
    }
    std::map<std::string, std::vector<InferPayload*>> by_key;
    for (InferPayload* p : rows) by_key[p->key.text].push_back(p);
    for (auto& [key, group] : by_key) fuse_s += RunFused(group);
  }
  return fuse_s;
}

void InferProcessor::RunUnfused(const Servable& servable, std::vector<InferPayload*>& payloads) {
  metrics_->RecordBatch(static_cast<int>(payloads.size()));
  const Engine& engine = *servable.engine;
  const int tasks = engine.num_tasks();
  std::map<int, std::vector<InferPayload*>> by_task;
  for (InferPayload* p : payloads) by_task[p->task >= 0 ? p->task : p->key.top_task].push_back(p);
  std::vector<InferPayload*> rows;
  std::vector<Engine::TaskRun> runs;
  for (auto& [task, group] : by_task) {
    rows.insert(rows.end(), group.begin(), group.end());
    runs.push_back({task, static_cast<int64_t>(group.size())});
  }
  // Each row's own weights: its cluster key's (what a fused batch of that key would use), or
  // with unfused_weights: router the router's own top_k weights without the grid rounding.
  const bool router_mixture = config_.unfused_weights == "router";
  at::Tensor weights = at::zeros({static_cast<int64_t>(rows.size()), tasks}, at::kFloat);
  float* w = weights.data_ptr<float>();
  for (size_t r = 0; r < rows.size(); ++r) {
    InferPayload* p = rows[r];
    p->mixed_weights.clear();
    if (router_mixture) p->mixed_weights = RouterMixture(*p, tasks);
    const std::vector<double>& kw = p->mixed_weights.empty() ? p->key.weights : p->mixed_weights;
    for (int t = 0; t < tasks && t < static_cast<int>(kw.size()); ++t) {
      w[r * tasks + t] = static_cast<float>(kw[t]);
    }
  }
  at::Tensor ids, mask;
  PadBatch(rows, &ids, &mask);
  const absl::Time start = absl::Now();
  metrics_->RecordBodyForward();
  absl::StatusOr<std::vector<at::Tensor>> logits =
      engine.ForwardMixed(ids, mask, weights, runs, PadPrefix(rows));
  const absl::Time end = absl::Now();
  if (logits.ok()) {
    size_t k = 0;
    for (auto& [task, group] : by_task) {
      absl::Status replied = ReplyGroup(servable, group, task, (*logits)[k++], 0.0,
                                        Seconds(end - start), end, false, BatchMode::kUnfused);
      if (!replied.ok()) {
        for (InferPayload* p : group) Fail(*p, replied);
      }
    }
    return;
  }
  if (rows.size() == 1) {
    Fail(*rows.front(), logits.status());
    return;
  }
  // Find the culprit(s): each request alone.
  for (InferPayload* p : rows) {
    std::vector<InferPayload*> one = {p};
    RunUnfused(servable, one);
  }
}

double InferProcessor::RunFused(std::vector<InferPayload*>& payloads) {
  if (payloads.empty()) return 0;
  const Servable& servable = *payloads.front()->servable;
  metrics_->RecordBatch(static_cast<int>(payloads.size()));
  const Engine* engine = servable.engine.get();
  std::shared_ptr<FusedValue> fused;  // held for the batch
  double fuse_s = 0.0;
  bool hit = true;
  if (servable.mode == ServingMode::kTwin) {
    auto lookup = servable.cache->Lookup(payloads.front()->key, FuserOf(engine));
    metrics_->UpdateCache(servable.cache.get(), servable.cache->stats());
    if (!lookup.ok()) {
      for (InferPayload* p : payloads) Fail(*p, lookup.status());
      return 0;
    }
    fused = lookup->value;
    fuse_s = lookup->fuse_seconds;
    hit = lookup->source != CacheLookup::kFused;
  }
  std::map<int, std::vector<InferPayload*>> by_task;
  for (InferPayload* p : payloads) by_task[p->task >= 0 ? p->task : p->key.top_task].push_back(p);
  // The weight set that answers `task`: the batch's fused set, theta*, or the task's expert.
  auto model_for = [&](int task) -> FusedModel& {
    switch (servable.mode) {
      case ServingMode::kTwin:
        return static_cast<FusedModel&>(*fused);
      case ServingMode::kStatic:
        return *servable.pinned[0];
      case ServingMode::kExperts:
        break;
    }
    return *servable.pinned[task];
  };
  std::map<int, bool> answered;
  if (by_task.size() > 1 && servable.mode != ServingMode::kExperts && engine->splits_heads()) {
    // One body forward for every task's rows, then each task's head on its own rows.
    FusedModel& model = model_for(by_task.begin()->first);
    std::vector<InferPayload*> rows;
    std::vector<Engine::TaskRun> runs;
    for (auto& [task, group] : by_task) {
      rows.insert(rows.end(), group.begin(), group.end());
      runs.push_back({task, static_cast<int64_t>(group.size())});
    }
    at::Tensor ids, mask;
    PadBatch(rows, &ids, &mask);
    const absl::Time start = absl::Now();
    metrics_->RecordBodyForward();
    absl::StatusOr<std::vector<at::Tensor>> logits =
        engine->ForwardTasks(model, ids, mask, runs, PadPrefix(rows));
    const absl::Time end = absl::Now();
    if (logits.ok()) {
      size_t k = 0;
      for (auto& [task, group] : by_task) {
        answered[task] = ReplyGroup(servable, group, task, (*logits)[k++], fuse_s,
                                    Seconds(end - start), end, hit)
                             .ok();
      }
    }
  }
  for (auto& [task, group] : by_task) {
    if (answered[task]) continue;
    FusedModel& model = model_for(task);
    absl::Status status = RunGroup(servable, model, group, task, fuse_s, hit);
    if (status.ok()) continue;
    if (group.size() == 1) {
      Fail(*group.front(), status);
      continue;
    }
    for (InferPayload* p : group) {
      std::vector<InferPayload*> one = {p};
      absl::Status single = RunGroup(servable, model, one, task, fuse_s, hit);
      if (!single.ok()) Fail(*p, single);
    }
  }
  return hit ? 0.0 : fuse_s;
}

}  // namespace twin
