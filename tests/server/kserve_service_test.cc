// The Open Inference Protocol service end to end, in process on loopback: tiny experts merged
// by the offline job, served by TwinServer, called through the generated
// inference.GRPCInferenceService stub and compared with the twinmerge.v1 service's answers.
#include "server/kserve_service.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "server/twin_server.h"
#include "tests/testing/rounding.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/kserve_requests.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_models.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {
namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using twin::testing::TempDir;
using twin::testing::AddInput;
using twin::testing::LittleEndian;

constexpr char kModel[] = "twin-merging";

using Artifacts = twin::testing::ServedArtifacts;

ServerConfig TestConfig(const std::string& cache_dir) {
  return twin::testing::LoopbackServerConfig(cache_dir);
}

// One zoo test row, padded to the split's length, with its mask.
struct Row {
  std::vector<int64_t> ids, mask;
};

Row ZooRow(int task, int i) {
  const auto& data = Artifacts::Get().zoo().test_data[task];
  at::Tensor ids = data.input_ids[i].contiguous(), mask = data.attention_mask[i].contiguous();
  return {std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()),
          std::vector<int64_t>(mask.data_ptr<int64_t>(), mask.data_ptr<int64_t>() + mask.numel())};
}


// input_ids + attention_mask [B, L] for `rows` (all of one length), typed or raw.
ModelInferRequest TokensRequest(const std::vector<Row>& rows, bool raw) {
  ModelInferRequest r;
  r.set_model_name(kModel);
  const int64_t b = static_cast<int64_t>(rows.size()), l = rows[0].ids.size();
  auto* ids = AddInput(&r, "input_ids", "INT64", {b, l});
  auto* mask = AddInput(&r, "attention_mask", "INT64", {b, l});
  std::string ids_raw, mask_raw;
  auto put = [raw](ModelInferRequest::InferInputTensor* t, std::string* bytes, int64_t v) {
    if (raw) {
      *bytes += LittleEndian(static_cast<uint64_t>(v), 8);
    } else {
      t->mutable_contents()->add_int64_contents(v);
    }
  };
  for (const Row& row : rows) {
    for (int64_t v : row.ids) put(ids, &ids_raw, v);
    for (int64_t v : row.mask) put(mask, &mask_raw, v);
  }
  if (raw) {
    r.add_raw_input_contents(ids_raw);
    r.add_raw_input_contents(mask_raw);
  }
  return r;
}

// The outputs of a response, decoded from typed or raw form.
struct Decoded {
  std::map<std::string, std::vector<int64_t>> shape;
  std::map<std::string, std::vector<float>> fp32;
  std::map<std::string, std::vector<int64_t>> int64;
  std::map<std::string, std::vector<std::string>> bytes;
};

Decoded DecodeOutputs(const ModelInferResponse& r) {
  Decoded d;
  const bool raw = r.raw_output_contents_size() > 0;
  if (raw) {
    EXPECT_EQ(r.raw_output_contents_size(), r.outputs_size());
  }
  for (int i = 0; i < r.outputs_size(); ++i) {
    const auto& o = r.outputs(i);
    d.shape[o.name()].assign(o.shape().begin(), o.shape().end());
    if (!raw) {
      d.fp32[o.name()].assign(o.contents().fp32_contents().begin(),
                              o.contents().fp32_contents().end());
      d.int64[o.name()].assign(o.contents().int64_contents().begin(),
                               o.contents().int64_contents().end());
      d.bytes[o.name()].assign(o.contents().bytes_contents().begin(),
                               o.contents().bytes_contents().end());
      continue;
    }
    EXPECT_FALSE(o.has_contents()) << o.name();
    const std::string& data = r.raw_output_contents(i);
    const auto* u = reinterpret_cast<const unsigned char*>(data.data());
    auto read = [&](size_t at, int width) {
      uint64_t v = 0;
      for (int b = 0; b < width; ++b) v |= uint64_t{u[at + b]} << (8 * b);
      return v;
    };
    if (o.datatype() == "FP32") {
      for (size_t at = 0; at + 4 <= data.size(); at += 4) {
        uint32_t bits = static_cast<uint32_t>(read(at, 4));
        float f;
        std::memcpy(&f, &bits, 4);
        d.fp32[o.name()].push_back(f);
      }
    } else if (o.datatype() == "INT64") {
      for (size_t at = 0; at + 8 <= data.size(); at += 8) {
        d.int64[o.name()].push_back(static_cast<int64_t>(read(at, 8)));
      }
    } else {
      for (size_t at = 0; at + 4 <= data.size();) {
        const size_t n = read(at, 4);
        d.bytes[o.name()].push_back(data.substr(at + 4, n));
        at += 4 + n;
      }
    }
  }
  return d;
}

