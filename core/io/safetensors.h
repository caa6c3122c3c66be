// Reading and writing the safetensors format
// (8-byte little-endian header length, JSON header, raw little-endian data).
//
// SafetensorsReader memory-maps the file and validates the whole header before any tensor is
// handed out: header length bounded (kMaxSafetensorsHeaderBytes), JSON well formed, every
// dtype known, shape * element size == byte length, offsets inside the data section, no two
// tensors overlapping, and the data section fully accounted for. Errors name the file and
// tensor: DATA_LOSS for a truncated file, INVALID_ARGUMENT for a malformed one, NOT_FOUND for a
// missing file or tensor.
//
// SafetensorsWriter streams: each Add() appends the tensor's bytes to a side file, so peak
// memory is one tensor; Finish() writes header + data to the destination and renames it into
// place, so a reader never sees a half-written file.
//
//   ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open("shared.safetensors"));
//   ASSIGN_OR_RETURN(at::Tensor w, reader->Get("encoder.0.attn.weight"));
//
//   ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create("out.safetensors"));
//   RETURN_IF_ERROR(writer->Add("w", w));
//   RETURN_IF_ERROR(writer->Finish());
//
// Thread-safety: a reader is immutable after Open() and safe to share; Get() may be called
// concurrently. A writer is not thread-safe. A file must not be modified in place while a
// reader has it open (replace it by rename, as the writer does).
#ifndef TWIN_CORE_IO_SAFETENSORS_H_
#define TWIN_CORE_IO_SAFETENSORS_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace twin {

// Header JSON larger than this is rejected (the reference implementation uses 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "F16", ... as written in safetensors headers.
const char* DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(const std::string& name);
size_t DTypeSize(DType dtype);
absl::StatusOr<DType> FromScalarType(c10::ScalarType type);
c10::ScalarType ToScalarType(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset inside the data section
  uint64_t end = 0;    // one past the last byte
  uint64_t num_bytes() const { return end - begin; }
};

class SafetensorsReader {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  // Tensor names in file order (order of data offsets).
  const std::vector<std::string>& names() const { return names_; }
  bool Contains(const std::string& name) const { return infos_.count(name) > 0; }
  absl::StatusOr<TensorInfo> Info(const std::string& name) const;
  // String metadata from the header's "__metadata__" entry.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Returns an owning CPU tensor (a copy of the mapped bytes) with the stored dtype.
  absl::StatusOr<at::Tensor> Get(const std::string& name) const;
  // Same, converted to `type` (e.g. kFloat for math).
  absl::StatusOr<at::Tensor> Get(const std::string& name, c10::ScalarType type) const;

 private:
  SafetensorsReader() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;  // start of the data section inside the mapping
  void* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(const std::string& path);
  ~SafetensorsWriter();  // removes side files if Finish() was not reached

  // Appends one tensor (any CPU/GPU tensor; made contiguous and copied to CPU). Names must be
  // unique and non-empty; the dtype must be one of DType.
  absl::Status Add(const std::string& name, const at::Tensor& tensor);
  void SetMetadata(const std::string& key, const std::string& value);
  // Writes the file and renames it to `path`. The writer is unusable afterwards.
  absl::Status Finish();

 private:
  SafetensorsWriter() = default;
  std::string path_;
  std::string data_path_;
  std::FILE* data_file_ = nullptr;
  uint64_t data_bytes_ = 0;
  bool finished_ = false;
  std::vector<TensorInfo> infos_;  // in Add() order, which is the header and data order
  std::set<std::string> added_names_;
  std::map<std::string, std::string> metadata_;
};

// Convenience: writes all of `tensors`, in the given order, to `path`.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace twin

#endif  // TWIN_CORE_IO_SAFETENSORS_H_
