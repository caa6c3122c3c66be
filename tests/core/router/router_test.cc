#include "core/router/router.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/router/internal/router_mlp.h"
#include "core/store/artifact_set.h"
#include "core/io/safetensors.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

RouterSpec TinySpec() {
  RouterSpec spec;
  spec.input_dim = 3;
  spec.hidden_dim = 4;
  spec.num_hidden_layers = 2;
  spec.num_tasks = 2;
  spec.dropout = 0.25;
  spec.leaky_relu_slope = 0.1;
  spec.layer_norm_eps = 1e-5;
  return spec;
}

// Random but fixed tensors for TinySpec(), in canonical order.
NamedTensors TinyTensors() {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto randn = [&](std::vector<int64_t> shape) { return at::randn(shape, gen, at::kFloat); };
  NamedTensors t;
  t.emplace_back("input_mean", randn({3}));
  t.emplace_back("input_std", at::rand({3}, gen, at::kFloat) + 0.5);
  t.emplace_back("blocks.0.linear.weight", randn({4, 3}));
  t.emplace_back("blocks.0.linear.bias", randn({4}));
  t.emplace_back("blocks.0.norm.weight", randn({4}));
  t.emplace_back("blocks.0.norm.bias", randn({4}));
  t.emplace_back("blocks.1.linear.weight", randn({4, 4}));
  t.emplace_back("blocks.1.linear.bias", randn({4}));
  t.emplace_back("blocks.1.norm.weight", randn({4}));
  t.emplace_back("blocks.1.norm.bias", randn({4}));
  t.emplace_back("out.weight", randn({2, 4}));
  t.emplace_back("out.bias", randn({2}));
  return t;
}

at::Tensor& Find(NamedTensors& tensors, const std::string& name) {
  for (auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static at::Tensor none;
  return none;
}

// The router's math written out with elementary ops, independent of the implementation.
at::Tensor ManualLogits(NamedTensors t, const RouterSpec& spec, const at::Tensor& x_in) {
  at::Tensor x = (x_in - Find(t, "input_mean")) / Find(t, "input_std");
  for (int i = 0; i < spec.num_hidden_layers; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    x = at::matmul(x, Find(t, p + "linear.weight").t()) + Find(t, p + "linear.bias");
    const at::Tensor mu = x.mean(1, /*keepdim=*/true);
    const at::Tensor var = (x - mu).pow(2).mean(1, /*keepdim=*/true);
    x = (x - mu) / at::sqrt(var + spec.layer_norm_eps) * Find(t, p + "norm.weight") +
        Find(t, p + "norm.bias");
    x = at::where(x > 0, x, x * spec.leaky_relu_slope);
  }
  return at::matmul(x, Find(t, "out.weight").t()) + Find(t, "out.bias");
}

// |logits - manual| within the forward error of the router's 2L + 1 stages (linear and LayerNorm
// per block, then the output layer), inner products over at most max(input, hidden) terms.
double LogitsBound(const RouterSpec& spec, const at::Tensor& reference) {
  return testing::ForwardError(static_cast<int>(2 * spec.num_hidden_layers + 1),
                               std::max(spec.input_dim, spec.hidden_dim),
                               reference.abs().max().item<double>());
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

bool Contains(const absl::Status& s, const std::string& text) {
  return std::string(s.message()).find(text) != std::string::npos;
}

TEST(RouterCreateTest, RejectsMissingTensor) {
  NamedTensors t = TinyTensors();
  t.erase(t.begin() + 9);  // blocks.1.norm.bias
  auto r = Router::Create(TinySpec(), t);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status(), "missing tensor 'blocks.1.norm.bias'")) << r.status();
}

TEST(RouterCreateTest, RejectsWrongShapeNamingTensorAndShapes) {
  NamedTensors t = TinyTensors();
  Find(t, "blocks.0.linear.weight") = at::zeros({4, 5});
  auto r = Router::Create(TinySpec(), t);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status(), "'blocks.0.linear.weight'")) << r.status();
  EXPECT_TRUE(Contains(r.status(), "[4, 5]")) << r.status();
  EXPECT_TRUE(Contains(r.status(), "expected [4, 3]")) << r.status();
}

