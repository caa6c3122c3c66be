// An in-process fake of the TwinMerge gRPC service, for client tests, plus a helper that serves
// it (with gRPC's default grpc.health.v1 service) on a loopback port chosen by the OS.
//
// Replies are deterministic so tests can compute what a client should see:
//   label_index = (sum of input_ids, or of the text's bytes) % 2, label "label<index>";
//   task = the request's task, or kFakeRoutedTask when the request names none;
//   probabilities = [0.25, 0.75] or [0.75, 0.25] (the label's entry is 0.75);
//   router_weights = [{task, 1.0}]; cluster_key = "<task>:1";
//   cache_hit = true on every even-numbered call (2nd, 4th, ...), counting Infer calls and
//   stream messages together; artifact_version = kFakeArtifactVersion;
//   timing = queue 1, route 2, fuse 3, forward 4, total 10 (microseconds).
// Behaviour can be scripted: fail every call (FailAll), fail every n-th call (FailEveryNth),
// delay every call (SetDelay; the delay ends early when the call is cancelled or its deadline
// passes). Stream messages fail in the reply's error_code/error_message instead.
//
//   auto server = StartFakeServer();   // ASSERT_TRUE(server.ok())
//   ClientOptions options;
//   options.target = (*server)->address();   // "127.0.0.1:<port>"
//   (*server)->service().FailAll(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
//
// Thread-safety: FakeTwinService is thread-safe (gRPC calls it from many threads; tests script
// it from theirs).
#ifndef TWIN_TESTS_TESTING_FAKE_TWIN_SERVICE_H_
#define TWIN_TESTS_TESTING_FAKE_TWIN_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin::testing {

inline constexpr char kFakeRoutedTask[] = "task0";
inline constexpr char kFakeArtifactVersion[] = "fake-v1";

class FakeTwinService final : public twinmerge::v1::TwinMerge::Service {
 public:
  FakeTwinService();

  // The label index the fake answers for `request` (see the file comment).
  static int ExpectedLabel(const twinmerge::v1::InferRequest& request);

  // Every call (Infer, stream messages, GetModelInfo) fails with `status`; OK restores service.
  void FailAll(const grpc::Status& status);
  // Every n-th Infer call or stream message (counted from 1) fails with `status`; n = 0 stops.
  void FailEveryNth(int n, const grpc::Status& status);
  // Every Infer call and stream message waits this long before answering.
  void SetDelay(absl::Duration delay);
  // What GetModelInfo returns (a two-task default otherwise).
  void SetModelInfo(const twinmerge::v1::ModelInfo& info);

  int64_t infer_calls() const;       // unary Infer calls
  int64_t stream_messages() const;   // requests received on InferStream
  int64_t streams_opened() const;
  int64_t model_info_calls() const;
  // routing.temperature of every unary Infer request, in arrival order.
  std::vector<float> temperatures() const;

  grpc::Status Infer(grpc::ServerContext* context, const twinmerge::v1::InferRequest* request,
                     twinmerge::v1::InferResponse* reply) override;
  grpc::Status InferStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<twinmerge::v1::InferResponse, twinmerge::v1::InferRequest>* stream)
      override;
  grpc::Status GetModelInfo(grpc::ServerContext* context,
                            const twinmerge::v1::GetModelInfoRequest* request,
                            twinmerge::v1::ModelInfo* reply) override;

 private:
  // Counts one Infer-like call and returns the status it must fail with (OK = answer it), the
  // delay to apply, and whether it is a cache hit.
  grpc::Status Admit(bool stream, absl::Duration* delay, bool* cache_hit);
  static void Answer(const twinmerge::v1::InferRequest& request, bool cache_hit,
                     twinmerge::v1::InferResponse* reply);

  mutable absl::Mutex mu_;
  grpc::Status fail_all_ ABSL_GUARDED_BY(mu_);
  int fail_every_n_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<float> temperatures_ ABSL_GUARDED_BY(mu_);
  grpc::Status fail_every_status_ ABSL_GUARDED_BY(mu_);
  absl::Duration delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  twinmerge::v1::ModelInfo model_info_ ABSL_GUARDED_BY(mu_);
  int64_t infer_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t stream_messages_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t streams_opened_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t model_info_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// A running grpc::Server on 127.0.0.1 with a FakeTwinService and the default health service
// (overall status SERVING). Shuts down (cancelling calls in flight) when destroyed.
class FakeServer {
 public:
  ~FakeServer();
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  const std::string& address() const { return address_; }  // "127.0.0.1:<port>"
  int port() const { return port_; }
  FakeTwinService& service() { return *service_; }
  grpc::Server& server() { return *server_; }
  // Sets the overall health status ("" service) and every named one.
  void SetServing(bool serving);
  // Stops serving now (later calls from clients fail UNAVAILABLE).
  void Shutdown();

 private:
  friend absl::StatusOr<std::unique_ptr<FakeServer>> StartFakeServer();
  FakeServer() = default;
  std::unique_ptr<FakeTwinService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
  bool shut_down_ = false;
};

absl::StatusOr<std::unique_ptr<FakeServer>> StartFakeServer();

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_FAKE_TWIN_SERVICE_H_
