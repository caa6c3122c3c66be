#include "server/kserve_codec.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"

namespace twin {
namespace {

using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using InputTensor = inference::ModelInferRequest::InferInputTensor;

constexpr char kInt64[] = "INT64";
constexpr char kFp32[] = "FP32";
constexpr char kBytes[] = "BYTES";
constexpr size_t kInt64Bytes = sizeof(int64_t);
// Far above anything a message within the size limit can hold; keeps shape products exact.
constexpr int64_t kMaxElements = int64_t{1} << 40;

const char* const kParameters[] = {"task", "top_k", "temperature"};

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The element count of a tensor whose dimensions are all >= 1 (checked by the caller).
absl::StatusOr<int64_t> ElementCount(const InputTensor& t) {
  int64_t count = 1;
  for (int64_t d : t.shape()) {
    if (d > kMaxElements / count) {
      return Invalid(absl::StrCat("input '", t.name(), "' has shape ", ShapeText(t.shape()),
                                  ": too many elements"));
    }
    count *= d;
  }
  return count;
}

// Names of the populated InferTensorContents fields other than `expected`.
std::vector<std::string> OtherContents(const InferTensorContents& c, const std::string& expected) {
  const std::pair<const char*, int> fields[] = {
      {"bool_contents", c.bool_contents_size()},     {"int_contents", c.int_contents_size()},
      {"int64_contents", c.int64_contents_size()},   {"uint_contents", c.uint_contents_size()},
      {"uint64_contents", c.uint64_contents_size()}, {"fp32_contents", c.fp32_contents_size()},
      {"fp64_contents", c.fp64_contents_size()},     {"bytes_contents", c.bytes_contents_size()}};
  std::vector<std::string> other;
  for (const auto& [name, size] : fields) {
    if (size > 0 && expected != name) other.push_back(name);
  }
  return other;
}

absl::Status CheckDatatype(const InputTensor& t, const std::string& expected) {
  if (t.datatype() == expected) return absl::OkStatus();
  return Invalid(absl::StrCat("input '", t.name(), "' has datatype '", t.datatype(), "'; expected ",
                              expected));
}

absl::Status CheckTypedContents(const InputTensor& t, const std::string& field, int size,
                                int64_t expected) {
  if (!t.has_contents()) {
    return Invalid(absl::StrCat("input '", t.name(), "' has no data: set contents.", field,
                                " or raw_input_contents"));
  }
  std::vector<std::string> other = OtherContents(t.contents(), field);
  if (!other.empty()) {
    return Invalid(absl::StrCat("input '", t.name(), "' (", t.datatype(), ") carries data in ",
                                absl::StrJoin(other, ", "), "; ", t.datatype(),
                                " data belongs in contents.", field));
  }
  if (size != expected) {
    return Invalid(absl::StrCat("input '", t.name(), "' has ", size, " values in contents.", field,
                                "; shape ", ShapeText(t.shape()), " needs ", expected));
  }
  return absl::OkStatus();
}

// INT64 elements of `t`, from `raw` (little-endian) when non-null, else from its contents.
absl::StatusOr<std::vector<int64_t>> ReadInt64(const InputTensor& t, const std::string* raw,
                                               int raw_index) {
  ASSIGN_OR_RETURN(const int64_t count, ElementCount(t));
  std::vector<int64_t> values;
  if (raw == nullptr) {
    RETURN_IF_ERROR(
        CheckTypedContents(t, "int64_contents", t.contents().int64_contents_size(), count));
    values.assign(t.contents().int64_contents().begin(), t.contents().int64_contents().end());
    return values;
  }
  const uint64_t needed = static_cast<uint64_t>(count) * kInt64Bytes;
  if (raw->size() != needed) {
    return Invalid(absl::StrCat("raw_input_contents[", raw_index, "] (input '", t.name(), "') has ",
                                raw->size(), " bytes; ", t.datatype(), " shape ",
                                ShapeText(t.shape()), " needs ", needed));
  }
  values.resize(count);
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw->data());
  for (int64_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    for (size_t b = 0; b < kInt64Bytes; ++b) v |= uint64_t{bytes[i * kInt64Bytes + b]} << (8 * b);
    values[i] = static_cast<int64_t>(v);
  }
  return values;
}

// BYTES elements of `t`, from `raw` (length-prefixed) when non-null, else from its contents.
absl::StatusOr<std::vector<std::string>> ReadBytes(const InputTensor& t, const std::string* raw,
                                                   int raw_index) {
  ASSIGN_OR_RETURN(const int64_t count, ElementCount(t));
  if (raw == nullptr) {
    RETURN_IF_ERROR(
        CheckTypedContents(t, "bytes_contents", t.contents().bytes_contents_size(), count));
    return std::vector<std::string>(t.contents().bytes_contents().begin(),
                                    t.contents().bytes_contents().end());
  }
  std::vector<std::string> values;
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw->data());
  size_t at = 0;
  while (at < raw->size()) {
    if (raw->size() - at < kBytesLengthPrefix) {
      return Invalid(absl::StrCat("raw_input_contents[", raw_index, "] (input '", t.name(),
                                  "') ends inside the length of element ", values.size()));
    }
    uint32_t length = 0;
    for (size_t b = 0; b < kBytesLengthPrefix; ++b) length |= uint32_t{bytes[at + b]} << (8 * b);
    at += kBytesLengthPrefix;
    if (raw->size() - at < length) {
      return Invalid(absl::StrCat("raw_input_contents[", raw_index, "] (input '", t.name(),
                                  "'): element ", values.size(), " claims ", length,
                                  " bytes but only ", raw->size() - at, " remain"));
    }
    values.emplace_back(raw->data() + at, length);
    at += length;
  }
  if (static_cast<int64_t>(values.size()) != count) {
    return Invalid(absl::StrCat("raw_input_contents[", raw_index, "] (input '", t.name(),
                                "') holds ", values.size(), " elements; shape ",
                                ShapeText(t.shape()), " needs ", count));
  }
  return values;
}

