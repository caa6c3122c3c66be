// The gRPC callback service for twinmerge.v1.TwinMerge. Handlers never run a model: they
// validate, hand the request to TwinServer::Submit (which enqueues it) or SubmitGenerate and
// return; the replies are written from the batch worker's completion or the generation
// worker's steps. Every reactor always Finishes.
//
// Thread-safety: gRPC calls handlers concurrently; the service holds no mutable state.
#ifndef TWIN_SERVER_TWIN_SERVICE_H_
#define TWIN_SERVER_TWIN_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <set>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {

class TwinServer;

// The one mapping from absl::Status to grpc::Status (message bounded to kMaxStatusMessageBytes).
inline constexpr size_t kMaxStatusMessageBytes = 1024;
grpc::Status ToGrpcStatus(const absl::Status& status);

// The call's deadline (InfiniteFuture when the client set none).
absl::Time DeadlineOf(const grpc::CallbackServerContext* context);

class StreamReactor;

// Thread-safety: the gRPC library calls the handlers from its threads; BeginDrain may be
// called from any thread.
class TwinService final : public twinmerge::v1::TwinMerge::CallbackService {
 public:
  TwinService(TwinServer* server, int max_stream_in_flight)
      : server_(server), max_stream_in_flight_(max_stream_in_flight) {}

  // Every open InferStream stops reading and finishes (UNAVAILABLE) once the requests it
  // accepted are answered; streams opened later finish at once.
  void BeginDrain();
  // Open streams, for BeginDrain. Register is false once the drain has begun.
  bool Register(StreamReactor* stream);
  void Unregister(StreamReactor* stream);

  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const twinmerge::v1::InferRequest* request,
                                  twinmerge::v1::InferResponse* response) override;
  grpc::ServerBidiReactor<twinmerge::v1::InferRequest, twinmerge::v1::InferResponse>*
  InferStream(grpc::CallbackServerContext* context) override;
  grpc::ServerWriteReactor<twinmerge::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const twinmerge::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const twinmerge::v1::GetModelInfoRequest* request,
                                         twinmerge::v1::ModelInfo* response) override;

 private:
  TwinServer* server_;
  const int max_stream_in_flight_;
  absl::Mutex streams_mu_;
  std::set<StreamReactor*> streams_ ABSL_GUARDED_BY(streams_mu_);
  bool draining_ ABSL_GUARDED_BY(streams_mu_) = false;
};

}  // namespace twin

#endif  // TWIN_SERVER_TWIN_SERVICE_H_
