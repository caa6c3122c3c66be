#include "server/server_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

namespace twin {
namespace {

using ::testing::HasSubstr;

TEST(ServerConfigTest, ParsesEveryField) {
  auto c = ParseServerConfig(R"YAML(
listen_address: 127.0.0.1:7000
metrics_address: ""
artifact_uri: file:///data/store
artifact_version: v3
cache_dir: /tmp/c
device: cpu
intra_op_threads: 3
workers: 2
batching: {max_batch_size: 32, max_queue_delay_us: 500, max_queue_size: 10, max_route_batch: 8}
cache: {capacity_bytes: 1000, policy: nearest, admit_min_requests: 3, frequency_window: 50,
        max_nearest_distance: 0.2, max_fusions_per_s: 5, fusion_burst: 10}
cluster_key: {top_k: 1, grid: 4}
routing: {max_top_k: 2, default_temperature: 0.5, min_temperature: 0.1, max_temperature: 2,
          task_given: router}
serving: {mode: experts, experts: {spam: /m/spam.pt, lang: /m/lang.pt}}
limits: {max_input_length: 64, max_message_bytes: 2048, max_request_id_bytes: 16,
         max_text_bytes: 100, max_stream_in_flight: 5}
max_connection_age_ms: 1000
drain_grace_ms: 200
drain_timeout_ms: 500
warmup_requests: 0
log_level: debug
)YAML");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen_address, "127.0.0.1:7000");
  EXPECT_EQ(c->metrics_address, "");
  EXPECT_EQ(c->artifact_version, "v3");
  EXPECT_EQ(c->workers, 2);
  EXPECT_EQ(c->queue.max_batch_size, 32);
  EXPECT_EQ(c->queue.max_queue_delay_us, 500);
  EXPECT_EQ(c->max_route_batch, 8);
  EXPECT_EQ(c->cache.capacity_bytes, 1000u);
  EXPECT_EQ(c->cache.miss_policy, FusedCacheOptions::kNearest);
  EXPECT_DOUBLE_EQ(c->cache.max_fusions_per_s, 5.0);
  EXPECT_DOUBLE_EQ(c->cache.fusion_burst, 10.0);
  EXPECT_EQ(c->cluster_key.top_k, 1);
  EXPECT_EQ(c->cluster_key.grid, 4);
  EXPECT_DOUBLE_EQ(c->default_temperature, 0.5);
  EXPECT_EQ(c->max_input_length, 64);
  EXPECT_EQ(c->max_connection_age_ms, 1000);
  EXPECT_EQ(c->max_stream_in_flight, 5);
  EXPECT_EQ(c->drain_grace_ms, 200);
  EXPECT_EQ(c->drain_timeout_ms, 500);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->task_given, TaskGivenPolicy::kRouter);
  EXPECT_EQ(c->mode, ServingMode::kExperts);
  EXPECT_EQ(c->experts, (std::map<std::string, std::string>{{"lang", "/m/lang.pt"},
                                                            {"spam", "/m/spam.pt"}}));
  EXPECT_TRUE(ValidateServerConfig(*c).ok());
}

TEST(ServerConfigTest, ServingModeAndTaskGivenPolicy) {
  auto defaults = ParseServerConfig("artifact_uri: file:///x");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->mode, ServingMode::kTwin);
  EXPECT_EQ(defaults->task_given, TaskGivenPolicy::kTask);
  auto static_mode = ParseServerConfig("serving: {mode: static}\nrouting: {task_given: task}");
  ASSERT_TRUE(static_mode.ok()) << static_mode.status();
  EXPECT_EQ(static_mode->mode, ServingMode::kStatic);
  EXPECT_STREQ(ServingModeName(static_mode->mode), "static");
  EXPECT_EQ(defaults->unfused_weights, "key");
  auto native = ParseServerConfig(
      "serving: {engine: native, batches: unfused, unfused_weights: router, mix_strategy: stacked}");
  ASSERT_TRUE(native.ok()) << native.status();
  EXPECT_EQ(native->engine_model, "native");
  EXPECT_EQ(native->batches, "unfused");
  EXPECT_EQ(native->unfused_weights, "router");
  EXPECT_EQ(native->mix_strategy, MixStrategy::kStacked);
  EXPECT_EQ(defaults->generation.mix_strategy, MixStrategy::kStacked);
  auto grouped = ParseServerConfig("generation: {mix_strategy: grouped}");
  ASSERT_TRUE(grouped.ok()) << grouped.status();
  EXPECT_EQ(grouped->generation.mix_strategy, MixStrategy::kGrouped);
  const std::pair<const char*, const char*> cases[] = {
      {"serving: {mode: fast}", "serving.mode: 'fast' is not twin, static or experts"},
      {"routing: {task_given: always}", "routing.task_given: 'always' is not task or router"},
      {"serving: {experts: [a.pt]}", "serving.experts: must be a map of task: path"},
      {"serving: {experts: {a: [x]}}", "serving.experts: must be a map of task: path"},
      {"serving: {modes: twin}", "serving.modes"},
      {"serving: {batches: sometimes}", "serving.batches: 'sometimes' is not auto, fused or unfused"},
      {"serving: {unfused_weights: exact}", "serving.unfused_weights: 'exact' is not key or router"},
      {"serving: {engine: onnx}", "serving.engine: 'onnx' is not auto, torchscript or native"},
      {"serving: {mix_strategy: fastest}", "serving.mix_strategy"},
      {"generation: {mix_strategy: fused}", "generation.mix_strategy"},
  };
  for (const auto& [yaml, needle] : cases) {
    auto c = ParseServerConfig(yaml);
    ASSERT_FALSE(c.ok()) << yaml;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(needle)) << yaml;
  }
  ServerConfig c;
  c.artifact_uri = "file:///x";
  c.mode = ServingMode::kExperts;
  EXPECT_THAT(std::string(ValidateServerConfig(c).message()),
              HasSubstr("serving.experts: must name each task's model"));
  c.mode = ServingMode::kTwin;
  c.experts["a"] = "a.pt";
  EXPECT_THAT(std::string(ValidateServerConfig(c).message()), HasSubstr("only in experts mode"));
}

