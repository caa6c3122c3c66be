#include "merge_offline/merge_job.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include <ATen/ATen.h>
#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/store/artifact_set.h"
#include "core/merge/merge_methods.h"
#include "core/store/object_store.h"
#include "core/router/router.h"
#include "core/router/router_input.h"
#include "core/io/safetensors.h"
#include "core/model/hf_config.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "core/model/hf_script.h"
#include "core/model/script_model.h"
#include "core/status_macros.h"
#include "core/merge/svd_compress.h"
#include "core/text/tokenizer.h"
#include "core/model/torch_runtime.h"
#include "merge_offline/internal/causal_lm.h"
#include "merge_offline/internal/inputs.h"
#include "merge_offline/internal/twin_compress.h"
#include "merge_offline/progress.h"
#include "merge_offline/report.h"

#ifndef TWIN_VERSION_STRING
#define TWIN_VERSION_STRING "0.1.0"
#endif

namespace twin {
namespace {

using merge_internal::InputModel;
using merge_internal::ModelLayout;
using merge_internal::TokenExamples;

constexpr int64_t kProbeSequenceLength = 4;
// Router hidden width for n-gram features when router.hidden_dim is 0 (2 x buckets otherwise).
constexpr int64_t kNgramRouterHiddenDim = 256;
// router.features: auto keeps the n-gram router unless the model's features route better by
// more than this (held-out accuracy): one point, the cost of a forward per request is not.
constexpr double kAutoFeatureTolerance = 0.01;
constexpr int64_t kEmbedBatchSize = 256;
// Power iterations of the randomized SVD. Fine-tuning deltas have a slowly decaying tail, on
// which 2 iterations leave the mean relative error ~1.5% above the exact truncated SVD's at
// rank ratio 0.1; 4 bring it within ~0.6% and still cost a fraction of a full SVD
// (bench/results/merge.md).
constexpr int64_t kSvdPowerIterations = 4;
// Freed heap memory kept resident before it is handed back (FreeMemoryReleaser): a few of the
// benchmark's largest tensors (16 MiB), so that small tensors reuse it without page faults.
constexpr size_t kFreeHeapSlackBytes = size_t{64} << 20;


struct Job {
  Job(const MergeJobConfig& c, bool quiet) : config(c), progress(quiet) {}
  const MergeJobConfig& config;
  Progress progress;
  std::string work;
  std::unique_ptr<ObjectStore> store;
  std::string version;
  InputModel base;
  std::vector<InputModel> experts;
  std::string head_pattern;  // merge.yaml's, or a causal LM's default (internal/causal_lm.h)
  ModelLayout layout;
  std::unique_ptr<ScriptModel> architecture;  // none for a causal LM
  // The native encoder, with twin.from_layer or a prefix router: which tensors the shared
  // prefix holds, and the router's features.
  std::unique_ptr<HfEncoder> encoder;
  // The tokenizer the version declares, and where its files are while merging.
  TokenizerSpec tokenizer;
  std::string tokenizer_dir;
  std::vector<std::string> hf_tokenizer_files;  // in the base directory
  std::vector<std::vector<std::string>> labels;
  std::vector<TokenExamples> router_examples;
  int64_t embed_dim = 0;
  MergeOptions merge_options;
  std::unique_ptr<merge_internal::WorkerPool> workers;  // compress workers
  merge_internal::FreeMemoryReleaser free_memory{kFreeHeapSlackBytes};
  int64_t num_parameters = 0;
  uint64_t expert_bytes = 0;
  Manifest manifest;
};

std::string DefaultVersion() {
  std::random_device rd;
  return absl::StrCat(absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone()), "-",
                      absl::StrFormat("%04x", rd() & 0xffff));
}

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// Where a version keeps a Hugging Face model's config and tokenizer files.
constexpr char kHfBlobDir[] = "hf/";

absl::StatusOr<Named> HeadOf(const InputModel& model, const ModelLayout& layout,
                             bool check_finite) {
  Named head;
  for (const auto& name : layout.head) {
    ASSIGN_OR_RETURN(at::Tensor t, merge_internal::ReadTensor(model, name, check_finite));
    head.emplace_back(name, t);
  }
  return head;
}

at::Tensor ProbeIds() { return at::zeros({1, kProbeSequenceLength}, at::kLong); }
at::Tensor ProbeMask() { return at::ones({1, kProbeSequenceLength}, at::kLong); }

// The version's tokenizer: merge.yaml's, or a Hugging Face base directory's own files (type
// "hf", the default for such a base when it has them), truncating to what the model's
// positions allow.
absl::Status ChooseTokenizer(Job& job) {
  const MergeJobConfig& c = job.config;
  job.tokenizer = c.tokenizer;
  const bool want_hf = c.tokenizer.type == "hf" || (job.base.hf && !c.tokenizer_given);
  if (!want_hf) return absl::OkStatus();
  if (!job.base.hf) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.type hf reads the base model's tokenizer files, but base_model ",
        c.base_model, " is not a Hugging Face directory"));
  }
  job.hf_tokenizer_files = merge_internal::HfTokenizerFiles(c.base_model);
  if (job.hf_tokenizer_files.empty()) {
    if (c.tokenizer.type == "hf") {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.type hf: ", c.base_model,
          " has no tokenizer files (tokenizer.json, tokenizer.model, spiece.model,"
          " sentencepiece.bpe.model, vocab.txt, or vocab.json + merges.txt)"));
    }
    return absl::OkStatus();  // ids-only requests, or merge.yaml's default spec
  }
  job.tokenizer.type = "hf";
  job.tokenizer.files = job.hf_tokenizer_files;
  const HfEncoderConfig& config = job.base.hf_config;
  const int64_t positions =
      job.base.hf_decoder ? job.base.hf_decoder_config.max_position_embeddings
                          : config.max_position_embeddings -
                                (config.family == HfFamily::kBert ? 0 : config.pad_token_id + 1);
  job.tokenizer.max_length = std::min(job.tokenizer.max_length, positions);
  job.tokenizer_dir = c.base_model;
  // Fails here, naming the file, when the files do not make a tokenizer.
  return Tokenizer::Create(job.tokenizer, job.tokenizer_dir).status();
}

