// The manifest of one artifact set version (manifest.json), and its JSON form.
//
// The manifest is the only object that makes a version visible: it is written last, and a
// reader trusts nothing that it does not list with a sha256 and a size.
//
//   ASSIGN_OR_RETURN(Manifest m, Manifest::FromJson(text));   // validates structure
//   std::string text = m.ToJson();
//
// The JSON layout is documented at the top of manifest.cc. FromJson requires every field that
// ToJson writes and ignores unknown ones (forward compatible within a schema version); a
// different schema_version is FAILED_PRECONDITION, any other problem INVALID_ARGUMENT naming
// the field path (e.g. "tasks[1].labels").
//
// Thread-safety: a plain value type.
#ifndef TWIN_CORE_STORE_MANIFEST_H_
#define TWIN_CORE_STORE_MANIFEST_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/store/ngram_spec.h"

namespace twin {

inline constexpr int kManifestSchemaVersion = 1;
// FromJson refuses larger or deeper manifests (a real one is well under a megabyte and nests
// about six levels; merge.parameters is free-form).
inline constexpr size_t kMaxManifestBytes = 64 << 20;
inline constexpr int kMaxManifestDepth = 32;

struct BlobRef {
  std::string sha256;  // lowercase hex
  uint64_t size_bytes = 0;
};

struct SourceRef {
  std::string uri;     // where the input came from (path or URI)
  std::string sha256;  // digest of the file as read
};

struct TaskEntry {
  std::string name;
  std::vector<std::string> labels;  // label names, index = class id; none for a causal LM
  SourceRef source;                 // the expert checkpoint
  std::string twin_blob;            // "twin/<name>.safetensors"
  std::vector<std::string> head_tensors;
};

// One compressed twin tensor of one task.
struct TwinTensorEntry {
  std::string task;
  std::string name;
  std::vector<int64_t> shape;  // original shape
  int64_t rows = 0;            // m of the 2-D view
  int64_t cols = 0;            // n of the 2-D view
  int64_t rank = 0;            // kept rank (0 = dropped entirely)
  double rel_error = 0.0;      // ||v - v_r||_F / ||v||_F (0 when v == 0)
  double delta_norm = 0.0;     // ||v||_F
};

// Bounds on a router spec, checked before anything is sized from it: far above any useful
// router, far below what would exhaust memory building its tensor list.
inline constexpr int64_t kMaxRouterHiddenLayers = 64;
inline constexpr int64_t kMaxRouterWidth = int64_t{1} << 20;  // input_dim, hidden_dim, num_tasks

struct RouterSpec {
  int64_t input_dim = 0;
  int64_t hidden_dim = 0;         // default 2 * input_dim
  int64_t num_hidden_layers = 2;  // Linear -> LayerNorm -> LeakyReLU -> Dropout blocks
  int64_t num_tasks = 0;
  double dropout = 0.1;
  double leaky_relu_slope = 0.01;
  double layer_norm_eps = 1e-5;
};

// Far more layers than any encoder has; the engine checks prefix_layers against its model.
inline constexpr int64_t kMaxPrefixLayers = 4096;

struct RouterEntry {
  std::string blob = "router.safetensors";
  // The router's input: the model method "embed" or "route_features", "ngram" (hashed token
  // n-gram counts from the ids, core/router/ngram_features.h; no model forward), or "prefix"
  // (a native encoder's hidden states after its first prefix_layers layers under theta*,
  // mean-pooled; the version keeps no twins in those layers, so the forward continues from
  // them: multi-stage merging).
  std::string features = "embed";
  NgramSpec ngram;            // read when features is "ngram"
  int64_t prefix_layers = 0;  // read when features is "prefix"
  RouterSpec spec;
  double validation_accuracy = 0.0;
  int64_t train_examples = 0;
  int64_t validation_examples = 0;
  int64_t epochs_run = 0;
  // confusion[i][j]: validation examples of task i routed to task j (argmax).
  std::vector<std::vector<int64_t>> confusion;
};

struct TokenizerSpec {
  // "bytes": id = byte + offset; "none": ids only; "hf": a Hugging Face tokenizer read from the
  // blobs in `files` (tokenizer.json, or vocab.txt / vocab.json + merges.txt, with their
  // tokenizer_config.json and special_tokens_map.json); pad_id, bos_id and offset unused.
  std::string type = "bytes";
  int64_t max_length = 128;
  int64_t pad_id = 0;
  int64_t bos_id = 1;  // prepended; -1 = none
  int64_t offset = 4;  // id of byte b is b + offset
  std::vector<std::string> files;  // blob names, with "hf" only
};

// A model the server can run with its own layers (core/model/), besides the TorchScript
// architecture: the Hugging Face family and its config.json, a blob of the version.
struct NativeModelEntry {
  // "bert", "roberta", "xlm-roberta" (encoders); "llama", "qwen2", "mistral" (causal LMs,
  // whose versions have no architecture blob); empty: none.
  std::string family;
  std::string config_blob;  // e.g. "hf/config.json"
};

struct Manifest {
  int schema_version = kManifestSchemaVersion;
  std::string version;
  std::string created_at;  // RFC 3339 UTC
  std::string tool_name = "twin-merge";
  std::string tool_version;

  // Model
  std::string architecture_blob = "architecture.pt";  // "" for a causal LM version
  std::string shared_blob = "shared.safetensors";
  std::string head_pattern;
  TokenizerSpec tokenizer;
  NativeModelEntry native;  // optional
  int64_t embed_dim = 0;
  int64_t num_parameters = 0;  // of one full model
  SourceRef base_model;

  // Merge
  std::string merge_method;
  nlohmann::json merge_parameters = nlohmann::json::object();

  // Twin vectors
  nlohmann::json rank_policy = nlohmann::json::object();  // {"policy": "ratio", "ratio": 0.1, ...}
  std::string twin_dtype = "F32";
  std::vector<TwinTensorEntry> twin_tensors;

  std::vector<TaskEntry> tasks;
  RouterEntry router;
  std::string report_blob = "report.md";

  // Every blob of the version except manifest.json, keyed by path relative to the version.
  std::map<std::string, BlobRef> blobs;

  std::string ToJson() const;  // pretty-printed, stable key order
  static absl::StatusOr<Manifest> FromJson(const std::string& text);

  // The blobs this manifest names in its fields, as (field path, blob name) pairs:
  // architecture_blob unless empty (a causal LM), shared_blob, every task's twin_blob,
  // router.blob, report_blob when not empty, native.config_blob and tokenizer.files. Publishing
  // requires each to be uploaded; reading requires each in `blobs`.
  std::vector<std::pair<std::string, std::string>> NamedBlobs() const;

  // Index of the task named `name`, or -1.
  int TaskIndex(const std::string& name) const;
  uint64_t TotalBlobBytes() const;

 private:
  static absl::StatusOr<Manifest> FromParsedJson(const nlohmann::json& j);
};

}  // namespace twin

#endif  // TWIN_CORE_STORE_MANIFEST_H_
