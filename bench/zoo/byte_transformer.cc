#include "bench/zoo/byte_transformer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace twin::zoo {
namespace {

constexpr double kInitStd = 0.02;
constexpr double kMaskedBias = 1e4;  // added to attention scores of padding; fp16-safe
constexpr int64_t kIgnoreIndex = -100;
constexpr double kMaxGradNorm = 1.0;
constexpr double kFinalLrFraction = 0.1;
constexpr int64_t kEvalBatch = 256;
// Of the bytes chosen for prediction: below 0.8 -> mask id, below 0.9 -> random byte.
constexpr double kMaskShare = 0.8;
constexpr double kRandomShare = 0.9;

// One pre-norm block; the weights come as arguments so that one method serves every layer.
constexpr char kBlockSource[] = R"JIT(
def block(self, x: Tensor, bias: Tensor, ln1_w: Tensor, ln1_b: Tensor, qkv_w: Tensor,
          qkv_b: Tensor, proj_w: Tensor, proj_b: Tensor, ln2_w: Tensor, ln2_b: Tensor,
          fc1_w: Tensor, fc1_b: Tensor, fc2_w: Tensor, fc2_b: Tensor) -> Tensor:
    b = x.size(0)
    n = x.size(1)
    h = torch.layer_norm(x, [{DIM}], ln1_w, ln1_b, 1e-5)
    qkv = torch.linear(h, qkv_w, qkv_b).view(b, n, 3, {HEADS}, {HEAD_DIM}).permute(2, 0, 3, 1, 4)
    scores = torch.matmul(qkv[0], qkv[1].transpose(-2, -1)) * {SCALE} + bias
    att = torch.matmul(torch.softmax(scores, -1), qkv[2]).transpose(1, 2).reshape(b, n, {DIM})
    x = x + torch.dropout(torch.linear(att, proj_w, proj_b), {DROPOUT}, self.training)
    h = torch.gelu(torch.linear(torch.layer_norm(x, [{DIM}], ln2_w, ln2_b, 1e-5), fc1_w, fc1_b))
    return x + torch.dropout(torch.linear(h, fc2_w, fc2_b), {DROPOUT}, self.training)

def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    n = input_ids.size(1)
    x = torch.embedding(self.tok.weight, input_ids) + self.pos.weight[:n].unsqueeze(0)
    x = torch.dropout(x, {DROPOUT}, self.training)
    bias = (attention_mask.to(x.dtype) - 1.0).unsqueeze(1).unsqueeze(2) * {MASKED_BIAS}
{LAYERS}    return torch.layer_norm(x, [{DIM}], self.norm.weight, self.norm.bias, 1e-5)

def pool(self, h: Tensor, m: Tensor) -> Tensor:
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    h = self.encode(input_ids, attention_mask)
    return self.pool(h, attention_mask.unsqueeze(-1).to(h.dtype))

def classify(self, features: Tensor) -> Tensor:
    return torch.linear(features, self.head.weight, self.head.bias)

def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    return self.classify(self.embed(input_ids, attention_mask))
)JIT";

constexpr char kLayerCall[] =
    R"JIT(    x = self.block(x, bias, self.L.ln1.weight, self.L.ln1.bias, self.L.qkv.weight,
                   self.L.qkv.bias, self.L.proj.weight, self.L.proj.bias, self.L.ln2.weight,
                   self.L.ln2.bias, self.L.fc1.weight, self.L.fc1.bias, self.L.fc2.weight,
                   self.L.fc2.bias)
)JIT";

// The router's input: the masked mean of the embeddings, of every block's output (the last after
// the final norm) and log(1 + count) of the input's byte 1-, 2- and 3-grams hashed into
// {BUCKETS} buckets. Deeper states carry the task's meaning, shallow ones and the n-grams the
// surface form (script, language, markup) that tells the tasks' inputs apart.
constexpr char kRouteSource[] = R"JIT(
def byte_ngrams(self, input_ids: Tensor, attention_mask: Tensor, like: Tensor) -> Tensor:
    ids = input_ids * attention_mask
    n = ids.size(1)
    counts = like.new_zeros([ids.size(0), {BUCKETS}])
    for k in range(1, 4):
        if n >= k:
            h = ids[:, 0:n - k + 1]
            ok = h >= {BYTE_OFFSET}
            for j in range(1, k):
                part = ids[:, j:n - k + 1 + j]
                h = h * 263 + part
                ok = ok & (part >= {BYTE_OFFSET})
            bucket = torch.remainder(h * 2654435761 + k * 97, {BUCKETS})
            counts.scatter_add_(1, bucket, ok.to(like.dtype))
    return torch.log1p(counts)

