// A Hugging Face model end to end: BERT directories (config.json, safetensors, vocab.txt)
// merged by twin-merge into a version with a native model and an "hf" tokenizer, then served
// by twin-server three ways on the same weights: the native engine with fused batches, the
// native engine with unfused (mixed-key) batches, and the TorchScript engine. Every reply must
// agree across the three within the rounding bound; a burst of requests with distinct router
// weights, batched together unfused, must agree with the same requests answered one by one.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "bench/zoo/tiny_zoo.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "server/server_config.h"
#include "server/twin_server.h"
#include "tests/core/model/hf_test_models.h"
#include "tests/core/model/hf_test_zoo.h"
#include "tests/testing/rounding.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/temp_dir.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {
namespace {

using twin::testing::HfTestModel;
using twin::testing::TempDir;
using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

constexpr int kNumTasks = 3;

class NativeServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    zoo_ = new twin::testing::HfTestZoo(twin::testing::WriteHfTestZoo(dir_->path()));
    auto config = ParseMergeConfig(zoo_->merge_yaml, dir_->path());
    ASSERT_TRUE(config.ok()) << config.status();
    MergeJobOptions options;
    options.quiet = true;
    auto result = RunMergeJob(*config, options);
    ASSERT_TRUE(result.ok()) << result.status();
    manifest_ = new Manifest(result->manifest);
  }
  static void TearDownTestSuite() {
    delete manifest_;
    delete zoo_;
    delete dir_;
  }

  ServerConfig Config(const std::string& name) {
    return twin::testing::LoopbackServerConfigFor(
        dir_->Join("store"), dir_->Join(absl::StrCat("cache-", name, "-", counter_++)));
  }

  // Starts a server, sends every text (task unknown, or tasks[k] when given) and returns the
  // replies.
  std::vector<InferResponse> Serve(ServerConfig config, const std::vector<std::string>& texts,
                                   bool concurrent, const std::vector<std::string>& tasks = {}) {
    return twin::testing::InferTexts(config, texts, concurrent, tasks);
  }

  // Replies of two servers agree: same task and label set, probabilities within the bound of
  // two float32 forwards of this model computed in different ways.
  void ExpectSame(const std::vector<InferResponse>& a, const std::vector<InferResponse>& b,
                  const std::vector<std::string>& texts, const std::string& what) {
    HfTestModel m;
    m.model_type = "bert";
    const double bound = twin::testing::ProbabilityError(
        twin::testing::HfForwardDepth(m) + 4, twin::testing::HfForwardWidth(m, 16), 10.0);
    twin::testing::ExpectSameReplies(a, b, texts, what, bound);
  }


  static TempDir* dir_;
  static twin::testing::HfTestZoo* zoo_;
  static Manifest* manifest_;
  int counter_ = 0;
};

TempDir* NativeServingTest::dir_ = nullptr;
twin::testing::HfTestZoo* NativeServingTest::zoo_ = nullptr;
Manifest* NativeServingTest::manifest_ = nullptr;

TEST_F(NativeServingTest, TheVersionCarriesTheNativeModelAndTokenizer) {
  ASSERT_NE(manifest_, nullptr);
  EXPECT_EQ(manifest_->native.family, "bert");
  EXPECT_EQ(manifest_->native.config_blob, "hf/config.json");
  EXPECT_EQ(manifest_->tokenizer.type, "hf");
  EXPECT_THAT(manifest_->tokenizer.files,
              ::testing::ElementsAre("hf/vocab.txt", "hf/tokenizer_config.json"));
  EXPECT_EQ(manifest_->router.features, "ngram");
  ASSERT_EQ(manifest_->tasks.size(), 3u);
  // Labels from each expert's config.json (id2label).
  EXPECT_EQ(manifest_->tasks[2].labels.size(), 4u);
  for (const auto& [field, blob] : manifest_->NamedBlobs()) {
    EXPECT_TRUE(manifest_->blobs.count(blob)) << field << " " << blob;
  }
}

