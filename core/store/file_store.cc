#include "core/store/file_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin {
namespace {

namespace fs = std::filesystem;

// Copies move through a buffer of this size, so memory stays flat for multi-GB blobs.
constexpr size_t kCopyChunkBytes = size_t{1} << 20;
// A concurrent Delete may remove a freshly created, still empty parent directory before the
// temporary file appears in it; creating the directory again and retrying resolves that race.
constexpr int kMaxCreateAttempts = 3;
constexpr mode_t kFileMode = 0644;

// Errors that a retry may cure are UNAVAILABLE; everything else is INTERNAL.
absl::Status IoError(absl::string_view what, const std::string& path, int error_number) {
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(error_number));
  switch (error_number) {
    case EAGAIN:
    case EINTR:
    case EBUSY:
    case ETIMEDOUT:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset(int fd) {
    Close();
    fd_ = fd;
  }
  // Returns close()'s errno (0 on success): close can report a failed delayed write.
  int Close() {
    if (fd_ < 0) return 0;
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

int OpenRetryingOnSignal(const std::string& path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

absl::Status WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return IoError("cannot write", path, errno);
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
  return absl::OkStatus();
}

// Copies all of `in` (named `in_path`) into `out` (named `out_path`) in fixed-size chunks.
absl::Status CopyFd(int in, const std::string& in_path, int out, const std::string& out_path) {
  std::vector<char> buffer(kCopyChunkBytes);
  while (true) {
    const ssize_t got = ::read(in, buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      return IoError("cannot read", in_path, errno);
    }
    if (got == 0) return absl::OkStatus();
    RETURN_IF_ERROR(WriteAll(out, buffer.data(), static_cast<size_t>(got), out_path));
  }
}

absl::Status FsyncDirectory(const std::string& dir) {
  Fd fd(OpenRetryingOnSignal(dir, O_RDONLY | O_DIRECTORY));
  if (!fd.valid()) return IoError("cannot open directory", dir, errno);
  if (::fsync(fd.get()) != 0) return IoError("cannot fsync directory", dir, errno);
  return absl::OkStatus();
}

absl::Status CreateDirectories(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return IoError("cannot create directory", dir, ec.value());
  return absl::OkStatus();
}

// Writes `path` atomically: `fill` writes the content into "<path>.tmp.<random>" in the same
// directory, which is fsynced and renamed over `path`; the directory is then fsynced so the
// rename itself survives a crash. On failure the temporary file is removed.
absl::Status WriteFileAtomically(
    const std::string& path, const std::function<absl::Status(int fd, const std::string&)>& fill) {
  std::string dir = fs::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  std::string temp_path;
  Fd fd;
  for (int attempt = 0; attempt < kMaxCreateAttempts && !fd.valid(); ++attempt) {
    RETURN_IF_ERROR(CreateDirectories(dir));
    temp_path = TemporaryObjectName(path);
    fd.Reset(OpenRetryingOnSignal(temp_path, O_WRONLY | O_CREAT | O_EXCL, kFileMode));
    if (!fd.valid() && errno != ENOENT) break;
  }
  if (!fd.valid()) return IoError("cannot create", temp_path, errno);

  absl::Status status = fill(fd.get(), temp_path);
  if (status.ok() && ::fsync(fd.get()) != 0) status = IoError("cannot fsync", temp_path, errno);
  const int close_error = fd.Close();
  if (status.ok() && close_error != 0) status = IoError("cannot close", temp_path, close_error);
  if (status.ok() && ::rename(temp_path.c_str(), path.c_str()) != 0) {
    status = IoError(absl::StrCat("cannot rename ", temp_path, " to"), path, errno);
  }
  if (!status.ok()) {
    ::unlink(temp_path.c_str());
    return status;
  }
  return FsyncDirectory(dir);
}

// Removes `dir` and then its parents while they are empty, stopping at `root` (kept).
// `dir` lies under `root`, so it is longer than `root` until the walk reaches it.
void RemoveEmptyParents(fs::path dir, const std::string& root) {
  while (dir.string().size() > root.size()) {
    if (::rmdir(dir.c_str()) != 0) return;  // not empty (or gone): nothing more to prune
    dir = dir.parent_path();
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileObjectStore>> FileObjectStore::Create(
    const std::string& root_dir) {
  if (root_dir.empty()) return absl::InvalidArgumentError("file store root directory is empty");
  std::error_code ec;
  fs::path root = fs::absolute(root_dir, ec);
  if (ec) return IoError("cannot resolve directory", root_dir, ec.value());
  root = root.lexically_normal();
  std::string root_string = root.string();
  while (root_string.size() > 1 && root_string.back() == '/') root_string.pop_back();
  RETURN_IF_ERROR(CreateDirectories(root_string));
  if (!fs::is_directory(root_string, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("file store root ", root_string, " is not a directory"));
  }
  return std::unique_ptr<FileObjectStore>(new FileObjectStore(std::move(root_string)));
}

std::string FileObjectStore::PathOf(absl::string_view key) const {
  return root_ == "/" ? absl::StrCat("/", key) : absl::StrCat(root_, "/", key);
}

std::string FileObjectStore::uri() const { return absl::StrCat("file://", root_); }

namespace {

// Opens the object file for reading: NOT_FOUND when the key names no regular file.
absl::Status OpenObject(const std::string& path, const std::string& uri, Fd* fd,
                        uint64_t* size_bytes) {
  fd->Reset(OpenRetryingOnSignal(path, O_RDONLY));
  if (!fd->valid()) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("object ", uri, " not found"));
    }
    return IoError("cannot open", path, errno);
  }
  struct stat info;
  if (::fstat(fd->get(), &info) != 0) return IoError("cannot stat", path, errno);
  if (!S_ISREG(info.st_mode)) {
    return absl::NotFoundError(absl::StrCat("object ", uri, " not found (not a file)"));
  }
  if (size_bytes != nullptr) *size_bytes = static_cast<uint64_t>(info.st_size);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> FileObjectStore::Get(absl::string_view key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string path = PathOf(key);
  Fd fd;
  uint64_t size_bytes = 0;
  RETURN_IF_ERROR(OpenObject(path, UriOf(key), &fd, &size_bytes));
  std::string bytes;
  bytes.reserve(size_bytes);
  std::vector<char> buffer(std::min<uint64_t>(std::max<uint64_t>(size_bytes, 1), kCopyChunkBytes));
  while (true) {
    const ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      return IoError("cannot read", path, errno);
    }
    if (got == 0) return bytes;
    bytes.append(buffer.data(), static_cast<size_t>(got));
  }
}

absl::Status FileObjectStore::GetToFile(absl::string_view key, const std::string& local_path) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  if (local_path.empty()) return absl::InvalidArgumentError("GetToFile: empty local path");
  const std::string path = PathOf(key);
  Fd in;
  RETURN_IF_ERROR(OpenObject(path, UriOf(key), &in, nullptr));
  return WriteFileAtomically(local_path, [&](int out, const std::string& out_path) {
    return CopyFd(in.get(), path, out, out_path);
  });
}

absl::Status FileObjectStore::Put(absl::string_view key, absl::string_view bytes) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  return WriteFileAtomically(PathOf(key), [&](int out, const std::string& out_path) {
    return WriteAll(out, bytes.data(), bytes.size(), out_path);
  });
}

absl::Status FileObjectStore::PutFile(absl::string_view key, const std::string& local_path) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  Fd in(OpenRetryingOnSignal(local_path, O_RDONLY));
  if (!in.valid()) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("local file ", local_path, " not found"));
    }
    return IoError("cannot open", local_path, errno);
  }
  struct stat info;
  if (::fstat(in.get(), &info) != 0) return IoError("cannot stat", local_path, errno);
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(local_path, " is not a regular file"));
  }
  return WriteFileAtomically(PathOf(key), [&](int out, const std::string& out_path) {
    return CopyFd(in.get(), local_path, out, out_path);
  });
}

