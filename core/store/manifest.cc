// manifest.json layout (schema_version 1). Keys are written in sorted order, indented by two.
//
// {
//   "schema_version": 1,
//   "version": "v2",
//   "created_at": "2024-05-01T12:00:00Z",
//   "tool": {"name": "twin-merge", "version": "0.1.0"},
//   "model": {
//     "architecture": "architecture.pt",          // blob: TorchScript module; "" or absent
//                                                 // for a causal LM (native.family llama,
//                                                 // qwen2 or mistral), which has none
//     "shared": "shared.safetensors",             // blob: theta*
//     "head_pattern": "head.*|classifier.*",
//     "tokenizer": {"type": "bytes", "max_length": 128, "pad_id": 0, "bos_id": 1, "offset": 4,
//                   "files": ["hf/tokenizer.json"]},   // blobs; optional, with type "hf"
//     "native": {"family": "roberta", "config": "hf/config.json"},   // optional; family
//                                                 // bert, roberta, xlm-roberta, llama, qwen2
//                                                 // or mistral
//     "embed_dim": 64,
//     "num_parameters": 123456,                   // of one full model
//     "base_model": {"uri": "file:///experts/base.pt", "sha256": "<64 hex or empty>"}
//   },
//   "merge": {"method": "task_arithmetic", "parameters": {"lambda": 0.3}},
//   "twin": {
//     "rank_policy": {"policy": "ratio", "ratio": 0.1},
//     "dtype": "F32",
//     "tensors": [{"task": "spam", "name": "encoder.0.weight", "shape": [64, 64], "rows": 64,
//                  "cols": 64, "rank": 6, "rel_error": 0.12, "delta_norm": 3.4}, ...]
//   },
//   "tasks": [{"name": "spam", "labels": ["ham", "spam"],
//              "source": {"uri": "file:///experts/spam.pt", "sha256": "<64 hex or empty>"},
//              "twin_blob": "twin/spam.safetensors", "head_tensors": ["head.weight"]}, ...],
//   "router": {
//     "blob": "router.safetensors",
//     "features": "embed",                      // or "route_features", "ngram" or "prefix";
//                                               // optional, default embed
//     "ngram": {"max_order": 3, "buckets": 2048},  // with features "ngram" only
//     "prefix_layers": 2,                       // with features "prefix" only, >= 1
//     "spec": {"input_dim": 64, "hidden_dim": 128, "num_hidden_layers": 2, "num_tasks": 3,
//              "dropout": 0.1, "leaky_relu_slope": 0.01, "layer_norm_eps": 1e-05},
//     "validation_accuracy": 0.97, "train_examples": 3000, "validation_examples": 600,
//     "epochs_run": 20,
//     "confusion": [[198, 2, 0], ...]           // [num_tasks][num_tasks] or []
//   },
//   "report": "report.md",                      // blob name, or "" for none
//   "blobs": {"shared.safetensors": {"sha256": "<64 lowercase hex>", "size_bytes": 1048576}, ...}
// }
//
// Every field above is required on reading except router.features (default "embed"),
// model.tokenizer.files, model.native (a version the native engine cannot run) and, for a causal
// LM only, model.architecture; unknown fields are ignored. Also checked: tasks is non-empty with
// unique non-empty names and non-empty labels (a causal LM's tasks may have none: they generate
// text); twin tensors name known tasks; router.spec dims are > 0 and num_tasks equals the number
// of tasks; confusion is empty or num_tasks x num_tasks; blob names are valid object keys; digests
// are 64 lowercase hex digits (source digests may be empty when unknown).
#include "core/store/manifest.h"

#include <exception>
#include <limits>
#include <new>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/io/bounded_json.h"
#include "core/store/object_store.h"
#include "core/status_macros.h"