TEST_F(NativeServingTest, NativeFusedUnfusedAndTorchScriptAgree) {
  ASSERT_NE(manifest_, nullptr);
  const std::vector<std::string> texts = twin::testing::HfTestZooServingTexts(6);
  ServerConfig torchscript = Config("ts");
  torchscript.engine_model = "torchscript";
  ServerConfig fused = Config("fused");
  fused.engine_model = "native";
  fused.batches = "fused";
  ServerConfig unfused = Config("unfused");
  unfused.engine_model = "native";
  unfused.batches = "unfused";
  const std::vector<InferResponse> by_ts = Serve(torchscript, texts, false);
  const std::vector<InferResponse> by_fused = Serve(fused, texts, false);
  const std::vector<InferResponse> by_unfused = Serve(unfused, texts, false);
  ASSERT_EQ(by_unfused.size(), texts.size());
  for (size_t k = 0; k < texts.size(); ++k) {
    EXPECT_EQ(by_ts[k].batch_mode(), "fused");
    EXPECT_EQ(by_fused[k].batch_mode(), "fused");
    EXPECT_EQ(by_unfused[k].batch_mode(), "unfused");
    EXPECT_FALSE(by_unfused[k].cache_hit());
  }
  ExpectSame(by_fused, by_ts, texts, "native fused vs TorchScript");
  ExpectSame(by_unfused, by_fused, texts, "native unfused vs fused");
}

TEST_F(NativeServingTest, MixedBatchesAnswerLikeOneByOne) {
  ASSERT_NE(manifest_, nullptr);
  const std::vector<std::string> texts = twin::testing::HfTestZooServingTexts(6);
  ServerConfig one = Config("one");
  one.batches = "unfused";
  ServerConfig mixed = Config("mixed");
  mixed.batches = "unfused";
  mixed.queue.max_batch_size = static_cast<int>(texts.size());
  mixed.queue.max_queue_delay_us = 200000;  // the burst gathers into few batches
  const std::vector<InferResponse> alone = Serve(one, texts, false);
  const std::vector<InferResponse> together = Serve(mixed, texts, true);
  ExpectSame(together, alone, texts, "mixed batch vs one by one");
  std::set<std::string> keys;
  for (const InferResponse& r : together) keys.insert(r.cluster_key());
  EXPECT_GT(keys.size(), 3u);  // the batches really mixed keys
}

// serving.unfused_weights: router: an unfused row mixes the router's own top-2 weights, not
// its key's grid-rounded ones, while the key (g4) still names the fused set for fused batches:
// the same replies as exact top-2 keys (grid 0).
TEST_F(NativeServingTest, UnfusedRowsCanMixTheRoutersOwnWeights) {
  ASSERT_NE(manifest_, nullptr);
  const std::vector<std::string> texts = twin::testing::HfTestZooServingTexts(6);
  ServerConfig router = Config("router-weights");
  router.batches = "unfused";
  router.cluster_key = {2, 4};
  router.unfused_weights = "router";
  ServerConfig exact = Config("exact-keys");
  exact.batches = "unfused";
  exact.cluster_key = {2, 0};
  const std::vector<InferResponse> a = Serve(router, texts, false);
  const std::vector<InferResponse> b = Serve(exact, texts, false);
  ExpectSame(a, b, texts, "router weights on g4 keys vs exact keys");
  ASSERT_EQ(a.size(), texts.size());
  int off_grid = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].cluster_key().rfind("g4:", 0), 0u) << a[k].cluster_key();
    ASSERT_EQ(a[k].router_weights_size(), b[k].router_weights_size()) << texts[k];
    for (int i = 0; i < a[k].router_weights_size(); ++i) {
      EXPECT_EQ(a[k].router_weights(i).task(), b[k].router_weights(i).task());
      EXPECT_NEAR(a[k].router_weights(i).weight(), b[k].router_weights(i).weight(), 1e-6);
      const double quarters = a[k].router_weights(i).weight() * 4;
      off_grid += std::abs(quarters - std::round(quarters)) > 1e-3;
    }
  }
  EXPECT_GT(off_grid, 0);  // the weights are not the key's multiples of 1/4
}