class KServeServiceTest : public ::testing::Test {
 protected:
  void StartServer(const ServerConfig& config, bool load = true) {
    auto server = twin::testing::StartServer(config, load);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                       grpc::InsecureChannelCredentials());
    stub_ = GRPCInferenceService::NewStub(channel);
    twin_stub_ = twinmerge::v1::TwinMerge::NewStub(channel);
  }
  grpc::Status Infer(const ModelInferRequest& request, ModelInferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return stub_->ModelInfer(&context, request, response);
  }
  // The twinmerge.v1 answer for one input.
  twinmerge::v1::InferResponse Reference(const twinmerge::v1::InferRequest& request) {
    grpc::ClientContext context;
    twinmerge::v1::InferResponse reply;
    grpc::Status status = twin_stub_->Infer(&context, request, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return reply;
  }
  twinmerge::v1::InferResponse Reference(const Row& row, const std::string& task = "") {
    twinmerge::v1::InferRequest request;
    for (int64_t v : row.ids) request.mutable_tokens()->add_input_ids(v);
    for (int64_t v : row.mask) request.mutable_tokens()->add_attention_mask(v);
    request.set_task(task);
    return Reference(request);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  TempDir dir_;
  std::unique_ptr<TwinServer> server_;
  std::unique_ptr<GRPCInferenceService::Stub> stub_;
  std::unique_ptr<twinmerge::v1::TwinMerge::Stub> twin_stub_;
};

TEST_F(KServeServiceTest, HealthAndMetadataFollowTheLoad) {
  StartServer(TestConfig(dir_.Join("cache")), /*load=*/false);
  {
    grpc::ClientContext c1, c2, c3, c4;
    inference::ServerLiveResponse live;
    ASSERT_TRUE(stub_->ServerLive(&c1, {}, &live).ok());
    EXPECT_TRUE(live.live());
    inference::ServerReadyResponse ready;
    ASSERT_TRUE(stub_->ServerReady(&c2, {}, &ready).ok());
    EXPECT_FALSE(ready.ready());
    inference::ModelReadyRequest model;
    model.set_name(kModel);
    inference::ModelReadyResponse model_ready;
    ASSERT_TRUE(stub_->ModelReady(&c3, model, &model_ready).ok());
    EXPECT_FALSE(model_ready.ready());
    inference::ModelMetadataRequest meta;
    meta.set_name(kModel);
    inference::ModelMetadataResponse metadata;
    EXPECT_EQ(stub_->ModelMetadata(&c4, meta, &metadata).error_code(), grpc::UNAVAILABLE);
    ModelInferResponse reply;
    EXPECT_EQ(Infer(TokensRequest({ZooRow(0, 0)}, false), &reply).error_code(), grpc::UNAVAILABLE);
  }
  ASSERT_TRUE(server_->LoadVersion().ok());
  grpc::ClientContext c1, c2, c3, c4, c5, c6;
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(stub_->ServerReady(&c1, {}, &ready).ok());
  EXPECT_TRUE(ready.ready());
  inference::ModelReadyRequest model;
  model.set_name(kModel);
  model.set_version("v1");
  inference::ModelReadyResponse model_ready;
  ASSERT_TRUE(stub_->ModelReady(&c2, model, &model_ready).ok());
  EXPECT_TRUE(model_ready.ready());
  model.set_version("v9");
  grpc::Status missing = stub_->ModelReady(&c3, model, &model_ready);
  EXPECT_EQ(missing.error_code(), grpc::NOT_FOUND);
  EXPECT_THAT(missing.error_message(), HasSubstr("no version 'v9' (serving 'v1')"));
  inference::ServerMetadataResponse server_meta;
  ASSERT_TRUE(stub_->ServerMetadata(&c4, {}, &server_meta).ok());
  EXPECT_EQ(server_meta.name(), "twin-server");
  EXPECT_FALSE(server_meta.version().empty());
  inference::ModelMetadataRequest meta;
  meta.set_name(kModel);
  inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(stub_->ModelMetadata(&c5, meta, &metadata).ok());
  EXPECT_EQ(metadata.name(), kModel);
  EXPECT_THAT(metadata.versions(), ElementsAre("v1"));
  EXPECT_EQ(metadata.platform(), "pytorch_libtorch");
  ASSERT_EQ(metadata.inputs_size(), 3);
  EXPECT_EQ(metadata.inputs(0).name(), "input_ids");
  EXPECT_EQ(metadata.inputs(0).datatype(), "INT64");
  ASSERT_EQ(metadata.outputs_size(), 5);
  EXPECT_EQ(metadata.outputs(1).name(), "router_weights");
  EXPECT_THAT(metadata.outputs(1).shape(), ElementsAre(-1, 3));
  meta.set_name("resnet");
  EXPECT_EQ(stub_->ModelMetadata(&c6, meta, &metadata).error_code(), grpc::NOT_FOUND);
}

TEST_F(KServeServiceTest, TypedTokensMatchTheTwinMergeServiceAndUseTheCache) {
  StartServer(TestConfig(dir_.Join("cache")));
  const auto& zoo = Artifacts::Get().zoo();
  for (int task = 0; task < 3; ++task) {
    const Row row = ZooRow(task, 0);
    ModelInferRequest request = TokensRequest({row}, /*raw=*/false);
    request.set_id(absl::StrCat("req-", task));
    (*request.mutable_parameters())["task"].set_string_param(zoo.task_names[task]);
    ModelInferResponse reply;
    grpc::Status status = Infer(request, &reply);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(reply.model_name(), kModel);
    EXPECT_EQ(reply.model_version(), "v1");
    EXPECT_EQ(reply.id(), absl::StrCat("req-", task));
    EXPECT_EQ(reply.parameters().at("task").string_param(), zoo.task_names[task]);
    EXPECT_FALSE(reply.parameters().at("cluster_key").string_param().empty());
    EXPECT_FALSE(reply.parameters().at("cache_hit").bool_param());
    const auto expected = Reference(row, zoo.task_names[task]);  // now a cache hit
    Decoded d = DecodeOutputs(reply);
    EXPECT_THAT(d.shape["probabilities"], ElementsAre(1, expected.probabilities_size()));
    ASSERT_EQ(d.fp32["probabilities"].size(), static_cast<size_t>(expected.probabilities_size()));
    for (int k = 0; k < expected.probabilities_size(); ++k) {
      EXPECT_NEAR(d.fp32["probabilities"][k], expected.probabilities(k), 1e-6);
    }
    EXPECT_THAT(d.int64["label_index"], ElementsAre(expected.label_index()));
    EXPECT_THAT(d.bytes["label"], ElementsAre(expected.label()));
    EXPECT_EQ(reply.parameters().at("label").string_param(), expected.label());
    EXPECT_THAT(d.shape["router_weights"], ElementsAre(1, 3));
    EXPECT_FLOAT_EQ(
        d.fp32["router_weights"][0] + d.fp32["router_weights"][1] + d.fp32["router_weights"][2],
        1.0f);
    ModelInferResponse again;
    ASSERT_TRUE(Infer(request, &again).ok());
    EXPECT_TRUE(again.parameters().at("cache_hit").bool_param());
  }
}

// Rows answered in one batch against each row alone: the same chain of about 12 float32
// stages (router features, router, fusion, forward; see twin_server_test's ProbabilityBound) on
// products of other shapes, none wider than the tokenizer's 128 positions. The softmax hides
// the logits' offset; their spread, at most the largest |log p|, stands for their size.
template <typename Floats>
double BatchedProbabilityBound(const Floats& probabilities) {
  double spread = 0.0;
  for (float p : probabilities) {
    spread = std::max(spread, -std::log(std::max(static_cast<double>(p), 1e-30)));
  }
  return twin::testing::ProbabilityError(12, 128, 1.0 + spread);
}

double BatchedProbabilityBound(const twinmerge::v1::InferResponse& reference) {
  return BatchedProbabilityBound(reference.probabilities());
}

TEST_F(KServeServiceTest, RawBatchRowsAreRoutedSeparatelyAndAnsweredRaw) {
  StartServer(TestConfig(dir_.Join("cache")));
  const std::vector<Row> rows = {ZooRow(0, 1), ZooRow(1, 1), ZooRow(2, 1), ZooRow(1, 2)};
  ModelInferResponse reply;
  grpc::Status status = Infer(TokensRequest(rows, /*raw=*/true), &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(reply.raw_output_contents_size(), 5);
  Decoded d = DecodeOutputs(reply);
  const int64_t classes = d.shape["probabilities"][1];
  EXPECT_THAT(d.shape["probabilities"], ElementsAre(4, classes));
  ASSERT_EQ(d.bytes["task"].size(), rows.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    const auto expected = Reference(rows[b]);
    EXPECT_EQ(d.bytes["task"][b], expected.task()) << b;
    EXPECT_EQ(d.int64["label_index"][b], expected.label_index()) << b;
    for (int64_t k = 0; k < classes; ++k) {
      const float want = k < expected.probabilities_size() ? expected.probabilities(k) : 0.0f;
      EXPECT_NEAR(d.fp32["probabilities"][b * classes + k], want,
                  BatchedProbabilityBound(expected))
          << b << "," << k;
    }
  }
}

TEST_F(KServeServiceTest, TextInTypedAndRawFormGivesTheSameAnswers) {
  StartServer(TestConfig(dir_.Join("cache")));
  const std::vector<std::string> texts = {"hello", "a somewhat longer text"};
  ModelInferRequest typed;
  typed.set_model_name(kModel);
  (*typed.mutable_parameters())["top_k"].set_int64_param(2);
  (*typed.mutable_parameters())["temperature"].set_double_param(2.0);
  auto* t = AddInput(&typed, "text", "BYTES", {2});
  for (const auto& s : texts) t->mutable_contents()->add_bytes_contents(s);
  ModelInferRequest raw = typed;
  raw.mutable_inputs(0)->clear_contents();
  raw.add_raw_input_contents(LittleEndian(5, 4) + texts[0] + LittleEndian(22, 4) + texts[1]);
  raw.add_outputs()->set_name("label");
  raw.add_outputs()->set_name("router_weights");
  ModelInferResponse typed_reply, raw_reply;
  ASSERT_TRUE(Infer(typed, &typed_reply).ok());
  grpc::Status status = Infer(raw, &raw_reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(raw_reply.outputs_size(), 2);
  EXPECT_EQ(raw_reply.outputs(0).name(), "label");
  Decoded a = DecodeOutputs(typed_reply), b = DecodeOutputs(raw_reply);
  EXPECT_EQ(a.bytes["label"], b.bytes["label"]);
  // The same rows in two requests: batched the same way, but not bit for bit on every kernel.
  ASSERT_EQ(a.fp32["router_weights"].size(), b.fp32["router_weights"].size());
  for (size_t i = 0; i < a.fp32["router_weights"].size(); ++i) {
    EXPECT_NEAR(a.fp32["router_weights"][i], b.fp32["router_weights"][i],
                BatchedProbabilityBound(a.fp32["router_weights"]))
        << i;
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    twinmerge::v1::InferRequest request;
    request.set_text(texts[i]);
    request.mutable_routing()->set_top_k(2);
    request.mutable_routing()->set_temperature(2.0f);
    EXPECT_EQ(a.bytes["label"][i], Reference(request).label());
  }
}

TEST_F(KServeServiceTest, ErrorsFollowTheProtocolAndTheServerKeepsServing) {
  StartServer(TestConfig(dir_.Join("cache")));
  const ModelInferRequest good = TokensRequest({ZooRow(0, 0), ZooRow(1, 0)}, false);
  struct Case {
    std::string name;
    ModelInferRequest request;
    grpc::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  ModelInferRequest r = good;
  r.set_model_name("resnet");
  cases.push_back({"model", r, grpc::NOT_FOUND, "unknown model 'resnet'"});
  r = good;
  r.set_model_version("v7");
  cases.push_back({"version", r, grpc::NOT_FOUND, "no version 'v7'"});
  r = good;
  r.mutable_inputs(0)->set_datatype("FP32");
  cases.push_back({"datatype", r, grpc::INVALID_ARGUMENT, "datatype 'FP32'; expected INT64"});
  r = good;
  r.mutable_inputs(1)->set_shape(1, 3);
  cases.push_back({"shape", r, grpc::INVALID_ARGUMENT, "'attention_mask' has shape [2, 3]"});
  r = good;
  r.add_raw_input_contents("x");
  r.add_raw_input_contents("y");
  cases.push_back({"mixed", r, grpc::INVALID_ARGUMENT, "use one form for every input"});
  r = good;
  r.clear_inputs();
  cases.push_back({"missing", r, grpc::INVALID_ARGUMENT, "missing input"});
  r = good;
  (*r.mutable_parameters())["task"].set_string_param("nope");
  cases.push_back({"task", r, grpc::INVALID_ARGUMENT, "row 0: unknown task 'nope'"});
  r = good;
  const int64_t l = good.inputs(0).shape(1);
  r.mutable_inputs(0)->mutable_contents()->set_int64_contents(l, -4);
  cases.push_back({"row 1", r, grpc::INVALID_ARGUMENT, "row 1: tokens.input_ids[0] is negative"});
  r = good;
  r.mutable_inputs(0)->mutable_contents()->set_int64_contents(l + 1, 288);
  cases.push_back({"vocabulary", r, grpc::INVALID_ARGUMENT,
                   "row 1: tokens.input_ids[1] is 288; the model's vocabulary has 288 ids"});
  for (const auto& c : cases) {
    ModelInferResponse reply;
    grpc::Status status = Infer(c.request, &reply);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.needle)) << c.name;
  }
  ModelInferResponse reply;
  EXPECT_TRUE(Infer(good, &reply).ok());
}

TEST_F(KServeServiceTest, ModelInferSharesTheMetricsWithInfer) {
  StartServer(TestConfig(dir_.Join("cache")));
  ModelInferRequest request = TokensRequest({ZooRow(2, 3)}, true);
  (*request.mutable_parameters())["task"].set_string_param("task2");
  ModelInferResponse reply;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Infer(request, &reply).ok());
  const std::string metrics = server_->metrics().Scrape();
  EXPECT_THAT(metrics, HasSubstr("twin_requests_total{code=\"OK\",task=\"task2\"} 3"));
  EXPECT_THAT(metrics, HasSubstr("twin_cache_hits_total 2"));
}

TEST_F(KServeServiceTest, ServesTheConfiguredModelName) {
  auto parsed = ParseServerConfig("kserve: {model_name: spam-filter}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->kserve_model_name, "spam-filter");
  auto unknown = ParseServerConfig("kserve: {name: x}\n");
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("kserve.name: unknown key"));
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.kserve_model_name = parsed->kserve_model_name;
  StartServer(config);
  grpc::ClientContext c1, c2;
  inference::ModelReadyRequest model;
  model.set_name("spam-filter");
  inference::ModelReadyResponse ready;
  ASSERT_TRUE(stub_->ModelReady(&c1, model, &ready).ok());
  EXPECT_TRUE(ready.ready());
  model.set_name(kModel);
  grpc::Status status = stub_->ModelReady(&c2, model, &ready);
  EXPECT_EQ(status.error_code(), grpc::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("this server serves 'spam-filter'"));
}

// One ModelInfer call once could carry a whole queue's worth of rows (1024 by default).
TEST_F(KServeServiceTest, RowsPerCallAreBoundedByKServeMaxRows) {
  auto parsed = ParseServerConfig("kserve: {max_rows: 3}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->kserve_max_rows, 3);
  EXPECT_EQ(ServerConfig().kserve_max_rows, 64);
  ServerConfig config = TestConfig(dir_.Join("cache"));
  config.kserve_max_rows = parsed->kserve_max_rows;
  StartServer(config);
  const std::vector<Row> three = {ZooRow(0, 1), ZooRow(1, 1), ZooRow(2, 1)};
  ModelInferResponse reply;
  EXPECT_TRUE(Infer(TokensRequest(three, /*raw=*/false), &reply).ok());
  const std::vector<Row> four = {ZooRow(0, 1), ZooRow(1, 1), ZooRow(2, 1), ZooRow(1, 2)};
  grpc::Status status = Infer(TokensRequest(four, /*raw=*/false), &reply);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("has 4 rows; at most 3"));
}

}  // namespace
}  // namespace twin
