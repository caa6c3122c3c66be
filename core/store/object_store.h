// Object store interface: a flat namespace of immutable blobs addressed by '/'-separated keys
// relative to the store's root URI. Backends: file://DIR (FileObjectStore) and
// s3://bucket[/prefix] (S3ObjectStore, configured from the environment).
//
//   ASSIGN_OR_RETURN(auto store, OpenObjectStore("file:///var/lib/twin/artifacts"));
//   RETURN_IF_ERROR(store->PutFile("v1/shared.safetensors", "/tmp/shared.safetensors"));
//   ASSIGN_OR_RETURN(std::string latest, store->Get("LATEST"));
//
// Contract:
//   - Put/PutFile are atomic per key: readers see the old object or the new one, never a part.
//   - Get of a missing key is NOT_FOUND naming the key; Head likewise.
//   - List returns keys (not URIs) under a prefix, sorted, recursively. The prefix is a plain
//     string prefix of keys, as in S3: "v1" matches "v1/a" and "v10/b"; "v1/" only the first.
//   - Keys are validated: non-empty, no "..", no leading '/', no empty segments.
//     Also refused: "." segments, '\\' and NUL bytes, and names of the temporary-file pattern
//     "<name>.tmp.<16 hex digits>" that backends use for in-flight writes and never list.
// Thread-safety: implementations are safe to call concurrently.
#ifndef TWIN_CORE_STORE_OBJECT_STORE_H_
#define TWIN_CORE_STORE_OBJECT_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {

struct ObjectInfo {
  std::string key;
  uint64_t size_bytes = 0;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  virtual absl::StatusOr<std::string> Get(absl::string_view key) = 0;
  // Streams the object into a local file (written to a temporary name, then renamed).
  virtual absl::Status GetToFile(absl::string_view key, const std::string& local_path) = 0;
  // The same, for an object that should hold at most `max_bytes`: a larger one is
  // OUT_OF_RANGE and leaves no file. Stores that stream from far away stop the transfer at the
  // limit (S3); the default checks the file once written.
  virtual absl::Status GetToFileAtMost(absl::string_view key, const std::string& local_path,
                                       uint64_t max_bytes);
  virtual absl::Status Put(absl::string_view key, absl::string_view bytes) = 0;
  // Streams a local file into the store without holding it in memory.
  virtual absl::Status PutFile(absl::string_view key, const std::string& local_path) = 0;
  virtual absl::StatusOr<ObjectInfo> Head(absl::string_view key) = 0;
  virtual absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) = 0;
  // Deleting a missing key is OK (idempotent).
  virtual absl::Status Delete(absl::string_view key) = 0;

  // The root URI, e.g. "file:///data/artifacts".
  virtual std::string uri() const = 0;
  // "file:///data/artifacts/<key>" (for messages).
  std::string UriOf(absl::string_view key) const;
};

// Checks a key as described in the contract above; INVALID_ARGUMENT naming the key.
absl::Status ValidateObjectKey(absl::string_view key);
// Checks a List prefix: empty, or the start of a key (its part up to the last '/' a valid key,
// no leading '/', NUL or '\\'); INVALID_ARGUMENT naming it.
absl::Status ValidateListPrefix(absl::string_view prefix);

// The reserved temporary-file pattern: "<name>.tmp.<16 lowercase hex digits>".
bool IsTemporaryObjectName(absl::string_view name);
// A fresh temporary name for `name` (random suffix), matching IsTemporaryObjectName.
std::string TemporaryObjectName(absl::string_view name);

// Opens a store from a URI: "file:///abs/dir", "file://rel/dir" or a plain directory path, or
// "s3://bucket[/prefix]" (S3Options::FromEnvironment(): endpoint, region and credentials from
// the environment; see core/store/s3_store.h). Unknown schemes are INVALID_ARGUMENT naming the scheme.
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(const std::string& uri);

}  // namespace twin

#endif  // TWIN_CORE_STORE_OBJECT_STORE_H_
