// Reads a small JSON file from a model directory (config.json, a shard index) with a size
// bound and the bounded parser: these files come from wherever the checkpoint came from.
//
// Thread-safety: a pure function.
#ifndef TWIN_CORE_MODEL_INTERNAL_JSON_FILE_H_
#define TWIN_CORE_MODEL_INTERNAL_JSON_FILE_H_

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"

namespace twin::internal {

// Whether anything exists at `path`.
bool PathExists(const std::string& path);

// The file's bytes; NOT_FOUND when it does not exist, INVALID_ARGUMENT when it is larger than
// `max_bytes`.
absl::StatusOr<std::string> ReadBoundedFile(const std::string& path, size_t max_bytes);

// ReadBoundedFile, then ParseBoundedJson with `max_depth`; errors name the path.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, size_t max_bytes,
                                            int max_depth);

}  // namespace twin::internal

#endif  // TWIN_CORE_MODEL_INTERNAL_JSON_FILE_H_
