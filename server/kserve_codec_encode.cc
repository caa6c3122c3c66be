// The response half of kserve_codec.h: EncodeModelInfer.
#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "server/kserve_codec.h"

namespace twin {
namespace {

using inference::ModelInferResponse;

constexpr char kInt64[] = "INT64";
constexpr char kFp32[] = "FP32";
constexpr char kBytes[] = "BYTES";

// One output tensor before it is written in typed or raw form; one of the vectors is used.
struct Output {
  const char* datatype = kFp32;
  std::vector<int64_t> shape;
  std::vector<float> fp32;
  std::vector<int64_t> int64;
  std::vector<std::string> bytes;
};

void AppendLittleEndian(uint64_t value, size_t width_bytes, std::string* out) {
  for (size_t b = 0; b < width_bytes; ++b) out->push_back(static_cast<char>(value >> (8 * b)));
}

void Emit(const std::string& name, const Output& o, bool raw, ModelInferResponse* response) {
  auto* t = response->add_outputs();
  t->set_name(name);
  t->set_datatype(o.datatype);
  for (int64_t d : o.shape) t->add_shape(d);
  if (!raw) {
    auto* c = t->mutable_contents();
    c->mutable_fp32_contents()->Add(o.fp32.begin(), o.fp32.end());
    c->mutable_int64_contents()->Add(o.int64.begin(), o.int64.end());
    for (const auto& b : o.bytes) c->add_bytes_contents(b);
    return;
  }
  std::string* data = response->add_raw_output_contents();
  for (float f : o.fp32) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    AppendLittleEndian(bits, sizeof(bits), data);
  }
  for (int64_t v : o.int64) AppendLittleEndian(static_cast<uint64_t>(v), sizeof(int64_t), data);
  for (const auto& b : o.bytes) {
    AppendLittleEndian(b.size(), kBytesLengthPrefix, data);
    data->append(b);
  }
}

}  // namespace

absl::Status EncodeModelInfer(const DecodedInfer& decoded,
                              const std::vector<twinmerge::v1::InferResponse>& replies,
                              const std::vector<std::string>& task_names,
                              ModelInferResponse* response) {
  if (replies.size() != decoded.rows.size() || replies.empty()) {
    return absl::InternalError(absl::StrCat("ModelInfer got ", replies.size(), " replies for ",
                                            decoded.rows.size(), " rows"));
  }
  const int64_t batch = static_cast<int64_t>(replies.size());
  const int64_t num_tasks = static_cast<int64_t>(task_names.size());
  // Rows answered by tasks with fewer labels are padded with probability 0.
  int64_t classes = 0;
  for (const auto& r : replies) classes = std::max<int64_t>(classes, r.probabilities_size());
  std::map<std::string, int64_t> column;
  for (int64_t t = 0; t < num_tasks; ++t) column[task_names[t]] = t;

  std::map<std::string, Output> all;
  Output& probs = all[kProbabilitiesOutput];
  probs.shape = {batch, classes};
  probs.fp32.assign(batch * classes, 0.0f);
  Output& weights = all[kRouterWeightsOutput];
  weights.shape = {batch, num_tasks};
  weights.fp32.assign(batch * num_tasks, 0.0f);
  Output& label_index = all[kLabelIndexOutput];
  Output& label = all[kLabelOutput];
  Output& task = all[kTaskOutput];
  label_index.datatype = kInt64;
  label.datatype = task.datatype = kBytes;
  label_index.shape = label.shape = task.shape = {batch};
  for (int64_t b = 0; b < batch; ++b) {
    const auto& r = replies[b];
    std::copy(r.probabilities().begin(), r.probabilities().end(), probs.fp32.begin() + b * classes);
    for (const auto& w : r.router_weights()) {
      auto it = column.find(w.task());
      if (it != column.end()) weights.fp32[b * num_tasks + it->second] = w.weight();
    }
    label_index.int64.push_back(r.label_index());
    label.bytes.push_back(r.label());
    task.bytes.push_back(r.task());
  }
  if (decoded.outputs.empty()) {
    for (const char* name : kOutputNames) Emit(name, all[name], decoded.raw, response);
  } else {
    for (const auto& name : decoded.outputs) Emit(name, all[name], decoded.raw, response);
  }

  // Per-request parameters: a string is reported when every row shares it (always for B = 1).
  auto& params = *response->mutable_parameters();
  using Field = const std::string& (twinmerge::v1::InferResponse::*)() const;
  const std::pair<const char*, Field> shared[] = {
      {"task", &twinmerge::v1::InferResponse::task},
      {"label", &twinmerge::v1::InferResponse::label},
      {"cluster_key", &twinmerge::v1::InferResponse::cluster_key}};
  for (const auto& [name, field] : shared) {
    const std::string& first = (replies.front().*field)();
    bool same = true;
    for (const auto& r : replies) same = same && (r.*field)() == first;
    if (same) params[name].set_string_param(first);
  }
  bool all_hit = true;
  for (const auto& r : replies) all_hit = all_hit && r.cache_hit();
  params["cache_hit"].set_bool_param(all_hit);
  return absl::OkStatus();
}

}  // namespace twin