def route_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    n = input_ids.size(1)
    x = torch.embedding(self.tok.weight, input_ids) + self.pos.weight[:n].unsqueeze(0)
    m = attention_mask.unsqueeze(-1).to(x.dtype)
    bias = (attention_mask.to(x.dtype) - 1.0).unsqueeze(1).unsqueeze(2) * {MASKED_BIAS}
    pooled = [self.pool(x, m)]
{ROUTE_LAYERS}    pooled[-1] = self.pool(torch.layer_norm(x, [{DIM}], self.norm.weight, self.norm.bias, 1e-5), m)
    pooled.append(self.byte_ngrams(input_ids, attention_mask, x))
    return torch.cat(pooled, 1)
)JIT";

constexpr char kMlmSource[] = R"JIT(
def mlm_logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    h = self.encode(input_ids, attention_mask)
    h = torch.gelu(torch.linear(h, self.mlm.dense.weight, self.mlm.dense.bias))
    h = torch.layer_norm(h, [{DIM}], self.mlm.norm.weight, self.mlm.norm.bias, 1e-5)
    return torch.linear(h, self.tok.weight, self.mlm.bias)
)JIT";

std::string Source(const ByteTransformerOptions& o) {
  std::string layers, route_layers;
  for (int64_t i = 0; i < o.layers; ++i) {
    const std::string call =
        absl::StrReplaceAll(kLayerCall, {{".L.", absl::StrCat(".layer", i, ".")}});
    absl::StrAppend(&layers, call);
    absl::StrAppend(&route_layers, call, "    pooled.append(self.pool(x, m))\n");
  }
  std::string source = absl::StrCat(kBlockSource, o.route_ngram_buckets > 0 ? kRouteSource : "",
                                    o.with_mlm ? kMlmSource : "");
  const int64_t head_dim = o.dim / o.heads;
  return absl::StrReplaceAll(
      source, {{"{LAYERS}", layers},
               {"{ROUTE_LAYERS}", route_layers},
               {"{BUCKETS}", absl::StrCat(o.route_ngram_buckets)},
               {"{BYTE_OFFSET}", absl::StrCat(kByteOffset)},
               {"{HEAD_DIM}", absl::StrCat(head_dim)},
               {"{HEADS}", absl::StrCat(o.heads)},
               {"{DIM}", absl::StrCat(o.dim)},
               // TorchScript needs float literals where it expects floats: always print a dot.
               {"{SCALE}", absl::StrFormat("%.8f", 1.0 / std::sqrt(static_cast<double>(head_dim)))},
               {"{DROPOUT}", absl::StrFormat("%.6f", o.dropout)},
               {"{MASKED_BIAS}", absl::StrFormat("%.1f", kMaskedBias)}});
}

torch::jit::Module Leaf(const std::string& type,
                        std::vector<std::pair<std::string, at::Tensor>> params) {
  torch::jit::Module m(type);
  for (auto& [name, t] : params) m.register_parameter(name, t, /*is_buffer=*/false);
  return m;
}

torch::jit::Module Linear(int64_t out, int64_t in, double std) {
  return Leaf("Linear", {{"weight", torch::randn({out, in}) * std}, {"bias", torch::zeros({out})}});
}

torch::jit::Module Norm(int64_t dim) {
  return Leaf("Norm", {{"weight", torch::ones({dim})}, {"bias", torch::zeros({dim})}});
}

torch::jit::Module Head(int64_t classes, int64_t dim) { return Linear(classes, dim, kInitStd); }

bool IsEncoderParameter(const std::string& name) {
  return name.rfind("head.", 0) != 0 && name.rfind("mlm.", 0) != 0;
}

// Gathers rows and trims padding columns beyond the longest row.
std::pair<at::Tensor, at::Tensor> Batch(const TokenizedExamples& data, const at::Tensor& rows) {
  at::Tensor mask = data.attention_mask.index_select(0, rows);
  const int64_t len = std::max<int64_t>(1, mask.sum(1).max().item<int64_t>());
  return {data.input_ids.index_select(0, rows).slice(1, 0, len), mask.slice(1, 0, len)};
}