// serving.mode: experts with the Hugging Face directories themselves: each named task is
// answered by its own expert, run natively, as the expert's own forward computes it.
TEST_F(NativeServingTest, ExpertsModeServesTheHuggingFaceDirectories) {
  ASSERT_NE(manifest_, nullptr);
  ServerConfig config = Config("experts");
  config.mode = ServingMode::kExperts;
  for (size_t t = 0; t < zoo_->tasks.size(); ++t) {
    config.experts[zoo_->tasks[t]] = zoo_->expert_dirs[t];
  }
  std::vector<std::string> texts, tasks;
  for (int t = 0; t < kNumTasks; ++t) {
    for (const std::string& text : twin::testing::HfTestZooTexts(t, 4)) {
      texts.push_back(text + " win goal");
      tasks.push_back(zoo_->tasks[t]);
    }
  }
  const std::vector<InferResponse> replies = Serve(config, texts, false, tasks);
  ASSERT_EQ(replies.size(), texts.size());

  auto tokenizer = twin::testing::PublishedTokenizer(zoo_->store, dir_->Join("fetch-experts"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const twin::testing::HfTestModel& m = zoo_->base;
  for (size_t k = 0; k < texts.size(); ++k) {
    EXPECT_EQ(replies[k].task(), tasks[k]);
    const size_t t = k / 4;
    auto batch = (*tokenizer)->Encode({texts[k]});
    ASSERT_TRUE(batch.ok()) << batch.status();
    auto logits = twin::testing::HfDirLogits(zoo_->expert_dirs[t], batch->input_ids,
                                             batch->attention_mask);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const at::Tensor p = logits->softmax(1)[0];
    const double bound = twin::testing::ProbabilityError(
        twin::testing::HfForwardDepth(m), twin::testing::HfForwardWidth(m, batch->input_ids.size(1)),
        logits->abs().max().item<double>());
    ASSERT_EQ(replies[k].probabilities_size(), p.size(0)) << texts[k];
    for (int c = 0; c < replies[k].probabilities_size(); ++c) {
      EXPECT_NEAR(replies[k].probabilities(c), p[c].item<double>(), bound) << texts[k] << " " << c;
    }
  }
}

// One server reloads from a TorchScript version to a native one and back: each version is
// served by its own engine (unfused batches exist only on the native one), and a reload
// changes the queue's modes with it.
TEST_F(NativeServingTest, ReloadsBetweenATorchScriptAndANativeVersion) {
  ASSERT_NE(manifest_, nullptr);
  const std::string store = dir_->Join("store-mixed");
  twin::zoo::TinyZooOptions tiny;
  std::filesystem::create_directories(dir_->Join("tiny"));
  auto zoo = twin::zoo::BuildTinyZoo(dir_->Join("tiny"), tiny);
  ASSERT_TRUE(zoo.ok()) << zoo.status();
  ASSERT_TRUE(twin::testing::PublishTinyZoo(*zoo, store, dir_->Join("tiny-work")).ok());
  const std::string ts_version = "v1";  // PublishTinyZoo's
  // The Hugging Face zoo again, as version hf1 of the same store (LATEST then names it).
  std::string yaml = absl::StrReplaceAll(
      zoo_->merge_yaml, {{"output: " + zoo_->store, "output: " + store}, {"version: v1", "version: hf1"}});
  auto merge = ParseMergeConfig(yaml, dir_->path());
  ASSERT_TRUE(merge.ok()) << merge.status();
  MergeJobOptions options;
  options.quiet = true;
  ASSERT_TRUE(RunMergeJob(*merge, options).ok());

  ServerConfig config = Config("reload");
  config.artifact_uri = store;
  config.batches = "unfused";
  auto server = TwinServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = twinmerge::v1::TwinMerge::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  // Token ids both vocabularies hold (the tiny zoo's 64, BERT's 100).
  auto infer = [&](InferResponse* reply) {
    InferRequest request;
    for (int64_t id : {2, 11, 23, 40, 3}) {
      request.mutable_tokens()->add_input_ids(id);
      request.mutable_tokens()->add_attention_mask(1);
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub->Infer(&context, request, reply);
  };
  const std::pair<std::string, std::string> steps[] = {
      {ts_version, "fused"}, {"hf1", "unfused"}, {ts_version, "fused"}, {"", "unfused"}};
  for (const auto& [version, mode] : steps) {
    SCOPED_TRACE(version.empty() ? "LATEST" : version);
    ASSERT_TRUE((*server)->LoadVersion(version).ok());
    InferResponse reply;
    const grpc::Status status = infer(&reply);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(reply.artifact_version(), version.empty() ? "hf1" : version);
    EXPECT_EQ(reply.batch_mode(), mode);
    EXPECT_EQ(reply.task().empty(), false);
  }
  (*server)->Shutdown();
}

}  // namespace
}  // namespace twin
