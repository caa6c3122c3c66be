// The gRPC callback service for twinmerge.v1.Admin: operator reloads and serving status.
// Reload hands the request to the server's version watcher (the one thread that loads
// versions) and finishes when the load is done; the gRPC thread never runs the load.
//
// Access: with a token file, every call must carry "authorization: Bearer <token>" where the
// token is the file's first line (surrounding whitespace dropped). The comparison takes the same
// time whatever the presented token (SHA-256 of both, compared with CRYPTO_memcmp). The file is
// re-read when its modification time or size changes, so a rotated Kubernetes Secret applies
// without a restart. A missing header is UNAUTHENTICATED, a wrong token PERMISSION_DENIED; both
// are logged with the peer and counted (twin_admin_denied_total{reason}).
//
// Thread-safety: gRPC calls handlers concurrently; the token cache is behind a mutex.
#ifndef TWIN_SERVER_ADMIN_SERVICE_H_
#define TWIN_SERVER_ADMIN_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <array>
#include <cstdint>
#include <ctime>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "twinmerge/v1/admin.grpc.pb.h"

namespace twin {

class ServerMetrics;
class TwinServer;

// Checks "authorization: Bearer <token>" metadata against a token file.
class AdminTokenCheck {
 public:
  explicit AdminTokenCheck(std::string token_file) : token_file_(std::move(token_file)) {}
  // OK, UNAUTHENTICATED (no or malformed header), PERMISSION_DENIED (wrong token) or
  // UNAVAILABLE (the token file cannot be read or is empty: nobody gets in).
  absl::Status Check(const grpc::CallbackServerContext& context);

 private:
  absl::Status Refresh() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const std::string token_file_;
  absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  std::array<uint8_t, 32> digest_ ABSL_GUARDED_BY(mu_) = {};
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
};

class AdminService final : public twinmerge::v1::Admin::CallbackService {
 public:
  // `token_file` "": no token needed (the address is the only guard).
  AdminService(TwinServer* server, ServerMetrics* metrics, const std::string& token_file);

  grpc::ServerUnaryReactor* Reload(grpc::CallbackServerContext* context,
                                   const twinmerge::v1::ReloadRequest* request,
                                   twinmerge::v1::ReloadResponse* response) override;
  grpc::ServerUnaryReactor* GetServingStatus(grpc::CallbackServerContext* context,
                                             const twinmerge::v1::GetServingStatusRequest* request,
                                             twinmerge::v1::ServingStatus* response) override;

 private:
  // OK, or the refusal (logged and counted) for this call.
  absl::Status Authorize(grpc::CallbackServerContext* context, const char* method);
  TwinServer* server_;
  ServerMetrics* metrics_;
  std::unique_ptr<AdminTokenCheck> token_;  // null: no token
};

}  // namespace twin

#endif  // TWIN_SERVER_ADMIN_SERVICE_H_
