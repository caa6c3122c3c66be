#include "core/merge/svd_compress.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/testing/rounding.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using twin::testing::Float32SumError;
using twin::testing::Float64SumError;

at::Tensor RandomMatrix(int64_t m, int64_t n, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({m, n}, gen, at::TensorOptions().dtype(at::kFloat));
}

double Frobenius(const at::Tensor& t) { return t.to(at::kDouble).norm().item<double>(); }

double MeasuredError(const at::Tensor& a, const Factorization& f) {
  const at::Tensor a2d = a.reshape({a.size(0), -1}).to(at::kDouble);
  const at::Tensor approx = at::matmul(f.us.to(at::kDouble), f.v.to(at::kDouble).t());
  return Frobenius(a2d - approx) / Frobenius(a2d);
}

// Bound on |e_reported^2 - e_measured^2| for the factors of an [m, n] matrix, errors relative
// to ||A||_F. The reported error comes from an energy balance: ||A||^2 minus the energy the
// kept factors capture (||Q^T A||^2 and B's dropped singular values for the randomized
// solver, the dropped singular values for the full one). Float32 rounding perturbs the captured
// energy through two first-order effects: the basis' loss of orthogonality (Q^T Q - I, inner
// products over m rows; for the full solver the SVD's own U and V) and the rounding of the
// products that form B and the factors (inner products over at most max(m, n) terms), each at
// most Float32SumError(max(m, n)) relative to ||A||^2; an energy is a square, which doubles
// both. The comparison is on squared errors because the balance's error is absolute there: on
// e itself it is divided by 2e, so a small error (e = 0.014 below) magnifies the same rounding
// 36 times, which is how 5.4e-6 once exceeded a fixed bound of 5e-6 on another CPU.
double SquaredErrorBound(int64_t m, int64_t n) {
  return 2.0 * 2.0 * Float32SumError(std::max(m, n));
}

// The error of float32 factors that drop nothing: the backward error of the factorization and
// of the product that rebuilds it, first order in u.
double BackwardErrorBound(int64_t m, int64_t n) { return 2.0 * Float32SumError(std::max(m, n)); }

// The reported error is that of the stored factors (not an estimate), up to rounding.
void ExpectReportedErrorIsMeasured(const at::Tensor& a, const Factorization& f,
                                   const std::string& label) {
  const int64_t m = f.us.size(0), n = f.v.size(0);
  const double measured = MeasuredError(a, f);
  EXPECT_NEAR(f.rel_error * f.rel_error, measured * measured, SquaredErrorBound(m, n))
      << label << ": reported " << f.rel_error << ", measured " << measured;
  if (f.rel_error == 0.0) {
    EXPECT_LE(measured, BackwardErrorBound(m, n)) << label;
  }
}

at::Tensor Spectrum(std::vector<float> values) {
  return at::tensor(at::ArrayRef<float>(values), at::kFloat);
}

SvdOptions FullOnly() {
  SvdOptions o;
  o.allow_randomized = false;
  return o;
}

TEST(SvdCompressTest, ErrorIsTheNormOfDroppedSingularValues) {
  const at::Tensor a = RandomMatrix(64, 48, 1);
  auto s = SingularValues(a);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->numel(), 48);
  const double norm = Frobenius(a);
  for (int64_t rank : {1, 5, 20, 48}) {
    auto f = CompressDelta(a, rank, FullOnly());
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_FALSE(f->randomized);
    EXPECT_EQ(f->rank, rank);
    EXPECT_THAT(f->us.sizes().vec(), ElementsAre(64, rank));
    EXPECT_THAT(f->v.sizes().vec(), ElementsAre(48, rank));
    EXPECT_EQ(f->us.scalar_type(), at::kFloat);
    EXPECT_TRUE(f->us.is_contiguous() && f->v.is_contiguous());
    // Both sum the same float32 squares in float64, in different orders.
    EXPECT_NEAR(f->norm, norm, 2 * Float64SumError(a.numel()) * norm);
    // SingularValues() (LAPACK without vectors) and CompressDelta() (with) compute the spectrum
    // differently: each is that of A + dA with ||dA||_F <= BackwardErrorBound ||A||_F, and by
    // Wielandt-Hoffman the vector of singular values moves by at most ||dA||_F, so the norm of
    // the dropped part (relative to ||A||) moves by at most that much for each.
    const double dropped = Frobenius(s->slice(0, rank)) / norm;
    EXPECT_NEAR(f->rel_error, dropped, 2 * BackwardErrorBound(64, 48)) << "rank " << rank;
    ExpectReportedErrorIsMeasured(a, *f, absl::StrCat("rank ", rank));
  }
}

