// twin-server: the gRPC Twin-Merging inference service and its lifecycle.
//
//   ASSIGN_OR_RETURN(auto server, TwinServer::Start(config));  // gRPC up, NOT_SERVING
//   RETURN_IF_ERROR(server->LoadVersion());                      // fetch, verify, warm up, SERVING
//   server->Wait();                                              // until Shutdown()
//
// Lifecycle: Start() opens the gRPC port (health NOT_SERVING) and the metrics port.
// LoadVersion() fetches and verifies the artifact set, builds the engine, warms it up and
// swaps it in (health SERVING). Shutdown() reports NOT_SERVING, refuses new requests with
// UNAVAILABLE, finishes everything already accepted (up to drain_timeout_ms), then stops.
//
// Thread-safety: all public methods are thread-safe. The serving version is a
// shared_ptr<const Servable> swapped under a mutex; requests keep the one they started with.
#ifndef TWIN_SERVER_TWIN_SERVER_H_
#define TWIN_SERVER_TWIN_SERVER_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/infer_processor.h"
#include "server/server_config.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace grpc {
class Server;
}

namespace twin {

class BatchWorkers;
class KServeService;
class RequestQueue;
class TwinService;

class TwinServer {
 public:
  static absl::StatusOr<std::unique_ptr<TwinServer>> Start(const ServerConfig& config);
  ~TwinServer();

  // Fetches, verifies, loads and warms up `version` ("" = config's artifact_version), then
  // serves it. On failure the current version (if any) keeps serving.
  absl::Status LoadVersion(const std::string& version = "");
  // The version being served, or "" before the first load.
  std::string version() const;
  bool serving() const;

  int port() const { return port_; }
  int metrics_port() const;
  ServerMetrics& metrics() { return *metrics_; }

  // Validates and enqueues one request; `reply` is called exactly once (possibly inline).
  void Submit(const twinmerge::v1::InferRequest& request, absl::Time deadline,
              std::shared_ptr<std::atomic<bool>> cancelled, InferReply reply);
  absl::StatusOr<twinmerge::v1::ModelInfo> ModelInfo() const;

  // Drains and stops; idempotent.
  void Shutdown();
  // Blocks until Shutdown() has completed.
  void Wait();

 private:
  explicit TwinServer(const ServerConfig& config);
  std::shared_ptr<const Servable> Current() const;
  absl::Status WarmUp(const Servable& servable);
  void SetServing(bool serving);

  const ServerConfig config_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<RequestQueue> queue_;
  std::unique_ptr<InferProcessor> processor_;
  std::unique_ptr<BatchWorkers> workers_;
  std::unique_ptr<TwinService> service_;
  std::unique_ptr<KServeService> kserve_service_;  // inference.GRPCInferenceService
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;

  mutable absl::Mutex mu_;
  std::shared_ptr<const Servable> servable_ ABSL_GUARDED_BY(mu_);
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex load_mu_;  // one load at a time
  std::atomic<int64_t> in_flight_{0};
};

}  // namespace twin

#endif  // TWIN_SERVER_TWIN_SERVER_H_