absl::StatusOr<ObjectInfo> FileObjectStore::Head(absl::string_view key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string path = PathOf(key);
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("object ", UriOf(key), " not found"));
    }
    return IoError("cannot stat", path, errno);
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::NotFoundError(absl::StrCat("object ", UriOf(key), " not found (not a file)"));
  }
  return ObjectInfo{std::string(key), static_cast<uint64_t>(info.st_size)};
}

absl::StatusOr<std::vector<ObjectInfo>> FileObjectStore::List(absl::string_view prefix) {
  // The prefix is a plain string prefix of keys (as in S3), so "v1/sh" matches
  // "v1/shared.safetensors"; the walk starts at the deepest directory the prefix names.
  RETURN_IF_ERROR(ValidateListPrefix(prefix));
  const absl::string_view directory_part = prefix.substr(0, prefix.rfind('/') + 1);
  std::vector<ObjectInfo> objects;
  std::vector<fs::path> pending = {fs::path(PathOf(directory_part))};
  const size_t root_prefix_size = root_ == "/" ? 1 : root_.size() + 1;
  while (!pending.empty()) {
    const fs::path dir = pending.back();
    pending.pop_back();
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    // Directories may vanish under a concurrent Delete; a missing one simply holds nothing.
    if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) continue;
    if (ec) return IoError("cannot list", dir.string(), ec.value());
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      const fs::directory_entry& entry = *it;
      std::error_code entry_ec;
      if (entry.is_directory(entry_ec) && !entry.is_symlink(entry_ec)) {
        pending.push_back(entry.path());
        continue;
      }
      if (!entry.is_regular_file(entry_ec)) continue;
      std::string key = entry.path().string().substr(root_prefix_size);
      // Skips in-flight writes and names that no key could address.
      if (!absl::StartsWith(key, prefix) || !ValidateObjectKey(key).ok()) continue;
      const uintmax_t size_bytes = entry.file_size(entry_ec);
      if (entry_ec) continue;  // deleted while listing
      objects.push_back(ObjectInfo{std::move(key), static_cast<uint64_t>(size_bytes)});
    }
    if (ec) return IoError("cannot list", dir.string(), ec.value());
  }
  std::sort(objects.begin(), objects.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return objects;
}

absl::Status FileObjectStore::Delete(absl::string_view key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string path = PathOf(key);
  if (::unlink(path.c_str()) != 0) {
    // A missing key, or one that names a directory (not an object), has nothing to delete.
    if (errno == ENOENT || errno == ENOTDIR || errno == EISDIR) return absl::OkStatus();
    return IoError("cannot delete", path, errno);
  }
  const fs::path parent = fs::path(path).parent_path();
  RETURN_IF_ERROR(FsyncDirectory(parent.string()));
  RemoveEmptyParents(parent, root_);
  return absl::OkStatus();
}

}  // namespace twin
