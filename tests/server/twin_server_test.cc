// twin-server end to end, in process on loopback: tiny experts trained here, merged by the
// offline job, served, and called through the generated gRPC stub.
#include "server/twin_server.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "core/router/ngram_features.h"
#include "core/router/router.h"
#include "core/model/script_model.h"
#include "core/merge/twin_weights.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "server/engine.h"
#include "tests/testing/rounding.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_models.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::TempDir;
using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

using Artifacts = twin::testing::ServedArtifacts;

ServerConfig TestConfig(const std::string& cache_dir) {
  return twin::testing::LoopbackServerConfig(cache_dir);
}

InferRequest TokensRequest(const at::Tensor& ids, const at::Tensor& mask, const std::string& task) {
  InferRequest r;
  for (int64_t i = 0; i < ids.size(0); ++i) {
    if (mask[i].item<int64_t>() == 0) break;
    r.mutable_tokens()->add_input_ids(ids[i].item<int64_t>());
  }
  r.set_task(task);
  return r;
}

class TwinServerTest : public ::testing::Test {
 protected:
  void StartServer(const ServerConfig& config, bool load = true) {
    auto server = twin::testing::StartServer(config, load);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = twinmerge::v1::TwinMerge::NewStub(channel_);
  }
  grpc::Status Call(const InferRequest& request, InferResponse* response,
                    int timeout_ms = 10000) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(timeout_ms));
    return stub_->Infer(&context, request, response);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  TempDir dir_;
  std::unique_ptr<TwinServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<twinmerge::v1::TwinMerge::Stub> stub_;
};

