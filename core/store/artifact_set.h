// Publishing and reading versioned artifact sets in an object store.
//
// Layout under the store root (see DESIGN.md):
//   <version>/manifest.json    written last: its presence publishes the version
//   <version>/<blob>           every blob the manifest lists
//   LATEST                     names the newest complete version
//
// Publishing: ArtifactPublisher uploads every staged blob, computing sha256 and size into the
// manifest, then writes manifest.json, then LATEST. A version that already has a manifest is
// never overwritten (ALREADY_EXISTS). A failure before the manifest leaves no visible version.
//
// Reading: FetchArtifactSet resolves a version ("" or "LATEST" = the one LATEST names), fetches
// manifest.json and every blob into a local directory, and verifies each blob's size and sha256
// before returning; a mismatch is DATA_LOSS naming the blob. The local cache is keyed by digest:
// every verified blob lives once in <cache_dir>/@sha256/<hex digest>, and a version's directory
// holds hard links to those files (copies where links are refused), so versions that share a
// blob (an unchanged router, a re-published shared expert) download and store it once. Blobs
// already in the cache are reused only after their size and sha256 are checked again; downloads
// land under a temporary name and are renamed into place only once verified, and the local
// manifest.json is written last. PruneArtifactCache removes the versions no longer needed and
// the blobs only they used.
// A version without manifest.json is NOT_FOUND; a manifest stored under another version's
// directory, or a listed blob missing from the store, is DATA_LOSS.
//
//   ArtifactPublisher pub(store.get(), "v2");
//   RETURN_IF_ERROR(pub.AddFile("shared.safetensors", "/tmp/stage/shared.safetensors"));
//   RETURN_IF_ERROR(pub.Publish(manifest));
//
//   ASSIGN_OR_RETURN(LocalArtifactSet set, FetchArtifactSet(store.get(), "LATEST", "/tmp/cache"));
//   set.PathOf("shared.safetensors");
//
// Thread-safety: ArtifactPublisher is not thread-safe; FetchArtifactSet is reentrant.
#ifndef TWIN_CORE_STORE_ARTIFACT_SET_H_
#define TWIN_CORE_STORE_ARTIFACT_SET_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/store/manifest.h"
#include "core/store/object_store.h"

namespace twin {

inline constexpr char kManifestName[] = "manifest.json";
inline constexpr char kLatestName[] = "LATEST";
// The digest-keyed blob cache inside a cache directory ('@' is not a version character).
inline constexpr char kBlobCacheDirName[] = "@sha256";

// Versions are [A-Za-z0-9._-]{1,128} and not ".", ".." or "LATEST" (reserved).
absl::Status ValidateVersionName(const std::string& version);

class ArtifactPublisher {
 public:
  ArtifactPublisher(ObjectStore* store, std::string version);

  // Stages a local file under `name` (relative to the version, e.g. "twin/spam.safetensors").
  // INVALID_ARGUMENT for a bad name or version ("manifest.json" is reserved), ALREADY_EXISTS
  // for a name staged twice, NOT_FOUND for a missing local file.
  absl::Status AddFile(const std::string& name, const std::string& local_path);
  // Uploads staged blobs, fills manifest.blobs/version, writes manifest.json, then LATEST.
  // Before uploading anything it checks that every blob the manifest names is staged
  // (FAILED_PRECONDITION naming it), that the version has no manifest yet (ALREADY_EXISTS) and
  // that the completed manifest passes Manifest::FromJson. manifest.blobs is replaced by exactly
  // the staged blobs.
  absl::Status Publish(Manifest manifest, bool update_latest = true);

 private:
  ObjectStore* store_;
  std::string version_;
  std::map<std::string, std::string> staged_;  // name -> local path
};

struct LocalArtifactSet {
  std::string version;
  std::string dir;  // local directory holding manifest.json and every blob
  Manifest manifest;
  std::string PathOf(const std::string& blob_name) const { return dir + "/" + blob_name; }
};

// Resolves "LATEST" (or "") to a version name.
absl::StatusOr<std::string> ResolveVersion(ObjectStore* store, const std::string& version);
// Lists versions that have a manifest, sorted.
absl::StatusOr<std::vector<std::string>> ListVersions(ObjectStore* store);
struct FetchOptions {
  // Checked before each blob; when it returns true the fetch stops with CANCELLED.
  std::function<bool()> cancelled;
};

// Fetches and verifies a version into `cache_dir`/<version>/ (through the blob cache).
absl::StatusOr<LocalArtifactSet> FetchArtifactSet(ObjectStore* store, const std::string& version,
                                                  const std::string& cache_dir,
                                                  const FetchOptions& options = {});

struct CachePruneResult {
  std::vector<std::string> removed_versions;
  int64_t removed_blobs = 0;
  uint64_t freed_bytes = 0;
};

// Removes every cached version directory not named in `keep`, then every cached blob that no
// remaining version uses. A missing cache directory is OK (nothing to do).
absl::StatusOr<CachePruneResult> PruneArtifactCache(const std::string& cache_dir,
                                                    const std::vector<std::string>& keep);

}  // namespace twin

#endif  // TWIN_CORE_STORE_ARTIFACT_SET_H_
