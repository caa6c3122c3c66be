#include "bench/zoo/byte_zoo.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/store/manifest.h"
#include "core/io/safetensors.h"
#include "core/model/script_model.h"
#include "bench/zoo/zoo_files.h"
#include "core/status_macros.h"
#include "core/text/tokenizer.h"

namespace twin::zoo {
namespace {

constexpr int64_t kBaseClasses = 2;  // the base model's head is a placeholder

absl::StatusOr<TokenizedExamples> Tokenize(const Tokenizer& tokenizer, const TextSplit& split) {
  ASSIGN_OR_RETURN(TokenBatch batch, tokenizer.Encode(split.texts));
  TokenizedExamples out{batch.input_ids, batch.attention_mask, {}};
  if (!split.labels.empty()) {
    out.labels = at::tensor(split.labels, at::kLong);
  }
  return out;
}

// Writes path.tmp, then renames it over `path`: a reader never sees half a model.
absl::Status Save(torch::jit::Module& module, const std::string& path) {
  const std::string tmp = path + ".tmp";
  try {
    module.eval();
    module.save(tmp);
  } catch (const std::exception& e) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    return absl::InternalError(absl::StrCat("cannot save ", path, ": ", e.what()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

std::string MergeYaml(const ByteZooOptions& o, const ByteZooReport& report,
                      const std::string& store) {
  std::string y = absl::StrCat(
      "# Twin-Merging of the byte-level benchmark zoo (written by "
      "twin-zoo --size ",
      o.size, ").\n", "merge_method: task_arithmetic\nbase_model: base.pt\nmodels:\n",
      ZooMergeYamlModels(report.tasks, ".pt"));
  absl::StrAppend(&y, "tokenizer: {type: bytes, max_length: ", o.model.max_len,
                  ", pad_id: 0, bos_id: 1, offset: ", kByteOffset, "}\n",
                  ZooMergeYamlSettings(o.twin_ratio, "", store, o.seed));
  return y;
}

std::string Summary(const ByteZooOptions& o, const ByteZooReport& r) {
  const ByteTransformerOptions& m = o.model;
  std::string s = absl::StrFormat(
      "# Byte-level zoo (%s)\n\n"
      "Encoder: %d layers, width %d, %d heads, feed-forward %d, %d bytes, dropout %.2f; "
      "%d parameters per expert.\n\n"
      "Pretraining (masked bytes, %.0f%% of positions): %d texts, %d steps of %d, "
      "lr %.1e, final loss %.3f, %.1f s (%.3f s/step).\n\n"
      "Fine-tuning: %d steps of %d per task, lr %.1e.\n\n"
      "| task | classes | train | validation | test | expert validation accuracy | seconds |\n"
      "|---|---|---|---|---|---|---|\n",
      o.size, m.layers, m.dim, m.heads, m.ff_dim, m.max_len, m.dropout, r.parameters,
      100 * o.pretrain.mask_fraction, r.pretrain_texts, r.pretraining.steps, o.pretrain.batch_size,
      o.pretrain.learning_rate, r.pretraining.final_loss, r.pretraining.seconds,
      r.pretraining.seconds_per_step, o.finetune.steps, o.finetune.batch_size,
      o.finetune.learning_rate);
  for (const ByteZooTask& t : r.tasks) {
    absl::StrAppendFormat(&s, "| %s | %d | %d | %d | %d | %.4f | %.1f |\n", t.name, t.labels.size(),
                          t.train_examples, t.validation_examples, t.test_examples,
                          t.validation_accuracy, t.training.seconds);
  }
  absl::StrAppendFormat(&s, "\nTotal: %.1f s.\n", r.seconds);
  return s;
}

}  // namespace

absl::StatusOr<std::string> UnescapeTsvText(std::string_view escaped) {
  std::string out;
  out.reserve(escaped.size());
  for (size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] != '\\') {
      out += escaped[i];
      continue;
    }
    const char next = i + 1 < escaped.size() ? escaped[i + 1] : '\0';
    if (next == 'n') {
      out += '\n';
    } else if (next == 't') {
      out += '\t';
    } else if (next == '\\') {
      out += '\\';
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid escape '\\", std::string(1, next), "' at byte ", i));
    }
    ++i;
  }
  return out;
}

std::string EscapeTsvText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
  }
  return out;
}