absl::Status CheckData(const TokenizedExamples& data, bool labeled, const char* what) {
  if (!data.input_ids.defined() || data.input_ids.dim() != 2 || data.input_ids.size(0) == 0 ||
      !data.attention_mask.defined() ||
      !data.attention_mask.sizes().equals(data.input_ids.sizes())) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": input_ids and attention_mask must be equal non-empty [N, L]"));
  }
  if (labeled && (!data.labels.defined() || data.labels.dim() != 1 ||
                  data.labels.size(0) != data.input_ids.size(0))) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": labels must be [N]"));
  }
  return absl::OkStatus();
}

// The TorchScript modules' loop: TrainParameters over every parameter, in train mode.
template <typename LossFn>
absl::StatusOr<TrainStats> Train(torch::jit::Module& module, int64_t n, const TrainOptions& o,
                                 const char* what, LossFn loss_of) {
  std::vector<at::Tensor> params;
  try {
    for (const auto& p : module.parameters()) params.push_back(p);
    module.train();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, " failed: ", e.what()));
  }
  auto stats = TrainParameters(std::move(params), n, o, what, loss_of);
  module.eval();
  return stats;
}

}  // namespace

absl::StatusOr<TrainStats> TrainParameters(std::vector<at::Tensor> params, int64_t n,
                                           const TrainOptions& o, const std::string& what,
                                           const BatchLossFn& loss_of) {
  if (o.steps < 1 || o.batch_size < 1 || o.learning_rate <= 0 || n < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what,
                                                   ": steps, batch_size, learning_rate and the "
                                                   "number of examples must be positive"));
  }
  const auto start = std::chrono::steady_clock::now();
  TrainStats stats;
  try {
    torch::manual_seed(o.seed);  // dropout
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
    for (auto& p : params) p.set_requires_grad(true);
    torch::optim::AdamW opt(
        params, torch::optim::AdamWOptions(o.learning_rate).weight_decay(o.weight_decay));
    const int64_t warmup = std::max<int64_t>(1, static_cast<int64_t>(o.warmup_fraction * o.steps));
    const int64_t batch = std::min(o.batch_size, n);
    const int64_t tail = std::max<int64_t>(1, o.steps / 10);
    at::Tensor order = at::randperm(n, gen, at::kLong);
    int64_t cursor = 0;
    double tail_loss = 0;
    for (int64_t step = 0; step < o.steps; ++step) {
      const double lr = step < warmup
                            ? o.learning_rate * (step + 1) / warmup
                            : o.learning_rate * (1.0 - (1.0 - kFinalLrFraction) * (step - warmup) /
                                                           std::max<int64_t>(1, o.steps - warmup));
      for (auto& group : opt.param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      }
      if (cursor + batch > n) {
        order = at::randperm(n, gen, at::kLong);
        cursor = 0;
      }
      at::Tensor rows = order.slice(0, cursor, cursor + batch);
      cursor += batch;
      opt.zero_grad();
      at::Tensor loss = loss_of(rows, gen);
      loss.backward();
      torch::nn::utils::clip_grad_norm_(params, kMaxGradNorm);
      opt.step();
      if (step >= o.steps - tail) tail_loss += loss.item<double>();
    }
    for (auto& p : params) p.set_requires_grad(false);
    stats.steps = o.steps;
    stats.final_loss = tail_loss / tail;
  } catch (const std::exception& e) {
    for (auto& p : params) p.set_requires_grad(false);
    return absl::InternalError(absl::StrCat(what, " failed: ", e.what()));
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.seconds_per_step = stats.seconds / stats.steps;
  return stats;
}

