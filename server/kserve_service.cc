#include "server/kserve_service.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/status_macros.h"
#include "server/kserve_codec.h"
#include "server/twin_server.h"
#include "server/twin_service.h"

#ifndef TWIN_VERSION_STRING
#define TWIN_VERSION_STRING "0.1.0"
#endif

namespace twin {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using twinmerge::v1::InferResponse;

constexpr char kServerName[] = "twin-server";
// The models are TorchScript modules run by LibTorch; Triton names that platform so.
constexpr char kPlatform[] = "pytorch_libtorch";

// Finishes a unary call at once with `status` (OK: the response is already filled).
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// What the rows of one ModelInfer share while they are in flight. The row callbacks run on
// batch workers (or inline in Submit); the one that completes the call Finishes the reactor
// and nothing touches the reactor or the response after that.
struct InferCall {
  std::mutex mu;
  DecodedInfer decoded;
  std::vector<std::string> task_names;
  std::vector<InferResponse> replies;
  size_t remaining = 0;
  bool finished = false;
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  grpc::ServerUnaryReactor* reactor = nullptr;
  ModelInferResponse* response = nullptr;
  std::string model_name;
  std::string id;
};

void OnRowDone(InferCall& call, size_t row, absl::StatusOr<InferResponse> result) {
  std::lock_guard<std::mutex> lock(call.mu);
  if (call.finished) return;
  if (!result.ok()) {
    call.finished = true;
    call.cancelled->store(true);  // rows still queued are dropped
    absl::Status status = result.status();
    if (call.decoded.rows.size() > 1) status = Annotate(status, absl::StrCat("row ", row));
    call.reactor->Finish(ToGrpcStatus(status));
    return;
  }
  call.replies[row] = std::move(*result);
  if (--call.remaining > 0) return;
  call.finished = true;
  absl::Status encoded =
      EncodeModelInfer(call.decoded, call.replies, call.task_names, call.response);
  if (encoded.ok()) {
    call.response->set_model_name(call.model_name);
    call.response->set_model_version(call.replies.front().artifact_version());
    call.response->set_id(call.id);
  }
  call.reactor->Finish(ToGrpcStatus(encoded));
}

class ModelInferReactor final : public grpc::ServerUnaryReactor {
 public:
  ModelInferReactor(const KServeService& service, TwinServer* server, const std::string& model_name,
                    int max_rows, grpc::CallbackServerContext* context,
                    const ModelInferRequest* request, ModelInferResponse* response)
      : call_(std::make_shared<InferCall>()) {
    absl::Status started =
        Start(service, server, model_name, max_rows, DeadlineOf(context),
              ClientOfPeer(context->peer()), *request, response);
    if (!started.ok()) Finish(ToGrpcStatus(started));
  }
  void OnCancel() override { call_->cancelled->store(true); }
  void OnDone() override { delete this; }

 private:
  absl::Status Start(const KServeService& service, TwinServer* server,
                     const std::string& model_name, int max_rows, absl::Time deadline,
                     const std::string& client, const ModelInferRequest& request,
                     ModelInferResponse* response) {
    RETURN_IF_ERROR(service.CheckModel(request.model_name(), request.model_version()));
    ASSIGN_OR_RETURN(call_->task_names, server->TaskNames());
    ASSIGN_OR_RETURN(call_->decoded, DecodeModelInfer(request, max_rows));
    const size_t rows = call_->decoded.rows.size();
    call_->replies.resize(rows);
    call_->remaining = rows;
    call_->reactor = this;
    call_->response = response;
    call_->model_name = model_name;
    call_->id = request.id();
    for (size_t row = 0; row < rows; ++row) {
      {
        std::lock_guard<std::mutex> lock(call_->mu);
        if (call_->finished) break;  // an earlier row already failed the call
      }
      std::shared_ptr<InferCall> call = call_;
      server->Submit(call->decoded.rows[row], deadline, call->cancelled, client,
                     [call, row](absl::StatusOr<InferResponse> result) {
                       OnRowDone(*call, row, std::move(result));
                     });
    }
    return absl::OkStatus();
  }

  std::shared_ptr<InferCall> call_;
};

}  // namespace

absl::Status KServeService::CheckModel(const std::string& name, const std::string& version) const {
  if (name != options_.model_name) {
    return absl::NotFoundError(
        absl::StrCat("unknown model '", name, "'; this server serves '", options_.model_name, "'"));
  }
  if (version.empty()) return absl::OkStatus();
  const std::string current = server_->version();
  if (current.empty()) return absl::UnavailableError("no artifact version is loaded yet");
  if (version != current) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '", version,
                                            "' (serving '", current, "')"));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* context,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  // Answering at all means the gRPC server is up.
  response->set_live(true);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* context,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  response->set_ready(server_->serving());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* context,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  absl::Status status = CheckModel(request->name(), request->version());
  if (absl::IsUnavailable(status)) {
    // The model exists but no version is loaded yet: not ready, which is no error.
    response->set_ready(false);
    return FinishNow(context, absl::OkStatus());
  }
  if (status.ok()) response->set_ready(server_->serving());
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name(kServerName);
  response->set_version(TWIN_VERSION_STRING);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  absl::Status status = CheckModel(request->name(), request->version());
  if (!status.ok()) return FinishNow(context, status);
  auto info = server_->ModelInfo();
  if (!info.ok()) return FinishNow(context, info.status());
  response->set_name(options_.model_name);
  response->add_versions(info->artifact_version());
  response->set_platform(kPlatform);
  AddModelSignature(info->tasks_size(), response);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* context,
                                                    const ModelInferRequest* request,
                                                    ModelInferResponse* response) {
  return new ModelInferReactor(*this, server_, options_.model_name, options_.max_rows, context,
                               request, response);
}

}  // namespace twin
