// TwinClient against the in-process fake service: field mapping, errors, health, balancing,
// streams.
#include "client/twin_client.h"

#include <set>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "tests/testing/fake_twin_service.h"

namespace twin::client {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatEq;
using ::testing::HasSubstr;
using twin::testing::FakeServer;
using twin::testing::StartFakeServer;
using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = StartFakeServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    client_ = MakeClient(server_->address());
  }

  static std::unique_ptr<TwinClient> MakeClient(const std::string& target,
                                                const std::string& lb = "") {
    ClientOptions options;
    options.target = target;
    options.load_balancing_policy = lb;
    auto client = TwinClient::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  static InferRequest TokenRequest(std::vector<int64_t> ids, const std::string& task = "") {
    InferRequest request;
    for (int64_t id : ids) request.mutable_tokens()->add_input_ids(id);
    request.set_task(task);
    return request;
  }

  std::unique_ptr<FakeServer> server_;
  std::unique_ptr<TwinClient> client_;
};

TEST_F(ClientTest, InferRoundTripMapsEveryField) {
  InferRequest request = TokenRequest({1, 2, 4}, "task1");  // sum 7 -> label 1
  request.set_request_id("req-7");
  auto reply = client_->Infer(request);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->request_id(), "req-7");
  EXPECT_EQ(reply->task(), "task1");
  EXPECT_EQ(reply->label(), "label1");
  EXPECT_EQ(reply->label_index(), 1);
  EXPECT_THAT(reply->probabilities(), ElementsAre(FloatEq(0.25f), FloatEq(0.75f)));
  ASSERT_EQ(reply->router_weights_size(), 1);
  EXPECT_EQ(reply->router_weights(0).task(), "task1");
  EXPECT_FLOAT_EQ(reply->router_weights(0).weight(), 1.0f);
  EXPECT_EQ(reply->cluster_key(), "task1:1");
  EXPECT_FALSE(reply->cache_hit());  // first call
  EXPECT_EQ(reply->artifact_version(), twin::testing::kFakeArtifactVersion);
  EXPECT_EQ(reply->timing().queue_us(), 1);
  EXPECT_EQ(reply->timing().total_us(), 10);
  EXPECT_EQ(reply->error_code(), 0);
  EXPECT_EQ(server_->service().infer_calls(), 1);

  auto second = client_->Infer(TokenRequest({2, 2}));  // no task: routed; sum 4 -> label 0
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->task(), twin::testing::kFakeRoutedTask);
  EXPECT_EQ(second->label_index(), 0);
  EXPECT_TRUE(second->cache_hit());
}

TEST_F(ClientTest, TextRequestIsAnswered) {
  InferRequest request;
  request.set_text("ab");  // 97 + 98 = 195 -> label 1
  auto reply = client_->Infer(request);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->label_index(), 1);
}

TEST_F(ClientTest, PassedDeadlineIsDeadlineExceeded) {
  server_->service().SetDelay(absl::Seconds(10));
  auto reply = client_->Infer(TokenRequest({1}), absl::Milliseconds(50));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ClientTest, ServerErrorCodeAndMessagePropagate) {
  server_->service().FailAll(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full"));
  auto reply = client_->Infer(TokenRequest({1}));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reply.status().message(), "queue full");

  auto info = client_->GetModelInfo();
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(FromGrpcStatusTest, EveryCodeMapsOneToOne) {
  for (int code = 0; code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED); ++code) {
    const grpc::Status status(static_cast<grpc::StatusCode>(code),
                              code == 0 ? "" : absl::StrCat("message ", code));
    const absl::Status mapped = FromGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(mapped.code()), code);
    EXPECT_EQ(mapped.message(), status.error_message());
  }
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "late")).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(ReplyStatusTest, MapsInBandErrors) {
  InferResponse reply;
  EXPECT_TRUE(ReplyStatus(reply).ok());
  reply.set_error_code(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  reply.set_error_message("input too long");
  const absl::Status status = ReplyStatus(reply);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "input too long");
}

