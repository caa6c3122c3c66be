#include "server/server_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "core/yaml_fields.h"

namespace twin {
namespace {

const YamlFields& Fields() {
  static const YamlFields* fields = new YamlFields("server config");
  return *fields;
}

}  // namespace

const char* ServingModeName(ServingMode mode) {
  switch (mode) {
    case ServingMode::kTwin:
      return "twin";
    case ServingMode::kStatic:
      return "static";
    case ServingMode::kExperts:
      return "experts";
  }
  return "twin";
}

absl::Status ValidateServerConfig(const ServerConfig& c) {
  if (c.listen_address.empty()) return Fields().Bad("listen_address", "is required");
  if (c.artifact_uri.empty()) return Fields().Bad("artifact_uri", "is required");
  if (c.cache_dir.empty()) return Fields().Bad("cache_dir", "is required");
  if (c.intra_op_threads < 0) return Fields().Bad("intra_op_threads", "must be >= 0");
  if (c.workers < 1) return Fields().Bad("workers", "must be >= 1");
  if (c.queue.max_batch_size < 1) return Fields().Bad("batching.max_batch_size", "must be >= 1");
  if (c.queue.max_queue_delay_us < 0)
    return Fields().Bad("batching.max_queue_delay_us", "must be >= 0");
  if (c.queue.max_queue_size < 1) return Fields().Bad("batching.max_queue_size", "must be >= 1");
  if (c.max_route_batch < 1) return Fields().Bad("batching.max_route_batch", "must be >= 1");
  if (c.cache.admit_min_requests < 1)
    return Fields().Bad("cache.admit_min_requests", "must be >= 1");
  if (c.cache.max_pending_fusions < 1) {
    return Fields().Bad("cache.max_pending_fusions", "must be >= 1");
  }
  if (c.cache.frequency_window < 1) return Fields().Bad("cache.frequency_window", "must be >= 1");
  if (!(c.cache.max_fusions_per_s >= 0 && std::isfinite(c.cache.max_fusions_per_s))) {
    return Fields().Bad("cache.max_fusions_per_s", "must be >= 0 (0: no limit)");
  }
  if (!(c.cache.fusion_burst >= 0 && std::isfinite(c.cache.fusion_burst))) {
    return Fields().Bad("cache.fusion_burst", "must be >= 0 (0: one second's worth)");
  }
  if (!(c.cache.max_nearest_distance >= 0 && c.cache.max_nearest_distance <= 2)) {
    return Fields().Bad("cache.max_nearest_distance", "must be in [0, 2]");
  }
  if (c.cluster_key.top_k < 0) return Fields().Bad("cluster_key.top_k", "must be >= 0");
  if (c.cluster_key.grid < 0 || c.cluster_key.grid > 1000) {
    return Fields().Bad("cluster_key.grid", "must be in [0, 1000]");
  }
  if (c.max_top_k < 0) return Fields().Bad("routing.max_top_k", "must be >= 0");
  if (!(c.min_temperature > 0) || !(c.max_temperature >= c.min_temperature)) {
    return Fields().Bad("routing", "need 0 < min_temperature <= max_temperature");
  }
  if (!(c.default_temperature >= c.min_temperature && c.default_temperature <= c.max_temperature)) {
    return Fields().Bad("routing.default_temperature",
                        "must lie in [min_temperature, max_temperature]");
  }
  if (c.mode == ServingMode::kExperts && c.experts.empty()) {
    return Fields().Bad("serving.experts", "must name each task's model in experts mode");
  }
  if (c.mode != ServingMode::kExperts && !c.experts.empty()) {
    return Fields().Bad("serving.experts", "is read only in experts mode (serving.mode: experts)");
  }
  for (const auto& [task, path] : c.experts) {
    if (task.empty() || path.empty()) {
      return Fields().Bad("serving.experts", "task names and paths must not be empty");
    }
  }
  if (c.max_input_length < 0) return Fields().Bad("limits.max_input_length", "must be >= 0");
  if (c.max_message_bytes < 1024)
    return Fields().Bad("limits.max_message_bytes", "must be >= 1024");
  if (c.max_request_id_bytes < 0)
    return Fields().Bad("limits.max_request_id_bytes", "must be >= 0");
  if (c.max_text_bytes < 1) return Fields().Bad("limits.max_text_bytes", "must be >= 1");
  if (c.max_connection_age_ms < 0) return Fields().Bad("max_connection_age_ms", "must be >= 0");
  if (c.drain_timeout_ms < 0) return Fields().Bad("drain_timeout_ms", "must be >= 0");
  if (c.drain_grace_ms < 0 || c.drain_grace_ms > c.drain_timeout_ms) {
    return Fields().Bad("drain_grace_ms", "must be in [0, drain_timeout_ms]");
  }
  if (c.max_stream_in_flight < 1) {
    return Fields().Bad("limits.max_stream_in_flight", "must be >= 1");
  }
  if (c.max_in_flight_per_client < 0) {
    return Fields().Bad("limits.max_in_flight_per_client", "must be >= 0 (0: no limit)");
  }
  if (c.warmup_requests < 0) return Fields().Bad("warmup_requests", "must be >= 0");
  if (c.reload.poll_interval_ms < 0) return Fields().Bad("reload.poll_interval_ms", "must be >= 0");
  if (c.reload.retry_interval_ms < 1) {
    return Fields().Bad("reload.retry_interval_ms", "must be >= 1");
  }
  if (c.reload.keep_versions < 0) return Fields().Bad("reload.keep_versions", "must be >= 0");
  if (c.reload.warm_cache_keys < 0) return Fields().Bad("reload.warm_cache_keys", "must be >= 0");
  if (c.kserve_model_name.empty()) return Fields().Bad("kserve.model_name", "must not be empty");
  if (c.kserve_max_rows < 1) return Fields().Bad("kserve.max_rows", "must be >= 1");
  const GenerationConfig& g = c.generation;
  if (g.max_new_tokens < 1) return Fields().Bad("generation.max_new_tokens", "must be >= 1");
  if (g.default_max_new_tokens < 1 || g.default_max_new_tokens > g.max_new_tokens) {
    return Fields().Bad("generation.default_max_new_tokens", "must be in [1, max_new_tokens]");
  }
  if (g.max_sequences < 1) return Fields().Bad("generation.max_sequences", "must be >= 1");
  if (g.max_step_tokens < 1) return Fields().Bad("generation.max_step_tokens", "must be >= 1");
  if (g.kv_cache_bytes < 1) return Fields().Bad("generation.kv_cache_bytes", "must be >= 1");
  if (g.max_queue < 0) return Fields().Bad("generation.max_queue", "must be >= 0");
  if (g.max_stop_sequences < 0) {
    return Fields().Bad("generation.max_stop_sequences", "must be >= 0");
  }
  RETURN_IF_ERROR(ValidateTlsConfig(c.tls));
  // Port 0 (an OS-chosen port) gives each listener its own port.
  if (!c.admin_listen_address.empty() && c.admin_listen_address == c.listen_address &&
      !absl::EndsWith(c.listen_address, ":0")) {
    return Fields().Bad("admin.listen_address",
                        "must differ from listen_address (use \"\" to serve Admin there)");
  }
  if (!c.admin_token_file.empty()) {
    std::ifstream token(c.admin_token_file);
    if (!token) return Fields().Bad("admin.token_file", c.admin_token_file + " cannot be read");
  }
  static const std::set<std::string> kLevels = {"debug", "info", "warning", "error"};
  if (!kLevels.count(c.log_level))
    return Fields().Bad("log_level", "must be debug|info|warning|error");
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text) {
  ServerConfig c;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("server config: bad YAML: ", e.what()));
  }
  if (!root || root.IsNull()) return c;  // all defaults (artifact_uri from flags)
  RETURN_IF_ERROR(Fields().CheckKeys(root, "",
                                     {"listen_address",
                                      "metrics_address",
                                      "artifact_uri",
                                      "artifact_version",
                                      "cache_dir",
                                      "device",
                                      "intra_op_threads",
                                      "workers",
                                      "batching",
                                      "cache",
                                      "cluster_key",
                                      "routing",
                                      "serving",
                                      "limits",
                                      "max_connection_age_ms",
                                      "drain_grace_ms",
                                      "drain_timeout_ms",
                                      "warmup_requests",
                                      "log_level",
                                      "kserve",
                                      "reload",
                                      "generation",
                                      "tls",
                                      "admin"}));
  RETURN_IF_ERROR(Fields().Read(root, "listen_address", "", &c.listen_address));
  RETURN_IF_ERROR(Fields().Read(root, "metrics_address", "", &c.metrics_address));
  RETURN_IF_ERROR(Fields().Read(root, "artifact_uri", "", &c.artifact_uri));
  RETURN_IF_ERROR(Fields().Read(root, "artifact_version", "", &c.artifact_version));
  RETURN_IF_ERROR(Fields().Read(root, "cache_dir", "", &c.cache_dir));
  RETURN_IF_ERROR(Fields().Read(root, "device", "", &c.device));
  RETURN_IF_ERROR(Fields().Read(root, "intra_op_threads", "", &c.intra_op_threads));
  RETURN_IF_ERROR(Fields().Read(root, "workers", "", &c.workers));
  if (const YAML::Node b = root["batching"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(b, "batching",
                                       {"max_batch_size", "max_queue_delay_us", "max_queue_size",
                                        "max_route_batch", "deadline_admission"}));
    RETURN_IF_ERROR(Fields().Read(b, "max_batch_size", "batching", &c.queue.max_batch_size));
    RETURN_IF_ERROR(
        Fields().Read(b, "max_queue_delay_us", "batching", &c.queue.max_queue_delay_us));
    RETURN_IF_ERROR(Fields().Read(b, "max_queue_size", "batching", &c.queue.max_queue_size));
    RETURN_IF_ERROR(Fields().Read(b, "max_route_batch", "batching", &c.max_route_batch));
    RETURN_IF_ERROR(
        Fields().Read(b, "deadline_admission", "batching", &c.queue.deadline_admission));
  }
  if (const YAML::Node k = root["cache"]) {
    RETURN_IF_ERROR(
        Fields().CheckKeys(k, "cache",
                           {"capacity_bytes", "policy", "admit_min_requests", "frequency_window",
                            "max_nearest_distance", "max_fusions_per_s", "fusion_burst",
                            "background_fusion", "max_pending_fusions"}));
    RETURN_IF_ERROR(Fields().Read(k, "background_fusion", "cache", &c.cache.background_fusion));
    RETURN_IF_ERROR(Fields().Read(k, "max_pending_fusions", "cache", &c.cache.max_pending_fusions));
    RETURN_IF_ERROR(Fields().Read(k, "max_fusions_per_s", "cache", &c.cache.max_fusions_per_s));
    RETURN_IF_ERROR(Fields().Read(k, "fusion_burst", "cache", &c.cache.fusion_burst));
    RETURN_IF_ERROR(Fields().Read(k, "capacity_bytes", "cache", &c.cache.capacity_bytes));
    std::string policy = "fuse";
    RETURN_IF_ERROR(Fields().Read(k, "policy", "cache", &policy));
    if (policy == "fuse") {
      c.cache.miss_policy = FusedCacheOptions::kFuse;
    } else if (policy == "nearest") {
      c.cache.miss_policy = FusedCacheOptions::kNearest;
    } else {
      return Fields().Bad("cache.policy", absl::StrCat("'", policy, "' is not fuse or nearest"));
    }
    RETURN_IF_ERROR(Fields().Read(k, "admit_min_requests", "cache", &c.cache.admit_min_requests));
    RETURN_IF_ERROR(Fields().Read(k, "frequency_window", "cache", &c.cache.frequency_window));
    RETURN_IF_ERROR(
        Fields().Read(k, "max_nearest_distance", "cache", &c.cache.max_nearest_distance));
  }
  if (const YAML::Node k = root["cluster_key"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(k, "cluster_key", {"top_k", "grid"}));
    RETURN_IF_ERROR(Fields().Read(k, "top_k", "cluster_key", &c.cluster_key.top_k));
    RETURN_IF_ERROR(Fields().Read(k, "grid", "cluster_key", &c.cluster_key.grid));
  }
  if (const YAML::Node r = root["routing"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(
        r, "routing",
        {"max_top_k", "default_temperature", "min_temperature", "max_temperature", "task_given"}));
    RETURN_IF_ERROR(Fields().Read(r, "max_top_k", "routing", &c.max_top_k));
    RETURN_IF_ERROR(Fields().Read(r, "default_temperature", "routing", &c.default_temperature));
    RETURN_IF_ERROR(Fields().Read(r, "min_temperature", "routing", &c.min_temperature));
    RETURN_IF_ERROR(Fields().Read(r, "max_temperature", "routing", &c.max_temperature));
    std::string task_given = "task";
    RETURN_IF_ERROR(Fields().Read(r, "task_given", "routing", &task_given));
    if (task_given == "task") {
      c.task_given = TaskGivenPolicy::kTask;
    } else if (task_given == "router") {
      c.task_given = TaskGivenPolicy::kRouter;
    } else {
      return Fields().Bad("routing.task_given",
                          absl::StrCat("'", task_given, "' is not task or router"));
    }
  }
  if (const YAML::Node s = root["serving"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(s, "serving",
                                       {"mode", "experts", "engine", "batches", "mix_strategy",
                                        "batch_choice", "unfused_weights"}));
    RETURN_IF_ERROR(Fields().Read(s, "engine", "serving", &c.engine_model));
    if (c.engine_model != "auto" && c.engine_model != "torchscript" && c.engine_model != "native") {
      return Fields().Bad("serving.engine", absl::StrCat("'", c.engine_model,
                                                         "' is not auto, torchscript or native"));
    }
    RETURN_IF_ERROR(Fields().Read(s, "batches", "serving", &c.batches));
    if (c.batches != "auto" && c.batches != "fused" && c.batches != "unfused") {
      return Fields().Bad("serving.batches",
                          absl::StrCat("'", c.batches, "' is not auto, fused or unfused"));
    }
    RETURN_IF_ERROR(Fields().Read(s, "unfused_weights", "serving", &c.unfused_weights));
    if (c.unfused_weights != "key" && c.unfused_weights != "router") {
      return Fields().Bad("serving.unfused_weights",
                          absl::StrCat("'", c.unfused_weights, "' is not key or router"));
    }
    std::string strategy = MixStrategyName(c.mix_strategy);
    RETURN_IF_ERROR(Fields().Read(s, "mix_strategy", "serving", &strategy));
    auto parsed = ParseMixStrategy(strategy);
    if (!parsed.ok()) {
      return Fields().Bad("serving.mix_strategy", std::string(parsed.status().message()));
    }
    c.mix_strategy = *parsed;
    if (const YAML::Node bc = s["batch_choice"]) {
      RETURN_IF_ERROR(Fields().CheckKeys(bc, "serving.batch_choice",
                                         {"hysteresis", "starvation_us", "explore_every",
                                          "aging_us"}));
      RETURN_IF_ERROR(
          Fields().Read(bc, "aging_us", "serving.batch_choice", &c.queue.modes.aging_us));
      RETURN_IF_ERROR(
          Fields().Read(bc, "hysteresis", "serving.batch_choice", &c.queue.modes.hysteresis));
      RETURN_IF_ERROR(
          Fields().Read(bc, "starvation_us", "serving.batch_choice", &c.queue.modes.starvation_us));
      RETURN_IF_ERROR(
          Fields().Read(bc, "explore_every", "serving.batch_choice", &c.queue.modes.explore_every));
      if (!(c.queue.modes.hysteresis >= 0) || c.queue.modes.starvation_us < 0 ||
          c.queue.modes.explore_every < 1 || c.queue.modes.aging_us < 0) {
        return Fields().Bad(
            "serving.batch_choice",
            "hysteresis, starvation_us and aging_us must be >= 0, explore_every >= 1");
      }
    }
    std::string mode = "twin";
    RETURN_IF_ERROR(Fields().Read(s, "mode", "serving", &mode));
    if (mode == "twin") {
      c.mode = ServingMode::kTwin;
    } else if (mode == "static") {
      c.mode = ServingMode::kStatic;
    } else if (mode == "experts") {
      c.mode = ServingMode::kExperts;
    } else {
      return Fields().Bad("serving.mode",
                          absl::StrCat("'", mode, "' is not twin, static or experts"));
    }
    if (const YAML::Node e = s["experts"]) {
      if (!e.IsMap()) return Fields().Bad("serving.experts", "must be a map of task: path");
      for (const auto& entry : e) {
        if (!entry.first.IsScalar() || !entry.second.IsScalar()) {
          return Fields().Bad("serving.experts", "must be a map of task: path");
        }
        c.experts[entry.first.Scalar()] = entry.second.Scalar();
      }
    }
  }
  if (const YAML::Node l = root["limits"]) {
    RETURN_IF_ERROR(
        Fields().CheckKeys(l, "limits",
                           {"max_input_length", "max_message_bytes", "max_request_id_bytes",
                            "max_text_bytes", "max_stream_in_flight", "max_in_flight_per_client"}));
    RETURN_IF_ERROR(Fields().Read(l, "max_input_length", "limits", &c.max_input_length));
    RETURN_IF_ERROR(Fields().Read(l, "max_message_bytes", "limits", &c.max_message_bytes));
    RETURN_IF_ERROR(Fields().Read(l, "max_request_id_bytes", "limits", &c.max_request_id_bytes));
    RETURN_IF_ERROR(Fields().Read(l, "max_text_bytes", "limits", &c.max_text_bytes));
    RETURN_IF_ERROR(Fields().Read(l, "max_stream_in_flight", "limits", &c.max_stream_in_flight));
    RETURN_IF_ERROR(
        Fields().Read(l, "max_in_flight_per_client", "limits", &c.max_in_flight_per_client));
  }
  if (const YAML::Node k = root["kserve"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(k, "kserve", {"model_name", "max_rows"}));
    RETURN_IF_ERROR(Fields().Read(k, "model_name", "kserve", &c.kserve_model_name));
    RETURN_IF_ERROR(Fields().Read(k, "max_rows", "kserve", &c.kserve_max_rows));
  }
  if (const YAML::Node r = root["reload"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(
        r, "reload",
        {"poll_interval_ms", "retry_interval_ms", "keep_versions", "warm_cache_keys"}));
    RETURN_IF_ERROR(Fields().Read(r, "poll_interval_ms", "reload", &c.reload.poll_interval_ms));
    RETURN_IF_ERROR(Fields().Read(r, "retry_interval_ms", "reload", &c.reload.retry_interval_ms));
    RETURN_IF_ERROR(Fields().Read(r, "keep_versions", "reload", &c.reload.keep_versions));
    RETURN_IF_ERROR(Fields().Read(r, "warm_cache_keys", "reload", &c.reload.warm_cache_keys));
  }
  if (const YAML::Node g = root["generation"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(
        g, "generation",
        {"default_max_new_tokens", "max_new_tokens", "max_sequences", "max_step_tokens",
         "kv_cache_bytes", "max_queue", "max_stop_sequences", "mix_strategy"}));
    GenerationConfig& out = c.generation;
    RETURN_IF_ERROR(
        Fields().Read(g, "default_max_new_tokens", "generation", &out.default_max_new_tokens));
    RETURN_IF_ERROR(Fields().Read(g, "max_new_tokens", "generation", &out.max_new_tokens));
    RETURN_IF_ERROR(Fields().Read(g, "max_sequences", "generation", &out.max_sequences));
    RETURN_IF_ERROR(Fields().Read(g, "max_step_tokens", "generation", &out.max_step_tokens));
    RETURN_IF_ERROR(Fields().Read(g, "kv_cache_bytes", "generation", &out.kv_cache_bytes));
    RETURN_IF_ERROR(Fields().Read(g, "max_queue", "generation", &out.max_queue));
    RETURN_IF_ERROR(Fields().Read(g, "max_stop_sequences", "generation", &out.max_stop_sequences));
    std::string strategy = MixStrategyName(out.mix_strategy);
    RETURN_IF_ERROR(Fields().Read(g, "mix_strategy", "generation", &strategy));
    auto parsed = ParseMixStrategy(strategy);
    if (!parsed.ok()) {
      return Fields().Bad("generation.mix_strategy", std::string(parsed.status().message()));
    }
    out.mix_strategy = *parsed;
  }
  if (const YAML::Node t = root["tls"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(
        t, "tls", {"cert_file", "key_file", "client_ca_file", "refresh_interval_s"}));
    RETURN_IF_ERROR(Fields().Read(t, "cert_file", "tls", &c.tls.cert_file));
    RETURN_IF_ERROR(Fields().Read(t, "key_file", "tls", &c.tls.key_file));
    RETURN_IF_ERROR(Fields().Read(t, "client_ca_file", "tls", &c.tls.client_ca_file));
    RETURN_IF_ERROR(Fields().Read(t, "refresh_interval_s", "tls", &c.tls.refresh_interval_s));
  }
  if (const YAML::Node a = root["admin"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(a, "admin", {"listen_address", "token_file"}));
    RETURN_IF_ERROR(Fields().Read(a, "listen_address", "admin", &c.admin_listen_address));
    RETURN_IF_ERROR(Fields().Read(a, "token_file", "admin", &c.admin_token_file));
  }
  RETURN_IF_ERROR(Fields().Read(root, "max_connection_age_ms", "", &c.max_connection_age_ms));
  RETURN_IF_ERROR(Fields().Read(root, "drain_timeout_ms", "", &c.drain_timeout_ms));
  RETURN_IF_ERROR(Fields().Read(root, "drain_grace_ms", "", &c.drain_grace_ms));
  RETURN_IF_ERROR(Fields().Read(root, "warmup_requests", "", &c.warmup_requests));
  RETURN_IF_ERROR(Fields().Read(root, "log_level", "", &c.log_level));
  return c;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("server config ", path, " cannot be read"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseServerConfig(ss.str());
  if (!config.ok()) return Annotate(config.status(), path);
  return config;
}

}  // namespace twin