TEST(ServerConfigTest, EmptyDocumentGivesDefaultsThatNeedAnArtifactUri) {
  auto c = ParseServerConfig("");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->listen_address, "0.0.0.0:50051");
  EXPECT_THAT(std::string(ValidateServerConfig(*c).message()), HasSubstr("artifact_uri"));
  c->artifact_uri = "file:///x";
  EXPECT_TRUE(ValidateServerConfig(*c).ok());
}

TEST(ServerConfigTest, RejectsUnknownKeysBadTypesAndRanges) {
  const std::pair<const char*, const char*> cases[] = {
      {"bogus: 1", "bogus"},
      {"batching: {max_batch: 3}", "batching.max_batch"},
      {"workers: many", "workers"},
      {"cache: {policy: random}", "cache.policy"},
      {"[unclosed", "bad YAML"},
      // Keys that are sequences or mappings once aborted the process (TypedBadConversion).
      {"{[a]: 1}", "(top level): has a key that is not a plain name (line 1)"},
      {"batching:\n  {b: 1}: 2\n", "batching: has a key that is not a plain name (line 2)"},
  };
  for (const auto& [yaml, needle] : cases) {
    auto c = ParseServerConfig(yaml);
    ASSERT_FALSE(c.ok()) << yaml;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(needle)) << yaml;
  }
  ServerConfig c;
  c.artifact_uri = "file:///x";
  c.workers = 0;
  EXPECT_THAT(std::string(ValidateServerConfig(c).message()), HasSubstr("workers"));
  c.workers = 1;
  c.cluster_key.grid = 5000;
  EXPECT_THAT(std::string(ValidateServerConfig(c).message()), HasSubstr("grid"));
  c.cluster_key.grid = 10;
  c.default_temperature = 100;
  EXPECT_THAT(std::string(ValidateServerConfig(c).message()), HasSubstr("default_temperature"));
  c.default_temperature = 1.0;
  c.drain_grace_ms = c.drain_timeout_ms + 1;  // the grace is part of the overall limit
  EXPECT_THAT(std::string(ValidateServerConfig(c).message()), HasSubstr("drain_grace_ms"));
  c.drain_grace_ms = 0;
  c.max_stream_in_flight = 0;
  EXPECT_THAT(std::string(ValidateServerConfig(c).message()),
              HasSubstr("limits.max_stream_in_flight"));
}

TEST(ServerConfigTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadServerConfig("/nonexistent.yaml").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace twin
