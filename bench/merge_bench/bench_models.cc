#include "bench/merge_bench/bench_models.h"

#include <cmath>
#include <fstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors.h"
#include "core/status_macros.h"

namespace twin::bench {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// Router tokens of expert t come from this many ids at the start of its vocabulary band: a
// narrow band makes the pooled features of different experts clearly apart.
constexpr int64_t kRouterBandTokens = 32;
// Per-entry scale of the (dense) bias deltas.
constexpr double kBiasDeltaStd = 0.01;
// Seeds of the experts and of the router data are spread apart from the base's.
constexpr uint64_t kExpertSeedStride = 1000003;
constexpr uint64_t kRouterSeedOffset = 7919;

std::string LayerName(int64_t i) { return absl::StrCat("layer", i); }

// embed(): mean-pooled token embeddings through `layers` tanh(Linear) layers.
std::string ModelSource(int64_t layers) {
  std::string src =
      "def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:\n"
      "    x = torch.embedding(self.emb.weight, input_ids)\n"
      "    m = attention_mask.unsqueeze(-1).to(x.dtype)\n"
      "    h = (x * m).sum(1) / m.sum(1).clamp(min=1.0)\n";
  for (int64_t i = 0; i < layers; ++i) {
    const std::string l = LayerName(i);
    absl::StrAppend(&src, "    h = torch.tanh(torch.linear(h, self.", l, ".weight, self.", l,
                    ".bias))\n");
  }
  absl::StrAppend(&src,
                  "    return h\n\n"
                  "def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:\n"
                  "    return torch.linear(self.embed(input_ids, attention_mask), "
                  "self.head.weight, self.head.bias)\n");
  return src;
}

at::Tensor Randn(at::IntArrayRef shape, at::Generator& gen) {
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

at::Tensor Head(int64_t classes, int64_t dim, at::Generator& gen) {
  return Randn({classes, dim}, gen) / std::sqrt(static_cast<double>(dim));
}

Named BaseTensors(const BenchModelOptions& o) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const double scale = 1.0 / std::sqrt(static_cast<double>(o.dim));
  Named base;
  base.emplace_back("emb.weight", Randn({o.vocab, o.dim}, gen));
  for (int64_t i = 0; i < o.layers; ++i) {
    base.emplace_back(LayerName(i) + ".weight", Randn({o.dim, o.dim}, gen) * scale);
    base.emplace_back(LayerName(i) + ".bias", at::zeros({o.dim}));
  }
  base.emplace_back("head.weight", Head(2, o.dim, gen));
  base.emplace_back("head.bias", at::zeros({2}));
  return base;
}

// A fine-tuning-like delta for a 2-D tensor `w`: structured low rank plus dense noise.
at::Tensor MatrixDelta(const at::Tensor& w, const BenchModelOptions& o, at::Generator& gen) {
  const int64_t m = w.size(0), n = w.size(1);
  const int64_t k = std::min<int64_t>(o.delta_rank, std::min(m, n));
  // Singular-value-like weights 1, 1/2, 1/3, ...: a few dominant directions, then a tail.
  const at::Tensor decay = at::reciprocal(at::arange(1, k + 1, at::kFloat));
  at::Tensor low = at::matmul(Randn({m, k}, gen) * decay.unsqueeze(0), Randn({n, k}, gen).t());
  low = low * (o.delta_scale * w.norm().item<double>() / low.norm().item<double>());
  at::Tensor noise = Randn({m, n}, gen);
  noise = noise * (o.noise_fraction * low.norm().item<double>() / noise.norm().item<double>());
  return low + noise;
}

// Router examples of expert t: lengths in [seq_len / 2, seq_len], ids from its band.
Named RouterData(int64_t t, const BenchModelOptions& o) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + kRouterSeedOffset + t);
  const int64_t band = o.vocab / o.experts;
  const int64_t width = std::min(band, kRouterBandTokens);
  at::Tensor ids = at::randint(t * band, t * band + width, {o.router_examples, o.seq_len}, gen,
                               at::TensorOptions().dtype(at::kLong));
  at::Tensor lengths = at::randint(o.seq_len / 2, o.seq_len + 1, {o.router_examples, 1}, gen,
                                   at::TensorOptions().dtype(at::kLong));
  at::Tensor mask = at::arange(o.seq_len, at::kLong).unsqueeze(0).lt(lengths).to(at::kLong);
  return {{"input_ids", ids * mask}, {"attention_mask", mask}};
}

