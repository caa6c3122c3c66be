// What answers a request: the task-given policy (routing.task_given), the static mode (theta*
// alone) and the experts mode (one resident model per task), in process on loopback against
// the tiny zoo's published version.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "core/router/router.h"
#include "core/model/script_model.h"
#include "core/merge/twin_weights.h"
#include "server/server_config.h"
#include "server/twin_server.h"
#include "tests/testing/rounding.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/temp_dir.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::ServedArtifacts;
using twin::testing::TempDir;
using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

constexpr int kRowsPerTask = 4;

InferRequest TokensRequest(const at::Tensor& ids, const at::Tensor& mask, const std::string& task) {
  InferRequest r;
  for (int64_t i = 0; i < ids.size(0); ++i) {
    if (mask[i].item<int64_t>() == 0) break;
    r.mutable_tokens()->add_input_ids(ids[i].item<int64_t>());
  }
  r.set_task(task);
  return r;
}

// The version's parts through the core library, to compute what the server should answer.
class Reference {
 public:
  explicit Reference(const std::string& cache,
                     const std::string& root = ServedArtifacts::Get().store()) {
    auto store = FileObjectStore::Create(root);
    EXPECT_TRUE(store.ok());
    auto set = FetchArtifactSet(store->get(), "v1", cache);
    EXPECT_TRUE(set.ok()) << set.status();
    set_ = *set;
    twin_ = std::move(*TwinWeights::Load(set_, c10::kCPU));
    router_ = std::move(*Router::Load(set_));
    model_ = std::move(*ScriptModel::Load(set_.PathOf(set_.manifest.architecture_blob)));
  }
  const Manifest& manifest() const { return set_.manifest; }

