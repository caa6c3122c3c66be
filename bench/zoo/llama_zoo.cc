#include "bench/zoo/llama_zoo.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/zoo/causal_tasks.h"
#include "bench/zoo/zoo_files.h"
#include "core/model/hf_decoder.h"
#include "core/model/layer_params.h"
#include "core/status_macros.h"
#include "core/text/hf_tokenizer.h"

namespace twin::zoo {
namespace {

// Validation rows of each task compared in every parity check.
constexpr int64_t kParityRowsPerTask = 16;

// One task's examples, as text and as ids, per split.
struct TaskData {
  std::string name;
  std::string corpus;
  std::vector<CausalPair> pairs[3];
  std::vector<CausalExample> examples[3];
};

// Rows padded with <|pad|>; labels: the next id from position first_label[i] - 1 on (the
// positions that predict the ids at first_label[i] and after), kNoLabel elsewhere.
TokenizedExamples NextTokenExamples(const std::vector<std::vector<int64_t>>& rows,
                                    const std::vector<int64_t>& first_label) {
  size_t len = 1;
  for (const auto& row : rows) len = std::max(len, row.size());
  const int64_t n = static_cast<int64_t>(rows.size());
  TokenizedExamples out;
  out.input_ids = at::full({n, static_cast<int64_t>(len)}, kLlamaPadId, at::kLong);
  out.attention_mask = at::zeros({n, static_cast<int64_t>(len)}, at::kLong);
  out.labels = at::full({n, static_cast<int64_t>(len)}, kNoLabel, at::kLong);
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<int64_t, 2>();
  auto labels = out.labels.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& row = rows[i];
    for (size_t j = 0; j < row.size(); ++j) {
      ids[i][j] = row[j];
      mask[i][j] = 1;
      if (j + 1 < row.size() && static_cast<int64_t>(j + 1) >= first_label[i]) {
        labels[i][j] = row[j + 1];
      }
    }
  }
  return out;
}

// Pretraining rows: bos, the text's bytes (one line), eos when it fits in max_len.
absl::StatusOr<TokenizedExamples> PretrainingExamples(const HfTokenizer& tokenizer,
                                                      const TextSplit& corpus, int64_t max_len) {
  std::vector<std::string> texts;
  for (const std::string& t : corpus.texts) texts.push_back(OneLine(t));
  HfEncodeOptions options;
  options.max_length = static_cast<int>(max_len);
  ASSIGN_OR_RETURN(std::vector<HfEncoding> rows, tokenizer.EncodeBatch(texts, options));
  std::vector<std::vector<int64_t>> ids;
  for (HfEncoding& row : rows) {
    if (static_cast<int64_t>(row.ids.size()) < max_len) row.ids.push_back(kLlamaEosId);
    ids.push_back(std::move(row.ids));
  }
  return NextTokenExamples(ids, std::vector<int64_t>(ids.size(), 1));
}

std::vector<int64_t> Row(const CausalExample& e) {
  std::vector<int64_t> row = e.prompt;
  row.insert(row.end(), e.target.begin(), e.target.end());
  return row;
}

// Fine-tuning rows: prompt and target, labelled on the target only.
TokenizedExamples FineTuneExamples(const std::vector<CausalExample>& examples) {
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> first;
  for (const CausalExample& e : examples) {
    rows.push_back(Row(e));
    first.push_back(static_cast<int64_t>(e.prompt.size()));
  }
  return NextTokenExamples(rows, first);
}

// The native forward of the directory `dir` against `model` on `rows`, at every real position.
absl::StatusOr<HfNativeParity> NativeParity(const std::string& dir, ByteLlama& model,
                                            const std::vector<std::vector<int64_t>>& rows) {
  ASSIGN_OR_RETURN(HfCausalLm lm, LoadHfCausalLm(dir));
  ASSIGN_OR_RETURN(at::Tensor native, lm.decoder->Logits(rows, DenseParams(lm.weights)));
  HfNativeParity parity;
  try {
    c10::InferenceMode guard;
    model->eval();
    const at::Tensor module =
        model(NextTokenExamples(rows, std::vector<int64_t>(rows.size(), 1)).input_ids);
    for (size_t b = 0; b < rows.size(); ++b) {
      const int64_t n = static_cast<int64_t>(rows[b].size());
      const at::Tensor ours = module[b].narrow(0, 0, n);
      parity.max_abs_diff = std::max(parity.max_abs_diff,
                                     (native[b].narrow(0, 0, n) - ours).abs().max().item<double>());
      parity.max_abs_logit = std::max(parity.max_abs_logit, ours.abs().max().item<double>());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("parity check of ", dir, ": ", e.what()));
  }
  return parity;
}

std::vector<CausalExample> FirstExamples(const std::vector<CausalExample>& examples, int64_t most) {
  const size_t n =
      most > 0 ? std::min(examples.size(), static_cast<size_t>(most)) : examples.size();
  return {examples.begin(), examples.begin() + n};
}

// Reads each corpus the tasks use once and makes every task's examples.
absl::StatusOr<std::vector<TaskData>> MakeTasks(const std::string& data_dir,
                                                const LlamaZooOptions& o,
                                                const HfTokenizer& tokenizer,
                                                std::vector<ZooTask>* corpora) {
  std::map<std::string, size_t> corpus_index;
  std::vector<TaskData> tasks;
  for (const std::string& name : o.tasks) {
    TaskData t;
    t.name = name;
    ASSIGN_OR_RETURN(t.corpus, CausalTaskCorpus(name));
    if (!corpus_index.count(t.corpus)) {
      ASSIGN_OR_RETURN(ZooTask corpus, ReadZooTask(data_dir, t.corpus, o.max_train_per_task));
      corpus_index[t.corpus] = corpora->size();
      corpora->push_back(std::move(corpus));
    }
    const ZooTask& corpus = (*corpora)[corpus_index[t.corpus]];
    for (int s = 0; s < 3; ++s) {
      ASSIGN_OR_RETURN(t.pairs[s],
                       MakeCausalPairs(name, corpus.split[s], corpus.labels, o.model.max_len));
      if (t.pairs[s].empty()) {
        return absl::InvalidArgumentError(absl::StrCat("task ", name, ": no examples in the ",
                                                       kZooSplits[s], " split of ", t.corpus));
      }
      ASSIGN_OR_RETURN(t.examples[s],
                       EncodeCausalPairs(tokenizer, t.pairs[s], kLlamaEosId, o.model.max_len));
    }
    tasks.push_back(std::move(t));
  }
  if (tasks.size() < 2) return absl::InvalidArgumentError("the zoo needs at least 2 tasks");
  return tasks;
}

absl::Status WriteTaskFiles(const std::string& prefix, const TaskData& t) {
  std::vector<std::string> prompts;
  for (const CausalPair& p : t.pairs[0]) prompts.push_back(p.prompt);
  RETURN_IF_ERROR(WriteTextFile(prefix + ".router.txt", absl::StrJoin(prompts, "\n") + "\n"));
  for (int s = 1; s < 3; ++s) {
    ASSIGN_OR_RETURN(std::string jsonl, CausalPairsJsonl(t.pairs[s]));
    RETURN_IF_ERROR(WriteTextFile(absl::StrCat(prefix, ".", kZooSplits[s], ".jsonl"), jsonl));
  }
  return absl::OkStatus();
}

std::string MergeYaml(const LlamaZooOptions& o, const std::string& store) {
  std::string y = absl::StrCat(
      "# Twin-Merging of the generative byte zoo (written by twin-zoo --size ", o.size,
      " --format llama).\nmerge_method: task_arithmetic\nbase_model: ", kHfBaseDir, "\nmodels:\n");
  for (const std::string& t : o.tasks) {
    absl::StrAppend(&y, "  - model: ", t, "\n    name: ", t, "\n    router_data: ", t,
                    ".router.txt\n");
  }
  // The router reads n-gram features: a causal LM has no route_features().
  absl::StrAppend(&y, ZooMergeYamlSettings(o.twin_ratio, "ngram", store, o.seed));
  return y;
}

std::string Summary(const LlamaZooOptions& o, const LlamaZooReport& r) {
  const ByteLlamaOptions& m = o.model;
  std::string s = absl::StrFormat(
      "# Generative byte zoo (%s), Hugging Face Llama\n\n"
      "Decoder: Llama, %d layers, width %d, %d heads (%d key/value heads), SwiGLU %d, %d "
      "positions, rope theta %g, %s; %d ids (256 bytes, <|endoftext|>, "
      "<|begin_of_text|>, <|pad|>); %d parameters per model.\n\n"
      "Pretraining (next byte): %d texts, %d steps of %d, lr %.1e, final loss %.3f, %.1f s "
      "(%.3f s/step).\n\n"
      "Fine-tuning (loss on the target): %d steps of %d per task, lr %.1e.\n\n"
      "Scores on the validation examples (at most %d per task): mean loss of the target in "
      "nats per token (eos included) and exact match of the greedy continuation, both through "
      "the native engine from the written directories.\n\n"
      "| task | corpus | train | validation | test | base loss | expert loss | base exact | "
      "expert exact | seconds | native - module |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n",
      o.size, m.layers, m.dim, m.heads, m.kv_heads, m.ff_dim, m.max_len, m.rope_theta,
      m.tie_word_embeddings ? "tied embeddings" : "an untied LM head", kLlamaVocab, r.parameters, r.pretrain_texts, r.pretraining.steps, o.pretrain.batch_size,
      o.pretrain.learning_rate, r.pretraining.final_loss, r.pretraining.seconds,
      r.pretraining.seconds_per_step, o.finetune.steps, o.finetune.batch_size,
      o.finetune.learning_rate, o.max_eval_examples);
  for (const LlamaZooTask& t : r.tasks) {
    absl::StrAppendFormat(&s,
                          "| %s | %s | %d | %d | %d | %.3f | %.3f | %.4f | %.4f | %.1f | "
                          "%.2g of %.2g |\n",
                          t.name, t.corpus, t.train_examples, t.validation_examples,
                          t.test_examples, t.base.mean_loss, t.expert.mean_loss, t.base.exact_match,
                          t.expert.exact_match, t.training.seconds, t.parity.max_abs_diff,
                          t.parity.max_abs_logit);
  }
  absl::StrAppendFormat(
      &s,
      "\nLast column: the largest logit difference between the native forward of the written "
      "directory (LoadHfCausalLm, HfDecoder::Logits) and the trained module on %d validation "
      "rows of at most %d ids, of the largest logit; base: %.2g of %.2g.\n\nTotal: %.1f s.\n",
      r.parity_rows, r.parity_max_len, r.base_parity.max_abs_diff, r.base_parity.max_abs_logit,
      r.seconds);
  return s;
}

}  // namespace