absl::Status LoadRouterData(Job& job, int64_t vocab_size);

// twin.from_layer and router.features prefix need a Hugging Face encoder, whose layers the
// job can tell apart, and a prefix the model has.
absl::Status CheckMultiStage(Job& job) {
  const MergeJobConfig& c = job.config;
  const bool prefix_router = c.router_features == "prefix";
  if (c.twin_from_layer == 0 && !prefix_router) return absl::OkStatus();
  const bool encoder = job.base.hf && !job.base.hf_decoder;
  if (!encoder) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix_router ? "router.features prefix" : "twin.from_layer",
        " needs a Hugging Face encoder directory (BERT, RoBERTa, XLM-R) as base_model; ",
        c.base_model, " is not one"));
  }
  const int64_t layers = job.base.hf_config.num_hidden_layers;
  if (c.twin_from_layer > layers) {
    return absl::InvalidArgumentError(absl::StrCat("twin.from_layer is ", c.twin_from_layer,
                                                   " but ", c.base_model, " has ", layers,
                                                   " layers"));
  }
  if (prefix_router && c.twin_from_layer < 1) {
    return absl::InvalidArgumentError(
        "router.features prefix routes on the hidden states after the first twin.from_layer "
        "layers, which must be shared by every mixture: set twin.from_layer >= 1");
  }
  ASSIGN_OR_RETURN(job.encoder, HfEncoder::Create(job.base.hf_config));
  return absl::OkStatus();
}

// Whether merged tensor `name` keeps no twins: it belongs to the embeddings or a layer below
// twin.from_layer.
bool InSharedPrefix(const Job& job, const std::string& name) {
  return job.encoder != nullptr && job.encoder->StageOf(name) < job.config.twin_from_layer;
}

