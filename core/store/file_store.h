// ObjectStore over a local directory (the embedded default backend).
//
// Objects are files under the root; writes go to "<key>.tmp.<random>" in the same directory
// and are renamed into place (atomic on POSIX), then the directory is fsynced.
// Temporary files are never listed. Delete also removes parent directories it leaves empty
// (never the root).
//
// Errors: NOT_FOUND naming the object's URI for a missing key (or a key that names a
// directory); other I/O failures are UNAVAILABLE when a retry may help (EAGAIN, EINTR, EBUSY,
// ETIMEDOUT), otherwise INTERNAL, with the path and strerror.
//
// Thread-safety: safe to use concurrently (each call works on its own files).
#ifndef TWIN_CORE_STORE_FILE_STORE_H_
#define TWIN_CORE_STORE_FILE_STORE_H_

#include <memory>
#include <string>

#include "core/store/object_store.h"

namespace twin {

class FileObjectStore : public ObjectStore {
 public:
  // Creates the root directory if needed.
  static absl::StatusOr<std::unique_ptr<FileObjectStore>> Create(const std::string& root_dir);

  absl::StatusOr<std::string> Get(absl::string_view key) override;
  absl::Status GetToFile(absl::string_view key, const std::string& local_path) override;
  absl::Status Put(absl::string_view key, absl::string_view bytes) override;
  absl::Status PutFile(absl::string_view key, const std::string& local_path) override;
  absl::StatusOr<ObjectInfo> Head(absl::string_view key) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) override;
  absl::Status Delete(absl::string_view key) override;
  std::string uri() const override;

  const std::string& root_dir() const { return root_; }

 private:
  explicit FileObjectStore(std::string root) : root_(std::move(root)) {}
  std::string PathOf(absl::string_view key) const;
  std::string root_;
};

}  // namespace twin

#endif  // TWIN_CORE_STORE_FILE_STORE_H_
