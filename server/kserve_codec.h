// Translation between the Open Inference Protocol (inference.ModelInferRequest/Response) and
// twinmerge.v1 requests. Pure functions: no gRPC calls, no model.
//
// A ModelInfer request carries a batch of B rows, either as token ids or as text:
//   input_ids       INT64 [B, L]   (with optional attention_mask INT64 [B, L], values 0/1)
//   text            BYTES [B] or [B, 1]
// Each row becomes one twinmerge.v1.InferRequest. Request parameters: `task` (string; every
// row's head), `top_k` (int), `temperature` (double or int). Data comes either typed
// (`contents`) or raw (`raw_input_contents`: row-major little-endian; BYTES elements as a
// 4-byte little-endian length then the bytes), never mixed.
//
// The response (see kserve_service.h for the list of outputs) uses the form the request used.
//
//   ASSIGN_OR_RETURN(DecodedInfer decoded, DecodeModelInfer(request, max_rows));
//   ... submit decoded.rows, collect one InferResponse per row ...
//   RETURN_IF_ERROR(EncodeModelInfer(decoded, replies, task_names, &response));
//
// Thread-safety: stateless functions.
#ifndef TWIN_SERVER_KSERVE_CODEC_H_
#define TWIN_SERVER_KSERVE_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/grpc_predict_v2.pb.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin {

// Tensor names of the served model's signature.
inline constexpr char kInputIds[] = "input_ids";
inline constexpr char kAttentionMask[] = "attention_mask";
inline constexpr char kTextInput[] = "text";
inline constexpr char kProbabilitiesOutput[] = "probabilities";
inline constexpr char kRouterWeightsOutput[] = "router_weights";
inline constexpr char kLabelIndexOutput[] = "label_index";
inline constexpr char kLabelOutput[] = "label";
inline constexpr char kTaskOutput[] = "task";
// Every output, in the order a response lists them when the request names none.
inline constexpr const char* kOutputNames[] = {kProbabilitiesOutput, kRouterWeightsOutput,
                                               kLabelIndexOutput, kLabelOutput, kTaskOutput};
// Raw BYTES elements are each preceded by their length as a little-endian uint32.
inline constexpr size_t kBytesLengthPrefix = sizeof(uint32_t);

struct DecodedInfer {
  std::vector<twinmerge::v1::InferRequest> rows;  // one per batch row, in order
  bool raw = false;                               // answer in raw_output_contents
  std::vector<std::string> outputs;               // requested outputs, in order; empty = all
};

// Validates the inputs, parameters and requested outputs (not the model name/version) and
// splits the batch into rows. Errors are INVALID_ARGUMENT naming the tensor or parameter.
absl::StatusOr<DecodedInfer> DecodeModelInfer(const inference::ModelInferRequest& request,
                                              int max_rows);

// Fills `response`'s outputs and parameters from one reply per row. `task_names` orders the
// router_weights columns. Does not set model_name, model_version or id.
absl::Status EncodeModelInfer(const DecodedInfer& decoded,
                              const std::vector<twinmerge::v1::InferResponse>& replies,
                              const std::vector<std::string>& task_names,
                              inference::ModelInferResponse* response);

// The model signature for ModelMetadata, for a model with `num_tasks` tasks.
void AddModelSignature(int num_tasks, inference::ModelMetadataResponse* metadata);

}  // namespace twin

#endif  // TWIN_SERVER_KSERVE_CODEC_H_