// Config, inputs, names/shapes, heads, router data, output store. Writes only scratch files.
absl::Status Validate(Job& job) {
  const MergeJobConfig& c = job.config;
  job.progress.Stage("validate");
  if (c.output.empty() && !job.store) {
    return absl::InvalidArgumentError("merge config: output is required (an object store URI)");
  }
  if (!c.output.empty()) {
    ASSIGN_OR_RETURN(job.store, OpenObjectStore(c.output));
    job.version = c.version.empty() ? DefaultVersion() : c.version;
    RETURN_IF_ERROR(ValidateVersionName(job.version));
    auto existing = job.store->Head(absl::StrCat(job.version, "/", kManifestName));
    if (existing.ok()) {
      return absl::AlreadyExistsError(absl::StrCat("version ", job.version,
                                                   " is already published in ", c.output));
    }
    if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
  }

  ASSIGN_OR_RETURN(job.base, merge_internal::OpenInputModel(c.base_model, job.work, "base"));
  for (size_t i = 0; i < c.experts.size(); ++i) {
    job.progress.Step(i + 1, c.experts.size(), c.experts[i].path);
    ASSIGN_OR_RETURN(InputModel e, merge_internal::OpenInputModel(
                                       c.experts[i].path, job.work, absl::StrCat("expert", i)));
    job.experts.push_back(std::move(e));
  }
  RETURN_IF_ERROR(merge_internal::CheckSameHfBody(job.base, job.experts));
  RETURN_IF_ERROR(CheckMultiStage(job));
  job.head_pattern = merge_internal::HeadPatternFor(c, job.base);
  ASSIGN_OR_RETURN(job.layout, merge_internal::CheckLayout(
                                   job.base, job.experts, std::regex(job.head_pattern),
                                   /*require_head=*/!job.base.hf_decoder || c.head_pattern_given));

  for (const auto& name : job.base.reader->names()) {
    ASSIGN_OR_RETURN(TensorInfo info, job.base.reader->Info(name));
    int64_t numel = 1;
    for (int64_t d : info.shape) numel *= d;
    job.num_parameters += numel;
  }
  job.expert_bytes = static_cast<uint64_t>(job.num_parameters) * sizeof(float);
  if (job.base.hf_decoder) {
    // No architecture to probe: the native engine runs the model from its config. Its tasks
    // generate text (no labels); the router reads the prompts' n-gram counts.
    RETURN_IF_ERROR(merge_internal::CheckCausalLmJob(c, job.base, job.layout));
    job.labels.assign(c.experts.size(), {});
    job.embed_dim = job.base.hf_decoder_config.hidden_size;
    return LoadRouterData(job, job.base.hf_decoder_config.vocab_size);
  }

  std::string arch_path = c.architecture.empty() ? c.base_model : c.architecture;
  if (job.base.hf && c.architecture.empty()) {
    // The architecture of a Hugging Face base: a TorchScript module of its family with the
    // checkpoint's names (core/model/hf_script.h), so every check below and the fused path
    // work as for any model; the server runs the native model from the config.
    std::map<std::string, at::Tensor> weights;
    for (const std::string& name : job.base.reader->names()) {
      ASSIGN_OR_RETURN(weights[name], job.base.reader->Get(name));
    }
    ASSIGN_OR_RETURN(torch::jit::Module module,
                     MakeHfScriptModule(job.base.hf_config, weights));
    arch_path = job.work + "/hf_architecture.pt";
    try {
      module.save(arch_path);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("saving the architecture of ", c.base_model,
                                              ": ", e.what()));
    }
  }
  ASSIGN_OR_RETURN(job.architecture, ScriptModel::Load(arch_path));
  std::set<std::string> arch_names;
  for (const auto& [name, t] : job.architecture->NamedParameters()) arch_names.insert(name);
  const std::set<std::string> base_names(job.base.reader->names().begin(),
                                         job.base.reader->names().end());
  if (arch_names != base_names) {
    return absl::InvalidArgumentError(absl::StrCat("architecture ", arch_path,
                                                   ": its parameter names differ from the base "
                                                   "model's tensors in ",
                                                   c.base_model));
  }
  // Each expert's head decides its number of classes.
  for (size_t i = 0; i < job.experts.size(); ++i) {
    ASSIGN_OR_RETURN(Named head, HeadOf(job.experts[i], job.layout, /*check_finite=*/true));
    RETURN_IF_ERROR(Annotate(job.architecture->SetParameters(head), job.experts[i].path));
    auto logits = job.architecture->Forward(ProbeIds(), ProbeMask());
    if (!logits.ok()) {
      return Annotate(logits.status(),
                      absl::StrCat("expert ", job.experts[i].path, " with its own head"));
    }
    if (logits->dim() != 2 || logits->size(0) != 1 || logits->size(1) < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert ", job.experts[i].path, ": forward() must return [B, C] logits"));
    }
    const int64_t classes = logits->size(1);
    std::vector<std::string> labels = c.experts[i].labels;
    if (labels.empty() && job.experts[i].hf &&
        static_cast<int64_t>(job.experts[i].hf_config.labels.size()) == classes) {
      labels = job.experts[i].hf_config.labels;  // config.json's id2label
    }
    if (labels.empty()) {
      for (int64_t k = 0; k < classes; ++k) labels.push_back(absl::StrCat(k));
    } else if (static_cast<int64_t>(labels.size()) != classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "models[", i, "].labels: ", labels.size(), " labels but expert ",
          job.experts[i].path, " has ", classes, " classes"));
    }
    job.labels.push_back(std::move(labels));
  }
  ASSIGN_OR_RETURN(at::Tensor probe, job.architecture->Embed(ProbeIds(), ProbeMask()));
  if (probe.dim() != 2 || probe.size(0) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture ", arch_path, ": embed() must return [B, d] features"));
  }
  job.embed_dim = probe.size(1);
  ASSIGN_OR_RETURN(at::Tensor route_probe,
                   job.architecture->RouterFeatures(ProbeIds(), ProbeMask()));
  if (route_probe.dim() != 2 || route_probe.size(0) != 1 || route_probe.size(1) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("architecture ", arch_path, ": ",
                                                   job.architecture->router_features_method(),
                                                   "() must return [B, r] features"));
  }
  if (job.architecture->has_classify()) {
    // The server answers several tasks' rows with one embed() and classify(); a classify() that
    // is not forward()'s head would change every answer, so refuse it here already.
    absl::Status split = job.architecture->CheckClassify(ProbeIds(), ProbeMask());
    if (!split.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("architecture ", arch_path, ": ",
                                                     split.message()));
    }
  }
  // The vocabulary bounds the router data's ids: the architecture's declared vocab_size, or
  // the rows of its embedding table in the base checkpoint.
  int64_t vocab_size = job.architecture->VocabSize();
  if (!job.architecture->embedding_parameter().empty()) {
    auto table = job.base.reader->Info(job.architecture->embedding_parameter());
    if (table.ok() && table->shape.size() == 2) vocab_size = table->shape[0];
  }
  // The architecture's own weights are not used again: the router stage gives it the shared
  // expert's. Dropping them frees a model's worth of memory during the merge.
  for (const auto& name : job.layout.merged) {
    RETURN_IF_ERROR(job.architecture->SetParameter(name, at::empty({0})));
  }
  return LoadRouterData(job, vocab_size);
}

