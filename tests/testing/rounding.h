// Tolerances for comparing floating-point results, derived from the unit roundoff and the size
// of the computation, never from a number that happened to pass on one machine.
//
// BLAS kernels (OpenBLAS picks one per CPU: Haswell, Sandybridge, Prescott, ...), LibTorch's
// intra-op thread count and the CPU's FMA support all change the order in which float32 sums
// are accumulated, so the last bits of a result move between machines. A sum or inner product
// of n terms computed in any order has a relative error (relative to the sum of the magnitudes
// of its terms) of at most
//   gamma(n) = n u / (1 - n u)                 worst case (Higham, "Accuracy and Stability of
//                                              Numerical Algorithms", 2nd ed., Lemma 3.1)
//   lambda sqrt(n) u                           with the rounding errors modelled as independent
//                                              random variables, with probability at least
//                                              1 - 2n exp(-lambda^2 (1 - u)^2 / 2)
//                                              (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019)
// The worst case is far too pessimistic for n in the hundreds; the tests use the probabilistic
// bound with lambda = kLambda, for which the failure probability of one inner product of up to
// 10^4 terms is below 4e-4 and, the errors of different inner products being independent, the
// comparison of a whole result fails only if many fail together.
//
// Header-only; no LibTorch.
#ifndef TWIN_TESTS_TESTING_ROUNDING_H_
#define TWIN_TESTS_TESTING_ROUNDING_H_

#include <cmath>
#include <cstdint>

namespace twin::testing {

inline constexpr double kFloat32Unit = 0x1p-24;  // unit roundoff of IEEE binary32
inline constexpr double kFloat64Unit = 0x1p-53;  // unit roundoff of IEEE binary64
inline constexpr double kLambda = 6.0;

// Probabilistic relative error bound of an n-term float32 sum or inner product.
inline double Float32SumError(int64_t n) {
  return kLambda * std::sqrt(static_cast<double>(n < 1 ? 1 : n)) * kFloat32Unit;
}

// Worst-case relative error bound of an n-term float64 sum (used where float64 arithmetic on
// the same float32 inputs is compared: tiny, but not zero).
inline double Float64SumError(int64_t n) {
  const double nu = static_cast<double>(n < 1 ? 1 : n) * kFloat64Unit;
  return nu / (1.0 - nu);
}

// Worst-case relative error bound of an n-term float32 sum (Lemma 3.1), for short sums where
// it is the tighter one.
inline double Float32Gamma(int64_t n) {
  const double nu = static_cast<double>(n < 1 ? 1 : n) * kFloat32Unit;
  return nu / (1.0 - nu);
}

// Bound on the difference between two float32 evaluations of a network of `depth` chained
// layers, each an inner product or sum of at most `width` terms, computed in different ways
// (another batch shape or padding, another kernel, a hand-written reference): each layer adds
// Float32SumError(width) on each side, relative to `scale`, the magnitude of the values the
// layers combine. The tests' networks have O(1) weights and activations, so the scale is the
// largest absolute output, at least 1; their activations (tanh, GELU, LeakyReLU, LayerNorm of
// O(1) values) do not amplify an error by more than a factor of about 1.
inline double ForwardError(int depth, int64_t width, double scale) {
  return 2.0 * depth * Float32SumError(width) * (scale < 1.0 ? 1.0 : scale);
}

// The same for probabilities: softmax's Jacobian diag(p) - p p^T has rows whose absolute
// values sum to 2 p (1 - p) <= 1/2, so a probability moves by at most half the largest change
// of a logit.
inline double ProbabilityError(int depth, int64_t width, double logit_scale) {
  return 0.5 * ForwardError(depth, width, logit_scale);
}

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_ROUNDING_H_