TEST(SvdCompressTest, RandomizedSolverIsNearOptimalOnLowRankPlusNoise) {
  constexpr int64_t kRank = 8;
  const at::Tensor low = at::matmul(RandomMatrix(200, kRank, 2), RandomMatrix(kRank, 150, 3));
  const at::Tensor a = low + 0.05 * RandomMatrix(200, 150, 4);
  SvdOptions options;
  options.seed = 9;
  auto f = CompressDelta(a, kRank, options);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->randomized);
  auto best = CompressDelta(a, kRank, FullOnly());
  ASSERT_TRUE(best.ok());
  EXPECT_GT(best->rel_error, 0.0);
  EXPECT_LE(f->rel_error, best->rel_error * 1.03);
  // The reported error is the exact error of the stored factors, not an estimate.
  ExpectReportedErrorIsMeasured(a, *f, "low rank plus noise");

  auto again = CompressDelta(a, kRank, options);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->us.equal(f->us));
  EXPECT_TRUE(again->v.equal(f->v));
}

TEST(SvdCompressTest, RandomizedErrorIsExactOnAFlatSpectrum) {
  // A random matrix has no gap, so the randomized factors are visibly worse than the optimum;
  // the reported error must still match the stored factors.
  const at::Tensor a = RandomMatrix(64, 48, 5);
  auto f = CompressDelta(a, 5, SvdOptions{});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->randomized);
  ExpectReportedErrorIsMeasured(a, *f, "flat spectrum");
}

TEST(SvdCompressTest, WideMatricesFactorLikeTallOnes) {
  const at::Tensor a = RandomMatrix(40, 90, 11);
  auto s = SingularValues(a);
  ASSERT_TRUE(s.ok()) << s.status();
  const double norm = Frobenius(a);
  auto f = CompressDelta(a, 7, FullOnly());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(f->us.sizes().vec(), ElementsAre(40, 7));
  EXPECT_THAT(f->v.sizes().vec(), ElementsAre(90, 7));
  // As above: two float32 spectra of the same matrix.
  EXPECT_NEAR(f->rel_error, Frobenius(s->slice(0, 7)) / norm, 2 * BackwardErrorBound(40, 90));
  ExpectReportedErrorIsMeasured(a, *f, "wide");
  auto transposed = CompressDelta(a.t().contiguous(), 7, FullOnly());
  ASSERT_TRUE(transposed.ok());
  // Two float32 SVDs of the same matrix (A and its transpose), as above.
  EXPECT_NEAR(transposed->rel_error, f->rel_error, 2 * BackwardErrorBound(40, 90));
}

TEST(SvdCompressTest, RandomizedErrorIsTheStoredFactorsErrorAcrossShapesAndSeeds) {
  // Low rank plus noise, tall and wide: the reported error is computed, not measured, and
  // must still be that of the stored factors, close to the optimum.
  constexpr int64_t kRank = 12;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const at::Tensor tall = at::matmul(RandomMatrix(300, kRank, 100 + seed),
                                       RandomMatrix(kRank, 180, 200 + seed)) +
                            0.05 * RandomMatrix(300, 180, 300 + seed);
    for (const at::Tensor& a : {tall, at::Tensor(tall.t().contiguous())}) {
      SvdOptions options;
      options.seed = seed;
      auto f = CompressDelta(a, kRank, options);
      ASSERT_TRUE(f.ok()) << f.status();
      ASSERT_TRUE(f->randomized);
      auto best = CompressDelta(a, kRank, FullOnly());
      ASSERT_TRUE(best.ok());
      EXPECT_LE(f->rel_error, best->rel_error * 1.03) << "seed " << seed;
      ExpectReportedErrorIsMeasured(a, *f, absl::StrCat("seed ", seed, " rows ", a.size(0)));
    }
  }
}

TEST(SvdCompressTest, RandomizedSolverHandlesDeltasOfLowerRankThanItsSketch) {
  // Three nonzero rows: rank 3, below the rank + oversample columns the solver sketches.
  at::Tensor a = at::zeros({200, 150});
  a.slice(0, 0, 3).copy_(RandomMatrix(3, 150, 12));
  auto f = CompressDelta(a, 5, SvdOptions{});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->randomized);
  // Nothing is lost: the reported error is the energy balance's rounding alone (absolute in
  // the squared error), the measured one the backward error of the factors.
  EXPECT_LE(f->rel_error * f->rel_error, SquaredErrorBound(200, 150));
  EXPECT_LE(MeasuredError(a, *f), BackwardErrorBound(200, 150));
}