absl::StatusOr<torch::jit::Module> MakeByteTransformer(const ByteTransformerOptions& o) {
  if (o.layers < 1 || o.dim < 1 || o.heads < 1 || o.dim % o.heads != 0 || o.ff_dim < 1 ||
      o.max_len < 2 || o.num_classes < 1 || o.dropout < 0 || o.dropout >= 1 ||
      o.route_ngram_buckets < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "byte transformer: need layers, dim, ff_dim, num_classes >= 1, heads dividing dim, "
        "max_len >= 2, dropout in [0, 1) and route_ngram_buckets >= 0; got layers=",
        o.layers, " dim=", o.dim, " heads=", o.heads, " ff_dim=", o.ff_dim, " max_len=", o.max_len,
        " num_classes=", o.num_classes, " dropout=", o.dropout,
        " route_ngram_buckets=", o.route_ngram_buckets));
  }
  try {
    torch::NoGradGuard no_grad;
    torch::manual_seed(o.seed);
    // Residual branches start small so that a deep stack starts close to the identity.
    const double out_std = kInitStd / std::sqrt(2.0 * o.layers);
    torch::jit::Module m("ByteTransformer");
    m.register_module(
        "tok", Leaf("Embedding", {{"weight", torch::randn({kByteVocab, o.dim}) * kInitStd}}));
    m.register_module("pos",
                      Leaf("Embedding", {{"weight", torch::randn({o.max_len, o.dim}) * kInitStd}}));
    for (int64_t i = 0; i < o.layers; ++i) {
      torch::jit::Module layer("Block");
      layer.register_module("ln1", Norm(o.dim));
      layer.register_module("qkv", Linear(3 * o.dim, o.dim, kInitStd));
      layer.register_module("proj", Linear(o.dim, o.dim, out_std));
      layer.register_module("ln2", Norm(o.dim));
      layer.register_module("fc1", Linear(o.ff_dim, o.dim, kInitStd));
      layer.register_module("fc2", Linear(o.dim, o.ff_dim, out_std));
      m.register_module(absl::StrCat("layer", i), layer);
    }
    m.register_module("norm", Norm(o.dim));
    m.register_module("head", Head(o.num_classes, o.dim));
    if (o.with_mlm) {
      torch::jit::Module mlm("MaskedBytesHead");
      mlm.register_module("dense", Linear(o.dim, o.dim, kInitStd));
      mlm.register_module("norm", Norm(o.dim));
      mlm.register_parameter("bias", torch::zeros({kByteVocab}), false);
      m.register_module("mlm", mlm);
    }
    if (!m.hasattr("training")) m.register_attribute("training", c10::BoolType::get(), true);
    m.define(Source(o));
    m.eval();
    return m;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the byte transformer failed: ", e.what()));
  }
}