// The version's tokenizer and every task's router examples, their ids checked against the
// vocabulary.
absl::Status LoadRouterData(Job& job, int64_t vocab_size) {
  const MergeJobConfig& c = job.config;
  RETURN_IF_ERROR(ChooseTokenizer(job));
  for (size_t i = 0; i < c.experts.size(); ++i) {
    ASSIGN_OR_RETURN(TokenExamples ex,
                     merge_internal::LoadRouterExamples(c.experts[i].router_data, job.tokenizer,
                                                        c.router_max_examples_per_task,
                                                        c.seed + i, job.tokenizer_dir));
    if (ex.input_ids.size(0) < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router data ", c.experts[i].router_data, ": needs at least 2 examples"));
    }
    RETURN_IF_ERROR(CheckTokenIds(ex.input_ids, vocab_size,
                                  absl::StrCat("router data ", c.experts[i].router_data,
                                               ": input_ids")));
    job.router_examples.push_back(std::move(ex));
  }
  return absl::OkStatus();
}

// Merges tensor `name` (index `index` in merge order), streaming the experts through a
// TensorMerger: one expert tensor is held at a time, read again for the TIES methods' second
// pass. `check_finite` on the first merge of a tensor in the job, off on any later one.
absl::StatusOr<at::Tensor> MergeOne(Job& job, const std::string& name, size_t index,
                                    bool check_finite) {
  ASSIGN_OR_RETURN(at::Tensor base, merge_internal::ReadTensor(job.base, name, check_finite));
  TensorMergerOptions merger_options;
  merger_options.check_finite = false;  // ReadTensor checks, naming the file
  for (const auto& e : job.experts) {
    ASSIGN_OR_RETURN(TensorInfo info, e.reader->Info(name));
    merger_options.float64_math |= info.dtype == DType::kF64;
  }
  const std::string what = absl::StrCat("tensor '", name, "'");
  auto merger = TensorMerger::Create(base, job.merge_options, index, job.experts.size(),
                                     merger_options);
  if (!merger.ok()) return Annotate(merger.status(), what);
  for (int pass = 0; pass < (*merger)->passes(); ++pass) {
    for (size_t t = 0; t < job.experts.size(); ++t) {
      ASSIGN_OR_RETURN(at::Tensor expert, merge_internal::ReadTensor(job.experts[t], name,
                                                                     check_finite && pass == 0));
      RETURN_IF_ERROR(Annotate((*merger)->Add(t, expert), what));
      expert = at::Tensor();
      job.free_memory.Release();
    }
  }
  auto merged = (*merger)->Finish();
  if (!merged.ok()) return Annotate(merged.status(), what);
  return merged;
}

// Runs fn(t, expert t's tensor `name`) for every task on the compress workers, so at most
// one expert tensor per worker is alive at a time. The tensors were checked when merged.
absl::Status ForEachExpert(Job& job, const std::string& name,
                           const std::function<absl::Status(size_t, at::Tensor)>& fn) {
  std::vector<absl::Status> statuses(job.experts.size());
  job.workers->Run(job.experts.size(), [&](size_t t) {
    auto expert = merge_internal::ReadTensor(job.experts[t], name, /*check_finite=*/false);
    statuses[t] = expert.ok() ? fn(t, *std::move(expert)) : expert.status();
    job.free_memory.Release();
  });
  for (const absl::Status& status : statuses) RETURN_IF_ERROR(status);
  return absl::OkStatus();
}