TEST(RouterCreateTest, RejectsNonPositiveStd) {
  NamedTensors t = TinyTensors();
  Find(t, "input_std")[1] = 0.0;
  auto r = Router::Create(TinySpec(), t);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status(), "'input_std' must be > 0")) << r.status();
}

TEST(RouterCreateTest, RejectsUnexpectedDuplicateAndIntegerTensors) {
  NamedTensors extra = TinyTensors();
  extra.emplace_back("blocks.2.linear.weight", at::zeros({4, 4}));
  auto r = Router::Create(TinySpec(), extra);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "unexpected tensor 'blocks.2.linear.weight'")) << r.status();

  NamedTensors dup = TinyTensors();
  dup.emplace_back("out.bias", at::zeros({2}));
  r = Router::Create(TinySpec(), dup);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "'out.bias' appears more than once")) << r.status();

  NamedTensors ints = TinyTensors();
  Find(ints, "out.weight") = at::zeros({2, 4}, at::kLong);
  r = Router::Create(TinySpec(), ints);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "'out.weight' has dtype Long")) << r.status();
}

TEST(RouterCreateTest, RejectsBadSpec) {
  RouterSpec spec = TinySpec();
  spec.hidden_dim = 0;
  auto r = Router::Create(spec, TinyTensors());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "hidden_dim must be > 0")) << r.status();
  spec = TinySpec();
  spec.dropout = 1.0;
  r = Router::Create(spec, TinyTensors());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "dropout")) << r.status();
  // Checked before the tensor list is sized from it (a huge count once allocated first).
  spec = TinySpec();
  spec.num_hidden_layers = int64_t{1} << 60;
  r = Router::Create(spec, TinyTensors());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "num_hidden_layers is 1152921504606846976; the limit is 64"))
      << r.status();
  spec = TinySpec();
  spec.input_dim = int64_t{1} << 40;
  r = Router::Create(spec, TinyTensors());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), "input_dim is 1099511627776")) << r.status();
}

TEST(RouterLoadTest, ReadsTheSetsRouterBlobWithTheManifestsSpec) {
  testing::TempDir dir;
  NamedTensors tensors = TinyTensors();
  ASSERT_TRUE(WriteSafetensors(dir.Join("r.safetensors"), tensors).ok());
  LocalArtifactSet set;
  set.version = "v1";
  set.dir = dir.path();
  set.manifest.router.blob = "r.safetensors";
  set.manifest.router.spec = TinySpec();
  auto loaded = Router::Load(set);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const at::Tensor x = at::randn({5, 3});
  auto logits = (*loaded)->Logits(x);
  ASSERT_TRUE(logits.ok());
  const at::Tensor manual = ManualLogits(tensors, TinySpec(), x);
  EXPECT_LE(MaxAbsDiff(*logits, manual), LogitsBound(TinySpec(), manual));

  // A spec that does not fit the blob, and a missing blob, are errors that name the problem.
  set.manifest.router.spec.hidden_dim = 5;
  auto mismatch = Router::Load(set);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_TRUE(Contains(mismatch.status(), "blocks.0.linear.weight")) << mismatch.status();
  set.manifest.router.blob = "missing.safetensors";
  auto missing = Router::Load(set);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status(), "missing.safetensors")) << missing.status();
}