// Probabilities the core library gives for one input with exact router weights.
// The logits the core library gives one unpadded row: router weights, fusion, forward.
// `width` receives the widest inner product of the chain (see ProbabilityBound).
at::Tensor ExpectedLogits(const std::string& cache, const at::Tensor& ids, const at::Tensor& mask,
                          int task, int64_t* width) {
  auto store = FileObjectStore::Create(Artifacts::Get().store());
  auto set = FetchArtifactSet(store->get(), "v1", cache);
  EXPECT_TRUE(set.ok());
  auto tw = TwinWeights::Load(*set, c10::kCPU);
  auto router = Router::Load(*set);
  const Manifest& m = set->manifest;
  *width = std::max({m.router.spec.hidden_dim, m.router.spec.input_dim, m.embed_dim,
                     m.tokenizer.max_length});
  auto model = ScriptModel::Load(set->PathOf(set->manifest.architecture_blob));
  EXPECT_TRUE((*model)->SetParameters((*tw)->shared()).ok());
  EXPECT_TRUE((*model)->SetParameters((*tw)->head(task)).ok());
  at::Tensor features = *(*model)->RouterFeatures(ids.unsqueeze(0), mask.unsqueeze(0));
  at::Tensor w = (*(*router)->Weights(features, 1.0))[0].to(at::kDouble);
  std::vector<double> wv(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
  EXPECT_TRUE((*model)->SetParameters(*(*tw)->Fuse(wv)).ok());
  return (*(*model)->Forward(ids.unsqueeze(0), mask.unsqueeze(0)))[0];
}

// The server computes the same chain on a padded batch of another shape: the router's input
// (embedding, tanh(linear) over dim, masked mean over the row), the router (2 blocks of linear
// and LayerNorm, the output layer), the fusion of full-rank twins and the forward (3 stages):
// about 12 stages, none wider than the router's hidden layer. The router weights' own error
// moves the fused weights by at most as much, relative, as the logits.
double ProbabilityBound(const at::Tensor& logits, int64_t width) {
  return twin::testing::ProbabilityError(12, width, logits.abs().max().item<double>());
}

// A model may define route_features(): the merge job trains the router on it, the manifest
// records it and the engine routes with it; an artifact whose manifest and architecture disagree
// about the router's input is refused at load.
TEST(EngineRouterFeaturesTest, RouteFeaturesTrainAndServeTheRouter) {
  TempDir dir;
  const auto& zoo = Artifacts::Get().zoo();
  torch::jit::Module base = torch::jit::load(zoo.base_path);
  base.define(
      "def route_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:\n"
      "    x = torch.embedding(self.emb.weight, input_ids)\n"
      "    m = attention_mask.unsqueeze(-1).to(x.dtype)\n"
      "    raw = (x * m).sum(1) / m.sum(1).clamp(min=1.0)\n"
      "    return torch.cat([self.embed(input_ids, attention_mask), raw], 1)\n");
  base.save(dir.Join("base_rf.pt"));
  std::string yaml = absl::StrCat("base_model: ", dir.Join("base_rf.pt"), "\nmodels:\n");
  for (size_t t = 0; t < zoo.task_names.size(); ++t) {
    absl::StrAppend(&yaml, "  - model: ", zoo.expert_paths[t], "\n    name: ", zoo.task_names[t],
                    "\n    router_data: ", zoo.router_data[t], "\n");
  }
  absl::StrAppend(&yaml, "output: ", dir.Join("store"),
                  "\nrouter: {max_epochs: 40, patience: 10, features: model}\ntwin: "
                  "{rank_policy: ratio, "
                  "ratio: 0.5}\n");
  auto config = ParseMergeConfig(yaml, dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  MergeJobOptions job_options;
  job_options.quiet = true;
  auto result = RunMergeJob(*config, job_options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest.router.features, "route_features");
  const int64_t dim = result->manifest.embed_dim;
  EXPECT_EQ(result->manifest.router.spec.input_dim, 2 * dim);

  auto store = FileObjectStore::Create(dir.Join("store"));
  ASSERT_TRUE(store.ok());
  auto set = FetchArtifactSet(store->get(), result->version, dir.Join("cache"));
  ASSERT_TRUE(set.ok()) << set.status();
  auto engine = Engine::Load(*set, EngineOptions{"cpu"});
  ASSERT_TRUE(engine.ok()) << engine.status();

  // The engine's router weights are the router applied to the shared model's route_features.
  const auto& data = zoo.test_data[1];
  const at::Tensor ids = data.input_ids.slice(0, 0, 4);
  const at::Tensor mask = data.attention_mask.slice(0, 0, 4);
  auto weights = (*engine)->RouterWeights(ids, mask, {1.0, 1.0, 1.0, 1.0});
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto tw = TwinWeights::Load(*set, c10::kCPU);
  ASSERT_TRUE(tw.ok());
  auto model = ScriptModel::Load(set->PathOf(set->manifest.architecture_blob));
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE((*model)->SetParameters((*tw)->shared()).ok());
  auto features = (*model)->RouterFeatures(ids, mask);
  ASSERT_TRUE(features.ok()) << features.status();
  ASSERT_EQ(features->size(1), 2 * dim);
  auto router = Router::Load(*set);
  ASSERT_TRUE(router.ok()) << router.status();
  auto expected = (*router)->Weights(*features, 1.0);
  ASSERT_TRUE(expected.ok());
  // The same features and router on the same batch: only the softmax is written twice
  // (the engine divides by a tensor of temperatures), each within its own rounding.
  const int64_t tasks = set->manifest.router.spec.num_tasks;
  EXPECT_LE((*weights - *expected).abs().max().item<double>(),
            2 * twin::testing::Float32Gamma(2 * tasks + 2));

  LocalArtifactSet claims_embed = *set;
  claims_embed.manifest.router.features = "embed";
  auto refused = Engine::Load(claims_embed, EngineOptions{"cpu"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("route_features"));

  // An architecture whose route_features() width differs from the router's input is refused.
  TempDir copy;
  std::filesystem::copy(
      set->dir, copy.path(),
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  torch::jit::Module narrow = torch::jit::load(zoo.base_path);
  narrow.define(
      "def route_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:\n"
      "    return self.embed(input_ids, attention_mask)\n");
  LocalArtifactSet narrowed = *set;
  narrowed.dir = copy.path();
  narrow.save(narrowed.PathOf(narrowed.manifest.architecture_blob));
  auto too_narrow = Engine::Load(narrowed, EngineOptions{"cpu"});
  ASSERT_FALSE(too_narrow.ok());
  EXPECT_EQ(too_narrow.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_narrow.status().message()), HasSubstr("router reads"));

  // The served tiny version's architecture has no route_features().
  auto served_store = FileObjectStore::Create(Artifacts::Get().store());
  ASSERT_TRUE(served_store.ok());
  auto served = FetchArtifactSet(served_store->get(), "v1", dir.Join("cache2"));
  ASSERT_TRUE(served.ok()) << served.status();
  served->manifest.router.features = "route_features";
  auto missing = Engine::Load(*served, EngineOptions{"cpu"});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("route_features"));
}

// router.features: ngram: the merge job trains the router on hashed token n-gram counts, the
// manifest records their parameters and the engine routes from the ids alone.
TEST(EngineRouterFeaturesTest, NgramFeaturesTrainAndServeTheRouter) {
  TempDir dir;
  const auto& zoo = Artifacts::Get().zoo();
  std::string yaml = absl::StrCat("base_model: ", zoo.base_path, "\nmodels:\n");
  for (size_t t = 0; t < zoo.task_names.size(); ++t) {
    absl::StrAppend(&yaml, "  - model: ", zoo.expert_paths[t], "\n    name: ", zoo.task_names[t],
                    "\n    router_data: ", zoo.router_data[t], "\n");
  }
  absl::StrAppend(&yaml, "output: ", dir.Join("store"),
                  "\nrouter: {max_epochs: 40, features: ngram, ngram: {max_order: 2, buckets: "
                  "512}}\ntwin: {rank_policy: ratio, ratio: 0.5}\n");
  auto config = ParseMergeConfig(yaml, dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  MergeJobOptions job_options;
  job_options.quiet = true;
  auto result = RunMergeJob(*config, job_options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest.router.features, "ngram");
  EXPECT_EQ(result->manifest.router.ngram.max_order, 2);
  EXPECT_EQ(result->manifest.router.spec.input_dim, 512);
  EXPECT_EQ(result->manifest.router.spec.hidden_dim, 256);  // the n-gram default width
  // The tiny tasks differ in their token statistics: the router learns them from n-grams.
  EXPECT_GT(result->manifest.router.validation_accuracy, 1.0 / zoo.task_names.size() + 0.2);

  auto store = FileObjectStore::Create(dir.Join("store"));
  auto set = FetchArtifactSet(store->get(), result->version, dir.Join("cache"));
  ASSERT_TRUE(set.ok()) << set.status();
  auto engine = Engine::Load(*set, EngineOptions{"cpu"});
  ASSERT_TRUE(engine.ok()) << engine.status();
  const auto& data = zoo.test_data[2];
  const at::Tensor ids = data.input_ids.slice(0, 0, 4);
  const at::Tensor mask = data.attention_mask.slice(0, 0, 4);
  auto weights = (*engine)->RouterWeights(ids, mask, {1.0, 1.0, 1.0, 1.0});
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto features = NgramFeatures(ids, mask, set->manifest.router.ngram);
  ASSERT_TRUE(features.ok());
  auto router = Router::Load(*set);
  ASSERT_TRUE(router.ok());
  auto expected = (*router)->Weights(*features, 1.0);
  ASSERT_TRUE(expected.ok());
  const int64_t tasks = set->manifest.router.spec.num_tasks;
  EXPECT_LE((*weights - *expected).abs().max().item<double>(),
            2 * twin::testing::Float32Gamma(2 * tasks + 2));

  // Served end to end: a routed request's weights come from the n-gram router.
  ServerConfig server_config = twin::testing::LoopbackServerConfig(dir.Join("server-cache"));
  server_config.artifact_uri = dir.Join("store");
  auto server = twin::testing::StartServer(server_config, /*load=*/true);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = twinmerge::v1::TwinMerge::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  InferRequest request = TokensRequest(ids[0], mask[0], "");
  InferResponse reply;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->Infer(&context, request, &reply).ok());
  const int top = static_cast<int>((*expected)[0].argmax().item<int64_t>());
  EXPECT_EQ(reply.task(), zoo.task_names[top]);
  EXPECT_GT(reply.router_weights_size(), 0);
  (*server)->Shutdown();
}

TEST_F(TwinServerTest, ExactRoutingReproducesTheCoreLibraryAndCaches) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.task_given = TaskGivenPolicy::kRouter;  // the named task's head, the router's weights
  StartServer(config);
  const auto& zoo = Artifacts::Get().zoo();
  for (int task = 0; task < 3; ++task) {
    const auto& data = zoo.test_data[task];
    at::Tensor ids = data.input_ids[0];
    at::Tensor mask = data.attention_mask[0];
    const int64_t n = mask.sum().item<int64_t>();
    InferResponse reply;
    ASSERT_TRUE(Call(TokensRequest(ids, mask, zoo.task_names[task]), &reply).ok());
    EXPECT_EQ(reply.task(), zoo.task_names[task]);
    EXPECT_EQ(reply.artifact_version(), "v1");
    int64_t width = 0;
    const at::Tensor logits = ExpectedLogits(dir_.Join("cache2"), ids.slice(0, 0, n),
                                             mask.slice(0, 0, n), task, &width);
    const at::Tensor expected = at::softmax(logits, 0);
    ASSERT_EQ(reply.probabilities_size(), expected.size(0));
    for (int k = 0; k < reply.probabilities_size(); ++k) {
      EXPECT_NEAR(reply.probabilities(k), expected[k].item<float>(), ProbabilityBound(logits, width));
    }
    EXPECT_EQ(reply.label_index(), expected.argmax().item<int64_t>());
    EXPECT_EQ(reply.label(), absl::StrCat(reply.label_index()));
    EXPECT_FALSE(reply.cache_hit());
    EXPECT_FALSE(reply.cluster_key().empty());
    // The same input again has the same key and hits the cache.
    InferResponse again;
    ASSERT_TRUE(Call(TokensRequest(ids, mask, zoo.task_names[task]), &again).ok());
    EXPECT_TRUE(again.cache_hit());
    EXPECT_EQ(again.cluster_key(), reply.cluster_key());
    EXPECT_EQ(again.timing().fuse_us(), 0);
  }
}

// The router's top task for one input, computed with the core library.
int ExpectedTopTask(const std::string& cache, const at::Tensor& ids, const at::Tensor& mask) {
  auto store = FileObjectStore::Create(Artifacts::Get().store());
  auto set = FetchArtifactSet(store->get(), "v1", cache);
  auto tw = TwinWeights::Load(*set, c10::kCPU);
  auto router = Router::Load(*set);
  auto model = ScriptModel::Load(set->PathOf(set->manifest.architecture_blob));
  EXPECT_TRUE((*model)->SetParameters((*tw)->shared()).ok());
  at::Tensor features = *(*model)->RouterFeatures(ids.unsqueeze(0), mask.unsqueeze(0));
  return static_cast<int>((*(*router)->Weights(features, 1.0))[0].argmax().item<int64_t>());
}

TEST_F(TwinServerTest, TaskUnknownUsesTheRoutersTopTask) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.cluster_key = {1, 10};  // one-hot keys
  StartServer(config);
  const auto& zoo = Artifacts::Get().zoo();
  for (int task = 0; task < 3; ++task) {
    for (int i = 0; i < 5; ++i) {
      const at::Tensor ids = zoo.test_data[task].input_ids[i];
      const at::Tensor mask = zoo.test_data[task].attention_mask[i];
      InferResponse reply;
      ASSERT_TRUE(Call(TokensRequest(ids, mask, ""), &reply).ok());
      ASSERT_EQ(reply.router_weights_size(), 1);
      EXPECT_EQ(reply.router_weights(0).task(), reply.task());
      EXPECT_FLOAT_EQ(reply.router_weights(0).weight(), 1.0f);
      const int64_t n = mask.sum().item<int64_t>();
      const int expected =
          ExpectedTopTask(dir_.Join("cache2"), ids.slice(0, 0, n), mask.slice(0, 0, n));
      EXPECT_EQ(reply.task(), zoo.task_names[expected]);
    }
  }
}

