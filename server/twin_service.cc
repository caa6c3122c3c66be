#include "server/twin_service.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/generator.h"
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
    server->Submit(*request, DeadlineOf(context), cancelled_, ClientOfPeer(context->peer()),
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

// Server-streaming Generate: one reply in flight at a time; replies produced while one is
// being written are merged into the next (their tokens and text appended), so a slow reader
// costs one pending reply, never a queue. Finishes once the generator is done and every reply
// is written. A cancelled call or a failed write marks the job cancelled: the generator ends
// the sequence before its next step.
class GenerateReactor final : public grpc::ServerWriteReactor<twinmerge::v1::GenerateResponse> {
 public:
  GenerateReactor(TwinServer* server, grpc::CallbackServerContext* context,
                  const twinmerge::v1::GenerateRequest* request)
      : cancelled_(std::make_shared<std::atomic<bool>>(false)) {
    GenerateCallbacks callbacks;
    callbacks.write = [this](twinmerge::v1::GenerateResponse reply) { Write(std::move(reply)); };
    callbacks.done = [this](const absl::Status& status) { Done(status); };
    server->SubmitGenerate(*request, DeadlineOf(context), cancelled_,
                           ClientOfPeer(context->peer()), std::move(callbacks));
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      broken_ = true;
      has_next_ = false;
      cancelled_->store(true);
    } else if (has_next_) {
      current_ = std::move(next_);
      next_.Clear();
      has_next_ = false;
      writing_ = true;
      StartWrite(&current_);
    }
    MaybeFinishLocked();
  }
  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override {
    { std::lock_guard<std::mutex> lock(mu_); }
    delete this;
  }

 private:
  void Write(twinmerge::v1::GenerateResponse reply) {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_ || finished_) return;
    if (!writing_) {
      current_ = std::move(reply);
      writing_ = true;
      StartWrite(&current_);
    } else if (!has_next_) {
      next_ = std::move(reply);
      has_next_ = true;
    } else {
      std::string text = next_.text() + reply.text();
      next_.MergeFrom(reply);  // appends token ids; takes the later finish and usage
      next_.set_text(std::move(text));
    }
  }
  void Done(const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    status_ = status;
    MaybeFinishLocked();
  }
  void MaybeFinishLocked() {
    if (finished_ || !done_ || writing_ || has_next_) return;
    finished_ = true;
    Finish(broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke")
                   : ToGrpcStatus(status_));
  }

  std::shared_ptr<std::atomic<bool>> cancelled_;
  std::mutex mu_;
  twinmerge::v1::GenerateResponse current_;  // being written while writing_
  twinmerge::v1::GenerateResponse next_;     // waiting (merged replies) while has_next_
  bool writing_ = false;
  bool has_next_ = false;
  bool broken_ = false;
  bool done_ = false;
  bool finished_ = false;
  absl::Status status_;
};

}  // namespace

// Bidirectional InferStream: reads requests as they come, submits each, writes replies in
// completion order (one write in flight at a time), Finishes once reads are done, every
// submitted request has been answered and every reply written.
// - Backpressure: with max_in_flight requests accepted but not yet written back, it stops
//   reading until a reply is written (HTTP/2 flow control then holds the client).
// - Drain: when the server shuts down it stops reading and Finishes UNAVAILABLE as soon as
//   the requests it accepted are answered, without waiting for the client to half-close.
class StreamReactor final : public grpc::ServerBidiReactor<InferRequest, InferResponse> {
 public:
  StreamReactor(TwinServer* server, TwinService* service, grpc::CallbackServerContext* context,
                int max_in_flight)
      : server_(server),
        service_(service),
        context_(context),
        client_(ClientOfPeer(context->peer())),
        max_in_flight_(max_in_flight),
        cancelled_(std::make_shared<std::atomic<bool>>(false)) {
    const bool registered = service_->Register(this);
    std::lock_guard<std::mutex> lock(mu_);
    if (!registered) draining_ = true;  // opened after the drain began
    MaybeReadLocked();
    MaybeFinishLocked();
  }