TEST(SvdCompressTest, ThreeDimensionalTensorsUseTheFirstAxisView) {
  auto dims = MatrixDims({4, 3, 5});
  ASSERT_TRUE(dims.ok());
  EXPECT_EQ(dims->first, 4);
  EXPECT_EQ(dims->second, 15);
  const at::Tensor a = RandomMatrix(4, 15, 6).reshape({4, 3, 5});
  auto f = CompressDelta(a, 4, FullOnly());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(f->us.sizes().vec(), ElementsAre(4, 4));
  EXPECT_THAT(f->v.sizes().vec(), ElementsAre(15, 4));
  const at::Tensor rebuilt = at::matmul(f->us, f->v.t()).reshape({4, 3, 5});
  // Each entry is an inner product of rank 4 over the factors of a 4 x 15 SVD.
  EXPECT_LE((rebuilt - a).abs().max().item<double>(),
            BackwardErrorBound(4, 15) * Frobenius(a));
  EXPECT_EQ(f->rel_error, 0.0);  // full rank: nothing dropped

  auto flat = MatrixDims({7});
  EXPECT_EQ(flat.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(flat.status().message()), HasSubstr("[7]"));
  EXPECT_EQ(CompressDelta(at::ones({7}), 1, SvdOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SingularValues(at::ones({7})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SvdCompressTest, ZeroMatrixAndRankZero) {
  auto zero = CompressDelta(at::zeros({6, 4}), 3, SvdOptions{});
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ(zero->rank, 0);
  EXPECT_EQ(zero->rel_error, 0.0);
  EXPECT_EQ(zero->norm, 0.0);
  EXPECT_THAT(zero->us.sizes().vec(), ElementsAre(6, 0));
  EXPECT_THAT(zero->v.sizes().vec(), ElementsAre(4, 0));

  auto empty = CompressDelta(at::zeros({0, 5}), 0, SvdOptions{});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_THAT(empty->v.sizes().vec(), ElementsAre(5, 0));
  auto empty_s = SingularValues(at::zeros({0, 5}));
  ASSERT_TRUE(empty_s.ok()) << empty_s.status();
  EXPECT_EQ(empty_s->numel(), 0);

  auto none = CompressDelta(RandomMatrix(6, 4, 7), 0, SvdOptions{});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->rank, 0);
  EXPECT_EQ(none->rel_error, 1.0);
  EXPECT_GT(none->norm, 0.0);
  EXPECT_THAT(none->us.sizes().vec(), ElementsAre(6, 0));
  EXPECT_THAT(none->v.sizes().vec(), ElementsAre(4, 0));
}

TEST(SvdCompressTest, RejectsBadRankAndNonFiniteInput) {
  auto big = CompressDelta(at::ones({6, 4}), 5, SvdOptions{});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("[0, 4]"));
  at::Tensor nan = at::ones({3, 3});
  nan[1][2] = std::numeric_limits<float>::infinity();
  auto bad = CompressDelta(nan, 1, SvdOptions{});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("NaN/Inf"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("[3, 3]"));
}

TEST(SvdCompressTest, HalfPrecisionInputGivesFloat32Factors) {
  const at::Tensor a = RandomMatrix(8, 6, 8).to(at::kHalf);
  auto f = CompressDelta(a, 6, FullOnly());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->us.scalar_type(), at::kFloat);
  // Full rank: half-precision values are exact in float32, so only the float32 SVD's own
  // backward error remains.
  EXPECT_EQ(f->rel_error, 0.0);
  EXPECT_LE(MeasuredError(a.to(at::kFloat), *f), BackwardErrorBound(8, 6));
}

