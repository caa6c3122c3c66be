#include "server/admin_service.h"

#include "server/twin_server.h"
#include "server/twin_service.h"

namespace twin {

grpc::ServerUnaryReactor* AdminService::Reload(grpc::CallbackServerContext* context,
                                               const twinmerge::v1::ReloadRequest* request,
                                               twinmerge::v1::ReloadResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  server_->RequestReload(request->version(),
                         [reactor, response](absl::StatusOr<LoadOutcome> outcome) {
                           if (!outcome.ok()) {
                             reactor->Finish(ToGrpcStatus(outcome.status()));
                             return;
                           }
                           response->set_previous_version(outcome->previous_version);
                           response->set_version(outcome->version);
                           response->set_changed(outcome->changed);
                           response->set_seconds(outcome->seconds);
                           reactor->Finish(grpc::Status::OK);
                         });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::GetServingStatus(
    grpc::CallbackServerContext* context, const twinmerge::v1::GetServingStatusRequest*,
    twinmerge::v1::ServingStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = server_->ServingStatus();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace twin
