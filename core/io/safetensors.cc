#include "core/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <iterator>
#include <utility>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/io/bounded_json.h"
#include "core/status_macros.h"

namespace twin {
namespace {

// The writer keeps Add() order in the header; the reader records the order it reads (which
// breaks ties between equal offsets) and builds plain objects.
using Json = nlohmann::ordered_json;
using JsonValue = nlohmann::json;

constexpr size_t kLengthPrefixBytes = 8;
// Writers pad the header so the data section starts at a multiple of this.
constexpr size_t kDataAlignmentBytes = 8;
// Finish() copies the side file into the destination in pieces of this size.
constexpr size_t kCopyChunkBytes = 1 << 20;
constexpr char kMetadataKey[] = "__metadata__";
// Files the writer creates are world-readable like ordinary outputs (mkstemp uses 0600).
constexpr mode_t kOutputFileMode = 0644;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size_bytes;
  c10::ScalarType scalar_type;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kF32, "F32", 4, c10::ScalarType::Float},
    {DType::kF16, "F16", 2, c10::ScalarType::Half},
    {DType::kBF16, "BF16", 2, c10::ScalarType::BFloat16},
    {DType::kF64, "F64", 8, c10::ScalarType::Double},
    {DType::kI64, "I64", 8, c10::ScalarType::Long},
    {DType::kI32, "I32", 4, c10::ScalarType::Int},
    {DType::kI16, "I16", 2, c10::ScalarType::Short},
    {DType::kI8, "I8", 1, c10::ScalarType::Char},
    {DType::kU8, "U8", 1, c10::ScalarType::Byte},
    {DType::kBool, "BOOL", 1, c10::ScalarType::Bool},
};

const DTypeEntry& Entry(DType dtype) { return kDTypes[static_cast<int>(dtype)]; }

constexpr bool TableMatchesEnum() {
  for (size_t i = 0; i < std::size(kDTypes); ++i) {
    if (static_cast<size_t>(kDTypes[i].dtype) != i) return false;
  }
  return true;
}
static_assert(TableMatchesEnum(), "kDTypes must be indexed by DType");

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

template <typename... Args>
absl::Status DataLoss(const Args&... args) {
  return absl::DataLossError(absl::StrCat(args...));
}

template <typename... Args>
absl::Status ErrnoError(int error, const Args&... args) {
  return absl::ErrnoToStatus(error, absl::StrCat(args...));
}

uint64_t ReadLittleEndian64(const uint8_t* bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) value |= uint64_t{bytes[i]} << (8 * i);
  return value;
}

std::string LittleEndian64(uint64_t value) {
  std::string bytes(kLengthPrefixBytes, '\0');
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) bytes[i] = static_cast<char>(value >> (8 * i));
  return bytes;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Parses one tensor entry of the header.
absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const JsonValue& entry,
                                      const std::string& path) {
  const std::string prefix = absl::StrCat(path, ": tensor '", name, "': ");
  if (!entry.is_object() || entry.size() != 3 || !entry.contains("dtype") ||
      !entry.contains("shape") || !entry.contains("data_offsets")) {
    return Invalid(prefix, "entry must be an object with exactly dtype, shape, data_offsets");
  }
  TensorInfo info;
  info.name = name;
  const JsonValue& dtype = entry["dtype"];
  if (!dtype.is_string()) return Invalid(prefix, "dtype is not a string");
  auto parsed = ParseDType(dtype.get<std::string>());
  if (!parsed.ok()) return Invalid(prefix, parsed.status().message());
  info.dtype = *parsed;

  const JsonValue& shape = entry["shape"];
  if (!shape.is_array()) return Invalid(prefix, "shape is not an array");
  uint64_t num_elements = 1;
  bool overflow = false;
  for (const JsonValue& dim : shape) {
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > uint64_t{INT64_MAX}) {
      return Invalid(prefix, "shape ", ShortDump(shape), " has a dimension that is not a ",
                     "non-negative integer");
    }
    info.shape.push_back(dim.get<int64_t>());
    overflow |= __builtin_mul_overflow(num_elements, dim.get<uint64_t>(), &num_elements);
  }
  uint64_t expected_bytes = 0;
  overflow |= __builtin_mul_overflow(num_elements, DTypeSize(info.dtype), &expected_bytes);

  const JsonValue& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return Invalid(prefix, "data_offsets ", ShortDump(offsets), " is not [begin, end]");
  }
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.begin > info.end) {
    return Invalid(prefix, "data_offsets ", ShortDump(offsets), " has begin > end");
  }
  if (overflow || expected_bytes != info.num_bytes()) {
    return Invalid(prefix, "shape ", ShapeString(info.shape), " of ", DTypeName(info.dtype),
                   " needs ",
                   overflow ? std::string("more than 2^64") : absl::StrCat(expected_bytes),
                   " bytes but ", "data_offsets ", ShortDump(offsets), " span ", info.num_bytes());
  }
  return info;
}

