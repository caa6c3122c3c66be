#include "core/model/internal/activation.h"

#include <ATen/ATen.h>

namespace twin::internal {

at::Tensor ApplyActivation(HfActivation activation, const at::Tensor& x) {
  switch (activation) {
    case HfActivation::kGelu:
      return at::gelu(x);
    case HfActivation::kGeluTanh:
      return at::gelu(x, "tanh");
    case HfActivation::kRelu:
      return at::relu(x);
    case HfActivation::kSilu:
      return at::silu(x);
  }
  TORCH_CHECK(false, "unknown activation");
}

}  // namespace twin::internal