absl::Status CheckRows(const InputTensor& t, int64_t rows, int max_rows) {
  if (rows > max_rows) {
    return Invalid(absl::StrCat("input '", t.name(), "' has ", rows, " rows; at most ", max_rows,
                                " per request"));
  }
  return absl::OkStatus();
}

absl::Status DecodeTokens(const InputTensor& ids, const std::string* ids_raw, int ids_index,
                          const InputTensor* mask, const std::string* mask_raw, int mask_index,
                          int max_rows, std::vector<twinmerge::v1::InferRequest>* rows) {
  RETURN_IF_ERROR(CheckDatatype(ids, kInt64));
  if (ids.shape_size() != 2 || ids.shape(0) < 1 || ids.shape(1) < 1) {
    return Invalid(absl::StrCat("input 'input_ids' has shape ", ShapeText(ids.shape()),
                                "; expected [B, L] with B >= 1 and L >= 1"));
  }
  RETURN_IF_ERROR(CheckRows(ids, ids.shape(0), max_rows));
  ASSIGN_OR_RETURN(std::vector<int64_t> id_values, ReadInt64(ids, ids_raw, ids_index));
  std::vector<int64_t> mask_values;
  if (mask != nullptr) {
    RETURN_IF_ERROR(CheckDatatype(*mask, kInt64));
    if (mask->shape_size() != 2 || mask->shape(0) != ids.shape(0) ||
        mask->shape(1) != ids.shape(1)) {
      return Invalid(absl::StrCat("input 'attention_mask' has shape ", ShapeText(mask->shape()),
                                  " but 'input_ids' has ", ShapeText(ids.shape())));
    }
    ASSIGN_OR_RETURN(mask_values, ReadInt64(*mask, mask_raw, mask_index));
  }
  const int64_t batch = ids.shape(0), length = ids.shape(1);
  rows->resize(batch);
  for (int64_t b = 0; b < batch; ++b) {
    auto* tokens = (*rows)[b].mutable_tokens();
    tokens->mutable_input_ids()->Add(id_values.begin() + b * length,
                                     id_values.begin() + (b + 1) * length);
    if (mask != nullptr) {
      tokens->mutable_attention_mask()->Add(mask_values.begin() + b * length,
                                            mask_values.begin() + (b + 1) * length);
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeText(const InputTensor& text, const std::string* raw, int raw_index,
                        int max_rows, std::vector<twinmerge::v1::InferRequest>* rows) {
  RETURN_IF_ERROR(CheckDatatype(text, kBytes));
  const bool shape_ok =
      (text.shape_size() == 1 || (text.shape_size() == 2 && text.shape(1) == 1)) &&
      text.shape(0) >= 1;
  if (!shape_ok) {
    return Invalid(absl::StrCat("input 'text' has shape ", ShapeText(text.shape()),
                                "; expected [B] or [B, 1] with B >= 1"));
  }
  RETURN_IF_ERROR(CheckRows(text, text.shape(0), max_rows));
  ASSIGN_OR_RETURN(std::vector<std::string> values, ReadBytes(text, raw, raw_index));
  rows->resize(values.size());
  for (size_t b = 0; b < values.size(); ++b) (*rows)[b].set_text(std::move(values[b]));
  return absl::OkStatus();
}

absl::Status ApplyParameters(const google::protobuf::Map<std::string, InferParameter>& params,
                             std::vector<twinmerge::v1::InferRequest>* rows) {
  for (const auto& [name, value] : params) {
    if (name == "task") {
      if (value.parameter_choice_case() != InferParameter::kStringParam) {
        return Invalid("parameter 'task' must be a string_param");
      }
      for (auto& row : *rows) row.set_task(value.string_param());
    } else if (name == "top_k") {
      constexpr int64_t kMaxTopK = std::numeric_limits<int>::max();
      int64_t k = 0;
      std::string shown;
      if (value.parameter_choice_case() == InferParameter::kInt64Param) {
        k = value.int64_param();
        shown = absl::StrCat(k);
      } else if (value.parameter_choice_case() == InferParameter::kUint64Param) {
        // Anything above int's range is rejected; clamp so the comparison below stays exact.
        k = value.uint64_param() > static_cast<uint64_t>(kMaxTopK) ? kMaxTopK + 1
                                                                   : value.uint64_param();
        shown = absl::StrCat(value.uint64_param());
      } else {
        return Invalid("parameter 'top_k' must be an int64_param or uint64_param");
      }
      if (k < 0 || k > kMaxTopK) {
        return Invalid(
            absl::StrCat("parameter 'top_k' is ", shown, "; must be >= 0 (0 = default)"));
      }
      for (auto& row : *rows) row.mutable_routing()->set_top_k(static_cast<int>(k));
    } else if (name == "temperature") {
      double t = 0;
      if (value.parameter_choice_case() == InferParameter::kDoubleParam) {
        t = value.double_param();
      } else if (value.parameter_choice_case() == InferParameter::kInt64Param) {
        t = static_cast<double>(value.int64_param());
      } else {
        return Invalid("parameter 'temperature' must be a double_param or int64_param");
      }
      if (!std::isfinite(t)) return Invalid("parameter 'temperature' is not finite");
      for (auto& row : *rows) row.mutable_routing()->set_temperature(static_cast<float>(t));
    } else {
      return Invalid(absl::StrCat("unknown parameter '", name,
                                  "' (supported: ", absl::StrJoin(kParameters, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadRequestedOutputs(const ModelInferRequest& request,
                                  std::vector<std::string>* outputs) {
  const std::set<std::string> known(std::begin(kOutputNames), std::end(kOutputNames));
  std::set<std::string> seen;
  for (const auto& out : request.outputs()) {
    if (!known.count(out.name())) {
      return Invalid(absl::StrCat("unknown output '", out.name(),
                                  "' (outputs: ", absl::StrJoin(kOutputNames, ", "), ")"));
    }
    if (!seen.insert(out.name()).second) {
      return Invalid(absl::StrCat("output '", out.name(), "' is requested twice"));
    }
    if (!out.parameters().empty()) {
      return Invalid(absl::StrCat("output '", out.name(), "': parameter '",
                                  out.parameters().begin()->first, "' is not supported"));
    }
    outputs->push_back(out.name());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedInfer> DecodeModelInfer(const ModelInferRequest& request, int max_rows) {
  DecodedInfer decoded;
  decoded.raw = request.raw_input_contents_size() > 0;
  if (decoded.raw && request.raw_input_contents_size() != request.inputs_size()) {
    return Invalid(absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(),
                                " entries but the request has ", request.inputs_size(),
                                " inputs; give one per input, in inputs order"));
  }
  std::map<std::string, int> index;  // input name -> position in inputs
  for (int i = 0; i < request.inputs_size(); ++i) {
    const InputTensor& t = request.inputs(i);
    if (t.name() != kInputIds && t.name() != kAttentionMask && t.name() != kTextInput) {
      return Invalid(absl::StrCat("unknown input '", t.name(), "' (inputs: ", kInputIds, ", ",
                                  kAttentionMask, ", ", kTextInput, ")"));
    }
    if (!index.emplace(t.name(), i).second) {
      return Invalid(absl::StrCat("input '", t.name(), "' appears twice"));
    }
    if (decoded.raw && t.has_contents()) {
      return Invalid(absl::StrCat("input '", t.name(),
                                  "' has typed contents but the request also has "
                                  "raw_input_contents; use one form for every input"));
    }
    for (int64_t d : t.shape()) {
      if (d < 1) {
        return Invalid(absl::StrCat("input '", t.name(), "' has shape ", ShapeText(t.shape()),
                                    "; every dimension must be >= 1"));
      }
    }
  }
  auto raw_of = [&](int i) { return decoded.raw ? &request.raw_input_contents(i) : nullptr; };
  const bool has_ids = index.count(kInputIds) > 0, has_text = index.count(kTextInput) > 0;
  if (has_ids && has_text) {
    return Invalid("inputs 'input_ids' and 'text' are alternatives; send one of them");
  }
  if (index.count(kAttentionMask) && !has_ids) {
    return Invalid("input 'attention_mask' needs input 'input_ids'");
  }
  if (has_ids) {
    const int ids = index[kInputIds];
    const auto mask = index.find(kAttentionMask);
    const int m = mask == index.end() ? -1 : mask->second;
    RETURN_IF_ERROR(DecodeTokens(request.inputs(ids), raw_of(ids), ids,
                                 m < 0 ? nullptr : &request.inputs(m), m < 0 ? nullptr : raw_of(m),
                                 m, max_rows, &decoded.rows));
  } else if (has_text) {
    const int text = index[kTextInput];
    RETURN_IF_ERROR(DecodeText(request.inputs(text), raw_of(text), text, max_rows, &decoded.rows));
  } else {
    return Invalid(
        "missing input: send 'input_ids' (INT64 [B, L], optionally with "
        "'attention_mask') or 'text' (BYTES [B])");
  }
  RETURN_IF_ERROR(ApplyParameters(request.parameters(), &decoded.rows));
  RETURN_IF_ERROR(ReadRequestedOutputs(request, &decoded.outputs));
  return decoded;
}

void AddModelSignature(int num_tasks, inference::ModelMetadataResponse* metadata) {
  using Tensor = inference::ModelMetadataResponse::TensorMetadata;
  auto add = [](Tensor* t, const char* name, const char* datatype, std::vector<int64_t> shape) {
    t->set_name(name);
    t->set_datatype(datatype);
    for (int64_t d : shape) t->add_shape(d);
  };
  add(metadata->add_inputs(), kInputIds, kInt64, {-1, -1});
  add(metadata->add_inputs(), kAttentionMask, kInt64, {-1, -1});
  add(metadata->add_inputs(), kTextInput, kBytes, {-1});
  add(metadata->add_outputs(), kProbabilitiesOutput, kFp32, {-1, -1});
  add(metadata->add_outputs(), kRouterWeightsOutput, kFp32, {-1, num_tasks});
  add(metadata->add_outputs(), kLabelIndexOutput, kInt64, {-1});
  add(metadata->add_outputs(), kLabelOutput, kBytes, {-1});
  add(metadata->add_outputs(), kTaskOutput, kBytes, {-1});
}

}  // namespace twin