absl::Status CheckOptions(const BenchModelOptions& o) {
  if (o.vocab < 1 || o.dim < 1 || o.layers < 0 || o.experts < 1 || o.delta_rank < 1 ||
      o.router_examples < 2 || o.seq_len < 2) {
    return absl::InvalidArgumentError(
        "bench models: vocab, dim, experts, delta_rank must be >= 1, layers >= 0, "
        "router_examples and seq_len >= 2");
  }
  if (o.vocab < o.experts) {
    return absl::InvalidArgumentError(absl::StrCat("bench models: vocab ", o.vocab,
                                                   " is smaller than the expert count ",
                                                   o.experts));
  }
  return absl::OkStatus();
}

absl::Status WriteExpert(const std::string& path, const Named& base, int64_t t,
                         int64_t classes, const BenchModelOptions& o) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + kExpertSeedStride * (t + 1));
  ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path));
  for (const auto& [name, w] : base) {
    at::Tensor expert;
    if (name == "head.weight") {
      expert = Head(classes, o.dim, gen);
    } else if (name == "head.bias") {
      expert = Randn({classes}, gen) * kBiasDeltaStd;
    } else if (w.dim() >= 2) {
      expert = w + MatrixDelta(w, o, gen);
    } else {
      expert = w + Randn(w.sizes(), gen) * kBiasDeltaStd;
    }
    RETURN_IF_ERROR(writer->Add(name, expert));
  }
  writer->SetMetadata("format", "twin merge benchmark expert");
  return writer->Finish();
}

}  // namespace

absl::StatusOr<BenchModels> WriteBenchModels(const std::string& dir,
                                             const BenchModelOptions& o) {
  RETURN_IF_ERROR(CheckOptions(o));
  BenchModels out;
  try {
    at::NoGradGuard no_grad;
    const Named base = BaseTensors(o);
    for (const auto& [name, t] : base) out.num_parameters += t.numel();

    // Submodules in parameter order, each with its own type name (types are per name).
    torch::jit::Module module("BenchModel");
    for (size_t i = 0; i < base.size();) {
      const std::string sub = base[i].first.substr(0, base[i].first.find('.'));
      torch::jit::Module leaf(absl::StrCat("BenchLeaf_", sub));
      for (; i < base.size() && base[i].first.rfind(sub + ".", 0) == 0; ++i) {
        leaf.register_parameter(base[i].first.substr(sub.size() + 1), base[i].second, false);
      }
      module.register_module(sub, leaf);
    }
    module.define(ModelSource(o.layers));
    out.architecture_path = dir + "/arch.pt";
    module.save(out.architecture_path);

    out.base_path = dir + "/base.safetensors";
    RETURN_IF_ERROR(WriteSafetensors(out.base_path, base));
    for (int64_t t = 0; t < o.experts; ++t) {
      const int64_t classes = 2 + t % 3;
      out.expert_paths.push_back(absl::StrCat(dir, "/expert", t, ".safetensors"));
      RETURN_IF_ERROR(WriteExpert(out.expert_paths.back(), base, t, classes, o));
      out.router_paths.push_back(absl::StrCat(dir, "/expert", t, ".router.safetensors"));
      RETURN_IF_ERROR(WriteSafetensors(out.router_paths.back(), RouterData(t, o)));
      out.num_classes.push_back(classes);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("writing bench models to ", dir, ": ", e.what()));
  }
  return out;
}

absl::Status WriteMergeYaml(const std::string& path, const BenchModels& models,
                            const MergeYamlOptions& o) {
  if (o.num_experts < 1 || o.num_experts > static_cast<int64_t>(models.expert_paths.size())) {
    return absl::InvalidArgumentError(absl::StrCat("merge.yaml ", path, ": ", o.num_experts,
                                                   " experts asked, ",
                                                   models.expert_paths.size(), " written"));
  }
  auto base_name = [](const std::string& p) { return p.substr(p.rfind('/') + 1); };
  std::ofstream yaml(path);
  yaml << "# Merge benchmark, " << o.num_experts << " experts (written by twin-bench-models).\n"
       << "merge_method: task_arithmetic\n"
       << "base_model: " << base_name(models.base_path) << "\n"
       << "architecture: " << base_name(models.architecture_path) << "\nmodels:\n";
  for (int64_t t = 0; t < o.num_experts; ++t) {
    yaml << "  - model: " << base_name(models.expert_paths[t]) << "\n    name: expert" << t
         << "\n    router_data: " << base_name(models.router_paths[t]) << "\n";
  }
  yaml << "parameters: {lambda: " << o.lambda << "}\n"
       << "twin: {rank_policy: ratio, ratio: " << o.ratio << "}\n"
       << "router: {hidden_dim: " << o.router_hidden_dim
       << ", max_epochs: " << o.router_max_epochs << "}\n";
  if (!o.output.empty()) yaml << "output: " << o.output << "\n";
  yaml << "seed: 1\n";
  yaml.close();
  if (!yaml) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace twin::bench
