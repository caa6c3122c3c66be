#include "bench/zoo/hf_byte_zoo.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/zoo/hf_byte_model.h"
#include "core/io/safetensors.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "bench/zoo/zoo_files.h"
#include "core/status_macros.h"

namespace twin::zoo {
namespace {

// The base's head is a placeholder (as in the TorchScript zoo): two anonymous labels.
const std::vector<std::string> kBaseLabels = {"LABEL_0", "LABEL_1"};
constexpr int64_t kParityBatch = 256;

// The native forward of the directory `dir` against `module` on `data`.
absl::StatusOr<HfNativeParity> NativeParity(const std::string& dir, torch::jit::Module& module,
                                            const TokenizedExamples& data) {
  ASSIGN_OR_RETURN(HfModel model, LoadHfModel(dir));
  const DenseParams body(model.body), head(model.head);
  HfNativeParity parity;
  try {
    c10::InferenceMode guard;
    module.eval();
    const int64_t n = data.input_ids.size(0);
    for (int64_t start = 0; start < n; start += kParityBatch) {
      const int64_t end = std::min(n, start + kParityBatch);
      at::Tensor mask = data.attention_mask.slice(0, start, end);
      const int64_t len = mask.sum(1).max().item<int64_t>();
      at::Tensor ids = data.input_ids.slice(0, start, end).slice(1, 0, len);
      mask = mask.slice(1, 0, len);
      ASSIGN_OR_RETURN(at::Tensor native, model.encoder->Forward(ids, mask, body, head));
      at::Tensor script = module.forward({ids, mask}).toTensor();
      parity.max_abs_diff =
          std::max(parity.max_abs_diff, (native - script).abs().max().item<double>());
      parity.max_abs_logit = std::max(parity.max_abs_logit, script.abs().max().item<double>());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("parity check of ", dir, ": ", e.what()));
  }
  return parity;
}

std::string MergeYaml(const ByteZooOptions& o, const ByteZooReport& report,
                      const std::string& store) {
  std::string y = absl::StrCat(
      "# Twin-Merging of the byte-level benchmark zoo in Hugging Face form (written by "
      "twin-zoo --size ",
      o.size, " --format hf).\n", "merge_method: task_arithmetic\nbase_model: ", kHfBaseDir,
      "\nmodels:\n", ZooMergeYamlModels(report.tasks, ""));
  // The router reads n-gram features: the HF module has no route_features().
  absl::StrAppend(&y, ZooMergeYamlSettings(o.twin_ratio, "ngram", store, o.seed));
  return y;
}

std::string Summary(const ByteZooOptions& o, const HfByteZooReport& hr) {
  const ByteTransformerOptions& m = o.model;
  const ByteZooReport& r = hr.zoo;
  std::string s = absl::StrFormat(
      "# Byte-level zoo (%s), Hugging Face RoBERTa\n\n"
      "Encoder: RoBERTa (post-LN), %d layers, width %d, %d heads, feed-forward %d, %d ids "
      "(<s> + %d bytes + </s>), no dropout; %d parameters per expert.\n\n"
      "Pretraining (masked bytes, %.0f%% of positions): %d texts, %d steps of %d, "
      "lr %.1e, final loss %.3f, %.1f s (%.3f s/step).\n\n"
      "Fine-tuning: %d steps of %d per task, lr %.1e.\n\n"
      "| task | classes | train | validation | test | expert validation accuracy | seconds | "
      "native - TorchScript |\n"
      "|---|---|---|---|---|---|---|---|\n",
      o.size, m.layers, m.dim, m.heads, m.ff_dim, m.max_len, m.max_len - 2, r.parameters,
      100 * o.pretrain.mask_fraction, r.pretrain_texts, r.pretraining.steps, o.pretrain.batch_size,
      o.pretrain.learning_rate, r.pretraining.final_loss, r.pretraining.seconds,
      r.pretraining.seconds_per_step, o.finetune.steps, o.finetune.batch_size,
      o.finetune.learning_rate);
  for (size_t i = 0; i < r.tasks.size(); ++i) {
    const ByteZooTask& t = r.tasks[i];
    absl::StrAppendFormat(&s, "| %s | %d | %d | %d | %d | %.4f | %.1f | %.2g of %.2g |\n", t.name,
                          t.labels.size(), t.train_examples, t.validation_examples,
                          t.test_examples, t.validation_accuracy, t.training.seconds,
                          hr.parity[i].max_abs_diff, hr.parity[i].max_abs_logit);
  }
  absl::StrAppendFormat(&s,
                        "\nLast column: the largest logit difference between the native forward "
                        "of the written directory (LoadHfModel, HfEncoder::Forward) and the "
                        "trained TorchScript module on the validation rows, of the largest "
                        "logit.\n\nTotal: %.1f s.\n",
                        r.seconds);
  return s;
}

}  // namespace

absl::StatusOr<TokenizedExamples> HfTokenize(const HfTokenizer& tokenizer, const TextSplit& split,
                                             int64_t max_length) {
  HfEncodeOptions options;
  options.max_length = static_cast<int>(max_length);
  options.pad_to_longest = true;
  ASSIGN_OR_RETURN(std::vector<HfEncoding> rows, tokenizer.EncodeBatch(split.texts, options));
  if (rows.empty()) return absl::InvalidArgumentError("no texts to tokenize");
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t len = static_cast<int64_t>(rows[0].ids.size());
  TokenizedExamples out;
  out.input_ids = at::empty({n, len}, at::kLong);
  out.attention_mask = at::empty({n, len}, at::kLong);
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < len; ++j) {
      ids[i][j] = rows[i].ids[j];
      mask[i][j] = rows[i].attention_mask[j];
    }
  }
  if (!split.labels.empty()) out.labels = at::tensor(split.labels, at::kLong);
  return out;
}

