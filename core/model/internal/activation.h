// The feed-forward activations of the native families (`hidden_act`), shared by the encoders
// and the decoders.
//
// Thread-safety: a pure function.
#ifndef TWIN_CORE_MODEL_INTERNAL_ACTIVATION_H_
#define TWIN_CORE_MODEL_INTERNAL_ACTIVATION_H_

#include <ATen/core/Tensor.h>

#include "core/model/hf_config.h"

namespace twin::internal {

// act(x) elementwise; throws c10::Error for an unknown value.
at::Tensor ApplyActivation(HfActivation activation, const at::Tensor& x);

}  // namespace twin::internal

#endif  // TWIN_CORE_MODEL_INTERNAL_ACTIVATION_H_