TEST_F(TwinServerTest, ConcurrentClientsAreAllAnsweredCorrectly) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.cluster_key = {2, 10};
  config.queue.max_batch_size = 8;
  config.queue.max_queue_size = 4096;
  StartServer(config);
  const auto& zoo = Artifacts::Get().zoo();
  // Reference labels from one sequential pass.
  constexpr int kInputs = 12;
  std::vector<InferRequest> requests;
  std::vector<int> labels;
  for (int i = 0; i < kInputs; ++i) {
    const int task = i % 3;
    requests.push_back(TokensRequest(zoo.test_data[task].input_ids[i],
                                     zoo.test_data[task].attention_mask[i], zoo.task_names[task]));
    InferResponse reply;
    ASSERT_TRUE(Call(requests.back(), &reply).ok());
    labels.push_back(reply.label_index());
  }
  constexpr int kClients = 16, kPerClient = 200;
  std::atomic<int> ok{0}, wrong{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto stub = twinmerge::v1::TwinMerge::NewStub(channel_);
      for (int k = 0; k < kPerClient; ++k) {
        const int i = (c + k) % kInputs;
        InferRequest request = requests[i];
        request.set_request_id(absl::StrCat(c, "-", k));
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        InferResponse reply;
        grpc::Status status = stub->Infer(&context, request, &reply);
        if (!status.ok()) {
          ++failed;
        } else if (reply.label_index() != labels[i] ||
                   reply.request_id() != request.request_id()) {
          ++wrong;
        } else {
          ++ok;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(ok.load(), kClients * kPerClient);
}

TEST_F(TwinServerTest, BadInputsGetTheirCodesAndTheServerKeepsServing) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.max_text_bytes = 64;
  StartServer(config);
  struct Case {
    std::string name;
    InferRequest request;
    grpc::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({"no input", InferRequest(), grpc::INVALID_ARGUMENT, "no input"});
  InferRequest empty;
  empty.mutable_tokens();
  cases.push_back({"empty tokens", empty, grpc::INVALID_ARGUMENT, "empty"});
  InferRequest empty_text;
  empty_text.set_text("");
  cases.push_back({"empty text", empty_text, grpc::INVALID_ARGUMENT, "text"});
  InferRequest long_text;
  long_text.set_text(std::string(65, 'x'));
  cases.push_back({"long text", long_text, grpc::INVALID_ARGUMENT, "limit"});
  InferRequest too_long;
  for (int i = 0; i < 1000; ++i) too_long.mutable_tokens()->add_input_ids(5);
  cases.push_back({"oversized", too_long, grpc::INVALID_ARGUMENT, "limit"});
  InferRequest negative;
  negative.mutable_tokens()->add_input_ids(-1);
  cases.push_back({"negative id", negative, grpc::INVALID_ARGUMENT, "negative"});
  InferRequest bad_mask;
  bad_mask.mutable_tokens()->add_input_ids(3);
  bad_mask.mutable_tokens()->add_attention_mask(2);
  cases.push_back({"bad mask", bad_mask, grpc::INVALID_ARGUMENT, "attention_mask"});
  InferRequest short_mask;
  short_mask.mutable_tokens()->add_input_ids(3);
  short_mask.mutable_tokens()->add_input_ids(4);
  short_mask.mutable_tokens()->add_attention_mask(1);
  cases.push_back({"mask length", short_mask, grpc::INVALID_ARGUMENT, "attention_mask"});
  InferRequest unknown_task;
  unknown_task.set_text("hi");
  unknown_task.set_task("nope");
  cases.push_back({"unknown task", unknown_task, grpc::INVALID_ARGUMENT, "nope"});
  InferRequest bad_k = unknown_task;
  bad_k.clear_task();
  bad_k.mutable_routing()->set_top_k(99);
  cases.push_back({"top_k", bad_k, grpc::INVALID_ARGUMENT, "top_k"});
  InferRequest bad_t = bad_k;
  bad_t.mutable_routing()->set_top_k(0);
  bad_t.mutable_routing()->set_temperature(-1);
  cases.push_back({"temperature", bad_t, grpc::INVALID_ARGUMENT, "temperature"});
  // Refused at admission, naming the index and the limit, before the embedding lookup (on
  // CUDA an out-of-range lookup is a sticky device-side assert).
  for (const int64_t id : {int64_t{288}, int64_t{1} << 30, int64_t{1} << 62}) {
    InferRequest oov;
    oov.mutable_tokens()->add_input_ids(5);
    oov.mutable_tokens()->add_input_ids(id);
    cases.push_back({absl::StrCat("id ", id), oov, grpc::INVALID_ARGUMENT,
                     absl::StrCat("tokens.input_ids[1] is ", id,
                                  "; the model's vocabulary has 288 ids (0 to 287)")});
  }
  InferRequest last_id;
  last_id.mutable_tokens()->add_input_ids(287);
  cases.push_back({"largest id", last_id, grpc::OK, ""});
  for (const auto& c : cases) {
    InferResponse reply;
    grpc::Status status = Call(c.request, &reply);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.needle)) << c.name;
  }
  // A deadline that has already passed.
  InferRequest fine;
  fine.set_text("hello");
  InferResponse reply;
  EXPECT_EQ(Call(fine, &reply, /*timeout_ms=*/0).error_code(), grpc::DEADLINE_EXCEEDED);
  // Still serving everyone else.
  EXPECT_TRUE(Call(fine, &reply).ok());
}