TEST(RouterCreateTest, StoresOwnedFloatCopiesInCanonicalOrder) {
  NamedTensors t = TinyTensors();
  std::reverse(t.begin(), t.end());
  Find(t, "out.bias") = Find(t, "out.bias").to(at::kDouble);
  auto r = Router::Create(TinySpec(), t);
  ASSERT_TRUE(r.ok()) << r.status();
  const NamedTensors& stored = (*r)->tensors();
  ASSERT_EQ(stored.size(), 12u);
  EXPECT_EQ(stored.front().first, "input_mean");
  EXPECT_EQ(stored.back().first, "out.bias");
  for (const auto& [name, tensor] : stored) {
    EXPECT_EQ(tensor.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(tensor.is_contiguous()) << name;
  }
  const at::Tensor before = stored.back().second.clone();
  Find(t, "out.bias").fill_(100.0);
  EXPECT_TRUE(at::equal(stored.back().second, before));
}

TEST(RouterTest, LogitsMatchManualComputation) {
  const RouterSpec spec = TinySpec();
  NamedTensors t = TinyTensors();
  auto r = Router::Create(spec, t);
  ASSERT_TRUE(r.ok()) << r.status();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor x = at::randn({5, 3}, gen, at::kFloat);
  auto logits = (*r)->Logits(x);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->sizes(), at::IntArrayRef({5, 2}));
  const at::Tensor manual = ManualLogits(t, spec, x);
  EXPECT_LE(MaxAbsDiff(*logits, manual), LogitsBound(spec, manual)) << *logits << manual;
  // Inference has no dropout: repeated calls agree exactly, double input gives the same.
  auto again = (*r)->Logits(x.to(at::kDouble));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(at::equal(*logits, *again));
}

// Hashed n-gram counts: a few non-zero buckets a row, so Logits() takes the sparse first layer
// (the zeros' standardized values folded into a constant). It must match the dense
// computation, including for a bucket every training text hit equally (its std clamped near
// 0: its standardized value is 0 only if computed exactly), a row with no other n-gram and a
// row of zeros.
TEST(RouterTest, SparseInputsMatchTheDenseComputation) {
  RouterSpec spec;
  spec.input_dim = 256;
  spec.hidden_dim = 32;
  spec.num_hidden_layers = 2;
  spec.num_tasks = 3;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  NamedTensors t;
  for (const auto& [name, shape] : router_internal::ExpectedTensors(spec)) {
    t.emplace_back(name, at::randn(shape, gen, at::kFloat));
  }
  Find(t, "input_mean") = at::rand({256}, gen, at::kFloat) * 0.3;
  Find(t, "input_std") = at::rand({256}, gen, at::kFloat) + 0.2;
  const int64_t constant = 17;  // the <s> unigram: log(2) in every text
  Find(t, "input_mean")[constant] = std::log(2.0);
  Find(t, "input_std")[constant] = 1e-6;
  auto r = Router::Create(spec, t);
  ASSERT_TRUE(r.ok()) << r.status();
  const int64_t rows = 6;
  at::Tensor x = at::zeros({rows, 256});
  const at::Tensor buckets = at::randint(0, 256, {rows - 2, 12}, gen, at::kLong);
  for (int64_t i = 0; i < rows - 2; ++i) {
    x[i].index_fill_(0, buckets[i], 1.0);
    x[i] *= at::log1p(at::randint(1, 4, {256}, gen, at::kFloat));
  }
  x.select(1, constant).fill_(std::log(2.0));
  x[rows - 2].zero_();
  x[rows - 2][constant] = std::log(2.0);  // the constant bucket alone
  x[rows - 1].zero_();                    // no n-gram at all
  ASSERT_LE(x.ne(0).sum().item<int64_t>() * Router::kSparseInputFraction, x.numel());
  auto logits = (*r)->Logits(x);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const at::Tensor manual = ManualLogits(t, spec, x);
  EXPECT_LE(MaxAbsDiff(*logits, manual), LogitsBound(spec, manual)) << *logits << manual;
  // The last row's constant bucket is 1e6 standard deviations from its mean.
  EXPECT_GT(manual.abs().max().item<double>(), 0.0);
  // Each row alone gives what it gives in the batch (its own bag of inputs).
  for (int64_t i = 0; i < rows; ++i) {
    auto one = (*r)->Logits(x.narrow(0, i, 1));
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_LE(MaxAbsDiff(*one, logits->narrow(0, i, 1)), LogitsBound(spec, manual)) << i;
  }
}