namespace twin {
namespace {

using json = nlohmann::json;

constexpr int kJsonIndent = 2;
constexpr size_t kSha256HexDigits = 64;

std::string Member(const std::string& parent, absl::string_view key) {
  return parent.empty() ? std::string(key) : absl::StrCat(parent, ".", key);
}
std::string Element(const std::string& parent, size_t index) {
  return absl::StrCat(parent, "[", index, "]");
}

absl::Status FieldError(const std::string& path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("manifest field ", path, ": ", problem));
}

bool IsSha256Hex(const std::string& s) {
  if (s.size() != kSha256HexDigits) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Typed reads of one JSON value; errors name `path`.
absl::Status Read(const json& v, const std::string& path, std::string* out) {
  if (!v.is_string()) return FieldError(path, "must be a string");
  *out = v.get<std::string>();
  return absl::OkStatus();
}
absl::Status Read(const json& v, const std::string& path, int64_t* out) {
  if (!v.is_number_integer()) return FieldError(path, "must be an integer");
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return FieldError(path, "is out of range");
  }
  *out = v.get<int64_t>();
  return absl::OkStatus();
}
absl::Status Read(const json& v, const std::string& path, uint64_t* out) {
  if (!v.is_number_integer()) return FieldError(path, "must be an integer");
  if (!v.is_number_unsigned() && v.get<int64_t>() < 0) {
    return FieldError(path, "must be non-negative");
  }
  *out = v.get<uint64_t>();
  return absl::OkStatus();
}
absl::Status Read(const json& v, const std::string& path, double* out) {
  if (!v.is_number()) return FieldError(path, "must be a number");
  *out = v.get<double>();
  return absl::OkStatus();
}
absl::Status Read(const json& v, const std::string& path, json* out) {
  if (!v.is_object()) return FieldError(path, "must be an object");
  *out = v;
  return absl::OkStatus();
}
template <typename T>
absl::Status Read(const json& v, const std::string& path, std::vector<T>* out) {
  if (!v.is_array()) return FieldError(path, "must be an array");
  out->assign(v.size(), T());
  for (size_t i = 0; i < v.size(); ++i) RETURN_IF_ERROR(Read(v[i], Element(path, i), &(*out)[i]));
  return absl::OkStatus();
}

// Fields of one JSON object, each named by its path in errors.
class ObjectReader {
 public:
  static absl::StatusOr<ObjectReader> Of(const json& value, std::string path) {
    if (!value.is_object()) return FieldError(path, "must be an object");
    return ObjectReader(&value, std::move(path));
  }

  std::string PathOf(absl::string_view key) const { return Member(path_, key); }

  absl::StatusOr<const json*> Field(const char* key) const {
    const auto it = value_->find(key);
    if (it == value_->end()) return FieldError(PathOf(key), "is missing");
    return &*it;
  }
  template <typename T>
  absl::Status Get(const char* key, T* out) const {
    ASSIGN_OR_RETURN(const json* field, Field(key));
    return Read(*field, PathOf(key), out);
  }
  // Like Get, but a missing key leaves *out as it is (fields added after schema_version 1).
  template <typename T>
  absl::Status GetOptional(const char* key, T* out) const {
    if (value_->find(key) == value_->end()) return absl::OkStatus();
    return Get(key, out);
  }
  bool Has(const char* key) const { return value_->find(key) != value_->end(); }
  absl::StatusOr<ObjectReader> Object(const char* key) const {
    ASSIGN_OR_RETURN(const json* field, Field(key));
    return Of(*field, PathOf(key));
  }
  absl::StatusOr<const json*> Array(const char* key) const {
    ASSIGN_OR_RETURN(const json* field, Field(key));
    if (!field->is_array()) return FieldError(PathOf(key), "must be an array");
    return field;
  }