absl::Status ParseMetadata(const JsonValue& metadata, const std::string& path,
                           std::map<std::string, std::string>* out) {
  if (!metadata.is_object()) return Invalid(path, ": ", kMetadataKey, " is not an object");
  for (const auto& item : metadata.items()) {
    if (!item.value().is_string()) {
      return Invalid(path, ": ", kMetadataKey, " key '", item.key(), "' has a non-string value");
    }
    (*out)[item.key()] = item.value().get<std::string>();
  }
  return absl::OkStatus();
}

// Orders tensors by offset and checks that they tile [0, data_bytes) exactly: no overlap, no
// gap, nothing after the last tensor (the reference implementation rejects all three).
absl::Status CheckCoverage(std::vector<TensorInfo>* infos, uint64_t data_bytes,
                           const std::string& path) {
  std::stable_sort(infos->begin(), infos->end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : *infos) {
    if (info.end > data_bytes) {
      // Indistinguishable from a file cut short, by far the likelier cause.
      return DataLoss(path, ": tensor '", info.name, "': data_offsets [", info.begin, ", ",
                      info.end, "] run past the end of the data section (", data_bytes,
                      " bytes; truncated file?)");
    }
    if (info.begin < covered) {
      return Invalid(path, ": tensor '", info.name, "' overlaps tensor '", previous->name, "'");
    }
    if (info.begin > covered) {
      return Invalid(path, ": gap of ", info.begin - covered, " bytes before tensor '", info.name,
                     "'");
    }
    covered = info.end;
    previous = &info;
  }
  if (covered != data_bytes) {
    return Invalid(path, ": ", data_bytes - covered, " trailing bytes after the last tensor");
  }
  return absl::OkStatus();
}

// A valid header nests three levels deep: the top object, a tensor's entry, its shape.
constexpr int kHeaderMaxDepth = 3;

// Parses the JSON header in linear time with its depth bounded; duplicate names are an error
// (nlohmann would keep the last). `order` receives the top-level names in header order.
absl::StatusOr<JsonValue> ParseHeaderJson(const char* begin, const char* end,
                                          const std::string& path,
                                          std::vector<std::string>* order) {
  ASSIGN_OR_RETURN(JsonValue header,
                   ParseBoundedJson(absl::string_view(begin, end - begin),
                                    JsonLimits{kHeaderMaxDepth}, absl::StrCat(path, ": header"),
                                    order));
  if (!header.is_object()) return Invalid(path, ": header is not a JSON object");
  return header;
}

}  // namespace

const char* DTypeName(DType dtype) { return Entry(dtype).name; }

