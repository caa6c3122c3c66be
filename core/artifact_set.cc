#include "core/artifact_set.h"

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
#include "core/file_store.h"
#include "core/sha256.h"
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

// Brings blob `name` of `version` into `local_path`, verified against `ref`. A file already
// there with the right size and digest is kept; otherwise the blob is downloaded to a temporary
// name, checked, and only then renamed into place, so the final path never holds bytes that
// failed verification.
absl::Status FetchBlob(ObjectStore* store, const std::string& version, const std::string& name,
                       const BlobRef& ref, const std::string& local_path) {
  std::error_code ec;
  const uintmax_t cached_bytes = fs::file_size(local_path, ec);
  if (!ec && cached_bytes == ref.size_bytes) {
    uint64_t hashed_bytes = 0;
    absl::StatusOr<std::string> digest = Sha256File(local_path, &hashed_bytes);
    if (digest.ok() && *digest == ref.sha256 && hashed_bytes == ref.size_bytes) {
      return absl::OkStatus();
    }
  }

  const std::string context = absl::StrCat("blob ", name, " of version ", version);
  const std::string temp_path = TemporaryObjectName(local_path);
  absl::Status status = store->GetToFile(BlobKey(version, name), temp_path);
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
  } else if (std::rename(temp_path.c_str(), local_path.c_str()) != 0) {
    status = absl::InternalError(absl::StrCat(context, ": cannot rename ", temp_path, " to ",
                                              local_path, ": ", std::strerror(errno)));
  }
  if (!status.ok()) std::remove(temp_path.c_str());
  return status;
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
                                                  const std::string& cache_dir) {
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
  ASSIGN_OR_RETURN(std::unique_ptr<FileObjectStore> local, FileObjectStore::Create(dir));
  for (const auto& [name, ref] : manifest.blobs) {
    RETURN_IF_ERROR(FetchBlob(store, resolved, name, ref, absl::StrCat(dir, "/", name)));
  }
  // Written last, as in the store: a local manifest means every blob beside it was verified.
  RETURN_IF_ERROR(local->Put(kManifestName, *text));
  return LocalArtifactSet{resolved, dir, std::move(manifest)};
}

}  // namespace twin
