#include "bench/zoo/tiny_zoo.h"

#include <algorithm>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors.h"
#include "core/status_macros.h"

namespace twin::zoo {
namespace {

constexpr char kTinySource[] = R"JIT(
def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    x = torch.embedding(self.emb.weight, input_ids)
    h = torch.tanh(torch.linear(x, self.enc.weight, self.enc.bias))
    m = attention_mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    return torch.linear(self.embed(input_ids, attention_mask), self.head.weight, self.head.bias)
)JIT";

// The optional head-alone method: forward(x) == classify(embed(x)).
constexpr char kTinyClassifySource[] = R"JIT(
def classify(self, features: Tensor) -> Tensor:
    return torch.linear(features, self.head.weight, self.head.bias)
)JIT";

torch::jit::Module Leaf(const std::string& type, std::vector<std::pair<std::string, at::Tensor>> ps) {
  torch::jit::Module m(type);
  for (auto& [name, t] : ps) m.register_parameter(name, t, /*is_buffer=*/false);
  return m;
}

}  // namespace

torch::jit::Module MakeTinyModel(const TinyModelOptions& o) {
  torch::manual_seed(o.seed);
  const double scale = 1.0 / std::sqrt(static_cast<double>(o.dim));
  torch::jit::Module m("TinyModel");
  m.register_module("emb", Leaf("Emb", {{"weight", torch::randn({o.vocab, o.dim})}}));
  m.register_module("enc", Leaf("Enc", {{"weight", torch::randn({o.dim, o.dim}) * scale},
                                        {"bias", torch::zeros({o.dim})}}));
  m.register_module("head", Leaf("Head", {{"weight", torch::randn({o.num_classes, o.dim}) * scale},
                                          {"bias", torch::zeros({o.num_classes})}}));
  m.define(kTinySource);
  if (o.with_classify) m.define(kTinyClassifySource);
  if (o.declared_vocab > 0) {
    m.register_attribute("vocab_size", c10::IntType::get(), o.declared_vocab);
  }
  return m;
}

TinyTaskData MakeTinyTaskData(int64_t task, int64_t num_tasks, int64_t num_classes,
                              int64_t vocab, int64_t num_examples, int64_t seq_len,
                              uint64_t seed) {
  torch::manual_seed(seed * 1000003 + task);
  const int64_t band = vocab / num_tasks;
  const int64_t sub = std::max<int64_t>(1, band / num_classes);
  TinyTaskData d;
  d.labels = torch::randint(num_classes, {num_examples}, torch::kLong);
  d.input_ids = torch::zeros({num_examples, seq_len}, torch::kLong);
  d.attention_mask = torch::zeros({num_examples, seq_len}, torch::kLong);
  auto ids = d.input_ids.accessor<int64_t, 2>();
  auto mask = d.attention_mask.accessor<int64_t, 2>();
  auto labels = d.labels.accessor<int64_t, 1>();
  at::Tensor u = torch::rand({num_examples, seq_len});
  at::Tensor r = torch::randint(1 << 20, {num_examples, seq_len}, torch::kLong);
  at::Tensor len = torch::randint(seq_len / 2, seq_len + 1, {num_examples}, torch::kLong);
  auto ua = u.accessor<float, 2>();
  auto ra = r.accessor<int64_t, 2>();
  auto la = len.accessor<int64_t, 1>();
  for (int64_t i = 0; i < num_examples; ++i) {
    for (int64_t j = 0; j < la[i]; ++j) {
      int64_t tok;
      if (ua[i][j] < 0.55) {  // the label's sub-band of the task's band
        tok = task * band + labels[i] * sub + ra[i][j] % sub;
      } else if (ua[i][j] < 0.85) {  // anywhere in the task's band
        tok = task * band + ra[i][j] % band;
      } else {  // noise from the whole vocabulary
        tok = ra[i][j] % vocab;
      }
      ids[i][j] = tok;
      mask[i][j] = 1;
    }
  }
  return d;
}

double TrainTinyModel(torch::jit::Module& module, const TinyTaskData& data, int64_t steps,
                      double learning_rate) {
  module.train();
  std::vector<at::Tensor> params;
  for (const auto& p : module.parameters()) {
    p.set_requires_grad(true);
    params.push_back(p);
  }
  torch::optim::Adam opt(params, torch::optim::AdamOptions(learning_rate));
  for (int64_t s = 0; s < steps; ++s) {
    opt.zero_grad();
    at::Tensor logits = module.forward({data.input_ids, data.attention_mask}).toTensor();
    at::Tensor loss = torch::cross_entropy_loss(logits, data.labels);
    loss.backward();
    opt.step();
  }
  for (auto& p : params) p.set_requires_grad(false);
  module.eval();
  return TinyAccuracy(module, data);
}

double TinyAccuracy(torch::jit::Module& module, const TinyTaskData& data) {
  torch::NoGradGuard no_grad;
  at::Tensor logits = module.forward({data.input_ids, data.attention_mask}).toTensor();
  return logits.argmax(1).eq(data.labels).to(torch::kDouble).mean().item<double>();
}

absl::StatusOr<TinyZoo> BuildTinyZoo(const std::string& dir, const TinyZooOptions& o) {
  TinyZoo zoo;
  try {
    torch::jit::Module base =
        MakeTinyModel({o.vocab, o.dim, 2, o.seed, o.with_classify, o.declared_vocab});
    zoo.base_path = dir + "/base.pt";
    base.save(zoo.base_path);
    for (int64_t t = 0; t < o.num_tasks; ++t) {
      const int64_t classes = 2 + t % 2;
      const std::string name = absl::StrCat("task", t);
      torch::jit::Module expert = base.deepcopy();
      torch::jit::Module fresh = MakeTinyModel(
          {o.vocab, o.dim, classes, o.seed + 100 + t, o.with_classify, o.declared_vocab});
      expert.attr("head").toModule().register_parameter(
          "weight", fresh.attr("head").toModule().attr("weight").toTensor(), false);
      expert.attr("head").toModule().register_parameter(
          "bias", fresh.attr("head").toModule().attr("bias").toTensor(), false);
      TinyTaskData train =
          MakeTinyTaskData(t, o.num_tasks, classes, o.vocab, o.train_examples, o.seq_len, o.seed);
      TrainTinyModel(expert, train, o.train_steps, 0.05);
      const std::string path = absl::StrCat(dir, "/", name, ".pt");
      expert.save(path);

      TinyTaskData router = MakeTinyTaskData(t, o.num_tasks, classes, o.vocab,
                                             o.router_examples, o.seq_len, o.seed + 1);
      const std::string router_path = absl::StrCat(dir, "/", name, ".router.safetensors");
      RETURN_IF_ERROR(WriteSafetensors(
          router_path, {{"input_ids", router.input_ids}, {"attention_mask", router.attention_mask}}));

      zoo.task_names.push_back(name);
      zoo.expert_paths.push_back(path);
      zoo.router_data.push_back(router_path);
      zoo.num_classes.push_back(classes);
      zoo.test_data.push_back(MakeTinyTaskData(t, o.num_tasks, classes, o.vocab,
                                               o.test_examples, o.seq_len, o.seed + 2));
      const TinyTaskData& test = zoo.test_data.back();
      zoo.test_paths.push_back(absl::StrCat(dir, "/", name, ".test.safetensors"));
      RETURN_IF_ERROR(WriteSafetensors(zoo.test_paths.back(),
                                       {{"input_ids", test.input_ids},
                                        {"attention_mask", test.attention_mask},
                                        {"labels", test.labels}}));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the tiny zoo failed: ", e.what()));
  }
  return zoo;
}

}  // namespace twin::zoo
