// The router MLP's tensor layout and forward pass, shared by inference (router.cc) and
// training (router_trainer.cc) so the two can never disagree about the architecture.
//
// Thread-safety: free functions without state; the forward pass only reads its inputs.
#ifndef TWIN_CORE_ROUTER_INTERNAL_ROUTER_MLP_H_
#define TWIN_CORE_ROUTER_INTERNAL_ROUTER_MLP_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/store/manifest.h"

namespace twin::router_internal {

struct TensorShape {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a router with `spec` has, in canonical (storage) order: input_mean, input_std,
// then per block linear.weight, linear.bias, norm.weight, norm.bias, then out.weight, out.bias.
// Assumes the spec's dimensions are positive.
std::vector<TensorShape> ExpectedTensors(const RouterSpec& spec);

// Positions in the canonical order.
inline constexpr size_t kInputMeanIndex = 0;
inline constexpr size_t kInputStdIndex = 1;
inline constexpr size_t kFirstBlockIndex = 2;
inline constexpr size_t kTensorsPerBlock = 4;

// Logits [B, T] of `features` [B, input_dim] (float32, on the tensors' device) given the
// tensors in canonical order. With `dropout_generator` set, dropout with rate spec.dropout is
// applied after every block (training); without it, none is (inference). Differentiable
// with respect to any of `tensors` that require grad. Throws on LibTorch errors.
at::Tensor Forward(const RouterSpec& spec, const std::vector<at::Tensor>& tensors,
                   const at::Tensor& features, std::optional<at::Generator> dropout_generator);

// Forward() from the first block's linear output [B, hidden_dim] on: the first block's
// LayerNorm, activation and dropout, the other blocks, the output layer.
at::Tensor ForwardAfterFirstLinear(const RouterSpec& spec, const std::vector<at::Tensor>& tensors,
                                   at::Tensor first_linear,
                                   std::optional<at::Generator> dropout_generator);

// "[2, 3]"
std::string ShapeString(at::IntArrayRef shape);

}  // namespace twin::router_internal

#endif  // TWIN_CORE_ROUTER_INTERNAL_ROUTER_MLP_H_