 private:
  ObjectReader(const json* value, std::string path) : value_(value), path_(std::move(path)) {}
  const json* value_;
  std::string path_;
};

absl::Status CheckNonNegative(const std::string& path, int64_t value) {
  if (value < 0) return FieldError(path, absl::StrCat("must be >= 0, got ", value));
  return absl::OkStatus();
}

absl::Status ReadSource(const ObjectReader& parent, const char* key, SourceRef* out) {
  ASSIGN_OR_RETURN(ObjectReader r, parent.Object(key));
  RETURN_IF_ERROR(r.Get("uri", &out->uri));
  RETURN_IF_ERROR(r.Get("sha256", &out->sha256));
  if (!out->sha256.empty() && !IsSha256Hex(out->sha256)) {
    return FieldError(r.PathOf("sha256"), "must be empty or 64 lowercase hex digits");
  }
  return absl::OkStatus();
}

bool IsCausalLmFamily(const std::string& family) {
  return family == "llama" || family == "qwen2" || family == "mistral";
}

absl::Status ReadModel(const ObjectReader& top, Manifest* m) {
  ASSIGN_OR_RETURN(ObjectReader r, top.Object("model"));
  // Absent: none (a causal LM version, checked below once model.native is read).
  m->architecture_blob.clear();
  RETURN_IF_ERROR(r.GetOptional("architecture", &m->architecture_blob));
  RETURN_IF_ERROR(r.Get("shared", &m->shared_blob));
  RETURN_IF_ERROR(r.Get("head_pattern", &m->head_pattern));
  ASSIGN_OR_RETURN(ObjectReader tok, r.Object("tokenizer"));
  RETURN_IF_ERROR(tok.Get("type", &m->tokenizer.type));
  RETURN_IF_ERROR(tok.Get("max_length", &m->tokenizer.max_length));
  RETURN_IF_ERROR(tok.Get("pad_id", &m->tokenizer.pad_id));
  RETURN_IF_ERROR(tok.Get("bos_id", &m->tokenizer.bos_id));
  RETURN_IF_ERROR(tok.Get("offset", &m->tokenizer.offset));
  RETURN_IF_ERROR(tok.GetOptional("files", &m->tokenizer.files));
  if (m->tokenizer.type == "hf" && m->tokenizer.files.empty()) {
    return FieldError(tok.PathOf("files"), "must name the tokenizer's blobs with type \"hf\"");
  }
  if (r.Has("native")) {
    ASSIGN_OR_RETURN(ObjectReader native, r.Object("native"));
    RETURN_IF_ERROR(native.Get("family", &m->native.family));
    RETURN_IF_ERROR(native.Get("config", &m->native.config_blob));
    if (m->native.family.empty() || m->native.config_blob.empty()) {
      return FieldError(r.PathOf("native"), "family and config must not be empty");
    }
  }
  // Causal language models are served by the native engine only: no TorchScript architecture.
  if (m->architecture_blob.empty() && !IsCausalLmFamily(m->native.family)) {
    return FieldError(r.PathOf("architecture"),
                      "must not be empty (only a causal LM version, model.native.family llama, "
                      "qwen2 or mistral, has no TorchScript architecture)");
  }
  RETURN_IF_ERROR(r.Get("embed_dim", &m->embed_dim));
  RETURN_IF_ERROR(CheckNonNegative(r.PathOf("embed_dim"), m->embed_dim));
  RETURN_IF_ERROR(r.Get("num_parameters", &m->num_parameters));
  RETURN_IF_ERROR(CheckNonNegative(r.PathOf("num_parameters"), m->num_parameters));
  return ReadSource(r, "base_model", &m->base_model);
}

absl::Status ReadTasks(const ObjectReader& top, Manifest* m) {
  ASSIGN_OR_RETURN(const json* tasks, top.Array("tasks"));
  if (tasks->empty()) return FieldError("tasks", "must list at least one task");
  std::set<std::string> names;
  m->tasks.assign(tasks->size(), TaskEntry());
  for (size_t i = 0; i < tasks->size(); ++i) {
    TaskEntry& task = m->tasks[i];
    ASSIGN_OR_RETURN(ObjectReader r, ObjectReader::Of((*tasks)[i], Element("tasks", i)));
    RETURN_IF_ERROR(r.Get("name", &task.name));
    if (task.name.empty()) return FieldError(r.PathOf("name"), "must not be empty");
    if (!names.insert(task.name).second) {
      return FieldError(r.PathOf("name"), absl::StrCat("duplicate task name \"", task.name, "\""));
    }
    RETURN_IF_ERROR(r.Get("labels", &task.labels));
    // A causal LM's tasks generate text: they have no labels.
    if (task.labels.empty() && !IsCausalLmFamily(m->native.family)) {
      return FieldError(r.PathOf("labels"), "must list at least one label");
    }
    RETURN_IF_ERROR(ReadSource(r, "source", &task.source));
    RETURN_IF_ERROR(r.Get("twin_blob", &task.twin_blob));
    RETURN_IF_ERROR(r.Get("head_tensors", &task.head_tensors));
  }
  return absl::OkStatus();
}

absl::Status ReadTwin(const ObjectReader& top, Manifest* m) {
  ASSIGN_OR_RETURN(ObjectReader r, top.Object("twin"));
  RETURN_IF_ERROR(r.Get("rank_policy", &m->rank_policy));
  RETURN_IF_ERROR(r.Get("dtype", &m->twin_dtype));
  ASSIGN_OR_RETURN(const json* tensors, r.Array("tensors"));
  m->twin_tensors.assign(tensors->size(), TwinTensorEntry());
  for (size_t i = 0; i < tensors->size(); ++i) {
    TwinTensorEntry& t = m->twin_tensors[i];
    ASSIGN_OR_RETURN(ObjectReader e, ObjectReader::Of((*tensors)[i], Element("twin.tensors", i)));
    RETURN_IF_ERROR(e.Get("task", &t.task));
    if (m->TaskIndex(t.task) < 0) {
      return FieldError(e.PathOf("task"), absl::StrCat("names unknown task \"", t.task, "\""));
    }
    RETURN_IF_ERROR(e.Get("name", &t.name));
    if (t.name.empty()) return FieldError(e.PathOf("name"), "must not be empty");
    RETURN_IF_ERROR(e.Get("shape", &t.shape));
    RETURN_IF_ERROR(e.Get("rows", &t.rows));
    RETURN_IF_ERROR(CheckNonNegative(e.PathOf("rows"), t.rows));
    RETURN_IF_ERROR(e.Get("cols", &t.cols));
    RETURN_IF_ERROR(CheckNonNegative(e.PathOf("cols"), t.cols));
    RETURN_IF_ERROR(e.Get("rank", &t.rank));
    RETURN_IF_ERROR(CheckNonNegative(e.PathOf("rank"), t.rank));
    RETURN_IF_ERROR(e.Get("rel_error", &t.rel_error));
    RETURN_IF_ERROR(e.Get("delta_norm", &t.delta_norm));
  }
  return absl::OkStatus();
}

absl::Status ReadRouterSpec(const ObjectReader& router, size_t num_tasks, RouterSpec* spec) {
  ASSIGN_OR_RETURN(ObjectReader r, router.Object("spec"));
  RETURN_IF_ERROR(r.Get("input_dim", &spec->input_dim));
  if (spec->input_dim <= 0) return FieldError(r.PathOf("input_dim"), "must be > 0");
  RETURN_IF_ERROR(r.Get("hidden_dim", &spec->hidden_dim));
  if (spec->hidden_dim <= 0) return FieldError(r.PathOf("hidden_dim"), "must be > 0");
  RETURN_IF_ERROR(r.Get("num_hidden_layers", &spec->num_hidden_layers));
  RETURN_IF_ERROR(CheckNonNegative(r.PathOf("num_hidden_layers"), spec->num_hidden_layers));
  if (spec->num_hidden_layers > kMaxRouterHiddenLayers) {
    return FieldError(r.PathOf("num_hidden_layers"),
                      absl::StrCat("is ", spec->num_hidden_layers, "; the limit is ",
                                   kMaxRouterHiddenLayers));
  }
  if (spec->input_dim > kMaxRouterWidth || spec->hidden_dim > kMaxRouterWidth) {
    return FieldError(r.PathOf("input_dim"),
                      absl::StrCat("input_dim and hidden_dim must be at most ", kMaxRouterWidth));
  }
  RETURN_IF_ERROR(r.Get("num_tasks", &spec->num_tasks));
  if (spec->num_tasks != static_cast<int64_t>(num_tasks)) {
    return FieldError(
        r.PathOf("num_tasks"),
        absl::StrCat("is ", spec->num_tasks, " but the manifest lists ", num_tasks, " tasks"));
  }
  RETURN_IF_ERROR(r.Get("dropout", &spec->dropout));
  if (!(spec->dropout >= 0.0 && spec->dropout < 1.0)) {
    return FieldError(r.PathOf("dropout"), "must be in [0, 1)");
  }
  RETURN_IF_ERROR(r.Get("leaky_relu_slope", &spec->leaky_relu_slope));
  RETURN_IF_ERROR(r.Get("layer_norm_eps", &spec->layer_norm_eps));
  if (!(spec->layer_norm_eps > 0.0)) return FieldError(r.PathOf("layer_norm_eps"), "must be > 0");
  return absl::OkStatus();
}

absl::Status ReadRouter(const ObjectReader& top, Manifest* m) {
  ASSIGN_OR_RETURN(ObjectReader r, top.Object("router"));
  RouterEntry& router = m->router;
  RETURN_IF_ERROR(r.Get("blob", &router.blob));
  RETURN_IF_ERROR(ReadRouterSpec(r, m->tasks.size(), &router.spec));
  RETURN_IF_ERROR(r.GetOptional("features", &router.features));
  if (router.features != "embed" && router.features != "route_features" &&
      router.features != "ngram" && router.features != "prefix") {
    return FieldError(r.PathOf("features"),
                      absl::StrCat("must be \"embed\", \"route_features\", \"ngram\" or "
                                   "\"prefix\", got \"",
                                   router.features, "\""));
  }
  if (router.features == "prefix") {
    RETURN_IF_ERROR(r.Get("prefix_layers", &router.prefix_layers));
    if (router.prefix_layers < 1 || router.prefix_layers > kMaxPrefixLayers) {
      return FieldError(r.PathOf("prefix_layers"),
                        absl::StrCat("must be in [1, ", kMaxPrefixLayers, "]"));
    }
  }
  if (router.features == "ngram") {
    ASSIGN_OR_RETURN(ObjectReader g, r.Object("ngram"));
    RETURN_IF_ERROR(g.Get("max_order", &router.ngram.max_order));
    RETURN_IF_ERROR(g.Get("buckets", &router.ngram.buckets));
    if (router.ngram.max_order < 1 || router.ngram.max_order > kMaxNgramOrder) {
      return FieldError(g.PathOf("max_order"), absl::StrCat("must be in [1, ", kMaxNgramOrder, "]"));
    }
    if (router.ngram.buckets < 1 || router.ngram.buckets > kMaxNgramBuckets) {
      return FieldError(g.PathOf("buckets"), absl::StrCat("must be in [1, ", kMaxNgramBuckets, "]"));
    }
    if (router.spec.input_dim != router.ngram.buckets) {
      return FieldError(r.PathOf("spec.input_dim"),
                        "must equal ngram.buckets (the router reads one feature per bucket)");
    }
  }
  RETURN_IF_ERROR(r.Get("validation_accuracy", &router.validation_accuracy));
  if (!(router.validation_accuracy >= 0.0 && router.validation_accuracy <= 1.0)) {
    return FieldError(r.PathOf("validation_accuracy"), "must be in [0, 1]");
  }
  RETURN_IF_ERROR(r.Get("train_examples", &router.train_examples));
  RETURN_IF_ERROR(CheckNonNegative(r.PathOf("train_examples"), router.train_examples));
  RETURN_IF_ERROR(r.Get("validation_examples", &router.validation_examples));
  RETURN_IF_ERROR(CheckNonNegative(r.PathOf("validation_examples"), router.validation_examples));
  RETURN_IF_ERROR(r.Get("epochs_run", &router.epochs_run));
  RETURN_IF_ERROR(CheckNonNegative(r.PathOf("epochs_run"), router.epochs_run));
  RETURN_IF_ERROR(r.Get("confusion", &router.confusion));
  if (router.confusion.empty()) return absl::OkStatus();
  const size_t num_tasks = m->tasks.size();
  const std::string path = r.PathOf("confusion");
  if (router.confusion.size() != num_tasks) {
    return FieldError(path, absl::StrCat("has ", router.confusion.size(), " rows, expected ",
                                         num_tasks, " (one per task) or none"));
  }
  for (size_t i = 0; i < num_tasks; ++i) {
    if (router.confusion[i].size() != num_tasks) {
      return FieldError(Element(path, i), absl::StrCat("has ", router.confusion[i].size(),
                                                       " columns, expected ", num_tasks));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadBlobs(const ObjectReader& top, Manifest* m) {
  ASSIGN_OR_RETURN(const json* blobs, top.Field("blobs"));
  if (!blobs->is_object()) return FieldError("blobs", "must be an object");
  for (const auto& [name, value] : blobs->items()) {
    const std::string path = absl::StrCat("blobs[\"", name, "\"]");
    // Blob names become local paths on the reader's side: they must be safe keys.
    absl::Status key_status = ValidateObjectKey(name);
    if (!key_status.ok()) return FieldError(path, key_status.message());
    if (name == "manifest.json") return FieldError(path, "manifest.json is not a blob");
    ASSIGN_OR_RETURN(ObjectReader r, ObjectReader::Of(value, path));
    BlobRef& blob = m->blobs[name];
    RETURN_IF_ERROR(r.Get("sha256", &blob.sha256));
    if (!IsSha256Hex(blob.sha256)) {
      return FieldError(r.PathOf("sha256"), "must be 64 lowercase hex digits");
    }
    RETURN_IF_ERROR(r.Get("size_bytes", &blob.size_bytes));
  }
  return absl::OkStatus();
}

json SourceJson(const SourceRef& s) { return json{{"uri", s.uri}, {"sha256", s.sha256}}; }

}  // namespace

std::string Manifest::ToJson() const {
  json j;
  j["schema_version"] = schema_version;
  j["version"] = version;
  j["created_at"] = created_at;
  j["tool"] = {{"name", tool_name}, {"version", tool_version}};
  j["model"] = {{"architecture", architecture_blob},
                {"shared", shared_blob},
                {"head_pattern", head_pattern},
                {"tokenizer",
                 {{"type", tokenizer.type},
                  {"max_length", tokenizer.max_length},
                  {"pad_id", tokenizer.pad_id},
                  {"bos_id", tokenizer.bos_id},
                  {"offset", tokenizer.offset}}},
                {"embed_dim", embed_dim},
                {"num_parameters", num_parameters},
                {"base_model", SourceJson(base_model)}};
  if (!tokenizer.files.empty()) j["model"]["tokenizer"]["files"] = tokenizer.files;
  if (!native.family.empty()) {
    j["model"]["native"] = {{"family", native.family}, {"config", native.config_blob}};
  }
  j["merge"] = {{"method", merge_method}, {"parameters", merge_parameters}};
  json tensors = json::array();
  for (const TwinTensorEntry& t : twin_tensors) {
    tensors.push_back({{"task", t.task},
                       {"name", t.name},
                       {"shape", t.shape},
                       {"rows", t.rows},
                       {"cols", t.cols},
                       {"rank", t.rank},
                       {"rel_error", t.rel_error},
                       {"delta_norm", t.delta_norm}});
  }
  j["twin"] = {{"rank_policy", rank_policy}, {"dtype", twin_dtype}, {"tensors", tensors}};
  json task_list = json::array();
  for (const TaskEntry& t : tasks) {
    task_list.push_back({{"name", t.name},
                         {"labels", t.labels},
                         {"source", SourceJson(t.source)},
                         {"twin_blob", t.twin_blob},
                         {"head_tensors", t.head_tensors}});
  }
  j["tasks"] = task_list;
  const RouterSpec& spec = router.spec;
  j["router"] = {{"blob", router.blob},
                 {"features", router.features},
                 {"spec",
                  {{"input_dim", spec.input_dim},
                   {"hidden_dim", spec.hidden_dim},
                   {"num_hidden_layers", spec.num_hidden_layers},
                   {"num_tasks", spec.num_tasks},
                   {"dropout", spec.dropout},
                   {"leaky_relu_slope", spec.leaky_relu_slope},
                   {"layer_norm_eps", spec.layer_norm_eps}}},
                 {"validation_accuracy", router.validation_accuracy},
                 {"train_examples", router.train_examples},
                 {"validation_examples", router.validation_examples},
                 {"epochs_run", router.epochs_run},
                 {"confusion", router.confusion}};
  if (router.features == "ngram") {
    j["router"]["ngram"] = {{"max_order", router.ngram.max_order},
                            {"buckets", router.ngram.buckets}};
  }
  if (router.features == "prefix") j["router"]["prefix_layers"] = router.prefix_layers;
  j["report"] = report_blob;
  json blob_map = json::object();
  for (const auto& [name, blob] : blobs) {
    blob_map[name] = {{"sha256", blob.sha256}, {"size_bytes", blob.size_bytes}};
  }
  j["blobs"] = blob_map;
  // `replace` keeps ToJson total: a string that is not UTF-8 is written with U+FFFD instead of
  // throwing.
  return j.dump(kJsonIndent, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace) + "\n";
}

absl::StatusOr<Manifest> Manifest::FromJson(const std::string& text) {
  if (text.size() > kMaxManifestBytes) {
    return absl::InvalidArgumentError(absl::StrCat("manifest is ", text.size(),
                                                   " bytes; the limit is ", kMaxManifestBytes));
  }
  ASSIGN_OR_RETURN(json j, ParseBoundedJson(text, JsonLimits{kMaxManifestDepth}, "manifest"));
  if (!j.is_object()) return absl::InvalidArgumentError("manifest must be an object");
  try {
    return FromParsedJson(j);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory reading a manifest of ", text.size(), " bytes"));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("manifest: ", e.what()));
  }
}

absl::StatusOr<Manifest> Manifest::FromParsedJson(const nlohmann::json& j) {
  ASSIGN_OR_RETURN(ObjectReader top, ObjectReader::Of(j, ""));
  Manifest m;
  // The schema version comes first: a newer layout should say so, not fail on a field.
  int64_t schema_version = 0;
  RETURN_IF_ERROR(top.Get("schema_version", &schema_version));
  if (schema_version != kManifestSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "manifest schema_version ", schema_version,
        " is not supported (this build reads schema_version ", kManifestSchemaVersion, ")"));
  }
  m.schema_version = static_cast<int>(schema_version);
  RETURN_IF_ERROR(top.Get("version", &m.version));
  if (m.version.empty()) return FieldError("version", "must not be empty");
  RETURN_IF_ERROR(top.Get("created_at", &m.created_at));
  ASSIGN_OR_RETURN(ObjectReader tool, top.Object("tool"));
  RETURN_IF_ERROR(tool.Get("name", &m.tool_name));
  RETURN_IF_ERROR(tool.Get("version", &m.tool_version));
  RETURN_IF_ERROR(ReadModel(top, &m));
  ASSIGN_OR_RETURN(ObjectReader merge, top.Object("merge"));
  RETURN_IF_ERROR(merge.Get("method", &m.merge_method));
  RETURN_IF_ERROR(merge.Get("parameters", &m.merge_parameters));
  RETURN_IF_ERROR(ReadTasks(top, &m));
  RETURN_IF_ERROR(ReadTwin(top, &m));
  RETURN_IF_ERROR(ReadRouter(top, &m));
  RETURN_IF_ERROR(top.Get("report", &m.report_blob));
  RETURN_IF_ERROR(ReadBlobs(top, &m));
  return m;
}

std::vector<std::pair<std::string, std::string>> Manifest::NamedBlobs() const {
  std::vector<std::pair<std::string, std::string>> named;
  if (!architecture_blob.empty()) named.emplace_back("architecture_blob", architecture_blob);
  named.emplace_back("shared_blob", shared_blob);
  for (size_t i = 0; i < tasks.size(); ++i) {
    named.emplace_back(absl::StrCat("tasks[", i, "].twin_blob"), tasks[i].twin_blob);
  }
  named.emplace_back("router.blob", router.blob);
  if (!report_blob.empty()) named.emplace_back("report_blob", report_blob);
  if (!native.family.empty()) named.emplace_back("native.config_blob", native.config_blob);
  for (size_t i = 0; i < tokenizer.files.size(); ++i) {
    named.emplace_back(absl::StrCat("tokenizer.files[", i, "]"), tokenizer.files[i]);
  }
  return named;
}

int Manifest::TaskIndex(const std::string& name) const {
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

uint64_t Manifest::TotalBlobBytes() const {
  uint64_t total_bytes = 0;
  for (const auto& [name, blob] : blobs) total_bytes += blob.size_bytes;
  return total_bytes;
}

}  // namespace twin