absl::StatusOr<TextSplit> ReadTsvSplit(const std::string& path,
                                       std::vector<std::string>* label_names) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::vector<std::pair<std::string, std::string>> rows;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    if (tab == std::string::npos || tab == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected 'label<TAB>text'"));
    }
    auto text = UnescapeTsvText(std::string_view(line).substr(tab + 1));
    if (!text.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": ", text.status().message()));
    }
    rows.emplace_back(line.substr(0, tab), *std::move(text));
  }
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " has no examples"));
  if (label_names->empty()) {
    std::set<std::string> names;
    for (const auto& row : rows) names.insert(row.first);
    label_names->assign(names.begin(), names.end());
  }
  TextSplit split;
  for (size_t i = 0; i < rows.size(); ++i) {
    auto it = std::find(label_names->begin(), label_names->end(), rows[i].first);
    if (it == label_names->end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": label '", rows[i].first,
                                                     "' is not one of the train split's labels [",
                                                     absl::StrJoin(*label_names, ", "), "]"));
    }
    split.labels.push_back(it - label_names->begin());
    split.texts.push_back(std::move(rows[i].second));
  }
  return split;
}

absl::StatusOr<ByteZooOptions> ByteZooPreset(const std::string& size) {
  ByteZooOptions o;
  o.size = size;
  o.tasks = absl::StrSplit(kDefaultZooTasks, ',');
  ByteTransformerOptions& m = o.model;
  if (size == "lite") {
    m.layers = 2, m.dim = 64, m.heads = 4, m.ff_dim = 128, m.max_len = 64;
    o.pretrain.steps = 800, o.pretrain.learning_rate = 2e-3;
    o.finetune.steps = 250, o.finetune.learning_rate = 1e-3;
  } else if (size == "full") {
    m.layers = 4, m.dim = 192, m.heads = 6, m.ff_dim = 768, m.max_len = 128;
    o.pretrain.steps = 1400, o.pretrain.learning_rate = 1e-3;
    o.finetune.steps = 250, o.finetune.learning_rate = 5e-4;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown zoo size '", size, "' (expected lite or full)"));
  }
  return o;
}

absl::Status WriteRouterData(const std::string& data_dir, const ByteZooOptions& o,
                             const std::string& out_dir, const std::string& split) {
  int index = -1;
  if (split == "train") index = 0;
  if (split == "validation") index = 1;
  if (index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("router split '", split, "' is not train or validation"));
  }
  TokenizerSpec spec;
  spec.max_length = o.model.max_len;
  spec.offset = kByteOffset;
  ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::Create(spec));
  for (const std::string& task : o.tasks) {
    ASSIGN_OR_RETURN(ZooTask data, ReadZooTask(data_dir, task, o.max_train_per_task));
    ASSIGN_OR_RETURN(TokenizedExamples examples, Tokenize(*tokenizer, data.split[index]));
    RETURN_IF_ERROR(WriteSafetensors(
        absl::StrCat(out_dir, "/", task, ".router.safetensors"),
        {{"input_ids", examples.input_ids}, {"attention_mask", examples.attention_mask}}));
  }
  return absl::OkStatus();
}

absl::StatusOr<StepTimes> MeasureStepTimes(const std::string& data_dir, const ByteZooOptions& o,
                                           int64_t steps) {
  if (o.tasks.empty() || steps < 1) {
    return absl::InvalidArgumentError("measuring needs a task and at least one step");
  }
  ASSIGN_OR_RETURN(ZooTask task, ReadZooTask(data_dir, o.tasks[0], o.max_train_per_task));
  TokenizerSpec spec;
  spec.max_length = o.model.max_len;
  ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::Create(spec));
  ASSIGN_OR_RETURN(TokenizedExamples train, Tokenize(*tokenizer, task.split[0]));
  ByteTransformerOptions model = o.model;
  model.with_mlm = true;
  model.num_classes = static_cast<int64_t>(task.labels.size());
  ASSIGN_OR_RETURN(torch::jit::Module module, MakeByteTransformer(model));
  StepTimes times;
  for (int phase = 0; phase < 2; ++phase) {
    TrainOptions t = phase == 0 ? o.pretrain : o.finetune;
    t.steps = 1;  // the first step also compiles the graph
    if (phase == 0) {
      RETURN_IF_ERROR(PretrainMaskedBytes(module, train, t).status());
    } else {
      RETURN_IF_ERROR(FineTune(module, train, t).status());
    }
    t.steps = steps;
    ASSIGN_OR_RETURN(TrainStats s, phase == 0 ? PretrainMaskedBytes(module, train, t)
                                              : FineTune(module, train, t));
    (phase == 0 ? times.pretrain_seconds : times.finetune_seconds) = s.seconds_per_step;
  }
  return times;
}