absl::StatusOr<LlamaZooOptions> LlamaZooPreset(const std::string& size) {
  LlamaZooOptions o;
  o.size = size;
  o.tasks = absl::StrSplit(kDefaultCausalTasks, ',');
  ByteLlamaOptions& m = o.model;
  if (size == "smoke") {
    m.layers = 2, m.dim = 32, m.heads = 4, m.kv_heads = 2, m.ff_dim = 64, m.max_len = 48;
    o.pretrain.steps = 60, o.pretrain.batch_size = 16, o.pretrain.learning_rate = 3e-3;
    o.finetune.steps = 40, o.finetune.batch_size = 16, o.finetune.learning_rate = 3e-3;
    o.max_train_per_task = 128;
    o.max_eval_examples = 32;
  } else if (size == "lite") {
    m.layers = 2, m.dim = 64, m.heads = 4, m.kv_heads = 2, m.ff_dim = 160, m.max_len = 80;
    o.pretrain.steps = 800, o.pretrain.learning_rate = 2e-3;
    o.finetune.steps = 200, o.finetune.learning_rate = 1e-3;
    o.max_eval_examples = 192;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown generative zoo size '", size, "' (expected smoke or lite)"));
  }
  return o;
}

absl::StatusOr<LlamaZooReport> BuildLlamaByteZoo(const std::string& data_dir,
                                                 const std::string& out_dir,
                                                 const LlamaZooOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const std::string base_dir = absl::StrCat(out_dir, "/", kHfBaseDir);
  // The tokenizer is written first, so that every id below comes from the file the merge job
  // will publish.
  RETURN_IF_ERROR(WriteByteLlamaTokenizer(o.model, base_dir));
  ASSIGN_OR_RETURN(auto tokenizer, HfTokenizer::Load(base_dir));
  std::vector<ZooTask> corpora;
  ASSIGN_OR_RETURN(std::vector<TaskData> tasks, MakeTasks(data_dir, o, *tokenizer, &corpora));

  LlamaZooReport report;
  const TextSplit corpus = PretrainingCorpus(corpora);
  report.pretrain_texts = static_cast<int64_t>(corpus.texts.size());
  ASSIGN_OR_RETURN(TokenizedExamples corpus_rows,
                   PretrainingExamples(*tokenizer, corpus, o.model.max_len));
  ASSIGN_OR_RETURN(HfDecoderConfig config, ByteLlamaConfig(o.model));
  ASSIGN_OR_RETURN(ByteLlama base, MakeByteLlama(config, o.seed));
  for (const auto& p : base->parameters()) report.parameters += p.numel();
  TrainOptions pretrain = o.pretrain;
  pretrain.seed = o.seed;
  std::fprintf(stderr, "twin-zoo: pretraining (HF Llama) on %lld texts, %lld steps\n",
               static_cast<long long>(report.pretrain_texts),
               static_cast<long long>(pretrain.steps));
  ASSIGN_OR_RETURN(report.pretraining,
                   TrainNextToken(base, corpus_rows, pretrain, "next-byte pretraining"));
  std::fprintf(stderr, "twin-zoo: pretraining loss %.3f, %.1f s\n", report.pretraining.final_loss,
               report.pretraining.seconds);
  RETURN_IF_ERROR(SaveByteLlama(base, o.model, base_dir));

  std::vector<std::vector<int64_t>> base_rows;
  for (const TaskData& t : tasks) {
    for (const CausalExample& e : FirstExamples(t.examples[1], kParityRowsPerTask)) {
      base_rows.push_back(Row(e));
      report.parity_max_len =
          std::max(report.parity_max_len, static_cast<int64_t>(base_rows.back().size()));
    }
  }
  report.parity_rows = static_cast<int64_t>(base_rows.size());
  ASSIGN_OR_RETURN(report.base_parity, NativeParity(base_dir, base, base_rows));
  ASSIGN_OR_RETURN(HfCausalLm base_lm, LoadHfCausalLm(base_dir));
  const DenseParams base_params(base_lm.weights);

  for (size_t i = 0; i < tasks.size(); ++i) {
    const TaskData& t = tasks[i];
    LlamaZooTask result;
    result.name = t.name;
    result.corpus = t.corpus;
    result.train_examples = static_cast<int64_t>(t.examples[0].size());
    result.validation_examples = static_cast<int64_t>(t.examples[1].size());
    result.test_examples = static_cast<int64_t>(t.examples[2].size());

    ASSIGN_OR_RETURN(ByteLlama expert, CopyByteLlama(base));
    TrainOptions finetune = o.finetune;
    finetune.seed = o.seed + 1 + i;  // the batch order
    ASSIGN_OR_RETURN(result.training,
                     TrainNextToken(expert, FineTuneExamples(t.examples[0]), finetune,
                                    absl::StrCat("fine-tuning ", t.name)));
    const std::string prefix = absl::StrCat(out_dir, "/", t.name);
    RETURN_IF_ERROR(SaveByteLlama(expert, o.model, prefix));
    std::vector<std::vector<int64_t>> rows;
    for (const CausalExample& e : FirstExamples(t.examples[1], kParityRowsPerTask)) {
      rows.push_back(Row(e));
    }
    ASSIGN_OR_RETURN(result.parity, NativeParity(prefix, expert, rows));

    const std::vector<CausalExample> scored = FirstExamples(t.examples[1], o.max_eval_examples);
    ASSIGN_OR_RETURN(HfCausalLm expert_lm, LoadHfCausalLm(prefix));
    ASSIGN_OR_RETURN(result.base, ScoreCausalLm(*base_lm.decoder, base_params, scored));
    ASSIGN_OR_RETURN(result.expert,
                     ScoreCausalLm(*expert_lm.decoder, DenseParams(expert_lm.weights), scored));
    std::fprintf(stderr,
                 "twin-zoo: %s: loss %.3f -> %.3f, exact match %.4f -> %.4f (base -> expert), "
                 "%.1f s\n",
                 t.name.c_str(), result.base.mean_loss, result.expert.mean_loss,
                 result.base.exact_match, result.expert.exact_match, result.training.seconds);
    RETURN_IF_ERROR(WriteTaskFiles(prefix, t));
    report.tasks.push_back(std::move(result));
  }
  RETURN_IF_ERROR(
      WriteTextFile(out_dir + "/merge.yaml", MergeYaml(o, ZooStoreUri(o.store, out_dir))));
  report.seconds = SecondsSince(start);
  RETURN_IF_ERROR(WriteTextFile(out_dir + "/zoo.md", Summary(o, report)));
  return report;
}

}  // namespace twin::zoo
