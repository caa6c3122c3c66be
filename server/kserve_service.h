// The Open Inference Protocol (KServe v2) gRPC service, inference.GRPCInferenceService, served
// next to twinmerge.v1.TwinMerge on the same port, so Triton, KServe and Seldon clients can
// call twin-server unchanged.
//
// One model, named by ServerConfig::kserve_model_name; its one version is the artifact version
// being served (an empty version in a request means that one; any other is NOT_FOUND).
//   ServerLive      true once the gRPC server is up
//   ServerReady     TwinServer::serving()
//   ModelReady      TwinServer::serving(); NOT_FOUND for another model or version
//   ServerMetadata  name "twin-server", the build's version, no protocol extensions
//   ModelMetadata   inputs  input_ids INT64 [-1, -1], attention_mask INT64 [-1, -1],
//                           text BYTES [-1]
//                   outputs probabilities FP32 [-1, -1], router_weights FP32 [-1, T],
//                           label_index INT64 [-1], label BYTES [-1], task BYTES [-1]
//   ModelInfer      see kserve_codec.h for the inputs and parameters. Each of the B rows is
//                   submitted through TwinServer::Submit (same batcher, cache and metrics as
//                   Infer); the reply is written once every row has answered, in the form the
//                   request used (raw when it was raw). probabilities is [B, C] with C the
//                   largest label count among the answering tasks (shorter rows padded with
//                   0; the task output names each row's task). Response parameters: task,
//                   label and cluster_key when every row shares the value (always for B = 1),
//                   cache_hit when every row hit the fused-weight cache. The first failing
//                   row fails the call with its status and drops the rows still queued.
//
// Handlers never run a model and every reactor always Finishes.
// Thread-safety: gRPC calls handlers concurrently; the service holds no mutable state.
#ifndef TWIN_SERVER_KSERVE_SERVICE_H_
#define TWIN_SERVER_KSERVE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"
#include "inference/grpc_predict_v2.grpc.pb.h"

namespace twin {

class TwinServer;

struct KServeOptions {
  std::string model_name = "twin-merging";
  // Most rows one ModelInfer may carry (each row is one queued request).
  int max_rows = 1024;
};

class KServeService final : public inference::GRPCInferenceService::CallbackService {
 public:
  KServeService(TwinServer* server, KServeOptions options)
      : server_(server), options_(std::move(options)) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;

  // NOT_FOUND unless `name` is the served model and `version` is empty or the served version
  // (UNAVAILABLE while no version is loaded).
  absl::Status CheckModel(const std::string& name, const std::string& version) const;

 private:
  TwinServer* server_;
  const KServeOptions options_;
};

}  // namespace twin

#endif  // TWIN_SERVER_KSERVE_SERVICE_H_