absl::StatusOr<ByteZooReport> BuildByteZoo(const std::string& data_dir, const std::string& out_dir,
                                           const ByteZooOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  ASSIGN_OR_RETURN(std::vector<ZooTask> tasks, ReadZooTasks(data_dir, o));
  TokenizerSpec spec;
  spec.max_length = o.model.max_len;
  spec.offset = kByteOffset;
  ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::Create(spec));

  ByteZooReport report;
  const TextSplit corpus = PretrainingCorpus(tasks);
  report.pretrain_texts = static_cast<int64_t>(corpus.texts.size());
  ASSIGN_OR_RETURN(TokenizedExamples corpus_tokens, Tokenize(*tokenizer, corpus));
  ByteTransformerOptions model = o.model;
  model.with_mlm = true;
  model.seed = o.seed;
  ASSIGN_OR_RETURN(torch::jit::Module pretrained, MakeByteTransformer(model));
  ASSIGN_OR_RETURN(report.pretraining, PretrainZooModel(pretrained, corpus_tokens, o, ""));

  model.num_classes = kBaseClasses;
  ASSIGN_OR_RETURN(torch::jit::Module base, ExportClassifier(pretrained, model));
  RETURN_IF_ERROR(Save(base, out_dir + "/base.pt"));

  for (size_t i = 0; i < tasks.size(); ++i) {
    const ZooTask& t = tasks[i];
    ByteZooTask result;
    result.name = t.name;
    result.labels = t.labels;
    ASSIGN_OR_RETURN(TokenizedExamples train, Tokenize(*tokenizer, t.split[0]));
    ASSIGN_OR_RETURN(TokenizedExamples validation, Tokenize(*tokenizer, t.split[1]));
    ASSIGN_OR_RETURN(TokenizedExamples test, Tokenize(*tokenizer, t.split[2]));
    result.train_examples = train.input_ids.size(0);
    result.validation_examples = validation.input_ids.size(0);
    result.test_examples = test.input_ids.size(0);

    model.num_classes = static_cast<int64_t>(t.labels.size());
    model.seed = o.seed + 1 + i;  // the head's initialisation
    ASSIGN_OR_RETURN(torch::jit::Module expert, ExportClassifier(pretrained, model));
    RETURN_IF_ERROR(
        FineTuneZooExpert(expert, train, validation, o, o.seed + 1 + i, &result, &report));
    const std::string prefix = absl::StrCat(out_dir, "/", t.name);
    RETURN_IF_ERROR(Save(expert, prefix + ".pt"));
    RETURN_IF_ERROR(WriteZooTaskData(prefix, train, test));
    report.tasks.push_back(std::move(result));
  }
  RETURN_IF_ERROR(
      WriteTextFile(out_dir + "/merge.yaml", MergeYaml(o, report, ZooStoreUri(o.store, out_dir))));
  report.seconds = SecondsSince(start);
  RETURN_IF_ERROR(WriteTextFile(out_dir + "/zoo.md", Summary(o, report)));
  return report;
}

absl::Status RebuildZooModels(const std::string& zoo_dir, const ByteZooOptions& options) {
  std::vector<std::string> names = {"base"};
  names.insert(names.end(), options.tasks.begin(), options.tasks.end());
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(zoo_dir, "/", name, ".pt");
    ASSIGN_OR_RETURN(auto saved, ScriptModel::Load(path));
    auto rebuilt = RebuildWithCurrentCode(saved->module(), options.model);
    if (!rebuilt.ok()) {
      return absl::Status(rebuilt.status().code(),
                          absl::StrCat(path, ": ", rebuilt.status().message()));
    }
    RETURN_IF_ERROR(Save(*rebuilt, path));
    std::fprintf(stderr, "twin-zoo: rebuilt %s\n", path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace twin::zoo
