#include "tests/testing/served_artifacts.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
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
  absl::Status published = PublishTinyZoo(zoo_, store(), dir_.path());
  EXPECT_TRUE(published.ok()) << published;
}

absl::Status PublishTinyZoo(const TinyZoo& zoo, const std::string& store,
                            const std::string& work) {
  std::string y = absl::StrCat("base_model: ", zoo.base_path, "\nmodels:\n");
  for (size_t t = 0; t < zoo.task_names.size(); ++t) {
    absl::StrAppend(&y, "  - {model: ", zoo.expert_paths[t], ", name: ", zoo.task_names[t],
                    ", router_data: ", zoo.router_data[t], "}\n");
  }
  absl::StrAppend(&y, "output: ", store, "\ntwin: {rank_policy: ratio, ratio: 0.5}\n",
                  "router: {max_epochs: 40, features: model}\nversion: v1\n");
  ASSIGN_OR_RETURN(MergeJobConfig config, ParseMergeConfig(y, work));
  MergeJobOptions options;
  options.quiet = true;
  return RunMergeJob(config, options).status();
}

ServerConfig LoopbackServerConfig(const std::string& cache_dir) {
  ServerConfig c;
  c.listen_address = "127.0.0.1:0";
  c.admin_listen_address = "127.0.0.1:0";
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
