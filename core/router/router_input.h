// The router's input for a batch, as a version's manifest names it (RouterEntry::features):
//
//   ngram           hashed token n-gram counts of the ids (core/router/ngram_features.h);
//   embed           the shared model's pooled features: a native encoder's Embed() under
//                   theta*, or a TorchScript model's embed();
//   route_features  a TorchScript model's route_features();
//   prefix          a native encoder's hidden states after its first prefix_layers layers under
//                   theta*, mean-pooled (multi-stage merging); the hidden states come back too,
//                   so the forward that answers the batch continues from them.
//
// One function for the merge job (training data), the server (serving), twin-eval and
// twin-inspect, so that all four read the same features.
//
//   RouterModel model{.encoder = encoder.get(), .shared = &theta};
//   ASSIGN_OR_RETURN(RouterInput in, ComputeRouterInput(manifest.router, model, ids, mask));
//   ASSIGN_OR_RETURN(at::Tensor w, router->Weights(in.features, 1.0));
//
// Thread-safety: as thread-safe as the models it is given (HfEncoder is; a ScriptModel is not
// shared between threads here).
#ifndef TWIN_CORE_ROUTER_ROUTER_INPUT_H_
#define TWIN_CORE_ROUTER_ROUTER_INPUT_H_

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/store/manifest.h"

namespace twin {

class HfEncoder;
class LayerParams;
class ScriptModel;

// The shared model the features are computed with: a native encoder and theta* (`encoder` and
// `shared`), or a TorchScript model holding theta* (`script`). ngram needs neither.
struct RouterModel {
  const HfEncoder* encoder = nullptr;
  const LayerParams* shared = nullptr;
  ScriptModel* script = nullptr;
};

struct RouterInput {
  at::Tensor features;       // [B, input_dim], on the model's device
  at::Tensor prefix_hidden;  // [B, L, d] with features "prefix", else undefined
};

// FAILED_PRECONDITION when `model` cannot compute `router.features` (prefix or embed without
// the model they need); errors of the model's forward pass through.
absl::StatusOr<RouterInput> ComputeRouterInput(const RouterEntry& router, const RouterModel& model,
                                               const at::Tensor& input_ids,
                                               const at::Tensor& attention_mask);

}  // namespace twin

#endif  // TWIN_CORE_ROUTER_ROUTER_INPUT_H_