absl::Status ResetHead(torch::jit::Module& module, int64_t num_classes, uint64_t seed) {
  try {
    torch::NoGradGuard no_grad;
    torch::jit::Module head = module.attr("head").toModule();
    const int64_t dim = head.attr("weight").toTensor().size(1);
    torch::manual_seed(seed);
    head.register_parameter("weight", torch::randn({num_classes, dim}) * kInitStd, false);
    head.register_parameter("bias", torch::zeros({num_classes}), false);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("resetting the head failed: ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::jit::Module> ExportClassifier(const torch::jit::Module& trained,
                                                    const ByteTransformerOptions& options) {
  ByteTransformerOptions o = options;
  o.with_mlm = false;
  auto fresh = MakeByteTransformer(o);
  if (!fresh.ok()) return fresh.status();
  try {
    torch::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> source;
    for (const auto& p : trained.named_parameters(/*recurse=*/true)) source[p.name] = p.value;
    for (const auto& p : fresh->named_parameters(/*recurse=*/true)) {
      if (!IsEncoderParameter(p.name)) continue;
      auto it = source.find(p.name);
      if (it == source.end() || !it->second.sizes().equals(p.value.sizes())) {
        return absl::InvalidArgumentError(
            absl::StrCat("export: the trained module has no parameter '", p.name, "' of shape ",
                         c10::str(p.value.sizes())));
      }
      p.value.copy_(it->second);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("exporting the classifier failed: ", e.what()));
  }
  return fresh;
}

absl::StatusOr<torch::jit::Module> RebuildWithCurrentCode(const torch::jit::Module& saved,
                                                          const ByteTransformerOptions& options) {
  ByteTransformerOptions o = options;
  o.with_mlm = false;
  std::map<std::string, at::Tensor> source;
  try {
    for (const auto& p : saved.named_parameters(/*recurse=*/true)) source[p.name] = p.value;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("rebuild: cannot read parameters: ", e.what()));
  }
  auto head = source.find("head.weight");
  if (head == source.end() || head->second.dim() != 2) {
    return absl::InvalidArgumentError("rebuild: the saved module has no 2-D head.weight");
  }
  o.num_classes = head->second.size(0);
  auto fresh = MakeByteTransformer(o);
  if (!fresh.ok()) return fresh.status();
  try {
    torch::NoGradGuard no_grad;
    size_t copied = 0;
    for (const auto& p : fresh->named_parameters(/*recurse=*/true)) {
      auto it = source.find(p.name);
      if (it == source.end() || !it->second.sizes().equals(p.value.sizes())) {
        return absl::InvalidArgumentError(
            absl::StrCat("rebuild: the saved module has no parameter '", p.name, "' of shape ",
                         c10::str(p.value.sizes()), " (different preset?)"));
      }
      p.value.copy_(it->second);
      ++copied;
    }
    if (copied != source.size()) {
      return absl::InvalidArgumentError(absl::StrCat("rebuild: the saved module has ",
                                                     source.size(), " parameters, the preset ",
                                                     copied, " (different preset?)"));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("rebuilding the module failed: ", e.what()));
  }
  return fresh;
}

absl::StatusOr<TrainStats> PretrainMaskedBytes(torch::jit::Module& module,
                                               const TokenizedExamples& corpus,
                                               const TrainOptions& o) {
  if (auto s = CheckData(corpus, false, "pretraining corpus"); !s.ok()) return s;
  if (!module.find_method("mlm_logits")) {
    return absl::InvalidArgumentError("pretraining needs a module built with_mlm");
  }
  if (o.mask_fraction <= 0 || o.mask_fraction >= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask_fraction must be in (0, 1), got ", o.mask_fraction));
  }
  return Train(
      module, corpus.input_ids.size(0), o, "masked-byte pretraining",
      [&](const at::Tensor& rows, at::Generator& gen) {
        auto [ids, mask] = Batch(corpus, rows);
        at::Tensor eligible = mask.eq(1) & ids.ge(kByteOffset);
        at::Tensor chosen = eligible & at::rand(ids.sizes(), gen).lt(o.mask_fraction);
        if (!chosen.any().item<bool>()) chosen = eligible;  // tiny batches only
        at::Tensor r = at::rand(ids.sizes(), gen);
        at::Tensor random_bytes = at::randint(kByteOffset, kByteVocab, ids.sizes(), gen, at::kLong);
        at::Tensor input = ids.masked_fill(chosen & r.lt(kMaskShare), kMaskId);
        input = at::where(chosen & r.ge(kMaskShare) & r.lt(kRandomShare), random_bytes, input);
        at::Tensor targets = ids.masked_fill(chosen.logical_not(), kIgnoreIndex);
        at::Tensor logits = module.run_method("mlm_logits", input, mask).toTensor();
        return at::cross_entropy_loss(logits.reshape({-1, kByteVocab}), targets.reshape({-1}), {},
                                      at::Reduction::Mean, kIgnoreIndex);
      });
}

absl::StatusOr<TrainStats> FineTune(torch::jit::Module& module, const TokenizedExamples& data,
                                    const TrainOptions& o) {
  if (auto s = CheckData(data, true, "fine-tuning data"); !s.ok()) return s;
  return Train(module, data.input_ids.size(0), o, "fine-tuning",
               [&](const at::Tensor& rows, at::Generator&) {
                 auto [ids, mask] = Batch(data, rows);
                 at::Tensor logits = module.forward({ids, mask}).toTensor();
                 return at::cross_entropy_loss(logits, data.labels.index_select(0, rows));
               });
}

absl::StatusOr<double> ClassifierAccuracy(torch::jit::Module& module,
                                          const TokenizedExamples& data) {
  if (auto s = CheckData(data, true, "evaluation data"); !s.ok()) return s;
  try {
    torch::NoGradGuard no_grad;
    module.eval();
    const int64_t n = data.input_ids.size(0);
    int64_t correct = 0;
    for (int64_t start = 0; start < n; start += kEvalBatch) {
      at::Tensor rows = at::arange(start, std::min(n, start + kEvalBatch), at::kLong);
      auto [ids, mask] = Batch(data, rows);
      at::Tensor logits = module.forward({ids, mask}).toTensor();
      correct += logits.argmax(1).eq(data.labels.index_select(0, rows)).sum().item<int64_t>();
    }
    return static_cast<double>(correct) / n;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("evaluating the classifier failed: ", e.what()));
  }
}

}  // namespace twin::zoo