TEST_F(TwinServerTest, FullQueueAndDeadlines) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.queue.max_queue_size = 2;
  config.queue.max_batch_size = 64;
  config.queue.max_queue_delay_us = 30'000'000;  // batches never fill: requests wait
  StartServer(config);
  InferRequest request;
  request.set_text("waiting");
  std::vector<std::thread> waiters;
  std::atomic<int> deadline_exceeded{0};
  for (int i = 0; i < 2; ++i) {
    waiters.emplace_back([&] {
      InferResponse reply;
      if (Call(request, &reply, 4000).error_code() == grpc::DEADLINE_EXCEEDED) {
        ++deadline_exceeded;
      }
    });
  }
  // Wait until both are queued, then the third is refused.
  for (int i = 0; i < 150 && server_->metrics().Scrape().find("twin_queue_waiting 2") ==
                                 std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  InferResponse reply;
  grpc::Status full = Call(request, &reply, 5000);
  EXPECT_EQ(full.error_code(), grpc::RESOURCE_EXHAUSTED) << full.error_message();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(deadline_exceeded.load(), 2);
}

TEST_F(TwinServerTest, StreamAnswersEveryRequest) {
  StartServer(TestConfig(dir_.Join("cache")));
  grpc::ClientContext context;
  auto stream = stub_->InferStream(&context);
  constexpr int kRequests = 50;
  for (int i = 0; i < kRequests; ++i) {
    InferRequest r;
    r.set_request_id(absl::StrCat("s", i));
    if (i == 7) {
      r.set_task("unknown");  // one bad request does not break the stream
    }
    r.set_text(absl::StrCat("stream text ", i));
    ASSERT_TRUE(stream->Write(r));
  }
  stream->WritesDone();
  std::set<std::string> ids;
  int errors = 0;
  InferResponse reply;
  while (stream->Read(&reply)) {
    ids.insert(reply.request_id());
    if (reply.error_code() != 0) {
      ++errors;
      EXPECT_EQ(reply.request_id(), "s7");
      EXPECT_EQ(reply.error_code(), grpc::INVALID_ARGUMENT);
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kRequests));
  EXPECT_EQ(errors, 1);
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
  close(fd);
  return out;
}

