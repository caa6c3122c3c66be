#include "core/store/artifact_set.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/store/file_store.h"
#include "core/io/sha256.h"
#include "core/status_macros.h"

namespace twin {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxVersionNameBytes = 128;

std::string BlobKey(const std::string& version, const std::string& name) {
  return absl::StrCat(version, "/", name);
}

absl::Status InvalidVersion(const std::string& version, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid version name \"", absl::CEscape(version), "\": ", why));
}

bool IsVersionChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

// A verified file: it exists with exactly `ref.size_bytes` bytes whose sha256 is `ref.sha256`.
bool HoldsBlob(const std::string& path, const BlobRef& ref) {
  std::error_code ec;
  const uintmax_t bytes = fs::file_size(path, ec);
  if (ec || bytes != ref.size_bytes) return false;
  uint64_t hashed_bytes = 0;
  absl::StatusOr<std::string> digest = Sha256File(path, &hashed_bytes);
  return digest.ok() && *digest == ref.sha256 && hashed_bytes == ref.size_bytes;
}

// Makes `link_path` name the same file as `blob_path`: a hard link put in place by rename (so
// the path never holds a partial file), or a copy where the filesystem refuses links.
absl::Status LinkInto(const std::string& blob_path, const std::string& link_path,
                      const std::string& context) {
  std::error_code ec;
  fs::create_directories(fs::path(link_path).parent_path(), ec);
  const std::string temp_path = TemporaryObjectName(link_path);
  fs::create_hard_link(blob_path, temp_path, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(blob_path, temp_path, fs::copy_options::overwrite_existing, ec);
  }
  if (!ec) fs::rename(temp_path, link_path, ec);
  if (ec) {
    std::remove(temp_path.c_str());
    return absl::InternalError(absl::StrCat(context, ": cannot place ", blob_path, " at ",
                                            link_path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// Brings blob `name` of `version` into `local_path`, verified against `ref`, through the
// digest-keyed blob cache: a file already at `local_path` that verifies is kept; else a cached
// blob with the same digest that verifies is linked there; else the blob is downloaded to a
// temporary name in the blob cache, checked, renamed to its digest and linked. A path never
// holds bytes that failed verification.
absl::Status FetchBlob(ObjectStore* store, const std::string& version, const std::string& name,
                       const BlobRef& ref, const std::string& local_path,
                       const std::string& blob_dir) {
  if (HoldsBlob(local_path, ref)) return absl::OkStatus();
  const std::string context = absl::StrCat("blob ", name, " of version ", version);
  const std::string blob_path = absl::StrCat(blob_dir, "/", ref.sha256);
  if (HoldsBlob(blob_path, ref)) return LinkInto(blob_path, local_path, context);

  const std::string temp_path = TemporaryObjectName(blob_path);
  // At most the declared size: a larger object stops downloading there (a smaller one fails
  // the size check below).
  absl::Status status = store->GetToFileAtMost(BlobKey(version, name), temp_path, ref.size_bytes);
  if (absl::IsNotFound(status)) {
    // The manifest is only written after every blob, so a missing blob is damage, not a race.
    return absl::DataLossError(
        absl::StrCat(context, " is listed in the manifest but missing: ", status.message()));
  }
  RETURN_IF_ERROR(Annotate(status, context));
  uint64_t got_bytes = 0;
  absl::StatusOr<std::string> digest = Sha256File(temp_path, &got_bytes);
  if (!digest.ok()) {
    status = Annotate(digest.status(), context);
  } else if (got_bytes != ref.size_bytes) {
    status = absl::DataLossError(absl::StrCat(context, ": size mismatch (expected ", ref.size_bytes,
                                              " bytes, got ", got_bytes, ")"));
  } else if (*digest != ref.sha256) {
    status = absl::DataLossError(
        absl::StrCat(context, ": sha256 mismatch (expected ", ref.sha256, ", got ", *digest, ")"));
  } else if (std::rename(temp_path.c_str(), blob_path.c_str()) != 0) {
    status = absl::InternalError(absl::StrCat(context, ": cannot rename ", temp_path, " to ",
                                              blob_path, ": ", std::strerror(errno)));
  }
  if (!status.ok()) {
    std::remove(temp_path.c_str());
    return status;
  }
  return LinkInto(blob_path, local_path, context);
}

}  // namespace

absl::Status ValidateVersionName(const std::string& version) {
  if (version.empty()) return InvalidVersion(version, "empty");
  if (version.size() > kMaxVersionNameBytes) {
    return InvalidVersion(version, absl::StrCat("longer than ", kMaxVersionNameBytes, " bytes"));
  }
  for (char c : version) {
    if (!IsVersionChar(c)) return InvalidVersion(version, "allowed characters are [A-Za-z0-9._-]");
  }
  if (version == "." || version == "..") return InvalidVersion(version, "not a directory name");
  // "LATEST" always resolves through the LATEST object, so a version by that name could never
  // be read (and its directory would collide with that object's key).
  if (version == kLatestName) return InvalidVersion(version, "reserved");
  return absl::OkStatus();
}

ArtifactPublisher::ArtifactPublisher(ObjectStore* store, std::string version)
    : store_(store), version_(std::move(version)) {}

absl::Status ArtifactPublisher::AddFile(const std::string& name, const std::string& local_path) {
  RETURN_IF_ERROR(ValidateVersionName(version_));
  RETURN_IF_ERROR(ValidateObjectKey(name));
  if (name == kManifestName) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob name ", kManifestName, " is reserved: Publish writes it"));
  }
  const auto it = staged_.find(name);
  if (it != staged_.end()) {
    return absl::AlreadyExistsError(
        absl::StrCat("blob ", name, " is already staged (from ", it->second, ")"));
  }
  std::error_code ec;
  const fs::file_status file_status = fs::status(local_path, ec);
  if (!fs::exists(file_status)) {
    return absl::NotFoundError(
        absl::StrCat("local file ", local_path, " for blob ", name, " not found"));
  }
  if (!fs::is_regular_file(file_status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("local file ", local_path, " for blob ", name, " is not a regular file"));
  }
  staged_[name] = local_path;
  return absl::OkStatus();
}

absl::Status ArtifactPublisher::Publish(Manifest manifest, bool update_latest) {
  RETURN_IF_ERROR(ValidateVersionName(version_));
  // Everything that can be checked without uploading is checked first, so a refused publish
  // leaves the store untouched.
  for (const auto& [field, name] : manifest.NamedBlobs()) {
    if (staged_.count(name) == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("manifest field ", field, " names blob \"", name,
                       "\", which is not staged for version ", version_));
    }
  }
  const std::string manifest_key = BlobKey(version_, kManifestName);
  absl::StatusOr<ObjectInfo> existing = store_->Head(manifest_key);
  if (existing.ok()) {
    return absl::AlreadyExistsError(absl::StrCat("version ", version_, " is already published (",
                                                 store_->UriOf(manifest_key), " exists)"));
  }
  if (!absl::IsNotFound(existing.status())) return existing.status();

  manifest.version = version_;
  manifest.blobs.clear();
  for (const auto& [name, local_path] : staged_) {
    BlobRef& ref = manifest.blobs[name];
    ASSIGN_OR_RETURN(ref.sha256, Sha256File(local_path, &ref.size_bytes));
  }
  const std::string text = manifest.ToJson();
  // A manifest that readers would refuse must not become visible.
  RETURN_IF_ERROR(Annotate(Manifest::FromJson(text).status(),
                           absl::StrCat("manifest of version ", version_, " is not valid")));

  for (const auto& [name, local_path] : staged_) {
    const std::string key = BlobKey(version_, name);
    RETURN_IF_ERROR(store_->PutFile(key, local_path));
    // A file that changed between hashing and upload would publish a blob that fails
    // verification for every reader; a size check catches the common case (still being written).
    ASSIGN_OR_RETURN(ObjectInfo info, store_->Head(key));
    if (info.size_bytes != manifest.blobs[name].size_bytes) {
      return absl::AbortedError(absl::StrCat("local file ", local_path, " for blob ", name,
                                             " changed size while publishing version ", version_));
    }
  }
  // Two publishers racing on one version can both pass the existence check above: the object
  // store offers no conditional put. Versions are expected to come from one job.
  RETURN_IF_ERROR(store_->Put(manifest_key, text));
  if (update_latest) RETURN_IF_ERROR(store_->Put(kLatestName, absl::StrCat(version_, "\n")));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveVersion(ObjectStore* store, const std::string& version) {
  if (!version.empty() && version != kLatestName) {
    RETURN_IF_ERROR(ValidateVersionName(version));
    return version;
  }
  absl::StatusOr<std::string> latest = store->Get(kLatestName);
  if (absl::IsNotFound(latest.status())) {
    return absl::NotFoundError(
        absl::StrCat("no published version in ", store->uri(), " (", kLatestName, " not found)"));
  }
  if (!latest.ok()) return latest.status();
  const std::string name(absl::StripAsciiWhitespace(*latest));
  absl::Status valid = ValidateVersionName(name);
  if (!valid.ok()) {
    return absl::DataLossError(absl::StrCat(store->UriOf(kLatestName),
                                            " does not name a valid version: ", valid.message()));
  }
  return name;
}

absl::StatusOr<std::vector<std::string>> ListVersions(ObjectStore* store) {
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> objects, store->List(""));
  const std::string manifest_suffix = absl::StrCat("/", kManifestName);
  std::vector<std::string> versions;
  for (const ObjectInfo& object : objects) {
    const size_t slash = object.key.find('/');
    if (slash == std::string::npos ||
        object.key.compare(slash, std::string::npos, manifest_suffix) != 0) {
      continue;
    }
    std::string version = object.key.substr(0, slash);
    if (ValidateVersionName(version).ok()) versions.push_back(std::move(version));
  }
  // Keys sort with their "/..." suffix ("v1-2/" < "v1/"), so sort the bare names again.
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::StatusOr<LocalArtifactSet> FetchArtifactSet(ObjectStore* store, const std::string& version,
                                                  const std::string& cache_dir,
                                                  const FetchOptions& options) {
  if (cache_dir.empty()) return absl::InvalidArgumentError("artifact cache directory is empty");
  ASSIGN_OR_RETURN(std::string resolved, ResolveVersion(store, version));
  const std::string manifest_key = BlobKey(resolved, kManifestName);
  absl::StatusOr<std::string> text = store->Get(manifest_key);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        "version ", resolved, " has no manifest (unpublished or incomplete) in ", store->uri()));
  }
  if (!text.ok()) return text.status();
  absl::StatusOr<Manifest> parsed = Manifest::FromJson(*text);
  if (!parsed.ok()) return Annotate(parsed.status(), store->UriOf(manifest_key));
  Manifest& manifest = *parsed;
  if (manifest.version != resolved) {
    return absl::DataLossError(absl::StrCat(store->UriOf(manifest_key), " says version \"",
                                            manifest.version, "\" but is stored under version ",
                                            resolved));
  }
  for (const auto& [field, name] : manifest.NamedBlobs()) {
    if (manifest.blobs.count(name) == 0) {
      return absl::DataLossError(absl::StrCat(store->UriOf(manifest_key), ": field ", field,
                                              " names blob \"", name,
                                              "\", which blobs does not list"));
    }
  }

  const std::string dir = absl::StrCat(cache_dir, "/", resolved);
  const std::string blob_dir = absl::StrCat(cache_dir, "/", kBlobCacheDirName);
  ASSIGN_OR_RETURN(std::unique_ptr<FileObjectStore> local, FileObjectStore::Create(dir));
  std::error_code ec;
  fs::create_directories(blob_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create the blob cache ", blob_dir, ": ", ec.message()));
  }
  for (const auto& [name, ref] : manifest.blobs) {
    if (options.cancelled && options.cancelled()) {
      return absl::CancelledError(absl::StrCat("fetch of version ", resolved, " was cancelled"));
    }
    RETURN_IF_ERROR(
        FetchBlob(store, resolved, name, ref, absl::StrCat(dir, "/", name), blob_dir));
  }
  // Written last, as in the store: a local manifest means every blob beside it was verified.
  RETURN_IF_ERROR(local->Put(kManifestName, *text));
  return LocalArtifactSet{resolved, dir, std::move(manifest)};
}


