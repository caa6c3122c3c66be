#include "core/model/hf_checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/io/bounded_json.h"
#include "core/io/safetensors.h"
#include "core/model/internal/json_file.h"
#include "core/status_macros.h"

namespace twin {
namespace {

using Json = nlohmann::json;

// {"metadata": {...}, "weight_map": {name: shard}}.
constexpr int kMaxIndexDepth = 4;
// Unexpected names quoted in an error; the rest are counted.
constexpr size_t kMaxNamesInError = 8;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsFloating(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF64;
}

// A shard is a file next to the index, never a path out of the directory.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// One checkpoint tensor: its name as written and the reader that holds it.
struct Entry {
  std::string name;
  const SafetensorsReader* reader;
};

struct Sources {
  std::vector<std::unique_ptr<SafetensorsReader>> readers;
  std::vector<Entry> entries;
};

absl::StatusOr<Sources> OpenSingle(const std::string& path) {
  Sources s;
  ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(path));
  for (const std::string& name : reader->names()) s.entries.push_back({name, reader.get()});
  s.readers.push_back(std::move(reader));
  return s;
}

absl::StatusOr<Sources> OpenSharded(const std::string& dir, const std::string& index_path) {
  ASSIGN_OR_RETURN(const Json index,
                   internal::ReadJsonFile(index_path, kMaxHfIndexBytes, kMaxIndexDepth));
  const Json* map = nullptr;
  if (index.is_object()) {
    auto it = index.find("weight_map");
    if (it != index.end() && it->is_object()) map = &*it;
  }
  if (map == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": needs an object 'weight_map' of tensor name -> shard file"));
  }
  Sources s;
  std::map<std::string, const SafetensorsReader*> shards;
  for (const auto& [name, shard] : map->items()) {
    if (!shard.is_string() || !IsPlainFileName(shard.get<std::string>())) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor ", name, " maps to ",
                                                     ShortDump(shard),
                                                     ", not a file name in the directory"));
    }
    const std::string file = shard.get<std::string>();
    auto it = shards.find(file);
    if (it == shards.end()) {
      auto reader = SafetensorsReader::Open(absl::StrCat(dir, "/", file));
      if (!reader.ok()) {
        return Annotate(reader.status(), absl::StrCat(index_path, ": shard ", file));
      }
      it = shards.emplace(file, reader->get()).first;
      s.readers.push_back(std::move(reader).value());
    }
    if (!it->second->Contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor ", name, " maps to ",
                                                     file, ", which does not hold it"));
    }
    s.entries.push_back({name, it->second});
  }
  for (const auto& [file, reader] : shards) {
    for (const std::string& name : reader->names()) {
      auto it = map->find(name);
      if (it == map->end() || it->get<std::string>() != file) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": shard ", file, " holds tensor ", name,
            it == map->end() ? " that the index does not list"
                             : absl::StrCat(" that the index maps to ", it->get<std::string>())));
      }
    }
  }
  return s;
}

absl::StatusOr<Sources> OpenCheckpoint(const std::string& dir) {
  const std::string single = absl::StrCat(dir, "/", kHfWeightsFile);
  const std::string index = absl::StrCat(dir, "/", kHfWeightsIndexFile);
  if (internal::PathExists(single)) return OpenSingle(single);
  if (internal::PathExists(index)) return OpenSharded(dir, index);
  return absl::NotFoundError(absl::StrCat("no ", kHfWeightsFile, " or ", kHfWeightsIndexFile,
                                          " in ", dir,
                                          " (only safetensors checkpoints are supported)"));
}

bool Ignored(const std::string& name, const HfTensorSpec& spec) {
  for (const std::string& p : spec.ignored_prefixes) {
    if (absl::StartsWith(name, p)) return true;
  }
  for (const std::string& s : spec.ignored_suffixes) {
    if (absl::EndsWith(name, s)) return true;
  }
  return false;
}

}  // namespace

std::string NormalizeHfTensorName(const std::string& name, const HfTensorSpec& spec) {
  std::string out = name;
  for (const std::string& module : spec.body_modules) {
    if (absl::StartsWith(out, module + ".")) {
      out = spec.prefix + out;
      break;
    }
  }
  if (absl::EndsWith(out, "LayerNorm.gamma")) {
    out.replace(out.size() - 5, 5, "weight");
  } else if (absl::EndsWith(out, "LayerNorm.beta")) {
    out.replace(out.size() - 4, 4, "bias");
  }
  return out;
}

absl::StatusOr<HfCheckpoint> LoadHfCheckpoint(const std::string& dir, const HfTensorSpec& spec) {
  ASSIGN_OR_RETURN(Sources sources, OpenCheckpoint(dir));
  HfCheckpoint out;
  for (const auto& reader : sources.readers) out.files.push_back(reader->path());
  std::map<std::string, std::string> written_as;  // normal form -> checkpoint name
  std::vector<std::string> unexpected;
  for (const Entry& e : sources.entries) {
    const std::string name = NormalizeHfTensorName(e.name, spec);
    auto [seen, fresh] = written_as.emplace(name, e.name);
    if (!fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, ": tensors ", seen->second, " and ", e.name, " are both ", name));
    }
    auto expected = spec.shapes.find(name);
    if (expected == spec.shapes.end()) {
      (Ignored(name, spec) ? out.ignored : unexpected).push_back(e.name);
      continue;
    }
    ASSIGN_OR_RETURN(const TensorInfo info, e.reader->Info(e.name));
    if (info.shape != expected->second) {
      return absl::InvalidArgumentError(absl::StrCat(
          e.reader->path(), ": tensor ", e.name, " has shape ", ShapeString(info.shape), "; the ",
          spec.family, " config implies ", ShapeString(expected->second)));
    }
    if (!IsFloating(info.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(e.reader->path(), ": tensor ", e.name,
                                                     " has dtype ", DTypeName(info.dtype),
                                                     "; weights must be floating point"));
    }
    ASSIGN_OR_RETURN(at::Tensor t, e.reader->Get(e.name, at::kFloat));
    out.tensors.emplace(name, std::move(t));
  }
  if (!unexpected.empty()) {
    const size_t shown = std::min(unexpected.size(), kMaxNamesInError);
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": ", unexpected.size(), " tensor(s) that the ", spec.family,
                     " config does not describe: ",
                     absl::StrJoin(unexpected.begin(), unexpected.begin() + shown, ", "),
                     unexpected.size() > shown ? ", ..." : ""));
  }
  for (const auto& [name, shape] : spec.shapes) {
    if (out.tensors.count(name) == 0) {
      return absl::NotFoundError(absl::StrCat(dir, ": missing tensor ", name, " (shape ",
                                              ShapeString(shape), ", needed by ", spec.family,
                                              ")"));
    }
  }
  return out;
}

}  // namespace twin