// Dry run: read every tensor once (finite check), merge nothing. Expert heads were checked in
// Validate().
absl::Status ScanAll(Job& job) {
  job.progress.Stage("scan");
  const auto& names = job.layout.merged;
  for (size_t i = 0; i < names.size(); ++i) {
    job.progress.Step(i + 1, names.size(), names[i]);
    RETURN_IF_ERROR(merge_internal::ReadTensor(job.base, names[i], true).status());
    for (const auto& e : job.experts) {
      RETURN_IF_ERROR(merge_internal::ReadTensor(e, names[i], true).status());
    }
  }
  for (const auto& name : job.layout.head) {
    RETURN_IF_ERROR(merge_internal::ReadTensor(job.base, name, true).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<int64_t>>> BudgetRanks(Job& job) {
  job.progress.Stage("spectra (budget rank policy)");
  const size_t tasks = job.experts.size();
  std::vector<at::Tensor> spectra;
  std::vector<std::pair<int64_t, int64_t>> dims;
  std::vector<std::pair<size_t, size_t>> owner;  // (task, tensor index)
  for (size_t i = 0; i < job.layout.merged.size(); ++i) {
    const std::string& name = job.layout.merged[i];
    job.progress.Step(i + 1, job.layout.merged.size(), name);
    ASSIGN_OR_RETURN(at::Tensor shared, MergeOne(job, name, i, /*check_finite=*/true));
    if (shared.dim() < 2 || InSharedPrefix(job, name)) continue;  // no budget spent
    ASSIGN_OR_RETURN(auto md, MatrixDims(shared.sizes().vec()));
    const at::Tensor shared_f = shared.to(at::kFloat);
    std::vector<at::Tensor> tensor_spectra(tasks);
    RETURN_IF_ERROR(ForEachExpert(job, name, [&](size_t t, at::Tensor expert) -> absl::Status {
      try {
        ASSIGN_OR_RETURN(tensor_spectra[t],
                         SingularValues(merge_internal::TwinDelta(std::move(expert), shared_f)));
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("tensor '", name, "' of task ",
                                                job.config.experts[t].name, ": ", e.what()));
      }
      return absl::OkStatus();
    }));
    for (size_t t = 0; t < tasks; ++t) {
      spectra.push_back(std::move(tensor_spectra[t]));
      dims.push_back(md);
      owner.emplace_back(t, i);
    }
  }
  const size_t elem = job.config.twin_dtype == "F16" ? 2 : 4;
  std::vector<int64_t> ranks =
      AllocateBudgetRanks(spectra, dims, job.config.rank_policy.budget_bytes, elem);
  std::vector<std::vector<int64_t>> out(tasks,
                                        std::vector<int64_t>(job.layout.merged.size(), 0));
  for (size_t k = 0; k < ranks.size(); ++k) out[owner[k].first][owner[k].second] = ranks[k];
  return out;
}

struct Outputs {
  std::string shared_path;
  std::vector<std::string> twin_paths;
};

absl::Status MergeAndCompress(Job& job, Outputs* out) {
  const MergeJobConfig& c = job.config;
  const size_t tasks = job.experts.size();
  std::vector<std::vector<int64_t>> budget;
  const bool budget_policy = c.rank_policy.kind == RankPolicy::kBudget;
  if (budget_policy) {
    ASSIGN_OR_RETURN(budget, BudgetRanks(job));
  }

  out->shared_path = job.work + "/shared.safetensors";
  ASSIGN_OR_RETURN(auto shared_writer, SafetensorsWriter::Create(out->shared_path));
  std::vector<std::unique_ptr<SafetensorsWriter>> twin_writers;
  std::filesystem::create_directories(job.work + "/twin");
  for (size_t t = 0; t < tasks; ++t) {
    out->twin_paths.push_back(
        absl::StrCat(job.work, "/twin/", c.experts[t].name, ".safetensors"));
    ASSIGN_OR_RETURN(auto w, SafetensorsWriter::Create(out->twin_paths.back()));
    twin_writers.push_back(std::move(w));
  }
  const c10::ScalarType twin_type = c.twin_dtype == "F16" ? at::kHalf : at::kFloat;
  SvdOptions svd;
  svd.seed = c.seed;
  svd.power_iterations = kSvdPowerIterations;

  job.progress.Stage("merge + compress");
  const auto& names = job.layout.merged;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    job.progress.Step(i + 1, names.size(), name);
    // BudgetRanks() merged every tensor already, checking its inputs.
    ASSIGN_OR_RETURN(at::Tensor shared, MergeOne(job, name, i, !budget_policy));
    RETURN_IF_ERROR(shared_writer->Add(name, shared));
    const at::Tensor shared_f = shared.to(at::kFloat);
    // The T twin vectors of a tensor are independent: compress them on parallel workers
    // (the SVD itself runs single-threaded under OPENBLAS_NUM_THREADS=1), each reading its own
    // expert's tensor. Each task writes only its own file; manifest entries are appended in
    // task order afterwards.
    std::vector<std::optional<TwinTensorEntry>> entries(tasks);
    RETURN_IF_ERROR(ForEachExpert(job, name, [&](size_t t, at::Tensor expert) {
      return merge_internal::CompressTwin(c, name, i, shared, shared_f, std::move(expert), t,
                                          budget, svd, twin_type, !InSharedPrefix(job, name),
                                          twin_writers[t].get(), &entries[t]);
    }));
    for (size_t t = 0; t < tasks; ++t) {
      if (entries[t]) job.manifest.twin_tensors.push_back(std::move(*entries[t]));
    }
  }
  for (size_t t = 0; t < tasks; ++t) {
    // Validate()'s probes of the architecture read the heads with their checks; a causal LM
    // has no architecture, so its heads are checked here.
    ASSIGN_OR_RETURN(Named head,
                     HeadOf(job.experts[t], job.layout, /*check_finite=*/job.base.hf_decoder));
    TaskEntry& task = job.manifest.tasks[t];
    for (const auto& [name, tensor] : head) {
      RETURN_IF_ERROR(twin_writers[t]->Add(name, tensor));
      task.head_tensors.push_back(name);
    }
    twin_writers[t]->SetMetadata("task", task.name);
    RETURN_IF_ERROR(twin_writers[t]->Finish());
  }
  shared_writer->SetMetadata("format", "twin-merging shared expert");
  return shared_writer->Finish();
}

// The router trained on one input (router.features): "ngram" (n-gram counts of the ids),
// "model" (the architecture's method on theta*) or "prefix" (the native encoder's prefix).
absl::StatusOr<RouterTrainResult> TrainRouterOn(Job& job, const std::string& input,
                                                const LayerParams* shared) {
  RouterEntry entry;
  entry.features = input == "model" ? job.architecture->router_features_method() : input;
  entry.ngram = job.config.router_ngram;
  entry.prefix_layers = job.config.twin_from_layer;
  RouterModel model;
  model.script = job.architecture.get();
  if (input == "prefix") {
    model.encoder = job.encoder.get();
    model.shared = shared;
  }
  std::vector<at::Tensor> features, ids;
  for (size_t t = 0; t < job.router_examples.size(); ++t) {
    const TokenExamples& ex = job.router_examples[t];
    const int64_t n = ex.input_ids.size(0);
    for (int64_t b = 0; b < n; b += kEmbedBatchSize) {
      const int64_t e = std::min(n, b + kEmbedBatchSize);
      auto in = ComputeRouterInput(entry, model, ex.input_ids.slice(0, b, e),
                                   ex.attention_mask.slice(0, b, e));
      if (!in.ok()) {
        return Annotate(in.status(),
                        absl::StrCat("router data ", job.config.experts[t].router_data));
      }
      features.push_back(in->features.to(at::kFloat));
      job.free_memory.Release();  // the batch's activations
    }
    ids.push_back(at::full({n}, static_cast<int64_t>(t), at::kLong));
    job.progress.Step(t + 1, job.router_examples.size(), absl::StrCat(input, " features"));
  }
  job.free_memory.Release();
  RouterTrainOptions options = job.config.router;
  options.seed = job.config.seed;
  // 2 x 2048 n-gram buckets would make a router larger than many models.
  const bool ngram = input == "ngram";
  if (ngram && options.hidden_dim == 0) options.hidden_dim = kNgramRouterHiddenDim;
  ASSIGN_OR_RETURN(RouterTrainResult result,
                   TrainRouter(at::cat(features), at::cat(ids),
                               static_cast<int64_t>(job.experts.size()), options));
  result.entry.features = entry.features;
  if (ngram) result.entry.ngram = entry.ngram;
  if (input == "prefix") result.entry.prefix_layers = entry.prefix_layers;
  job.progress.Info(
      absl::StrFormat("router: %s features (%d), held-out accuracy %.4f after %d epochs",
                      result.entry.features, result.entry.spec.input_dim,
                      result.entry.validation_accuracy, result.entry.epochs_run));
  return result;
}

absl::Status TrainRouterStage(Job& job, const Outputs& out, std::string* router_path) {
  job.progress.Stage("router");
  job.free_memory.Release();
  // A causal LM has no architecture and no model features (Validate refused "model"): auto
  // means ngram.
  const std::string choice = job.base.hf_decoder ? "ngram" : job.config.router_features;
  std::map<std::string, at::Tensor> shared_tensors;
  if (!job.base.hf_decoder) {
    ASSIGN_OR_RETURN(auto shared, SafetensorsReader::Open(out.shared_path));
    for (const auto& name : shared->names()) {
      ASSIGN_OR_RETURN(at::Tensor t, shared->Get(name));
      RETURN_IF_ERROR(job.architecture->SetParameter(name, t));
      if (choice == "prefix") shared_tensors.emplace(name, t);
    }
  }
  const DenseParams shared_params(std::move(shared_tensors));
  RouterTrainResult result;
  if (choice == "auto") {
    // Both inputs, on the same held-out split: n-gram counts unless the model's features
    // route better by more than kAutoFeatureTolerance (n-grams cost no forward to serve).
    ASSIGN_OR_RETURN(RouterTrainResult by_ngram, TrainRouterOn(job, "ngram", nullptr));
    ASSIGN_OR_RETURN(RouterTrainResult by_model, TrainRouterOn(job, "model", nullptr));
    const bool model_wins = by_model.entry.validation_accuracy >
                            by_ngram.entry.validation_accuracy + kAutoFeatureTolerance;
    result = std::move(model_wins ? by_model : by_ngram);
    job.progress.Info(absl::StrFormat(
        "router: auto chose %s (held-out accuracy ngram %.4f, %s %.4f)", result.entry.features,
        by_ngram.entry.validation_accuracy, by_model.entry.features,
        by_model.entry.validation_accuracy));
  } else {
    ASSIGN_OR_RETURN(result, TrainRouterOn(job, choice, &shared_params));
  }
  job.manifest.router = result.entry;
  *router_path = job.work + "/router.safetensors";
  return WriteSafetensors(*router_path, result.router->tensors());
}

// The architecture with every parameter emptied: weights come from shared + twin blobs.
absl::Status WriteStrippedArchitecture(Job& job, const std::string& path) {
  for (const auto& [name, t] : job.architecture->NamedParameters()) {
    RETURN_IF_ERROR(job.architecture->SetParameter(name, at::empty({0}, t.options())));
  }
  return job.architecture->Save(path);
}

void FillManifest(Job& job) {
  const MergeJobConfig& c = job.config;
  Manifest& m = job.manifest;
  m.version = job.version;
  m.created_at = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  m.tool_version = TWIN_VERSION_STRING;
  m.head_pattern = job.head_pattern;
  m.tokenizer = job.tokenizer;
  m.tokenizer.files.clear();
  for (const std::string& file : job.hf_tokenizer_files) {
    m.tokenizer.files.push_back(absl::StrCat(kHfBlobDir, file));
  }
  if (job.base.hf_decoder) {
    m.native.family = HfDecoderFamilyName(job.base.hf_decoder_config.family);
    m.native.config_blob = absl::StrCat(kHfBlobDir, kHfConfigFile);
    m.architecture_blob.clear();  // run by the native engine only
  } else if (job.base.hf) {
    m.native.family = HfFamilyName(job.base.hf_config.family);
    m.native.config_blob = absl::StrCat(kHfBlobDir, kHfConfigFile);
  }
  m.embed_dim = job.embed_dim;
  m.num_parameters = job.num_parameters;
  m.base_model = {c.base_model, job.base.sha256};
  m.merge_method = MergeMethodName(c.method);
  nlohmann::json params = {{"lambda", c.lambda}, {"seed", c.seed}};
  for (const auto& e : c.experts) {
    params["weight"][e.name] = e.weight;
    if (c.method == MergeMethod::kTies) params["density"][e.name] = e.density;
    if (c.method == MergeMethod::kDareTaskArithmetic || c.method == MergeMethod::kDareTies) {
      params["drop_rate"][e.name] = e.drop_rate;
    }
  }
  m.merge_parameters = params;
  const RankPolicy& p = c.rank_policy;
  nlohmann::json policy = {{"policy", RankPolicyKindName(p.kind)}};
  switch (p.kind) {
    case RankPolicy::kRatio: policy["ratio"] = p.ratio; break;
    case RankPolicy::kRank: policy["rank"] = p.rank; break;
    case RankPolicy::kEnergy: policy["energy"] = p.energy; break;
    case RankPolicy::kBudget: policy["budget_bytes"] = p.budget_bytes; break;
  }
  if (c.twin_from_layer > 0) policy["from_layer"] = c.twin_from_layer;
  m.rank_policy = policy;
  m.twin_dtype = c.twin_dtype;
  for (size_t t = 0; t < c.experts.size(); ++t) {
    TaskEntry task;
    task.name = c.experts[t].name;
    task.labels = job.labels[t];
    task.source = {c.experts[t].path, job.experts[t].sha256};
    task.twin_blob = absl::StrCat("twin/", task.name, ".safetensors");
    m.tasks.push_back(std::move(task));
  }
}

uint64_t FileBytes(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

}  // namespace

absl::StatusOr<MergeJobResult> RunMergeJob(const MergeJobConfig& config,
                                           const MergeJobOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  Job job(config, options.quiet);
  job.progress.Info(ConfigureTorchRuntime({config.threads}));
  ASSIGN_OR_RETURN(auto work,
                   merge_internal::WorkDir::Create(options.work_dir, options.keep_work_dir));
  job.work = work->path();
  job.merge_options = config.ToMergeOptions();
  job.workers = std::make_unique<merge_internal::WorkerPool>(
      config.threads > 0 ? config.threads
                         : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

  RETURN_IF_ERROR(Validate(job));
  MergeJobResult result;
  if (options.dry_run) {
    RETURN_IF_ERROR(ScanAll(job));
    job.progress.Info(absl::StrCat("dry run: ", config.experts.size(), " experts, ",
                                   job.layout.merged.size(), " merged tensors, ",
                                   job.layout.head.size(), " head tensors; all inputs valid"));
    return result;
  }

  FillManifest(job);
  Outputs out;
  RETURN_IF_ERROR(MergeAndCompress(job, &out));
  std::string router_path;
  RETURN_IF_ERROR(TrainRouterStage(job, out, &router_path));
  const std::string arch_path = job.work + "/architecture.pt";
  if (!job.base.hf_decoder) RETURN_IF_ERROR(WriteStrippedArchitecture(job, arch_path));

  ReportSizes sizes;
  sizes.expert_bytes = job.expert_bytes;
  sizes.shared_bytes = FileBytes(out.shared_path);
  for (const auto& p : out.twin_paths) sizes.twin_bytes += FileBytes(p);
  sizes.router_bytes = FileBytes(router_path);
  sizes.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string report = RenderReport(job.manifest, sizes);
  const std::string report_path = job.work + "/report.md";
  {
    std::FILE* f = std::fopen(report_path.c_str(), "wb");
    if (f == nullptr || std::fwrite(report.data(), 1, report.size(), f) != report.size()) {
      if (f) std::fclose(f);
      return absl::InternalError(absl::StrCat("cannot write ", report_path));
    }
    std::fclose(f);
  }

  job.progress.Stage("publish");
  ArtifactPublisher publisher(job.store.get(), job.version);
  if (!job.manifest.architecture_blob.empty()) {
    RETURN_IF_ERROR(publisher.AddFile(job.manifest.architecture_blob, arch_path));
  }
  RETURN_IF_ERROR(publisher.AddFile(job.manifest.shared_blob, out.shared_path));
  for (size_t t = 0; t < out.twin_paths.size(); ++t) {
    RETURN_IF_ERROR(publisher.AddFile(job.manifest.tasks[t].twin_blob, out.twin_paths[t]));
  }
  RETURN_IF_ERROR(publisher.AddFile(job.manifest.router.blob, router_path));
  RETURN_IF_ERROR(publisher.AddFile(job.manifest.report_blob, report_path));
  if (job.base.hf) {
    // The native model's config: an encoder's is the first expert's (a classification
    // architecture; the experts' bodies were checked equal to the base's), a causal LM's the
    // base's; and the tokenizer's files.
    const std::string& config_dir =
        job.base.hf_decoder ? config.base_model : config.experts.front().path;
    RETURN_IF_ERROR(
        publisher.AddFile(job.manifest.native.config_blob,
                          (std::filesystem::path(config_dir) / kHfConfigFile).string()));
    for (size_t i = 0; i < job.hf_tokenizer_files.size(); ++i) {
      RETURN_IF_ERROR(publisher.AddFile(
          job.manifest.tokenizer.files[i],
          (std::filesystem::path(config.base_model) / job.hf_tokenizer_files[i]).string()));
    }
  }
  RETURN_IF_ERROR(publisher.Publish(job.manifest));

  ASSIGN_OR_RETURN(std::string manifest_text,
                   job.store->Get(absl::StrCat(job.version, "/", kManifestName)));
  ASSIGN_OR_RETURN(result.manifest, Manifest::FromJson(manifest_text));
  result.version = job.version;
  result.uri = job.store->UriOf(job.version);
  result.report_markdown = report;
  job.progress.Info(absl::StrCat("published ", result.uri));
  return result;
}

}  // namespace twin