TEST(RouterTest, WeightsRowsSumToOneAndTemperatureSharpens) {
  auto r = Router::Create(TinySpec(), TinyTensors());
  ASSERT_TRUE(r.ok()) << r.status();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor x = at::randn({8, 3}, gen, at::kFloat);
  auto logits = (*r)->Logits(x);
  auto cool = (*r)->Weights(x, 0.5);
  auto unit = (*r)->Weights(x, 1.0);
  auto warm = (*r)->Weights(x, 4.0);
  ASSERT_TRUE(logits.ok() && cool.ok() && unit.ok() && warm.ok());
  // A softmax row: T exponentials, their sum, T divisions, then the test's own sum of T.
  const int64_t tasks = TinySpec().num_tasks;
  const double softmax_error = testing::Float32Gamma(2 * tasks + 2);
  for (const at::Tensor& w : {*cool, *unit, *warm}) {
    EXPECT_LE(MaxAbsDiff(w.sum(1), at::ones({8})), softmax_error);
    EXPECT_TRUE((w >= 0).all().item<bool>());
  }
  EXPECT_LE(MaxAbsDiff(*unit, at::softmax(*logits, 1)), softmax_error);
  const at::Tensor top_cool = std::get<0>(cool->max(1));
  const at::Tensor top_unit = std::get<0>(unit->max(1));
  const at::Tensor top_warm = std::get<0>(warm->max(1));
  EXPECT_TRUE((top_cool >= top_unit).all().item<bool>());
  EXPECT_TRUE((top_unit >= top_warm).all().item<bool>());
  EXPECT_TRUE(at::equal(cool->argmax(1), warm->argmax(1)));
}

TEST(RouterTest, RejectsBadTemperature) {
  auto r = Router::Create(TinySpec(), TinyTensors());
  ASSERT_TRUE(r.ok()) << r.status();
  const at::Tensor x = at::zeros({1, 3});
  for (double temperature : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity()}) {
    auto w = (*r)->Weights(x, temperature);
    ASSERT_FALSE(w.ok()) << temperature;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(w.status(), "temperature")) << w.status();
  }
}

TEST(RouterTest, RejectsBadFeatureShape) {
  auto r = Router::Create(TinySpec(), TinyTensors());
  ASSERT_TRUE(r.ok()) << r.status();
  auto wrong_width = (*r)->Logits(at::zeros({2, 5}));
  ASSERT_FALSE(wrong_width.ok());
  EXPECT_EQ(wrong_width.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(wrong_width.status(), "[B, 3], got [2, 5]")) << wrong_width.status();
  auto one_d = (*r)->Weights(at::zeros({3}), 1.0);
  ASSERT_FALSE(one_d.ok());
  EXPECT_TRUE(Contains(one_d.status(), "got [3]")) << one_d.status();
  auto ints = (*r)->Logits(at::zeros({2, 3}, at::kLong));
  ASSERT_FALSE(ints.ok());
  EXPECT_TRUE(Contains(ints.status(), "Long")) << ints.status();
}

TEST(RouterTest, ToCopiesTensors) {
  auto r = Router::Create(TinySpec(), TinyTensors());
  ASSERT_TRUE(r.ok()) << r.status();
  auto moved = (*r)->To(c10::Device(c10::kCPU));
  ASSERT_TRUE(moved.ok()) << moved.status();
  ASSERT_EQ((*moved)->tensors().size(), (*r)->tensors().size());
  for (size_t i = 0; i < (*r)->tensors().size(); ++i) {
    EXPECT_EQ((*moved)->tensors()[i].first, (*r)->tensors()[i].first);
    EXPECT_TRUE(at::equal((*moved)->tensors()[i].second, (*r)->tensors()[i].second));
    EXPECT_NE((*moved)->tensors()[i].second.data_ptr(), (*r)->tensors()[i].second.data_ptr());
  }
}

// num_tasks Gaussian clusters in `dim` dimensions, well apart.
std::pair<at::Tensor, at::Tensor> Clusters(const std::vector<int64_t>& sizes, int64_t dim,
                                           uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor centers =
      at::randn({static_cast<int64_t>(sizes.size()), dim}, gen, at::kFloat) * 3.0;
  std::vector<at::Tensor> xs, ys;
  for (size_t t = 0; t < sizes.size(); ++t) {
    xs.push_back(centers[t] + at::randn({sizes[t], dim}, gen, at::kFloat) * 0.5);
    ys.push_back(at::full({sizes[t]}, static_cast<int64_t>(t), at::kLong));
  }
  return {at::cat(xs), at::cat(ys)};
}

