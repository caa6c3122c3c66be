#include "core/router/router_input.h"

#include "absl/strings/str_cat.h"
#include "core/model/hf_encoder.h"
#include "core/model/script_model.h"
#include "core/router/ngram_features.h"
#include "core/status_macros.h"

namespace twin {

absl::StatusOr<RouterInput> ComputeRouterInput(const RouterEntry& router, const RouterModel& model,
                                               const at::Tensor& input_ids,
                                               const at::Tensor& attention_mask) {
  RouterInput in;
  if (router.features == "ngram") {
    ASSIGN_OR_RETURN(in.features, NgramFeatures(input_ids, attention_mask, router.ngram));
    return in;
  }
  const bool native = model.encoder != nullptr && model.shared != nullptr;
  if (router.features == "prefix") {
    if (!native) {
      return absl::FailedPreconditionError(
          "the router reads a prefix's hidden states (router.features prefix), which only a "
          "native encoder computes");
    }
    ASSIGN_OR_RETURN(in.prefix_hidden, model.encoder->Prefix(input_ids, attention_mask,
                                                             *model.shared, router.prefix_layers));
    ASSIGN_OR_RETURN(in.features, MeanPool(in.prefix_hidden, attention_mask));
    return in;
  }
  if (native) {
    if (router.features != "embed") {
      return absl::FailedPreconditionError(absl::StrCat(
          "the router reads ", router.features, "(), which the native ",
          model.encoder->family_name(), " model does not define (use embed, ngram or prefix)"));
    }
    ASSIGN_OR_RETURN(in.features, model.encoder->Embed(input_ids, attention_mask, *model.shared));
    return in;
  }
  if (model.script == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("the router reads the model's ", router.features,
                     "() features, but no model was given to compute them"));
  }
  ASSIGN_OR_RETURN(in.features, model.script->RouterFeatures(input_ids, attention_mask));
  return in;
}

}  // namespace twin