TEST_F(ClientTest, GetModelInfoReturnsTheServersInfo) {
  auto info = client_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->artifact_version(), twin::testing::kFakeArtifactVersion);
  ASSERT_EQ(info->tasks_size(), 2);
  EXPECT_EQ(info->tasks(0).name(), "task0");
  EXPECT_THAT(info->tasks(1).labels(), ElementsAre("label0", "label1"));
  EXPECT_EQ(info->limits().max_batch_size(), 8);

  twinmerge::v1::ModelInfo custom;
  custom.set_artifact_version("v42");
  server_->service().SetModelInfo(custom);
  info = client_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->artifact_version(), "v42");
  EXPECT_EQ(server_->service().model_info_calls(), 2);
}

TEST_F(ClientTest, HealthReportsServingAndNotServing) {
  auto health = client_->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");

  server_->server().GetHealthCheckService()->SetServingStatus(false);
  health = client_->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "NOT_SERVING");

  server_->server().GetHealthCheckService()->SetServingStatus("twinmerge.v1.TwinMerge", true);
  health = client_->Health("twinmerge.v1.TwinMerge");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");

  health = client_->Health("no.such.Service");
  ASSERT_FALSE(health.ok());
  EXPECT_EQ(health.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, UnreachableServerIsUnavailable) {
  server_->Shutdown();
  auto health = client_->Health("", absl::Seconds(2));
  ASSERT_FALSE(health.ok());
  EXPECT_EQ(health.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ClientTest, DnsTargetWithRoundRobinWorks) {
  auto client = MakeClient(absl::StrCat("dns:///127.0.0.1:", server_->port()), "round_robin");
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 5; ++i) {
    auto reply = client->Infer(TokenRequest({i}));
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->label_index(), i % 2);
  }
  EXPECT_EQ(server_->service().infer_calls(), 5);
  auto health = client->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");
}

TEST(ClientOptionsTest, InvalidOptionsAreRejected) {
  ClientOptions options;
  options.load_balancing_policy = "least_request";
  auto client = TwinClient::Create(options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(client.status().message(), HasSubstr("least_request"));

  options = ClientOptions();
  options.target = "";
  EXPECT_EQ(TwinClient::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = ClientOptions();
  options.default_timeout_ms = 0;
  EXPECT_THAT(TwinClient::Create(options).status().message(), HasSubstr("default_timeout_ms"));
}

TEST_F(ClientTest, InferStreamCarriesManyRequests) {
  constexpr int kRequests = 200;
  auto stream = client_->OpenStream(absl::Seconds(10));
  ASSERT_TRUE(stream.ok()) << stream.status();
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      InferRequest request = TokenRequest({i, 1});
      request.set_request_id(absl::StrCat("s", i));
      if (!(*stream)->Write(request).ok()) return;
    }
    (*stream)->WritesDone().IgnoreError();
  });
  std::set<std::string> seen;
  InferResponse reply;
  int wrong_labels = 0;
  while ((*stream)->Read(&reply)) {
    EXPECT_TRUE(ReplyStatus(reply).ok());
    const int i = std::stoi(reply.request_id().substr(1));
    wrong_labels += reply.label_index() != (i + 1) % 2;
    seen.insert(reply.request_id());
  }
  writer.join();
  EXPECT_TRUE((*stream)->Finish().ok());
  EXPECT_EQ(seen.size(), static_cast<size_t>(kRequests));
  EXPECT_EQ(wrong_labels, 0);
  EXPECT_EQ(server_->service().stream_messages(), kRequests);
}

TEST_F(ClientTest, InferStreamReportsPerRequestErrors) {
  server_->service().FailEveryNth(2, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad"));
  auto stream = client_->OpenStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  int failed = 0;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE((*stream)->Write(TokenRequest({i})).ok());
    InferResponse reply;
    ASSERT_TRUE((*stream)->Read(&reply));
    const absl::Status status = ReplyStatus(reply);
    if (!status.ok()) {
      ++failed;
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(status.message(), "bad");
    }
  }
  ASSERT_TRUE((*stream)->WritesDone().ok());
  EXPECT_TRUE((*stream)->Finish().ok());
  EXPECT_EQ(failed, 2);
}

TEST_F(ClientTest, InferAsyncDeliversTheReply) {
  absl::Notification done;
  absl::StatusOr<InferResponse> result;
  client_->InferAsync(TokenRequest({3}, "task1"), kDefaultTimeout,
                      [&](absl::StatusOr<InferResponse> reply) {
                        result = std::move(reply);
                        done.Notify();
                      });
  done.WaitForNotification();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->task(), "task1");
  EXPECT_EQ(result->label_index(), 1);
}

}  // namespace
}  // namespace twin::client