RouterTrainOptions FastOptions() {
  RouterTrainOptions o;
  o.max_epochs = 40;
  o.patience = 5;
  o.batch_size = 32;
  o.learning_rate = 1e-2;
  o.seed = 42;
  return o;
}

TEST(TrainRouterTest, SeparatesClusters) {
  auto [x, y] = Clusters({60, 60, 60, 60}, 16, 1);
  auto r = TrainRouter(x, y, 4, FastOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  const RouterEntry& e = r->entry;
  EXPECT_GE(e.validation_accuracy, 0.95);
  EXPECT_EQ(e.spec.input_dim, 16);
  EXPECT_EQ(e.spec.hidden_dim, 32);  // hidden_dim 0 means 2 * input_dim
  EXPECT_EQ(e.spec.num_tasks, 4);
  EXPECT_EQ(e.validation_examples, 48);  // round(0.2 * 60) per task
  EXPECT_EQ(e.train_examples, 192);
  EXPECT_GE(e.epochs_run, 1);
  EXPECT_LE(e.epochs_run, 40);
  ASSERT_EQ(e.confusion.size(), 4u);
  int64_t correct = 0;
  for (size_t t = 0; t < 4; ++t) {
    ASSERT_EQ(e.confusion[t].size(), 4u);
    int64_t row = 0;
    for (int64_t c : e.confusion[t]) row += c;
    EXPECT_EQ(row, 12) << "task " << t;
    correct += e.confusion[t][t];
  }
  EXPECT_DOUBLE_EQ(e.validation_accuracy, correct / 48.0);
  // The returned router generalises to fresh draws from the same clusters.
  auto [x2, y2] = Clusters({60, 60, 60, 60}, 16, 1);
  auto w = r->router->Weights(x2, 1.0);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_GE(w->argmax(1).eq(y2).to(at::kDouble).mean().item<double>(), 0.95);
}

TEST(TrainRouterTest, SameSeedSameRouter) {
  auto [x, y] = Clusters({30, 30, 30}, 8, 2);
  RouterTrainOptions o = FastOptions();
  o.max_epochs = 5;
  auto a = TrainRouter(x, y, 3, o);
  auto b = TrainRouter(x, y, 3, o);
  o.seed = 43;
  auto c = TrainRouter(x, y, 3, o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto la = a->router->Logits(x);
  auto lb = b->router->Logits(x);
  auto lc = c->router->Logits(x);
  ASSERT_TRUE(la.ok() && lb.ok() && lc.ok());
  EXPECT_TRUE(at::equal(*la, *lb));
  EXPECT_EQ(a->entry.confusion, b->entry.confusion);
  EXPECT_EQ(a->entry.epochs_run, b->entry.epochs_run);
  EXPECT_FALSE(at::equal(*la, *lc));
}

TEST(TrainRouterTest, SplitIsStratified) {
  auto [x, y] = Clusters({20, 5, 2}, 4, 3);
  RouterTrainOptions o = FastOptions();
  o.max_epochs = 3;
  o.num_hidden_layers = 3;
  o.hidden_dim = 6;
  auto r = TrainRouter(x, y, 3, o);
  ASSERT_TRUE(r.ok()) << r.status();
  // Per task: max(1, round(0.2 * n)) held out, at least one left to train on.
  const std::vector<int64_t> expected_rows = {4, 1, 1};
  for (size_t t = 0; t < 3; ++t) {
    int64_t row = 0;
    for (int64_t c : r->entry.confusion[t]) row += c;
    EXPECT_EQ(row, expected_rows[t]) << "task " << t;
  }
  EXPECT_EQ(r->entry.validation_examples, 6);
  EXPECT_EQ(r->entry.train_examples, 21);
  EXPECT_EQ(r->entry.epochs_run, 3);
  EXPECT_EQ(r->entry.spec.hidden_dim, 6);
  EXPECT_EQ(r->entry.spec.num_hidden_layers, 3);
  EXPECT_EQ(r->router->tensors().size(), 2u + 3u * 4u + 2u);
  EXPECT_EQ(r->router->tensors()[10].first, "blocks.2.linear.weight");
}

// Two tasks whose inputs come from one distribution, 5:1 in size: the plain router follows the
// data's prior, the balanced one a uniform prior over tasks.
TEST(TrainRouterTest, BalanceTasksGivesEveryTaskTheSameWeight) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor x = at::randn({360, 8}, gen, at::kFloat);
  const at::Tensor y = at::cat({at::zeros({300}, at::kLong), at::ones({60}, at::kLong)});
  const at::Tensor fresh = at::randn({400, 8}, gen, at::kFloat);
  RouterTrainOptions o = FastOptions();
  o.learning_rate = 1e-3;
  o.max_epochs = 15;
  o.patience = 100;
  auto plain = TrainRouter(x, y, 2, o);
  o.balance_tasks = true;
  auto balanced = TrainRouter(x, y, 2, o);
  ASSERT_TRUE(plain.ok() && balanced.ok());
  auto wp = plain->router->Weights(fresh, 1.0);
  auto wb = balanced->router->Weights(fresh, 1.0);
  ASSERT_TRUE(wp.ok() && wb.ok());
  const double plain_small = (*wp).select(1, 1).mean().item<double>();
  const double balanced_small = (*wb).select(1, 1).mean().item<double>();
  EXPECT_LT(plain_small, 0.3);      // about 60 / 360
  EXPECT_GT(balanced_small, 0.35);  // about 1 / 2
  EXPECT_LT(balanced_small, 0.65);
  // The reported accuracy stays the plain one: confusion rows still count every example.
  int64_t rows = 0;
  for (const auto& row : balanced->entry.confusion) {
    for (int64_t c : row) rows += c;
  }
  EXPECT_EQ(rows, balanced->entry.validation_examples);
}

TEST(TrainRouterTest, RunsUnderCallersInferenceMode) {
  auto [x, y] = Clusters({6, 6}, 4, 4);
  RouterTrainOptions o = FastOptions();
  o.max_epochs = 2;
  c10::InferenceMode guard;
  auto r = TrainRouter(x, y, 2, o);
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST(TrainRouterTest, NamesBadInputs) {
  auto [x, y] = Clusters({5, 5, 1}, 4, 5);
  auto one = TrainRouter(x, y, 3, FastOptions());
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(one.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(one.status(), "task 2 has 1 example(s)")) << one.status();

  auto [x2, y2] = Clusters({5, 5}, 4, 6);
  y2[3] = 5;
  auto range = TrainRouter(x2, y2, 2, FastOptions());
  ASSERT_FALSE(range.ok());
  EXPECT_TRUE(Contains(range.status(), "task_ids[3] = 5 is out of range [0, 2)")) << range.status();

  auto [x3, y3] = Clusters({5, 5}, 4, 7);
  x3[4][2] = std::numeric_limits<float>::quiet_NaN();
  auto nan = TrainRouter(x3, y3, 2, FastOptions());
  ASSERT_FALSE(nan.ok());
  EXPECT_TRUE(Contains(nan.status(), "features[4, 2] is not finite")) << nan.status();

  auto mismatch = TrainRouter(x3, y3.slice(0, 0, 9), 2, FastOptions());
  ASSERT_FALSE(mismatch.ok());
  EXPECT_TRUE(Contains(mismatch.status(), "task_ids must be an int64 tensor [10]"))
      << mismatch.status();

  RouterTrainOptions bad = FastOptions();
  bad.batch_size = 0;
  auto opts = TrainRouter(x2, y2, 2, bad);
  ASSERT_FALSE(opts.ok());
  EXPECT_TRUE(Contains(opts.status(), "batch_size")) << opts.status();
}

}  // namespace
}  // namespace twin