  // Called by TwinService::BeginDrain() (under its registry lock, so not after OnDone).
  void Drain() {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    MaybeFinishLocked();
  }

  void OnReadDone(bool ok) override {
    InferRequest request;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      if (!ok) {
        reads_done_ = true;
        MaybeFinishLocked();
        return;
      }
      if (finished_) return;
      ++pending_;
      // Moved out while no read is outstanding: the next one may start as soon as the lock
      // is released (from a reply on a worker thread).
      request = std::move(request_);
    }
    const std::string id = request.request_id();
    // Unlocked: Submit may answer inline.
    server_->Submit(request, DeadlineOf(context_), cancelled_, client_,
                    [this, id](absl::StatusOr<InferResponse> result) {
                      InferResponse reply;
                      if (result.ok()) {
                        reply = std::move(*result);
                      } else {
                        reply.set_request_id(id);
                        reply.set_error_code(static_cast<int>(result.status().code()));
                        reply.set_error_message(std::string(result.status().message()));
                      }
                      Answered(std::move(reply));
                    });
    std::lock_guard<std::mutex> lock(mu_);
    MaybeReadLocked();
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
    MaybeReadLocked();
    MaybeFinishLocked();
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override {
    service_->Unregister(this);
    // A worker may still be leaving the critical section in which it called Finish().
    { std::lock_guard<std::mutex> lock(mu_); }
    delete this;
  }

 private:
  void Answered(InferResponse reply) {
    std::lock_guard<std::mutex> lock(mu_);
    --pending_;
    if (!broken_) {
      outbox_.push_back(std::move(reply));
      if (!writing_) StartNextWriteLocked();
    }
    MaybeReadLocked();
    MaybeFinishLocked();
  }
  int InFlightLocked() const { return pending_ + static_cast<int>(outbox_.size()); }
  void MaybeReadLocked() {
    if (reading_ || reads_done_ || draining_ || finished_ || broken_) return;
    if (InFlightLocked() >= max_in_flight_) return;  // resumed by OnWriteDone
    reading_ = true;
    StartRead(&request_);
  }
  void StartNextWriteLocked() {
    writing_ = true;
    StartWrite(&outbox_.front());
  }
  void MaybeFinishLocked() {
    if (finished_ || pending_ > 0 || writing_ || !outbox_.empty()) return;
    if (reads_done_ || broken_) {
      finished_ = true;
      Finish(grpc::Status::OK);
    } else if (draining_) {
      // A read may still be outstanding: gRPC completes it (not ok) once the call ends.
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server is shutting down: every request read on this stream was "
                          "answered; send further requests on a new stream"));
    }
  }

  TwinServer* server_;
  TwinService* service_;
  grpc::CallbackServerContext* context_;
  const std::string client_;  // ClientOfPeer(peer), read once
  const int max_in_flight_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  InferRequest request_;
  std::mutex mu_;
  std::deque<InferResponse> outbox_;  // front() is being written while writing_
  int pending_ = 0;
  bool reading_ = false;
  bool reads_done_ = false;
  bool writing_ = false;
  bool broken_ = false;
  bool draining_ = false;
  bool finished_ = false;
};


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
  return new StreamReactor(server_, this, context, max_stream_in_flight_);
}

grpc::ServerWriteReactor<twinmerge::v1::GenerateResponse>* TwinService::Generate(
    grpc::CallbackServerContext* context, const twinmerge::v1::GenerateRequest* request) {
  return new GenerateReactor(server_, context, request);
}

bool TwinService::Register(StreamReactor* stream) {
  absl::MutexLock lock(&streams_mu_);
  if (draining_) return false;
  streams_.insert(stream);
  return true;
}

void TwinService::Unregister(StreamReactor* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(stream);
}

void TwinService::BeginDrain() {
  absl::MutexLock lock(&streams_mu_);
  draining_ = true;
  for (StreamReactor* stream : streams_) stream->Drain();
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
