// twin-server: the gRPC Twin-Merging inference service and its lifecycle.
//
//   ASSIGN_OR_RETURN(auto server, TwinServer::Start(config));  // gRPC up, NOT_SERVING
//   server->StartWatching();   // loads in the background: retries until the store answers,
//                              // then follows LATEST every reload.poll_interval_ms
//   server->Wait();            // until Shutdown()
//
// Lifecycle: Start() opens the gRPC port (health NOT_SERVING) and the metrics port.
// A load (Load/LoadVersion, the watcher, or an Admin.Reload request) resolves the version,
// and when it is not already serving fetches it through the digest-keyed local cache,
// verifies every blob, builds the engine, warms it up, pre-fuses the previous version's
// hottest cluster keys into the new version's own fused-weight cache, then swaps it in
// atomically (health SERVING) and prunes the cache to reload.keep_versions versions. A failed
// load changes nothing: the previous version keeps serving, and the failure is counted
// (twin_reload_failures_total), logged and reported by Admin.GetServingStatus.
// Shutdown() reports NOT_SERVING, keeps serving for drain_grace_ms, then refuses new requests
// with UNAVAILABLE, finishes open streams once their accepted requests are answered, sends
// GOAWAY and answers every call in flight, all within drain_timeout_ms of its start; then it
// cancels a load in progress (between blobs) and stops.
//
// Thread-safety: all public methods are thread-safe. The serving version is a
// shared_ptr<const Servable> swapped under a mutex; requests keep the one they started with.
// Loads never overlap (one at a time, under load_mu_).
#ifndef TWIN_SERVER_TWIN_SERVER_H_
#define TWIN_SERVER_TWIN_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/generator.h"
#include "server/infer_processor.h"
#include "core/store/object_store.h"
#include "server/server_config.h"
#include "server/version_watcher.h"
#include "twinmerge/v1/admin.pb.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace grpc {
class Server;
}

namespace twin {

class AdminService;
class BatchWorkers;
class KServeService;
class RequestQueue;
class TwinService;

// The client part of a gRPC peer string: the address without its port ("ipv4:10.0.0.7:51234"
// -> "ipv4:10.0.0.7", "ipv6:[::1]:5000" -> "ipv6:[::1]"); other forms are returned whole.
std::string ClientOfPeer(const std::string& peer);

// Opens the artifact store for a URI (OpenObjectStore by default; tests inject faults).
using ObjectStoreFactory =
    std::function<absl::StatusOr<std::unique_ptr<ObjectStore>>(const std::string& uri)>;

class TwinServer {
 public:
  static absl::StatusOr<std::unique_ptr<TwinServer>> Start(const ServerConfig& config,
                                                           ObjectStoreFactory open_store = nullptr);
  ~TwinServer();

  // Loads `version` ("" = config's artifact_version) as described above and reports what
  // changed. A version already serving is a cheap no-op (changed = false).
  absl::StatusOr<LoadOutcome> Load(const std::string& version = "");
  absl::Status LoadVersion(const std::string& version = "") { return Load(version).status(); }
  // Starts the background watcher (first load with retries, then polling). Idempotent.
  void StartWatching();
  // An operator reload (Admin.Reload): runs on the watcher thread when it is running,
  // otherwise on the calling thread. `done` is called exactly once.
  void RequestReload(const std::string& version, VersionWatcher::Done done);
  twinmerge::v1::ServingStatus ServingStatus() const;
  // The version being served, or "" before the first load.
  std::string version() const;
  bool serving() const;

  int port() const { return port_; }
  // The Admin port (0 when Admin is served on port()).
  int admin_port() const { return admin_port_; }
  int metrics_port() const;
  ServerMetrics& metrics() { return *metrics_; }

  // Validates and enqueues one request; `reply` is called exactly once (possibly inline).
  // `client` names the caller for limits.max_in_flight_per_client (ClientOfPeer of the call's
  // peer); "" is never limited.
  void Submit(const twinmerge::v1::InferRequest& request, absl::Time deadline,
              std::shared_ptr<std::atomic<bool>> cancelled, const std::string& client,
              InferReply reply);
  // Generate: validates and queues one generation; `callbacks` report its replies and end
  // (possibly inline, for a request refused at once). `client` is counted against
  // limits.max_in_flight_per_client with its Infer calls, from admission to the stream's end.
  void SubmitGenerate(const twinmerge::v1::GenerateRequest& request, absl::Time deadline,
                      std::shared_ptr<std::atomic<bool>> cancelled, const std::string& client,
                      GenerateCallbacks callbacks);
  absl::StatusOr<twinmerge::v1::ModelInfo> ModelInfo() const;
  // The serving version's task names, in index order (cheaper than ModelInfo()).
  absl::StatusOr<std::vector<std::string>> TaskNames() const;

  // Drains and stops; idempotent.
  void Shutdown();
  // Blocks until Shutdown() has completed.
  void Wait();

 private:
  TwinServer(const ServerConfig& config, ObjectStoreFactory open_store);
  std::shared_ptr<const Servable> Current() const;
  absl::StatusOr<LoadOutcome> LoadLocked(const std::string& version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  absl::Status WarmUp(const Servable& servable);
  absl::Status WarmUpGeneration(const Servable& servable);
  // Static mode: theta*; experts mode: every task's model from serving.experts.
  absl::Status LoadPinned(Servable* servable) const;
  // Pre-fuses the previous version's hottest cluster keys into `next`'s cache.
  void WarmCache(const Servable* previous, const Servable& next);
  void PruneCache(const std::string& serving, const std::string& previous);
  void SetServing(bool serving);
  bool ShuttingDown() const;

  const ServerConfig config_;
  const ObjectStoreFactory open_store_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<RequestQueue> queue_;
  std::unique_ptr<InferProcessor> processor_;
  std::unique_ptr<BatchWorkers> workers_;
  std::unique_ptr<Generator> generator_;
  std::unique_ptr<TwinService> service_;
  std::unique_ptr<KServeService> kserve_service_;  // inference.GRPCInferenceService
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<VersionWatcher> watcher_;
  std::atomic<bool> watching_{false};
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> admin_server_;  // null: Admin is on grpc_server_
  int admin_port_ = 0;

  mutable absl::Mutex mu_;
  std::shared_ptr<const Servable> servable_ ABSL_GUARDED_BY(mu_);
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;  // false from the end of the drain's grace
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t reloads_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reload_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  absl::Time last_reload_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // limits.max_in_flight_per_client: one more call of `client`: true when a slot was taken
  // (give it back by ReleaseClientSlot once), false when the call is not counted ("" or a
  // limit of 0), RESOURCE_EXHAUSTED naming the client and the limit when it has no slot left.
  absl::StatusOr<bool> TakeClientSlot(const std::string& client);
  void ReleaseClientSlot(const std::string& client);
  absl::Mutex clients_mu_;  // guards client_in_flight_
  absl::flat_hash_map<std::string, int> client_in_flight_ ABSL_GUARDED_BY(clients_mu_);
  absl::Mutex load_mu_;     // one load at a time
  absl::Mutex serving_mu_;  // orders SetServing calls (health updates)
};

}  // namespace twin

#endif  // TWIN_SERVER_TWIN_SERVER_H_
