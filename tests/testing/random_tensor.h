// Seeded float32 normal tensors for tests: the same values for the same seed on every machine
// (LibTorch's CPU generator).
//
//   at::Tensor w = twin::testing::RandomTensor({10, 12}, /*seed=*/1);
//
// Header-only.
#ifndef TWIN_TESTS_TESTING_RANDOM_TENSOR_H_
#define TWIN_TESTS_TESTING_RANDOM_TENSOR_H_

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>

namespace twin::testing {

inline at::Tensor RandomTensor(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_RANDOM_TENSOR_H_
