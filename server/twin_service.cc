#include "server/twin_service.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/twin_server.h"

namespace twin {
namespace {

using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

// Unary Infer: Submit in the constructor; the reply callback Finishes.
class InferReactor final : public grpc::ServerUnaryReactor {
 public:
  InferReactor(TwinServer* server, grpc::CallbackServerContext* context,
               const InferRequest* request, InferResponse* response)
      : cancelled_(std::make_shared<std::atomic<bool>>(false)) {
    server->Submit(*request, DeadlineOf(context), cancelled_,
                   [this, response](absl::StatusOr<InferResponse> result) {
                     if (result.ok()) {
                       *response = std::move(*result);
                       Finish(grpc::Status::OK);
                     } else {
                       Finish(ToGrpcStatus(result.status()));
                     }
                   });
  }
  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<std::atomic<bool>> cancelled_;
};

// Bidirectional InferStream: reads requests as they come, submits each, writes replies in
// completion order (one write in flight at a time), Finishes once reads are done, every
// submitted request has been answered and every reply written.
class StreamReactor final : public grpc::ServerBidiReactor<InferRequest, InferResponse> {
 public:
  StreamReactor(TwinServer* server, grpc::CallbackServerContext* context)
      : server_(server), context_(context),
        cancelled_(std::make_shared<std::atomic<bool>>(false)) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::lock_guard<std::mutex> lock(mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++pending_;
    }
    const std::string id = request_.request_id();
    server_->Submit(request_, DeadlineOf(context_), cancelled_,
                    [this, id](absl::StatusOr<InferResponse> result) {
                      InferResponse reply;
                      if (result.ok()) {
                        reply = std::move(*result);
                      } else {
                        reply.set_request_id(id);
                        reply.set_error_code(static_cast<int>(result.status().code()));
                        reply.set_error_message(std::string(result.status().message()));
                      }
                      std::lock_guard<std::mutex> lock(mu_);
                      --pending_;
                      if (!broken_) {
                        outbox_.push_back(std::move(reply));
                        if (!writing_) StartNextWriteLocked();
                      }
                      MaybeFinishLocked();
                    });
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    outbox_.pop_front();
    if (!ok) {
      broken_ = true;
      outbox_.clear();
    } else if (!outbox_.empty()) {
      StartNextWriteLocked();
    }
    MaybeFinishLocked();
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override {
    // A worker may still be leaving the critical section in which it called Finish().
    { std::lock_guard<std::mutex> lock(mu_); }
    delete this;
  }

 private:
  void StartNextWriteLocked() {
    writing_ = true;
    StartWrite(&outbox_.front());
  }
  void MaybeFinishLocked() {
    if (finished_ || !reads_done_ || pending_ > 0 || writing_ || !outbox_.empty()) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  TwinServer* server_;
  grpc::CallbackServerContext* context_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  InferRequest request_;
  std::mutex mu_;
  std::deque<InferResponse> outbox_;  // front() is being written while writing_
  int pending_ = 0;
  bool reads_done_ = false;
  bool writing_ = false;
  bool broken_ = false;
  bool finished_ = false;
};

}  // namespace

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    message.resize(kMaxStatusMessageBytes - 3);
    message += "...";
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

grpc::ServerUnaryReactor* TwinService::Infer(grpc::CallbackServerContext* context,
                                             const InferRequest* request,
                                             InferResponse* response) {
  return new InferReactor(server_, context, request, response);
}

grpc::ServerBidiReactor<InferRequest, InferResponse>* TwinService::InferStream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(server_, context);
}

grpc::ServerUnaryReactor* TwinService::GetModelInfo(
    grpc::CallbackServerContext* context, const twinmerge::v1::GetModelInfoRequest*,
    twinmerge::v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto info = server_->ModelInfo();
  if (info.ok()) {
    *response = std::move(*info);
    reactor->Finish(grpc::Status::OK);
  } else {
    reactor->Finish(ToGrpcStatus(info.status()));
  }
  return reactor;
}

}  // namespace twin