absl::StatusOr<HfByteZooReport> BuildHfByteZoo(const std::string& data_dir,
                                               const std::string& out_dir,
                                               const ByteZooOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::vector<ZooTask> tasks, ReadZooTasks(data_dir, o));
  const std::string base_dir = absl::StrCat(out_dir, "/", kHfBaseDir);

  // The tokenizer is written first, so that every id below comes from the file the merge job
  // will publish.
  RETURN_IF_ERROR(WriteHfByteTokenizer(o.model, base_dir));
  ASSIGN_OR_RETURN(auto tokenizer, HfTokenizer::Load(base_dir));
  ASSIGN_OR_RETURN(HfEncoderConfig base_config, HfByteConfig(o.model, kBaseLabels));
  ASSIGN_OR_RETURN(torch::jit::Module pretrained, MakeHfBytePretrainer(base_config, o.seed));

  HfByteZooReport hr;
  ByteZooReport& report = hr.zoo;
  const TextSplit corpus = PretrainingCorpus(tasks);
  report.pretrain_texts = static_cast<int64_t>(corpus.texts.size());
  ASSIGN_OR_RETURN(TokenizedExamples corpus_tokens, HfTokenize(*tokenizer, corpus, o.model.max_len));
  ASSIGN_OR_RETURN(report.pretraining,
                   PretrainZooModel(pretrained, corpus_tokens, o, " (HF RoBERTa)"));
  ASSIGN_OR_RETURN(torch::jit::Module base, MakeHfByteClassifier(pretrained, base_config, o.seed));
  RETURN_IF_ERROR(SaveHfByteModel(base, o.model, kBaseLabels, base_dir));

  for (size_t i = 0; i < tasks.size(); ++i) {
    const ZooTask& t = tasks[i];
    ByteZooTask result;
    result.name = t.name;
    result.labels = t.labels;
    ASSIGN_OR_RETURN(TokenizedExamples train, HfTokenize(*tokenizer, t.split[0], o.model.max_len));
    ASSIGN_OR_RETURN(TokenizedExamples validation,
                     HfTokenize(*tokenizer, t.split[1], o.model.max_len));
    ASSIGN_OR_RETURN(TokenizedExamples test, HfTokenize(*tokenizer, t.split[2], o.model.max_len));
    result.train_examples = train.input_ids.size(0);
    result.validation_examples = validation.input_ids.size(0);
    result.test_examples = test.input_ids.size(0);

    const uint64_t seed = o.seed + 1 + i;  // the head's initialisation and the batch order
    ASSIGN_OR_RETURN(HfEncoderConfig config, HfByteConfig(o.model, t.labels));
    ASSIGN_OR_RETURN(torch::jit::Module expert, MakeHfByteClassifier(pretrained, config, seed));
    RETURN_IF_ERROR(FineTuneZooExpert(expert, train, validation, o, seed, &result, &report));
    const std::string prefix = absl::StrCat(out_dir, "/", t.name);
    RETURN_IF_ERROR(SaveHfByteModel(expert, o.model, t.labels, prefix));
    ASSIGN_OR_RETURN(HfNativeParity parity, NativeParity(prefix, expert, validation));
    hr.parity.push_back(parity);
    RETURN_IF_ERROR(WriteZooTaskData(prefix, train, test));
    report.tasks.push_back(std::move(result));
  }
  RETURN_IF_ERROR(
      WriteTextFile(out_dir + "/merge.yaml", MergeYaml(o, report, ZooStoreUri(o.store, out_dir))));
  report.seconds = SecondsSince(start);
  RETURN_IF_ERROR(WriteTextFile(out_dir + "/zoo.md", Summary(o, hr)));
  return hr;
}

}  // namespace twin::zoo