// grpc.health.v1 status of `service` ("" = the whole server).
std::string HealthOf(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return "error " + std::to_string(status.error_code());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

TEST_F(TwinServerTest, MetricsModelInfoAndHealthTransitions) {
  StartServer(TestConfig(dir_.Join("cache")), /*load=*/false);
  EXPECT_FALSE(server_->serving());
  EXPECT_EQ(HealthOf(channel_, ""), "NOT_SERVING");
  EXPECT_EQ(HealthOf(channel_, "twinmerge.v1.TwinMerge"), "NOT_SERVING");
  InferRequest request;
  request.set_text("before load");
  request.set_task("task0");
  InferResponse reply;
  EXPECT_EQ(Call(request, &reply).error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(HttpGet(server_->metrics_port(), "/metrics"), HasSubstr("twin_ready 0"));

  ASSERT_TRUE(server_->LoadVersion().ok());
  EXPECT_TRUE(server_->serving());
  EXPECT_EQ(HealthOf(channel_, ""), "SERVING");
  EXPECT_EQ(HealthOf(channel_, "twinmerge.v1.TwinMerge"), "SERVING");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Call(request, &reply).ok());
  const std::string metrics = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("twin_ready 1"));
  EXPECT_THAT(metrics, HasSubstr("twin_requests_total{code=\"OK\",task=\"task0\"} 3"));
  EXPECT_THAT(metrics, HasSubstr("twin_artifact_info{version=\"v1\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("twin_cache_hits_total 2"));
  EXPECT_THAT(metrics, HasSubstr("twin_fusions_total 1"));
  EXPECT_THAT(metrics, HasSubstr("twin_request_latency_seconds_count{stage=\"total\"} 3"));

  grpc::ClientContext context;
  twinmerge::v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.artifact_version(), "v1");
  ASSERT_EQ(info.tasks_size(), 3);
  EXPECT_EQ(info.tasks(1).name(), "task1");
  EXPECT_EQ(info.tasks(1).labels_size(), 3);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_GT(info.router_validation_accuracy(), 0.5);

  server_->Shutdown();
  EXPECT_FALSE(server_->serving());
  EXPECT_THAT(server_->metrics().Scrape(), HasSubstr("twin_ready 0"));
}

TEST_F(TwinServerTest, CancelledRequestsLeaveTheQueue) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.queue.max_batch_size = 64;
  config.queue.max_queue_delay_us = 30'000'000;  // requests wait until cancelled
  StartServer(config);
  InferRequest request;
  request.set_text("to be cancelled");
  grpc::ClientContext context;
  InferResponse reply;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub_->async()->Infer(&context, &request, &reply, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    done = true;
    cv.notify_all();
  });
  for (int i = 0; i < 150 && server_->metrics().Scrape().find("twin_queue_waiting 1") ==
                                 std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  context.TryCancel();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; }));
  }
  EXPECT_EQ(status.error_code(), grpc::CANCELLED);
  // The server dropped it from the queue (its own record of the request says CANCELLED).
  bool recorded = false;
  for (int i = 0; i < 150 && !recorded; ++i) {
    recorded = server_->metrics().Scrape().find("code=\"CANCELLED\"") != std::string::npos;
    if (!recorded) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(recorded);
}

