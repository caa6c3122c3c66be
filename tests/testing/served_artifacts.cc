#include "tests/testing/served_artifacts.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"

namespace twin::testing {

ServedArtifacts& ServedArtifacts::Get() {
  static ServedArtifacts* artifacts = new ServedArtifacts();
  return *artifacts;
}

ServedArtifacts::ServedArtifacts() {
  TinyZooOptions zoo_options;
  zoo_options.vocab = 288;  // byte-tokenized text (ids 1..259) is valid input too
  auto zoo = BuildTinyZoo(dir_.path(), zoo_options);
  EXPECT_TRUE(zoo.ok()) << zoo.status();
  if (zoo.ok()) zoo_ = *zoo;
  std::string y = absl::StrCat("base_model: ", zoo_.base_path, "\nmodels:\n");
  for (size_t t = 0; t < zoo_.task_names.size(); ++t) {
    absl::StrAppend(&y, "  - {model: ", zoo_.expert_paths[t], ", name: ", zoo_.task_names[t],
                    ", router_data: ", zoo_.router_data[t], "}\n");
  }
  absl::StrAppend(&y, "output: ", store(), "\ntwin: {rank_policy: ratio, ratio: 0.5}\n",
                  "router: {max_epochs: 40, features: model}\nversion: v1\n");
  auto config = ParseMergeConfig(y, dir_.path());
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return;
  MergeJobOptions options;
  options.quiet = true;
  auto result = RunMergeJob(*config, options);
  EXPECT_TRUE(result.ok()) << result.status();
}

ServerConfig LoopbackServerConfig(const std::string& cache_dir) {
  ServerConfig c;
  c.listen_address = "127.0.0.1:0";
  c.metrics_address = "127.0.0.1:0";
  c.artifact_uri = ServedArtifacts::Get().store();
  c.cache_dir = cache_dir;
  c.device = "cpu";
  c.cluster_key = {0, 0};  // exact routing
  c.warmup_requests = 1;
  c.drain_timeout_ms = 2000;
  return c;
}

absl::StatusOr<std::unique_ptr<TwinServer>> StartServer(const ServerConfig& config, bool load) {
  auto server = TwinServer::Start(config);
  if (!server.ok() || !load) return server;
  absl::Status loaded = (*server)->LoadVersion();
  if (!loaded.ok()) return loaded;
  return server;
}

}  // namespace twin::testing
