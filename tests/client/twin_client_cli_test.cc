// The twin-client binary against the in-process fake: exit codes and printed output.
#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/testing/fake_twin_service.h"
#include "tests/testing/temp_dir.h"

namespace twin::client {
namespace {

using ::testing::HasSubstr;
using twin::testing::FakeServer;
using twin::testing::ProjectBinary;
using twin::testing::ReadFileOrDie;
using twin::testing::StartFakeServer;
using twin::testing::TempDir;
using twin::testing::WriteFileOrDie;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = StartFakeServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // Runs twin-client with `args` and --target set to the fake; returns the exit code and
  // leaves stdout + stderr in output_.
  int RunCli(const std::string& args, const std::string& target = "") {
    const std::string out_path = dir_.Join("out.txt");
    const std::string command =
        absl::StrCat(ProjectBinary("twin-client"), " --target=",
                     target.empty() ? server_->address() : target, " --timeout_ms=3000 ", args,
                     " > ", out_path, " 2>&1");
    const int status = std::system(command.c_str());
    output_ = ReadFileOrDie(out_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  TempDir dir_;
  std::unique_ptr<FakeServer> server_;
  std::string output_;
};

TEST_F(CliTest, HealthExitsZeroOnlyWhenServing) {
  EXPECT_EQ(RunCli("health"), 0) << output_;
  EXPECT_THAT(output_, HasSubstr("SERVING"));

  server_->SetServing(false);
  EXPECT_EQ(RunCli("health"), 1) << output_;
  EXPECT_THAT(output_, HasSubstr("NOT_SERVING"));

  EXPECT_EQ(RunCli("health --service=no.such.Service"), 1) << output_;
  EXPECT_THAT(output_, HasSubstr("NOT_FOUND"));
}

TEST_F(CliTest, HealthFailsWhenUnreachable) {
  const std::string address = server_->address();
  server_->Shutdown();
  EXPECT_EQ(RunCli("health", address), 1) << output_;
  EXPECT_THAT(output_, HasSubstr("UNAVAILABLE"));
}

TEST_F(CliTest, InfoPrintsTheModel) {
  EXPECT_EQ(RunCli("info"), 0) << output_;
  EXPECT_THAT(output_, HasSubstr("artifact_version: fake-v1"));
  EXPECT_THAT(output_, HasSubstr("task1: labels [label0, label1]"));
}

TEST_F(CliTest, InferWithIdsPrintsTheReply) {
  EXPECT_EQ(RunCli("infer --ids 1,2,4 --mask 1,1,1 --task task1 --request_id r1 --top_k 1"), 0)
      << output_;
  EXPECT_THAT(output_, HasSubstr("request_id: r1"));
  EXPECT_THAT(output_, HasSubstr("task: task1"));
  EXPECT_THAT(output_, HasSubstr("label: label1 (index 1)"));
  EXPECT_THAT(output_, HasSubstr("probabilities: [0.2500, 0.7500]"));
  EXPECT_THAT(output_, HasSubstr("router_weights: task1=1.0000"));
  EXPECT_THAT(output_, HasSubstr("cluster_key: task1:1"));
  EXPECT_THAT(output_, HasSubstr("cache_hit: false"));
  EXPECT_THAT(output_, HasSubstr("timing_us: queue 1"));
  EXPECT_EQ(server_->service().infer_calls(), 1);

  EXPECT_EQ(RunCli("infer --text='hello there'"), 0) << output_;
  EXPECT_THAT(output_, HasSubstr("task: task0"));
}

TEST_F(CliTest, RpcFailurePrintsCodeAndMessage) {
  server_->service().FailAll(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full"));
  EXPECT_EQ(RunCli("infer --ids 1"), 1) << output_;
  EXPECT_THAT(output_, HasSubstr("RESOURCE_EXHAUSTED: queue full"));
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(RunCli("frobnicate"), 2) << output_;
  EXPECT_THAT(output_, HasSubstr("unknown subcommand 'frobnicate'"));
  EXPECT_EQ(RunCli("info --no_such_flag=1"), 2) << output_;
  EXPECT_THAT(output_, HasSubstr("unknown flag --no_such_flag"));
  EXPECT_EQ(RunCli("bench --concurrency=abc --data /tmp"), 2) << output_;
  EXPECT_EQ(RunCli("infer --ids 1 --text hi"), 2) << output_;
  EXPECT_THAT(output_, HasSubstr("exactly one of --text, --ids"));
  EXPECT_EQ(RunCli("infer --ids 1,x"), 2) << output_;
  EXPECT_THAT(output_, HasSubstr("'x' is not an integer"));
  EXPECT_EQ(RunCli("bench --data /nonexistent/twin"), 2) << output_;
  EXPECT_THAT(output_, HasSubstr("/nonexistent/twin"));
  EXPECT_EQ(server_->service().infer_calls(), 0);
  EXPECT_EQ(RunCli("--help"), 0) << output_;
  EXPECT_THAT(output_, HasSubstr("twin-client bench"));
}

TEST_F(CliTest, BenchRunsABoundedLoadAndPrintsTheSummary) {
  TempDir data;
  WriteFileOrDie(data.Join("task0.test.tsv"), "1\tab\n0\tbb\n");  // the fake: 195%2, 196%2
  WriteFileOrDie(data.Join("task1.test.tsv"), "0\tab\n");
  EXPECT_EQ(RunCli(absl::StrCat("bench --data ", data.path(), " --requests 12 --concurrency 2")),
            0)
      << output_;
  EXPECT_THAT(output_, HasSubstr("sent 12, ok 12, failed 0"));
  EXPECT_THAT(output_, HasSubstr("routing accuracy:"));
  EXPECT_EQ(server_->service().infer_calls(), 12);

  EXPECT_EQ(RunCli(absl::StrCat("bench --data ", data.path(),
                                " --requests 6 --streams --send_task --mix task0=1")),
            0)
      << output_;
  EXPECT_THAT(output_, HasSubstr("accuracy: 1.0000 (6/6 labelled)"));
  EXPECT_EQ(server_->service().stream_messages(), 6);

  EXPECT_EQ(RunCli(absl::StrCat("bench --data ", data.path(), " --rate 200 --duration_s 0.2")),
            0)
      << output_;
  EXPECT_THAT(output_, HasSubstr("replies/s"));

  server_->service().FailAll(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
  EXPECT_EQ(RunCli(absl::StrCat("bench --data ", data.path(), " --requests 3")), 1) << output_;
  EXPECT_THAT(output_, HasSubstr("UNAVAILABLE=3"));
}

}  // namespace
}  // namespace twin::client
