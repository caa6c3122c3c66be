#include "tests/testing/served_artifacts.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

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
  return LoopbackServerConfigFor(ServedArtifacts::Get().store(), cache_dir);
}

ServerConfig LoopbackServerConfigFor(const std::string& store, const std::string& cache_dir) {
  ServerConfig c;
  c.listen_address = "127.0.0.1:0";
  c.admin_listen_address = "127.0.0.1:0";
  c.metrics_address = "127.0.0.1:0";
  c.artifact_uri = store;
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

std::vector<twinmerge::v1::InferResponse> InferTexts(const ServerConfig& config,
                                                     const std::vector<std::string>& texts,
                                                     bool concurrent,
                                                     const std::vector<std::string>& tasks) {
  auto server = StartServer(config, /*load=*/true);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return {};
  auto stub = twinmerge::v1::TwinMerge::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  std::vector<twinmerge::v1::InferResponse> replies(texts.size());
  std::vector<grpc::Status> statuses(texts.size());
  auto call = [&](size_t k) {
    twinmerge::v1::InferRequest request;
    request.set_text(texts[k]);
    if (!tasks.empty()) request.set_task(tasks[k]);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    statuses[k] = stub->Infer(&context, request, &replies[k]);
  };
  if (concurrent) {
    std::vector<std::thread> callers;
    for (size_t k = 0; k < texts.size(); ++k) callers.emplace_back(call, k);
    for (std::thread& t : callers) t.join();
  } else {
    for (size_t k = 0; k < texts.size(); ++k) call(k);
  }
  for (size_t k = 0; k < texts.size(); ++k) {
    EXPECT_TRUE(statuses[k].ok()) << texts[k] << ": " << statuses[k].error_message();
  }
  (*server)->Shutdown();
  return replies;
}

void ExpectSameReplies(const std::vector<twinmerge::v1::InferResponse>& a,
                       const std::vector<twinmerge::v1::InferResponse>& b,
                       const std::vector<std::string>& texts, const std::string& what,
                       double bound) {
  ASSERT_EQ(a.size(), b.size()) << what;
  ASSERT_EQ(a.size(), texts.size()) << what;
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].task(), b[k].task()) << what << ": " << texts[k];
    ASSERT_EQ(a[k].probabilities_size(), b[k].probabilities_size()) << what << ": " << texts[k];
    for (int c = 0; c < a[k].probabilities_size(); ++c) {
      EXPECT_NEAR(a[k].probabilities(c), b[k].probabilities(c), bound)
          << what << ": " << texts[k] << " class " << c;
    }
  }
}

}  // namespace twin::testing