absl::StatusOr<DType> ParseDType(const std::string& name) {
  for (const DTypeEntry& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  return Invalid("unsupported safetensors dtype '", name, "'");
}

size_t DTypeSize(DType dtype) { return Entry(dtype).size_bytes; }

absl::StatusOr<DType> FromScalarType(c10::ScalarType type) {
  for (const DTypeEntry& entry : kDTypes) {
    if (type == entry.scalar_type) return entry.dtype;
  }
  return Invalid("tensor type ", c10::toString(type), " cannot be stored in safetensors");
}

c10::ScalarType ToScalarType(DType dtype) { return Entry(dtype).scalar_type; }

// ---------------------------------------------------------------------------------------------
// SafetensorsReader

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot open ", path);
  struct stat file_stat;
  if (::fstat(fd, &file_stat) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoError(error, "cannot stat ", path);
  }
  if (!S_ISREG(file_stat.st_mode)) {
    ::close(fd);
    return Invalid(path, ": not a regular file");
  }
  const uint64_t file_bytes = static_cast<uint64_t>(file_stat.st_size);
  if (file_bytes < kLengthPrefixBytes) {
    ::close(fd);
    return DataLoss(path, ": file is ", file_bytes,
                    " bytes, too short for the 8-byte header length");
  }
  void* mapping = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_error = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (mapping == MAP_FAILED) return ErrnoError(map_error, "cannot mmap ", path);
  std::unique_ptr<SafetensorsReader> reader(new SafetensorsReader());
  reader->path_ = path;
  reader->mapping_ = mapping;
  reader->mapping_bytes_ = file_bytes;
  const auto* bytes = static_cast<const uint8_t*>(mapping);

  const uint64_t header_bytes = ReadLittleEndian64(bytes);
  if (header_bytes > kMaxSafetensorsHeaderBytes) {
    return Invalid(path, ": header length ", header_bytes, " exceeds the limit of ",
                   kMaxSafetensorsHeaderBytes, " bytes");
  }
  if (header_bytes > file_bytes - kLengthPrefixBytes) {
    return DataLoss(path, ": header length ", header_bytes, " runs past the end of the ",
                    file_bytes, "-byte file (truncated?)");
  }
  const auto* header_begin = reinterpret_cast<const char*>(bytes + kLengthPrefixBytes);
  std::vector<std::string> order;
  ASSIGN_OR_RETURN(JsonValue header,
                   ParseHeaderJson(header_begin, header_begin + header_bytes, path, &order));

  std::vector<TensorInfo> infos;
  infos.reserve(order.size());
  for (const std::string& name : order) {
    const JsonValue& value = header.find(name).value();
    if (name == kMetadataKey) {
      RETURN_IF_ERROR(ParseMetadata(value, path, &reader->metadata_));
      continue;
    }
    ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(name, value, path));
    infos.push_back(std::move(info));
  }
  const uint64_t data_start = kLengthPrefixBytes + header_bytes;
  RETURN_IF_ERROR(CheckCoverage(&infos, file_bytes - data_start, path));

  reader->data_ = bytes + data_start;
  for (TensorInfo& info : infos) {
    reader->names_.push_back(info.name);
    reader->infos_.emplace(info.name, std::move(info));
  }
  return reader;
}

SafetensorsReader::~SafetensorsReader() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
}

absl::StatusOr<TensorInfo> SafetensorsReader::Info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  return it->second;
}

absl::StatusOr<at::Tensor> SafetensorsReader::Get(const std::string& name) const {
  ASSIGN_OR_RETURN(TensorInfo info, Info(name));
  const uint8_t* source = data_ + info.begin;
  if (info.dtype == DType::kBool) {
    // Bytes other than 0/1 are not valid bool values for LibTorch.
    for (uint64_t i = 0; i < info.num_bytes(); ++i) {
      if (source[i] > 1) {
        return DataLoss(path_, ": tensor '", name, "': BOOL byte ", i, " has value ",
                        int{source[i]});
      }
    }
  }
  at::Tensor tensor;
  try {
    tensor = at::empty(info.shape, at::TensorOptions().dtype(ToScalarType(info.dtype)));
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat(path_, ": tensor '", name, "' of shape ",
                                                     ShapeString(info.shape),
                                                     ": allocation failed: ", e.what()));
  }
  if (info.num_bytes() > 0) std::memcpy(tensor.data_ptr(), source, info.num_bytes());

  // Drop the pages just copied so that streaming a large file tensor by tensor keeps resident
  // memory at about one tensor. The mapping is private and never written, so dropped pages are
  // re-read from the file if touched again, which also makes this safe under concurrent Get().
  // Only pages lying entirely inside this tensor's bytes are dropped.
  const uintptr_t page_bytes = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<uintptr_t>(source);
  const uintptr_t interior_begin = (first + page_bytes - 1) / page_bytes * page_bytes;
  const uintptr_t interior_end = (first + info.num_bytes()) / page_bytes * page_bytes;
  if (interior_begin < interior_end) {
    ::madvise(reinterpret_cast<void*>(interior_begin), interior_end - interior_begin,
              MADV_DONTNEED);
  }
  return tensor;
}