TEST(SvdCompressTest, ParsesAndValidatesPolicies) {
  for (auto kind :
       {RankPolicy::kRatio, RankPolicy::kRank, RankPolicy::kEnergy, RankPolicy::kBudget}) {
    auto parsed = ParseRankPolicyKind(RankPolicyKindName(kind));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_EQ(ParseRankPolicyKind("auto").status().code(), absl::StatusCode::kInvalidArgument);
  RankPolicy p;
  p.ratio = 0.0;
  EXPECT_THAT(std::string(ValidateRankPolicy(p).message()), HasSubstr("ratio"));
  p.kind = RankPolicy::kEnergy;
  p.energy = 1.5;
  EXPECT_THAT(std::string(ValidateRankPolicy(p).message()), HasSubstr("energy"));
  p.kind = RankPolicy::kRank;
  p.rank = -1;
  EXPECT_FALSE(ValidateRankPolicy(p).ok());
  EXPECT_FALSE(PolicyNeedsSpectrum(p));
  p.kind = RankPolicy::kBudget;
  EXPECT_TRUE(ValidateRankPolicy(p).ok());
  EXPECT_TRUE(PolicyNeedsSpectrum(p));
}

TEST(SvdCompressTest, ChoosesRanksPerPolicy) {
  RankPolicy ratio;
  ratio.kind = RankPolicy::kRatio;
  ratio.ratio = 0.1;
  EXPECT_EQ(ChooseRank(ratio, 64, 48, at::Tensor()), 5);  // ceil(4.8)
  ratio.ratio = 0.3;
  EXPECT_EQ(ChooseRank(ratio, 10, 20, at::Tensor()), 3);  // 0.3 * 10 is 3, not 4
  ratio.ratio = 0.001;
  EXPECT_EQ(ChooseRank(ratio, 10, 20, at::Tensor()), 1);  // at least 1
  ratio.ratio = 1.0;
  EXPECT_EQ(ChooseRank(ratio, 10, 20, at::Tensor()), 10);

  RankPolicy rank;
  rank.kind = RankPolicy::kRank;
  rank.rank = 100;
  EXPECT_EQ(ChooseRank(rank, 64, 48, at::Tensor()), 48);
  rank.rank = 7;
  EXPECT_EQ(ChooseRank(rank, 64, 48, at::Tensor()), 7);
  rank.rank = 0;
  EXPECT_EQ(ChooseRank(rank, 64, 48, at::Tensor()), 0);

  RankPolicy energy;
  energy.kind = RankPolicy::kEnergy;
  // s^2 = 16, 9 (total 25): 0.64 is met exactly by the first value.
  energy.energy = 0.64;
  EXPECT_EQ(ChooseRank(energy, 2, 2, Spectrum({4, 3})), 1);
  energy.energy = 0.65;
  EXPECT_EQ(ChooseRank(energy, 2, 2, Spectrum({4, 3})), 2);
  // s^2 = 4, 1, 1, 1, 1 (total 8): 0.5 -> 1, 0.75 -> 3 exactly, 0.76 -> 4, 1.0 -> 5.
  const at::Tensor s = Spectrum({2, 1, 1, 1, 1});
  energy.energy = 0.5;
  EXPECT_EQ(ChooseRank(energy, 5, 9, s), 1);
  energy.energy = 0.75;
  EXPECT_EQ(ChooseRank(energy, 5, 9, s), 3);
  energy.energy = 0.76;
  EXPECT_EQ(ChooseRank(energy, 5, 9, s), 4);
  energy.energy = 1.0;
  EXPECT_EQ(ChooseRank(energy, 5, 9, s), 5);
  EXPECT_EQ(ChooseRank(energy, 3, 3, at::zeros({3})), 0);
}

TEST(SvdCompressTest, BudgetTakesUnitsByEnergyPerByteWhileTheyFit) {
  // A: s = 4, 2, 1 on [3, 5] -> 8 * 4 = 32 bytes a unit, s^2/byte 0.5, 0.125, 0.031.
  // B: s = 3, 3 on [2, 2]    -> 4 * 4 = 16 bytes a unit, s^2/byte 0.5625 twice.
  // Order: B0, B1, A0, A1, A2.
  const std::vector<at::Tensor> spectra = {Spectrum({4, 2, 1}), Spectrum({3, 3})};
  const std::vector<std::pair<int64_t, int64_t>> dims = {{3, 5}, {2, 2}};
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 64, 4), ElementsAre(1, 2));  // exactly fits
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 63, 4), ElementsAre(0, 2));
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 96, 4), ElementsAre(2, 2));
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 128, 4), ElementsAre(3, 2));
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 100000, 4), ElementsAre(3, 2));
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 0, 4), ElementsAre(0, 0));
  // bytes_per_element scales every unit: at 2 bytes, 48 = 8 + 8 + 16 + 16 buys B0, B1, A0, A1.
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 48, 2), ElementsAre(2, 2));
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 64, 2), ElementsAre(3, 2));
}

TEST(SvdCompressTest, BudgetSkipsUnitsThatDoNotFitButTakesCheaperOnes) {
  // C's only unit is the best per byte (100 / 400) but costs 400 bytes; D's units cost 16
  // bytes each (1 / 16 per byte), E's spectrum is zero.
  const std::vector<at::Tensor> spectra = {Spectrum({10}), Spectrum({1, 1}), Spectrum({0, 0})};
  const std::vector<std::pair<int64_t, int64_t>> dims = {{50, 50}, {2, 2}, {2, 2}};
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 20, 4), ElementsAre(0, 1, 0));
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 40, 4), ElementsAre(0, 2, 0));
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 416, 4), ElementsAre(1, 1, 0));
  // Zero singular values are never worth bytes.
  EXPECT_THAT(AllocateBudgetRanks(spectra, dims, 10000, 4), ElementsAre(1, 2, 0));
  // A spectrum longer than min(m, n) is cut to it.
  EXPECT_THAT(AllocateBudgetRanks({Spectrum({3, 2, 1})}, {{2, 9}}, 10000, 4), ElementsAre(2));
}

}  // namespace
}  // namespace twin
