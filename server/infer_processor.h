// The request path between the gRPC service and the engine.
//
// MakePayload() validates a twinmerge.v1.InferRequest against the servable and the limits and
// turns it into an InferPayload (token ids, task, routing options, reply callback).
// InferProcessor implements BatchProcessor: Route() computes router weights for a batch with
// the shared model and quantises them to cluster keys; Run() gets the fused model for the
// batch's key from the cache (fusing on a miss), runs each task's head over its requests and
// completes them: one body forward for the whole batch when the architecture splits its head
// (classify(), Engine::splits_heads()), else one forward per task. A batch that fails as a whole
// is retried request by request, so one bad input never fails its neighbours. An unfused batch
// (RunBatch with BatchMode::kUnfused, native models) holds requests of any keys: one forward
// with each row's own weights (Engine::ForwardMixed), then each task's head on its rows.
//
// Thread-safety: InferProcessor is thread-safe (it is shared by the batch workers).
#ifndef TWIN_SERVER_INFER_PROCESSOR_H_
#define TWIN_SERVER_INFER_PROCESSOR_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/batch_workers.h"
#include "server/cluster_key.h"
#include "server/metrics.h"
#include "server/servable.h"
#include "server/server_config.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin {

using InferReply = std::function<void(absl::StatusOr<twinmerge::v1::InferResponse>)>;

struct InferPayload : public RequestPayload {
  std::shared_ptr<const Servable> servable;
  at::Tensor input_ids;  // [L] int64
  at::Tensor attention_mask;  // [L] int64
  int task = -1;              // requested task, -1 = router's top task
  int top_k = 0;
  double temperature = 1.0;
  std::string request_id;
  absl::Time received;
  // Filled by routing.
  ClusterKey key;
  std::vector<double> router_weights;
  // The weights the row ran with when they are not the key's (an unfused row with
  // serving.unfused_weights: router); empty otherwise.
  std::vector<double> mixed_weights;
  // A prefix router's hidden states of this row ([L, d], Engine::RouterWeights), which its
  // forward continues from; undefined when the row was not routed or the router reads no prefix.
  at::Tensor prefix_hidden;
  double route_s = 0.0;
  absl::Time routed;
  // Called exactly once.
  InferReply reply;
};

// The index of task `name` in the servable ("" -> -1: routed); INVALID_ARGUMENT listing the
// tasks for an unknown name.
absl::StatusOr<int> TaskOf(const Servable& servable, const std::string& name);
// A reply's router_weights: the non-zero `weights` (one per task), largest first, lower task
// index first on ties, named by the manifest's tasks.
void AddRouterWeights(const std::vector<double>& weights, const Manifest& manifest,
                      google::protobuf::RepeatedPtrField<twinmerge::v1::RouterWeight>* out);
// routing.top_k and routing.temperature checked against the limits, defaults applied.
absl::Status ParseRouting(const twinmerge::v1::RoutingOptions& routing, const ServerConfig& config,
                          int num_tasks, int* top_k, double* temperature);

// Validates `request` and builds its payload. Errors are INVALID_ARGUMENT naming the field.
absl::StatusOr<std::shared_ptr<InferPayload>> MakePayload(
    const twinmerge::v1::InferRequest& request, std::shared_ptr<const Servable> servable,
    const ServerConfig& config);

class InferProcessor : public BatchProcessor {
 public:
  InferProcessor(const ServerConfig& config, ServerMetrics* metrics)
      : config_(config), metrics_(metrics) {}

  void Route(std::vector<PendingRequest>& requests, std::vector<std::string>* keys) override;
  void Run(std::vector<PendingRequest> batch) override;
  double RunBatch(std::vector<PendingRequest> batch, BatchMode mode) override;

  // Completes a request with an error (and records it).
  void Fail(InferPayload& payload, const absl::Status& status);

 private:
  absl::Status RouteGroup(std::vector<InferPayload*>& group);
  // A batch of one key; returns the seconds spent fusing.
  double RunFused(std::vector<InferPayload*>& payloads);
  // Requests of any keys of one servable with a native engine, each row with its own weights.
  void RunUnfused(const Servable& servable, std::vector<InferPayload*>& payloads);
  absl::Status RunGroup(const Servable& servable, FusedModel& model,
                        std::vector<InferPayload*>& group, int task, double fuse_s,
                        bool cache_hit);
  // Answers `group` (one task) from its logits; an error (a head of the wrong shape) replies
  // nothing.
  absl::Status ReplyGroup(const Servable& servable, std::vector<InferPayload*>& group, int task,
                          const at::Tensor& logits, double fuse_s, double forward_s,
                          absl::Time end, bool cache_hit,
                          BatchMode mode = BatchMode::kFused);
  const ServerConfig& config_;
  ServerMetrics* metrics_;
};

// Pads 1-D id/mask tensors into [B, Lmax] batches.
void PadBatch(const std::vector<InferPayload*>& group, at::Tensor* ids, at::Tensor* mask);
// The rows' prefix hidden states padded like PadBatch pads their ids ([B, Lmax, d], zeros at
// the padding), when every row has them; else undefined (the forward runs the prefix).
at::Tensor PadPrefix(const std::vector<InferPayload*>& group);

}  // namespace twin

#endif  // TWIN_SERVER_INFER_PROCESSOR_H_