TEST_F(TwinServerTest, ShutdownAnswersEverythingAlreadyAccepted) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.queue.max_batch_size = 4;
  config.queue.max_queue_delay_us = 200'000;
  StartServer(config);
  constexpr int kRequests = 24;
  std::atomic<int> ok{0}, unavailable{0}, other{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] {
      InferRequest request;
      request.set_text(absl::StrCat("drain ", i));
      InferResponse reply;
      grpc::Status s = Call(request, &reply, 20000);
      if (s.ok()) {
        ++ok;
      } else if (s.error_code() == grpc::UNAVAILABLE) {
        ++unavailable;
      } else {
        ++other;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server_->Shutdown();
  for (auto& t : clients) t.join();
  // Accepted requests finish; requests arriving during shutdown are refused, never lost.
  EXPECT_EQ(ok + unavailable, kRequests);
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(ok.load(), 0);
}

// An idle InferStream open at shutdown once held the server for the whole drain timeout and
// then ended as gRPC cancelled it. It is now finished as soon as its requests are answered.
TEST_F(TwinServerTest, OpenStreamIsFinishedWhenTheDrainStarts) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.drain_timeout_ms = 120000;  // were the stream waited for, the call would end CANCELLED
  StartServer(config);
  grpc::ClientContext context;
  auto stream = stub_->InferStream(&context);
  InferRequest request;
  request.set_request_id("before");
  request.set_text("answered before the drain");
  ASSERT_TRUE(stream->Write(request));
  InferResponse reply;
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.request_id(), "before");
  EXPECT_EQ(reply.error_code(), 0);
  // The stream stays open and idle, the client neither writes nor half-closes.
  std::thread shutdown([this] { server_->Shutdown(); });
  EXPECT_FALSE(stream->Read(&reply));
  const grpc::Status status = stream->Finish();
  shutdown.join();
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("every request read on this stream was answered"));
  EXPECT_FALSE(server_->serving());
}

