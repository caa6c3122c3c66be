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

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "server/server_config.h"
#include "server/twin_server.h"
#include "tests/core/model/hf_test_models.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {
namespace {

using twin::testing::HfTestModel;
using twin::testing::TempDir;
using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

const char* const kTasks[] = {"spam", "topic", "mood"};
constexpr int kNumTasks = 3;

// Words of each task's texts (the router tells tasks apart by their n-grams) and the shared
// special tokens; the vocabulary is exactly the model's 100 ids.
std::vector<std::string> Vocabulary() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (char c = 'a'; c <= 'z'; ++c) v.push_back(std::string(1, c));
  for (char c = 'a'; c <= 'z'; ++c) v.push_back(absl::StrCat("##", std::string(1, c)));
  for (const char* w : {"free", "money", "win", "prize", "click", "offer", "cash", "deal",
                        "sport", "match", "team", "goal", "score", "league", "coach", "season",
                        "happy", "sad", "love", "angry", "calm", "glad", "tired", "proud"}) {
    v.push_back(w);
  }
  while (v.size() < 100) v.push_back(absl::StrCat("[unused", v.size(), "]"));
  return v;
}

std::vector<std::string> TaskTexts(int task, int n) {
  const std::vector<std::string> v = Vocabulary();
  const size_t first = 5 + 52 + 8 * static_cast<size_t>(task);
  std::vector<std::string> texts;
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> words;
    for (int j = 0; j < 3 + i % 4; ++j) words.push_back(v[first + (i * 3 + j * 5) % 8]);
    texts.push_back(absl::StrJoin(words, " "));
  }
  return texts;
}

class NativeServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    HfTestModel m;
    m.model_type = "bert";
    m.pad = 0;
    m.num_labels = 2;
    const std::string base = dir_->Join("base");
    std::filesystem::create_directories(base);
    const twin::testing::NamedTensors weights = twin::testing::WriteHfTestDir(base, m);
    std::ofstream(base + "/vocab.txt") << absl::StrJoin(Vocabulary(), "\n") << "\n";
    std::ofstream(base + "/tokenizer_config.json") << R"({"do_lower_case": true})";
    std::string yaml = absl::StrCat("base_model: ", base, "\nmodels:\n");
    for (int t = 0; t < kNumTasks; ++t) {
      // Each expert: the base plus its own deltas, and its own head of 2 + t classes.
      HfTestModel e = m;
      e.seed = 10 + t;
      e.num_labels = 2 + t;
      const twin::testing::NamedTensors delta = twin::testing::HfTestWeights(e);
      twin::testing::NamedTensors expert;
      for (size_t i = 0; i < weights.size(); ++i) {
        const bool head = weights[i].first.rfind("classifier.", 0) == 0;
        expert.emplace_back(weights[i].first,
                            head ? delta[i].second : weights[i].second + 0.2 * delta[i].second);
      }
      const std::string dir = dir_->Join(kTasks[t]);
      std::filesystem::create_directories(dir);
      twin::testing::WriteHfConfig(dir, twin::testing::HfTestConfig(e));
      twin::testing::WriteHfWeights(dir, expert, /*shards=*/t == 1 ? 2 : 0);
      const std::string data = dir_->Join(absl::StrCat(kTasks[t], ".txt"));
      std::ofstream(data) << absl::StrJoin(TaskTexts(t, 40), "\n") << "\n";
      absl::StrAppend(&yaml, "  - {model: ", dir, ", name: ", kTasks[t], ", router_data: ", data,
                      "}\n");
    }
    absl::StrAppend(&yaml, "output: ", dir_->Join("store"),
                    "\ntwin: {rank_policy: ratio, ratio: 0.5}\n",
                    "router: {max_epochs: 30, features: ngram}\nversion: v1\n");
    auto config = ParseMergeConfig(yaml, dir_->path());
    ASSERT_TRUE(config.ok()) << config.status();
    MergeJobOptions options;
    options.quiet = true;
    auto result = RunMergeJob(*config, options);
    ASSERT_TRUE(result.ok()) << result.status();
    manifest_ = new Manifest(result->manifest);
  }
  static void TearDownTestSuite() {
    delete manifest_;
    delete dir_;
  }

  ServerConfig Config(const std::string& name) {
    ServerConfig c;
    c.listen_address = "127.0.0.1:0";
    c.admin_listen_address = "127.0.0.1:0";
    c.metrics_address = "";
    c.artifact_uri = dir_->Join("store");
    c.cache_dir = dir_->Join(absl::StrCat("cache-", name, "-", counter_++));
    c.device = "cpu";
    c.cluster_key = {0, 0};  // exact routing: every text its own key
    c.warmup_requests = 1;
    c.drain_timeout_ms = 2000;
    return c;
  }

  // Starts a server, sends every text (task unknown) and returns the replies.
  std::vector<InferResponse> Serve(ServerConfig config, const std::vector<std::string>& texts,
                                   bool concurrent) {
    auto server = TwinServer::Start(config);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return {};
    EXPECT_TRUE((*server)->LoadVersion().ok());
    auto stub = twinmerge::v1::TwinMerge::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
    std::vector<InferResponse> replies(texts.size());
    std::vector<grpc::Status> statuses(texts.size());
    auto call = [&](size_t k) {
      InferRequest request;
      request.set_text(texts[k]);
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

  // Replies of two servers agree: same task and label set, probabilities within the bound of
  // two float32 forwards of this model computed in different ways.
  void ExpectSame(const std::vector<InferResponse>& a, const std::vector<InferResponse>& b,
                  const std::vector<std::string>& texts, const std::string& what) {
    ASSERT_EQ(a.size(), b.size());
    HfTestModel m;
    m.model_type = "bert";
    const double bound = twin::testing::ProbabilityError(
        twin::testing::HfForwardDepth(m) + 4, twin::testing::HfForwardWidth(m, 16), 10.0);
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(a[k].task(), b[k].task()) << what << ": " << texts[k];
      ASSERT_EQ(a[k].probabilities_size(), b[k].probabilities_size()) << what << ": " << texts[k];
      for (int c = 0; c < a[k].probabilities_size(); ++c) {
        EXPECT_NEAR(a[k].probabilities(c), b[k].probabilities(c), bound)
            << what << ": " << texts[k] << " class " << c;
      }
    }
  }

  std::vector<std::string> Texts() const {
    std::vector<std::string> texts;
    for (int t = 0; t < kNumTasks; ++t) {
      for (const std::string& s : TaskTexts(t, 6)) texts.push_back(s + " deal sport");
    }
    return texts;
  }

  static TempDir* dir_;
  static Manifest* manifest_;
  int counter_ = 0;
};

TempDir* NativeServingTest::dir_ = nullptr;
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
  const std::vector<std::string> texts = Texts();
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
  const std::vector<std::string> texts = Texts();
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

}  // namespace
}  // namespace twin