  // Logits of one unpadded row with parameters theta(w) and `task`'s head.
  at::Tensor Logits(const std::vector<double>& w, const at::Tensor& ids, const at::Tensor& mask,
                    int task) {
    EXPECT_TRUE(model_->SetParameters(*twin_->Fuse(w)).ok());
    EXPECT_TRUE(model_->SetParameters(twin_->head(task)).ok());
    return (*model_->Forward(ids.unsqueeze(0), mask.unsqueeze(0)))[0];
  }
  std::vector<double> RouterWeights(const at::Tensor& ids, const at::Tensor& mask) {
    EXPECT_TRUE(model_->SetParameters(twin_->shared()).ok());
    at::Tensor features = *model_->RouterFeatures(ids.unsqueeze(0), mask.unsqueeze(0));
    at::Tensor w = (*router_->Weights(features, 1.0))[0].to(at::kDouble).contiguous();
    return std::vector<double>(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
  }
  // The rounding bound of the server's chain (router, fusion, 3-stage forward) for `logits`.
  double Bound(const at::Tensor& logits) const {
    const Manifest& m = set_.manifest;
    const int64_t width = std::max({m.router.spec.hidden_dim, m.router.spec.input_dim,
                                    m.embed_dim, m.tokenizer.max_length});
    return twin::testing::ProbabilityError(12, width, logits.abs().max().item<double>());
  }

 private:
  LocalArtifactSet set_;
  std::unique_ptr<TwinWeights> twin_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<ScriptModel> model_;
};

class ServingModesTest : public ::testing::Test {
 protected:
  absl::Status Start(const ServerConfig& config) {
    auto server = twin::testing::StartServer(config, /*load=*/true);
    if (!server.ok()) return server.status();
    server_ = std::move(*server);
    stub_ = twinmerge::v1::TwinMerge::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
    return absl::OkStatus();
  }
  grpc::Status Call(const InferRequest& request, InferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->Infer(&context, request, response);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  ServerConfig Config(const std::string& name) {
    return twin::testing::LoopbackServerConfig(dir_.Join(name));
  }
  std::string Scrape() { return server_->metrics().Scrape(); }

  // Checks `reply` against softmax(expected logits) within the rounding bound.
  void ExpectProbabilities(const InferResponse& reply, const at::Tensor& logits,
                           double bound, const std::string& what) {
    const at::Tensor expected = at::softmax(logits, 0);
    ASSERT_EQ(reply.probabilities_size(), expected.size(0)) << what;
    for (int k = 0; k < reply.probabilities_size(); ++k) {
      EXPECT_NEAR(reply.probabilities(k), expected[k].item<float>(), bound) << what << " " << k;
    }
  }

  TempDir dir_;
  std::unique_ptr<TwinServer> server_;
  std::unique_ptr<twinmerge::v1::TwinMerge::Stub> stub_;
};

// By default a request that names its task is answered by theta* plus that task's twin alone:
// one-hot weights in the reply, no router forward, the named task's head.
TEST_F(ServingModesTest, NamedTaskIsAnsweredByItsOwnTwin) {
  ASSERT_TRUE(Start(Config("cache")).ok());
  Reference ref(dir_.Join("ref"));
  const auto& zoo = ServedArtifacts::Get().zoo();
  const int num_tasks = static_cast<int>(zoo.task_names.size());
  for (int task = 0; task < num_tasks; ++task) {
    for (int i = 0; i < kRowsPerTask; ++i) {
      const at::Tensor ids = zoo.test_data[task].input_ids[i];
      const at::Tensor mask = zoo.test_data[task].attention_mask[i];
      InferResponse reply;
      ASSERT_TRUE(Call(TokensRequest(ids, mask, zoo.task_names[task]), &reply).ok());
      EXPECT_EQ(reply.task(), zoo.task_names[task]);
      ASSERT_EQ(reply.router_weights_size(), 1);
      EXPECT_EQ(reply.router_weights(0).task(), zoo.task_names[task]);
      EXPECT_EQ(reply.router_weights(0).weight(), 1.0f);
      EXPECT_EQ(reply.timing().route_us(), 0);
      const int64_t n = mask.sum().item<int64_t>();
      std::vector<double> one_hot(num_tasks, 0.0);
      one_hot[task] = 1.0;
      const at::Tensor logits =
          ref.Logits(one_hot, ids.slice(0, 0, n), mask.slice(0, 0, n), task);
      ExpectProbabilities(reply, logits, ref.Bound(logits), zoo.task_names[task]);
    }
  }
  // No request went through the router.
  EXPECT_THAT(Scrape(), ::testing::Not(HasSubstr("twin_router_top_task_total{")));
}

// routing.task_given: router weights a named-task request by the router, like any other.
TEST_F(ServingModesTest, RouterPolicyWeightsNamedTasksByTheRouter) {
  ServerConfig config = Config("cache");
  config.task_given = TaskGivenPolicy::kRouter;
  ASSERT_TRUE(Start(config).ok());
  Reference ref(dir_.Join("ref"));
  const auto& zoo = ServedArtifacts::Get().zoo();
  for (int task = 0; task < static_cast<int>(zoo.task_names.size()); ++task) {
    const at::Tensor ids = zoo.test_data[task].input_ids[0];
    const at::Tensor mask = zoo.test_data[task].attention_mask[0];
    const int64_t n = mask.sum().item<int64_t>();
    InferResponse reply;
    ASSERT_TRUE(Call(TokensRequest(ids, mask, zoo.task_names[task]), &reply).ok());
    EXPECT_EQ(reply.task(), zoo.task_names[task]);
    const std::vector<double> w = ref.RouterWeights(ids.slice(0, 0, n), mask.slice(0, 0, n));
    const at::Tensor logits = ref.Logits(w, ids.slice(0, 0, n), mask.slice(0, 0, n), task);
    ExpectProbabilities(reply, logits, ref.Bound(logits), zoo.task_names[task]);
    // Exact routing (grid 0, every task kept): every task with a positive weight is reported.
    int positive = 0;
    for (double x : w) positive += x > 0;
    EXPECT_EQ(reply.router_weights_size(), positive);
  }
  EXPECT_THAT(Scrape(), HasSubstr("twin_router_top_task_total{"));
}

// Static mode: theta* alone, no router, no fusion; the named task's head, else the first
// task's.
TEST_F(ServingModesTest, StaticModeServesThetaStarWithoutRouting) {
  ServerConfig config = Config("cache");
  config.mode = ServingMode::kStatic;
  ASSERT_TRUE(Start(config).ok());
  Reference ref(dir_.Join("ref"));
  const auto& zoo = ServedArtifacts::Get().zoo();
  const int num_tasks = static_cast<int>(zoo.task_names.size());
  const std::vector<double> zeros(num_tasks, 0.0);
  for (int task = 0; task < num_tasks; ++task) {
    for (const bool named : {true, false}) {
      const at::Tensor ids = zoo.test_data[task].input_ids[1];
      const at::Tensor mask = zoo.test_data[task].attention_mask[1];
      const int64_t n = mask.sum().item<int64_t>();
      InferResponse reply;
      ASSERT_TRUE(Call(TokensRequest(ids, mask, named ? zoo.task_names[task] : ""), &reply).ok());
      const int head = named ? task : 0;
      EXPECT_EQ(reply.task(), zoo.task_names[head]);
      EXPECT_EQ(reply.router_weights_size(), 0);
      EXPECT_EQ(reply.cluster_key(), "static");
      EXPECT_TRUE(reply.cache_hit());
      EXPECT_EQ(reply.timing().route_us(), 0);
      EXPECT_EQ(reply.timing().fuse_us(), 0);
      const at::Tensor logits = ref.Logits(zeros, ids.slice(0, 0, n), mask.slice(0, 0, n), head);
      ExpectProbabilities(reply, logits, ref.Bound(logits), zoo.task_names[head]);
    }
  }
  const std::string metrics = Scrape();
  EXPECT_THAT(metrics, HasSubstr("twin_serving_mode_info{mode=\"static\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("twin_fusions_total 0"));
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("twin_router_top_task_total{")));
}

// Experts mode: each task's own fine-tuned model answers (its own head), the router's top
// task's when the request names none; the experts' bytes are reported.
TEST_F(ServingModesTest, ExpertsModeAnswersWithEachTasksExpert) {
  const auto& zoo = ServedArtifacts::Get().zoo();
  ServerConfig config = Config("cache");
  config.mode = ServingMode::kExperts;
  for (size_t t = 0; t < zoo.task_names.size(); ++t) {
    config.experts[zoo.task_names[t]] = zoo.expert_paths[t];
  }
  ASSERT_TRUE(Start(config).ok());
  Reference ref(dir_.Join("ref"));
  uint64_t expert_bytes = 0;
  for (size_t task = 0; task < zoo.task_names.size(); ++task) {
    auto expert = ScriptModel::Load(zoo.expert_paths[task]);
    ASSERT_TRUE(expert.ok());
    for (const auto& [name, value] : (*expert)->NamedParameters()) expert_bytes += value.nbytes();
    for (int i = 0; i < kRowsPerTask; ++i) {
      const at::Tensor ids = zoo.test_data[task].input_ids[i];
      const at::Tensor mask = zoo.test_data[task].attention_mask[i];
      const int64_t n = mask.sum().item<int64_t>();
      const at::Tensor row_ids = ids.slice(0, 0, n).unsqueeze(0);
      const at::Tensor row_mask = mask.slice(0, 0, n).unsqueeze(0);
      InferResponse reply;
      ASSERT_TRUE(Call(TokensRequest(ids, mask, zoo.task_names[task]), &reply).ok());
      EXPECT_EQ(reply.task(), zoo.task_names[task]);
      ASSERT_EQ(reply.router_weights_size(), 1);
      EXPECT_EQ(reply.router_weights(0).weight(), 1.0f);
      const at::Tensor logits = (*(*expert)->Forward(row_ids, row_mask))[0];
      ExpectProbabilities(reply, logits, ref.Bound(logits), zoo.task_names[task]);

      // Task unknown: the router's top task's expert.
      const std::vector<double> w = ref.RouterWeights(ids.slice(0, 0, n), mask.slice(0, 0, n));
      const int top = static_cast<int>(std::max_element(w.begin(), w.end()) - w.begin());
      InferResponse routed;
      ASSERT_TRUE(Call(TokensRequest(ids, mask, ""), &routed).ok());
      EXPECT_EQ(routed.task(), zoo.task_names[top]);
      auto top_expert = ScriptModel::Load(zoo.expert_paths[top]);
      const at::Tensor top_logits = (*(*top_expert)->Forward(row_ids, row_mask))[0];
      ExpectProbabilities(routed, top_logits, ref.Bound(top_logits), "routed");
    }
  }
  const std::string metrics = Scrape();
  EXPECT_THAT(metrics, HasSubstr("twin_serving_mode_info{mode=\"experts\"} 1"));
  EXPECT_THAT(metrics, HasSubstr(absl::StrCat("twin_weights_resident_bytes{part=\"experts\"} ",
                                              expert_bytes)));
  EXPECT_THAT(metrics, HasSubstr("twin_fusions_total 0"));
}

// Reads a counter's value from the exposition text (0 when absent).
double CounterValue(const std::string& metrics, const std::string& name) {
  const std::string prefix = name + " ";
  size_t at = 0;
  while ((at = metrics.find(prefix, at)) != std::string::npos) {
    if (at == 0 || metrics[at - 1] == '\n') return std::stod(metrics.substr(at + prefix.size()));
    at += prefix.size();
  }
  return 0;
}

// Key-level batching: rows of every task that share one weight set (static mode: theta*) form
// one batch, take one forward of the body (embed()) and each task's head on its own rows, and
// are answered exactly as if each had been sent alone. Without classify() in the architecture,
// the same batch takes one forward per task.
class KeyBatchingTest : public ServingModesTest {
 protected:
  // Sends kRowsPerTask rows of every task at once into a queue whose only batch fills when all
  // have arrived; checks each reply against theta* with its own task's head; returns how many
  // body forwards that batch took.
  void ExpectOneBatch(ServerConfig config, const twin::zoo::TinyZoo& zoo, double* forwards) {
    const int num_tasks = static_cast<int>(zoo.task_names.size());
    const int total = num_tasks * kRowsPerTask;
    config.mode = ServingMode::kStatic;
    config.queue.max_batch_size = total;
    config.queue.max_queue_delay_us = 60'000'000;  // the batch runs when full, never on time
    ASSERT_TRUE(Start(config).ok());
    const double before = CounterValue(Scrape(), "twin_body_forwards_total");
    std::vector<InferResponse> replies(total);
    std::vector<grpc::Status> statuses(total);
    std::vector<std::thread> callers;
    for (int k = 0; k < total; ++k) {
      callers.emplace_back([&, k] {
        const int task = k % num_tasks;
        const int row = k / num_tasks;
        InferRequest request = TokensRequest(zoo.test_data[task].input_ids[row],
                                             zoo.test_data[task].attention_mask[row],
                                             zoo.task_names[task]);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        statuses[k] = stub_->Infer(&context, request, &replies[k]);
      });
    }
    for (std::thread& t : callers) t.join();
    const std::vector<double> zeros(num_tasks, 0.0);
    Reference ref(dir_.Join("ref"), config.artifact_uri);
    for (int k = 0; k < total; ++k) {
      ASSERT_TRUE(statuses[k].ok()) << k << ": " << statuses[k].error_message();
      const int task = k % num_tasks;
      const int row = k / num_tasks;
      const at::Tensor ids = zoo.test_data[task].input_ids[row];
      const at::Tensor mask = zoo.test_data[task].attention_mask[row];
      const int64_t n = mask.sum().item<int64_t>();
      EXPECT_EQ(replies[k].task(), zoo.task_names[task]);
      const at::Tensor logits = ref.Logits(zeros, ids.slice(0, 0, n), mask.slice(0, 0, n), task);
      ExpectProbabilities(replies[k], logits, ref.Bound(logits), zoo.task_names[task]);
    }
    const std::string metrics = Scrape();
    // One batch of every row.
    EXPECT_THAT(metrics, HasSubstr("twin_batch_size_count 1\n"));
    *forwards = CounterValue(metrics, "twin_body_forwards_total") - before;
  }
};

TEST_F(KeyBatchingTest, TasksSharingAWeightSetShareOneBodyForward) {
  double forwards = -1;
  ExpectOneBatch(Config("cache"), ServedArtifacts::Get().zoo(), &forwards);
  EXPECT_EQ(forwards, 1);
}

TEST_F(KeyBatchingTest, WithoutClassifyEachTaskTakesItsOwnForward) {
  // The same kind of zoo, its models without classify(), merged and published here.
  twin::zoo::TinyZooOptions options;
  options.with_classify = false;
  std::filesystem::create_directories(dir_.Join("zoo"));
  auto zoo = twin::zoo::BuildTinyZoo(dir_.Join("zoo"), options);
  ASSERT_TRUE(zoo.ok()) << zoo.status();
  ASSERT_TRUE(twin::testing::PublishTinyZoo(*zoo, dir_.Join("store"), dir_.path()).ok());
  ServerConfig config = Config("cache");
  config.artifact_uri = dir_.Join("store");
  double forwards = -1;
  ExpectOneBatch(config, *zoo, &forwards);
  EXPECT_EQ(forwards, static_cast<double>(zoo->task_names.size()));
}

// A model that fails inside forward() on some inputs (it declares a vocabulary of 128 ids but
// its table has 64 rows, so ids 64..127 pass admission and break the embedding lookup) fails
// only those requests, with the model's own error, whichever path they take: one body forward
// for every task (static mode), the router (twin mode, task unknown). The server keeps serving.
TEST_F(KeyBatchingTest, AModelFailingOnSomeRowsFailsOnlyThoseRequests) {
  twin::zoo::TinyZooOptions options;
  options.declared_vocab = 2 * options.vocab;
  std::filesystem::create_directories(dir_.Join("zoo"));
  auto zoo = twin::zoo::BuildTinyZoo(dir_.Join("zoo"), options);
  ASSERT_TRUE(zoo.ok()) << zoo.status();
  ASSERT_TRUE(twin::testing::PublishTinyZoo(*zoo, dir_.Join("store"), dir_.path()).ok());
  const int num_tasks = static_cast<int>(zoo->task_names.size());
  const int total = num_tasks * kRowsPerTask;
  for (const ServingMode mode : {ServingMode::kStatic, ServingMode::kTwin}) {
    SCOPED_TRACE(mode == ServingMode::kStatic ? "static" : "twin");
    ServerConfig config = Config(mode == ServingMode::kStatic ? "cache-static" : "cache-twin");
    config.artifact_uri = dir_.Join("store");
    config.mode = mode;
    config.queue.max_batch_size = total;
    config.queue.max_queue_delay_us = 200'000;  // time for every caller to join the batch
    config.max_route_batch = total;
    ASSERT_TRUE(Start(config).ok());
    std::vector<InferResponse> replies(total);
    std::vector<grpc::Status> statuses(total);
    std::vector<std::thread> callers;
    auto bad = [](int k) { return k % 3 == 0; };
    for (int k = 0; k < total; ++k) {
      callers.emplace_back([&, k] {
        const int task = k % num_tasks;
        InferRequest request = TokensRequest(zoo->test_data[task].input_ids[k / num_tasks],
                                             zoo->test_data[task].attention_mask[k / num_tasks],
                                             mode == ServingMode::kStatic ? zoo->task_names[task]
                                                                          : "");
        if (bad(k)) request.mutable_tokens()->set_input_ids(0, options.vocab + 36);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        statuses[k] = stub_->Infer(&context, request, &replies[k]);
      });
    }
    for (std::thread& t : callers) t.join();
    for (int k = 0; k < total; ++k) {
      if (bad(k)) {
        EXPECT_EQ(statuses[k].error_code(), grpc::INVALID_ARGUMENT) << k;
        EXPECT_THAT(statuses[k].error_message(), HasSubstr("index out of range")) << k;
      } else {
        EXPECT_TRUE(statuses[k].ok()) << k << ": " << statuses[k].error_message();
        if (mode == ServingMode::kStatic) {
          EXPECT_EQ(replies[k].task(), zoo->task_names[k % num_tasks]);
        }
      }
    }
    // Still serving.
    InferResponse after;
    EXPECT_TRUE(Call(TokensRequest(zoo->test_data[0].input_ids[0],
                                   zoo->test_data[0].attention_mask[0], zoo->task_names[0]),
                     &after)
                    .ok());
    server_->Shutdown();
  }
}

// An experts configuration that does not fit the version fails the load, naming the problem.
TEST_F(ServingModesTest, MismatchedExpertsAreRefusedAtLoad) {
  const auto& zoo = ServedArtifacts::Get().zoo();
  auto base = [&] {
    ServerConfig config = Config("cache");
    config.mode = ServingMode::kExperts;
    for (size_t t = 0; t < zoo.task_names.size(); ++t) {
      config.experts[zoo.task_names[t]] = zoo.expert_paths[t];
    }
    return config;
  };
  ServerConfig missing = base();
  missing.experts.erase(zoo.task_names[1]);
  EXPECT_THAT(Start(missing).ToString(),
              HasSubstr(absl::StrCat("no model for task '", zoo.task_names[1], "'")));

  ServerConfig unknown = base();
  unknown.experts["nosuchtask"] = zoo.expert_paths[0];
  EXPECT_THAT(Start(unknown).ToString(), HasSubstr("'nosuchtask'"));

  // Task 0 and task 1 have different label counts: task 1's file cannot answer task 0.
  ASSERT_NE(zoo.num_classes[0], zoo.num_classes[1]);
  ServerConfig swapped = base();
  swapped.experts[zoo.task_names[0]] = zoo.expert_paths[1];
  const std::string error = Start(swapped).ToString();
  EXPECT_THAT(error, HasSubstr(absl::StrCat("expert ", zoo.task_names[0])));
  EXPECT_THAT(error, HasSubstr("head"));

  ServerConfig absent = base();
  absent.experts[zoo.task_names[2]] = dir_.Join("absent.pt");
  EXPECT_THAT(Start(absent).ToString(), HasSubstr("absent.pt"));
}

}  // namespace
}  // namespace twin