// A stream's requests in the shared queue are bounded by limits.max_stream_in_flight: past it
// the stream stops reading until replies are written. Batches are held back (a long queue
// delay) so that what the stream submitted waits in the queue where the gauge counts it.
TEST_F(TwinServerTest, StreamStopsReadingAtItsInFlightLimit) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.max_stream_in_flight = 3;
  config.queue.max_batch_size = 64;
  config.queue.max_queue_delay_us = 300'000;
  StartServer(config);
  grpc::ClientContext context;
  auto stream = stub_->InferStream(&context);
  constexpr int kRequests = 24;
  for (int i = 0; i < kRequests; ++i) {
    InferRequest r;
    r.set_request_id(absl::StrCat("s", i));
    r.set_text(absl::StrCat("bounded ", i));
    ASSERT_TRUE(stream->Write(r));
  }
  stream->WritesDone();
  // While the batch is held back, the queue holds at most the limit (without it, all 24).
  int most_waiting = 0;
  std::set<std::string> ids;
  std::thread reader([&] {
    InferResponse reply;
    while (stream->Read(&reply)) ids.insert(reply.request_id());
  });
  for (int sample = 0; sample < 40 && ids.size() < kRequests; ++sample) {
    const std::string text = server_->metrics().Scrape();
    const std::string gauge = "\ntwin_queue_waiting ";
    const size_t at = text.find(gauge);
    if (at != std::string::npos) {
      most_waiting = std::max(most_waiting, std::atoi(text.c_str() + at + gauge.size()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  reader.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kRequests));  // all answered, in the end
  EXPECT_GE(most_waiting, 1);
  EXPECT_LE(most_waiting, 3);
  // Once everything is answered the gauges read zero again (they once kept the last value).
  const std::string text = server_->metrics().Scrape();
  EXPECT_THAT(text, HasSubstr("twin_queue_waiting 0"));
  EXPECT_THAT(text, HasSubstr("twin_in_flight_requests 0"));
}

// Text requests once ignored limits.max_input_length (the tokenizer's max_length applied).
// With a limit of 3 (bos + 2 bytes), texts that differ only after their second byte are the
// same input: the same batch shape, the same answer bit for bit.
TEST_F(TwinServerTest, TextIsCutToMaxInputLength) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.max_input_length = 3;
  StartServer(config);
  InferRequest a, b;
  a.set_text("ab and then one thing");
  b.set_text("ab but another entirely");
  a.set_task(Artifacts::Get().zoo().task_names[0]);
  b.set_task(Artifacts::Get().zoo().task_names[0]);
  InferResponse ra, rb;
  ASSERT_TRUE(Call(a, &ra).ok());
  ASSERT_TRUE(Call(b, &rb).ok());
  ASSERT_EQ(ra.probabilities_size(), rb.probabilities_size());
  for (int k = 0; k < ra.probabilities_size(); ++k) {
    EXPECT_EQ(ra.probabilities(k), rb.probabilities(k)) << k;
  }
  // Past the limit the texts differ, and so do the answers.
  ServerConfig longer = TestConfig(dir_.Join("cache3"));
  server_->Shutdown();
  StartServer(longer);
  ASSERT_TRUE(Call(a, &ra).ok());
  ASSERT_TRUE(Call(b, &rb).ok());
  bool differs = false;
  for (int k = 0; k < ra.probabilities_size(); ++k) {
    differs |= ra.probabilities(k) != rb.probabilities(k);
  }
  EXPECT_TRUE(differs);
}

TEST(ClientOfPeerTest, DropsThePortOfIpPeers) {
  EXPECT_EQ(ClientOfPeer("ipv4:10.0.0.7:51234"), "ipv4:10.0.0.7");
  EXPECT_EQ(ClientOfPeer("ipv6:[::1]:5000"), "ipv6:[::1]");
  EXPECT_EQ(ClientOfPeer("ipv6:[fe80::1%25eth0]:443"), "ipv6:[fe80::1%25eth0]");
  EXPECT_EQ(ClientOfPeer("ipv6:[::1]"), "ipv6:[::1]");  // no port: whole
  EXPECT_EQ(ClientOfPeer("unix:/tmp/sock"), "unix:/tmp/sock");
  EXPECT_EQ(ClientOfPeer(""), "");
}

// Reads a gauge or counter without labels from the exposition text (-1 when absent).
double MetricValue(const std::string& text, const std::string& name) {
  const std::string needle = "\n" + name + " ";
  const size_t at = text.find(needle);
  return at == std::string::npos ? -1 : std::stod(text.substr(at + needle.size()));
}