absl::StatusOr<at::Tensor> SafetensorsReader::Get(const std::string& name,
                                                  c10::ScalarType type) const {
  ASSIGN_OR_RETURN(at::Tensor tensor, Get(name));
  try {
    return tensor.to(type);
  } catch (const std::exception& e) {
    return Invalid(path_, ": tensor '", name, "': cannot convert to ", c10::toString(type), ": ",
                   e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

namespace {

// Creates "<prefix>XXXXXX" with a unique random suffix, opened for reading and writing.
absl::StatusOr<std::FILE*> CreateTempFile(const std::string& prefix, std::string* path) {
  std::string name = prefix + "XXXXXX";
  const int fd = ::mkstemp(name.data());
  if (fd < 0) return ErrnoError(errno, "cannot create ", name);
  ::fchmod(fd, kOutputFileMode);
  std::FILE* file = ::fdopen(fd, "w+b");
  if (file == nullptr) {
    const int error = errno;
    ::close(fd);
    ::unlink(name.c_str());
    return ErrnoError(error, "cannot open ", name);
  }
  *path = std::move(name);
  return file;
}

// `flush` pushes stdio's buffer out now, so that a full disk is reported for this write.
absl::Status WriteAll(std::FILE* file, const void* data, size_t size_bytes, const std::string& what,
                      bool flush = false) {
  if ((size_bytes > 0 && std::fwrite(data, 1, size_bytes, file) != size_bytes) ||
      (flush && std::fflush(file) != 0)) {
    return ErrnoError(errno, "write failed for ", what);
  }
  return absl::OkStatus();
}

// Writes the header, padding and the side file's bytes to `out`, then flushes it to disk.
absl::Status WriteOutput(std::FILE* out, const std::string& header, std::FILE* data,
                         uint64_t data_bytes, const std::string& path) {
  const std::string prefix = LittleEndian64(header.size());
  RETURN_IF_ERROR(WriteAll(out, prefix.data(), prefix.size(), path));
  RETURN_IF_ERROR(WriteAll(out, header.data(), header.size(), path));
  if (std::fflush(data) != 0 || std::fseek(data, 0, SEEK_SET) != 0) {
    return ErrnoError(errno, "cannot rewind the data side file of ", path);
  }
  std::vector<char> chunk(kCopyChunkBytes);
  uint64_t copied = 0;
  while (copied < data_bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk.size(), data_bytes - copied));
    if (std::fread(chunk.data(), 1, want, data) != want) {
      return DataLoss("short read from the data side file of ", path);
    }
    RETURN_IF_ERROR(WriteAll(out, chunk.data(), want, path));
    copied += want;
  }
  if (std::fflush(out) != 0 || ::fsync(::fileno(out)) != 0) {
    return ErrnoError(errno, "cannot flush ", path);
  }
  return absl::OkStatus();
}

// The JSON header (metadata first, then tensors in Add() order) padded with spaces so that the
// data section starts aligned.
absl::StatusOr<std::string> BuildHeader(const std::vector<TensorInfo>& infos,
                                        const std::map<std::string, std::string>& metadata,
                                        const std::string& path) {
  Json header = Json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  for (const TensorInfo& info : infos) {
    header[info.name] = {{"dtype", DTypeName(info.dtype)},
                         {"shape", info.shape},
                         {"data_offsets", {info.begin, info.end}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const std::exception& e) {  // metadata that is not valid UTF-8
    return Invalid(path, ": cannot encode the header: ", e.what());
  }
  const size_t misalignment = (kLengthPrefixBytes + text.size()) % kDataAlignmentBytes;
  if (misalignment != 0) text.append(kDataAlignmentBytes - misalignment, ' ');
  return text;
}

// Makes a completed rename durable. Best effort: some filesystems cannot fsync a directory,
// and the file itself is already complete and in place.
void SyncParentDirectory(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string directory =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("safetensors output path is empty");
  std::unique_ptr<SafetensorsWriter> writer(new SafetensorsWriter());
  writer->path_ = path;
  ASSIGN_OR_RETURN(writer->data_file_, CreateTempFile(path + ".data.tmp.", &writer->data_path_));
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (data_file_ != nullptr) {
    std::fclose(data_file_);
    ::unlink(data_path_.c_str());
  }
}

absl::Status SafetensorsWriter::Add(const std::string& name, const at::Tensor& tensor) {
  if (data_file_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": cannot add tensor '", name, "' after Finish() or a write error"));
  }
  if (name.empty() || name == kMetadataKey) {
    return Invalid(path_, ": invalid tensor name '", name, "'");
  }
  try {
    Json(name).dump();  // the header is JSON, whose strings must be valid UTF-8
  } catch (const std::exception&) {
    return Invalid(path_, ": tensor name is not valid UTF-8");
  }
  if (added_names_.count(name) > 0) {
    return Invalid(path_, ": tensor '", name, "' added more than once");
  }
  const std::string prefix = absl::StrCat(path_, ": tensor '", name, "'");
  if (!tensor.defined()) return Invalid(prefix, " is undefined");
  if (tensor.layout() != c10::kStrided) {
    return Invalid(prefix, " is not a dense (strided) tensor");
  }
  auto dtype = FromScalarType(tensor.scalar_type());
  if (!dtype.ok()) return Annotate(dtype.status(), prefix);

  at::Tensor cpu;
  try {
    cpu = tensor.detach().to(at::kCPU).resolve_conj().resolve_neg().contiguous();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(prefix, ": cannot copy to CPU: ", e.what()));
  }
  TensorInfo info;
  info.name = name;
  info.dtype = *dtype;
  info.shape = cpu.sizes().vec();
  info.begin = data_bytes_;
  info.end = data_bytes_ + cpu.numel() * DTypeSize(*dtype);
  absl::Status written =
      WriteAll(data_file_, cpu.data_ptr(), info.num_bytes(), prefix, /*flush=*/true);
  if (!written.ok()) {
    // The side file now holds a partial tensor; nothing more can be appended safely.
    std::fclose(data_file_);
    data_file_ = nullptr;
    ::unlink(data_path_.c_str());
    return written;
  }
  data_bytes_ = info.end;
  added_names_.insert(name);
  infos_.push_back(std::move(info));
  return absl::OkStatus();
}

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

absl::Status SafetensorsWriter::Finish() {
  if (finished_ || data_file_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": Finish() after Finish() or a write error"));
  }
  finished_ = true;
  auto header = BuildHeader(infos_, metadata_, path_);
  std::string out_path;
  absl::Status status;
  auto out = header.ok() ? CreateTempFile(path_ + ".tmp.", &out_path) : header.status();
  if (!out.ok()) {
    status = out.status();
  } else {
    status = WriteOutput(*out, *header, data_file_, data_bytes_, path_);
    if (std::fclose(*out) != 0 && status.ok()) {
      status = ErrnoError(errno, "cannot close ", out_path);
    }
    if (status.ok() && std::rename(out_path.c_str(), path_.c_str()) != 0) {
      status = ErrnoError(errno, "cannot rename ", out_path, " to ", path_);
    }
    if (status.ok()) {
      SyncParentDirectory(path_);
    } else {
      ::unlink(out_path.c_str());
    }
  }
  std::fclose(data_file_);
  data_file_ = nullptr;
  ::unlink(data_path_.c_str());
  return status;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path));
  for (const auto& [key, value] : metadata) writer->SetMetadata(key, value);
  for (const auto& [name, tensor] : tensors) RETURN_IF_ERROR(writer->Add(name, tensor));
  return writer->Finish();
}

}  // namespace twin
