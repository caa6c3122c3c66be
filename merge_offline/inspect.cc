#include "merge_offline/inspect.h"

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/store/artifact_set.h"
#include "core/router/router.h"
#include "core/router/router_input.h"
#include "core/io/safetensors.h"
#include "core/model/hf_config.h"
#include "core/model/hf_decoder_config.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "core/model/script_model.h"
#include "core/status_macros.h"
#include "core/merge/twin_weights.h"

namespace twin {
namespace {

double Accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  return logits.argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
}

// The zoo's expert of `task`: the Hugging Face directory ZOO/<task>/ (native forward) when it
// has a config.json, else the TorchScript file ZOO/<task>.pt.
absl::StatusOr<at::Tensor> ExpertLogits(const std::string& zoo_dir, const std::string& task,
                                        const at::Tensor& ids, const at::Tensor& mask) {
  const std::string dir = absl::StrCat(zoo_dir, "/", task);
  if (IsHfModelDir(dir)) {
    ASSIGN_OR_RETURN(HfModel expert, LoadHfModel(dir));
    return expert.encoder->Forward(ids, mask, DenseParams(expert.body), DenseParams(expert.head));
  }
  ASSIGN_OR_RETURN(auto expert, ScriptModel::Load(dir + ".pt"));
  return expert->Forward(ids, mask);
}

absl::StatusOr<TaskEvaluation> EvaluateTask(const LocalArtifactSet& set, const TwinWeights& tw,
                                            const Router& router, size_t t,
                                            const InspectOptions& options) {
  const std::string& task = set.manifest.tasks[t].name;
  TaskEvaluation ev;
  ev.task = task;
  ASSIGN_OR_RETURN(auto test,
                   SafetensorsReader::Open(absl::StrCat(options.zoo_dir, "/", task,
                                                        ".test.safetensors")));
  ASSIGN_OR_RETURN(at::Tensor ids, test->Get("input_ids", at::kLong));
  ASSIGN_OR_RETURN(at::Tensor mask, test->Get("attention_mask", at::kLong));
  ASSIGN_OR_RETURN(at::Tensor labels, test->Get("labels", at::kLong));
  const int64_t n = std::min<int64_t>(ids.size(0), options.max_examples);
  ids = ids.slice(0, 0, n);
  mask = mask.slice(0, 0, n);
  labels = labels.slice(0, 0, n);
  ev.examples = n;

  ASSIGN_OR_RETURN(at::Tensor expert_logits, ExpertLogits(options.zoo_dir, task, ids, mask));
  ev.expert_accuracy = Accuracy(expert_logits, labels);

  ASSIGN_OR_RETURN(auto model, ScriptModel::Load(set.PathOf(set.manifest.architecture_blob)));
  RETURN_IF_ERROR(model->SetParameters(tw.shared()));
  RETURN_IF_ERROR(model->SetParameters(tw.head(t)));
  ASSIGN_OR_RETURN(at::Tensor shared_logits, model->Forward(ids, mask));
  ev.shared_accuracy = Accuracy(shared_logits, labels);

  RouterModel router_model;
  router_model.script = model.get();
  std::unique_ptr<HfEncoder> encoder;
  std::unique_ptr<DenseParams> shared;
  if (set.manifest.router.features == "prefix") {
    // Only the native encoder computes a prefix (the version has one: the merge job checked).
    ASSIGN_OR_RETURN(HfEncoderConfig config,
                     LoadHfEncoderConfigFile(set.PathOf(set.manifest.native.config_blob)));
    ASSIGN_OR_RETURN(encoder, HfEncoder::Create(config));
    shared = std::make_unique<DenseParams>(
        std::map<std::string, at::Tensor>(tw.shared().begin(), tw.shared().end()));
    router_model.encoder = encoder.get();
    router_model.shared = shared.get();
  }
  ASSIGN_OR_RETURN(RouterInput in, ComputeRouterInput(set.manifest.router, router_model, ids, mask));
  ASSIGN_OR_RETURN(at::Tensor weights, router.Weights(in.features, 1.0));
  ev.routing_accuracy =
      weights.argmax(1).eq(static_cast<int64_t>(t)).to(at::kDouble).mean().item<double>();
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    at::Tensor w = weights[i].to(at::kDouble).contiguous();
    std::vector<double> wv(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
    ASSIGN_OR_RETURN(auto fused, tw.Fuse(wv));
    RETURN_IF_ERROR(model->SetParameters(fused));
    ASSIGN_OR_RETURN(at::Tensor logits,
                     model->Forward(ids.slice(0, i, i + 1), mask.slice(0, i, i + 1)));
    correct += logits.argmax(1).item<int64_t>() == labels[i].item<int64_t>();
  }
  ev.twin_accuracy = n ? static_cast<double>(correct) / n : 0.0;
  return ev;
}

}  // namespace

absl::StatusOr<InspectResult> InspectArtifactSet(ObjectStore* store,
                                                 const InspectOptions& options) {
  if (options.cache_dir.empty()) return absl::InvalidArgumentError("cache_dir is required");
  ASSIGN_OR_RETURN(LocalArtifactSet set,
                   FetchArtifactSet(store, options.version, options.cache_dir));
  const Manifest& m = set.manifest;
  InspectResult result;
  result.version = set.version;
  result.summary = absl::StrFormat(
      "version %s (%s, %s): %d tasks, merge %s, %d blobs (%.2f MiB), all digests verified\n"
      "router: held-out routing accuracy %.4f on %d examples\n",
      set.version, m.created_at, m.tool_version, m.tasks.size(), m.merge_method, m.blobs.size(),
      m.TotalBlobBytes() / 1048576.0, m.router.validation_accuracy,
      m.router.validation_examples);
  if (options.zoo_dir.empty()) return result;
  if (IsHfDecoderFamilyName(m.native.family)) {
    // Its tasks generate text: there are no labels to score and no TorchScript architecture.
    absl::StrAppend(&result.summary, "evaluation skipped: version ", set.version, " is a ",
                    m.native.family,
                    " causal language model; twin-inspect evaluates classifiers only\n");
    return result;
  }

  ASSIGN_OR_RETURN(auto tw, TwinWeights::Load(set, c10::kCPU));
  ASSIGN_OR_RETURN(auto router, Router::Load(set));
  absl::StrAppend(&result.summary,
                  "| task | examples | expert | shared only | Twin-Merging | routing |\n"
                  "|---|---|---|---|---|---|\n");
  for (size_t t = 0; t < m.tasks.size(); ++t) {
    ASSIGN_OR_RETURN(TaskEvaluation ev, EvaluateTask(set, *tw, *router, t, options));
    absl::StrAppend(&result.summary,
                    absl::StrFormat("| %s | %d | %.4f | %.4f | %.4f | %.4f |\n", ev.task,
                                    ev.examples, ev.expert_accuracy, ev.shared_accuracy,
                                    ev.twin_accuracy, ev.routing_accuracy));
    result.evaluations.push_back(ev);
  }
  return result;
}

}  // namespace twin