// limits.max_in_flight_per_client bounds one client address over all its calls and streams;
// requests parked in a partial batch are answered as soon as the drain starts (the queue is
// flushed: nothing more can arrive to fill the batch) rather than after their batch delay.
TEST_F(TwinServerTest, OneClientsRequestsInFlightAreBoundedAndTheDrainFlushesThem) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.max_in_flight_per_client = 2;
  config.queue.max_batch_size = 64;
  config.queue.max_queue_delay_us = 600'000'000;  // a partial batch never runs by its delay
  config.drain_timeout_ms = 60'000;
  StartServer(config);
  std::vector<grpc::Status> parked(2);
  std::vector<std::thread> callers;
  for (int i = 0; i < 2; ++i) {
    callers.emplace_back([&, i] {
      InferRequest request;
      request.set_text(absl::StrCat("parked ", i));
      InferResponse reply;
      parked[i] = Call(request, &reply, 120'000);
    });
  }
  for (int i = 0; i < 500 && MetricValue(server_->metrics().Scrape(),
                                         "twin_in_flight_requests") < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(MetricValue(server_->metrics().Scrape(), "twin_in_flight_requests"), 2);

  // A third unary call and a stream's request from the same address are refused at once.
  InferRequest third;
  third.set_text("one too many");
  InferResponse reply;
  const grpc::Status refused = Call(third, &reply);
  EXPECT_EQ(refused.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("has 2 requests in flight"));
  EXPECT_THAT(refused.error_message(), HasSubstr("limits.max_in_flight_per_client"));
  {
    grpc::ClientContext context;
    auto stream = stub_->InferStream(&context);
    third.set_request_id("streamed");
    ASSERT_TRUE(stream->Write(third));
    stream->WritesDone();
    InferResponse streamed;
    ASSERT_TRUE(stream->Read(&streamed));
    EXPECT_EQ(streamed.request_id(), "streamed");
    EXPECT_EQ(streamed.error_code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
    EXPECT_TRUE(stream->Finish().ok());
  }
  EXPECT_EQ(MetricValue(server_->metrics().Scrape(), "twin_in_flight_requests"), 2);

  // Shutdown answers the parked pair (their batch would otherwise wait ten minutes).
  server_->Shutdown();
  for (auto& t : callers) t.join();
  EXPECT_TRUE(parked[0].ok()) << parked[0].error_message();
  EXPECT_TRUE(parked[1].ok()) << parked[1].error_message();
}

// The whole shutdown is bounded by drain_timeout_ms even when a call cannot finish: a stream
// whose client writes and never reads holds replies (60 kB each: they echo the request id) that
// HTTP/2 flow control will not let the server send. At the deadline gRPC cancels what is left
// and Shutdown returns.
TEST_F(TwinServerTest, ShutdownEndsAtItsDeadlineWhenAStreamNeverReads) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.drain_timeout_ms = 1500;
  config.max_request_id_bytes = 64 << 10;
  StartServer(config);
  grpc::ClientContext context;
  auto stream = stub_->InferStream(&context);
  std::atomic<int> written{0};
  constexpr int kMaxWrites = 5000;  // 300 MB of replies: far beyond any flow-control window
  std::thread writer([&] {
    InferRequest r;
    r.set_text("a reply nobody reads");
    for (int i = 0; i < kMaxWrites; ++i) {
      r.set_request_id(absl::StrCat(std::string(60000, 'x'), i));
      if (!stream->Write(r)) return;
      ++written;
    }
  });
  // Wait until the writer stalls: the server stopped reading (its replies are stuck).
  int last = -1;
  for (int i = 0; i < 600 && written.load() != last; ++i) {
    last = written.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const bool stalled = written.load() < kMaxWrites;
  const auto start = std::chrono::steady_clock::now();
  server_->Shutdown();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  context.TryCancel();
  writer.join();
  stream->Finish();
  EXPECT_TRUE(stalled) << "the stream never filled its flow-control window (" << written.load()
                       << " requests written)";
  // Liveness, not speed: a shutdown that waited for the stream would never return; the bound is
  // the deadline plus a wide margin for a loaded machine.
  EXPECT_LT(seconds, config.drain_timeout_ms / 1000.0 + 30.0);
  EXPECT_FALSE(server_->serving());
}

// A load that finishes after the shutdown began must not report SERVING again.
TEST_F(TwinServerTest, HealthStaysNotServingWhenALoadFinishesDuringShutdown) {
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.drain_grace_ms = 300;  // the shutdown is under way while the load runs
  StartServer(config, /*load=*/false);
  std::thread shutdown([this] { server_->Shutdown(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  (void)server_->LoadVersion();  // succeeds or is refused; either way not SERVING
  EXPECT_FALSE(server_->serving());
  shutdown.join();
  EXPECT_FALSE(server_->serving());
  EXPECT_THAT(server_->metrics().Scrape(), HasSubstr("twin_ready 0"));
}

}  // namespace
}  // namespace twin
