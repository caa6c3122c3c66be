// The gRPC callback service for twinmerge.v1.Admin: operator reloads and serving status.
// Reload hands the request to the server's version watcher (the one thread that loads
// versions) and finishes when the load is done; the gRPC thread never runs the load.
//
// Thread-safety: gRPC calls handlers concurrently; the service holds no mutable state.
#ifndef TWIN_SERVER_ADMIN_SERVICE_H_
#define TWIN_SERVER_ADMIN_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "twinmerge/v1/admin.grpc.pb.h"

namespace twin {

class TwinServer;

class AdminService final : public twinmerge::v1::Admin::CallbackService {
 public:
  explicit AdminService(TwinServer* server) : server_(server) {}

  grpc::ServerUnaryReactor* Reload(grpc::CallbackServerContext* context,
                                   const twinmerge::v1::ReloadRequest* request,
                                   twinmerge::v1::ReloadResponse* response) override;
  grpc::ServerUnaryReactor* GetServingStatus(grpc::CallbackServerContext* context,
                                             const twinmerge::v1::GetServingStatusRequest* request,
                                             twinmerge::v1::ServingStatus* response) override;

 private:
  TwinServer* server_;
};

}  // namespace twin

#endif  // TWIN_SERVER_ADMIN_SERVICE_H_