absl::StatusOr<CachePruneResult> PruneArtifactCache(const std::string& cache_dir,
                                                    const std::vector<std::string>& keep) {
  CachePruneResult result;
  std::error_code ec;
  if (!fs::is_directory(cache_dir, ec)) return result;
  for (const fs::directory_entry& entry : fs::directory_iterator(cache_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !ValidateVersionName(name).ok()) continue;
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    std::error_code remove_error;
    fs::remove_all(entry.path(), remove_error);
    if (remove_error) {
      return absl::InternalError(absl::StrCat("cannot remove cached version ",
                                              entry.path().string(), ": ",
                                              remove_error.message()));
    }
    result.removed_versions.push_back(name);
  }
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot list ", cache_dir, ": ", ec.message()));
  }
  // A blob no kept version links to has a link count of one (the blob cache's own name).
  const std::string blob_dir = absl::StrCat(cache_dir, "/", kBlobCacheDirName);
  for (const fs::directory_entry& entry : fs::directory_iterator(blob_dir, ec)) {
    std::error_code stat_error;
    if (!entry.is_regular_file(stat_error)) continue;
    const uintmax_t links = fs::hard_link_count(entry.path(), stat_error);
    if (stat_error || links > 1) continue;
    const uintmax_t bytes = fs::file_size(entry.path(), stat_error);
    if (fs::remove(entry.path(), stat_error)) {
      ++result.removed_blobs;
      result.freed_bytes += stat_error ? 0 : bytes;
    }
  }
  std::sort(result.removed_versions.begin(), result.removed_versions.end());
  return result;
}

}  // namespace twin
