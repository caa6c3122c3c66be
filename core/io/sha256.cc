#include "core/io/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace twin {
namespace {

// Files are hashed in pieces of this size so memory stays flat for multi-GB blobs.
constexpr size_t kFileChunkBytes = 1 << 20;
constexpr char kHexDigits[] = "0123456789abcdef";

}  // namespace

struct Sha256Hasher::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256Hasher::Sha256Hasher() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  // Allocation failure or a missing digest leaves no way to report an error from a
  // constructor; both mean the process is unusable, so fail loudly rather than hash wrongly.
  if (impl_->ctx == nullptr || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1) {
    std::fprintf(stderr, "Sha256Hasher: OpenSSL EVP_sha256 initialisation failed\n");
    std::abort();
  }
}

Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256Hasher::Update(absl::string_view bytes) {
  if (bytes.empty()) return;
  EVP_DigestUpdate(impl_->ctx, bytes.data(), bytes.size());
}

std::string Sha256Hasher::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(impl_->ctx, digest, &length);
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHexDigits[digest[i] >> 4]);
    hex.push_back(kHexDigits[digest[i] & 0xf]);
  }
  return hex;
}

std::string Sha256Hex(absl::string_view bytes) {
  Sha256Hasher hasher;
  hasher.Update(bytes);
  return hasher.HexDigest();
}

absl::StatusOr<std::string> Sha256File(const std::string& path, uint64_t* size_bytes) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  }
  Sha256Hasher hasher;
  std::vector<char> buffer(kFileChunkBytes);
  uint64_t total_bytes = 0;
  while (true) {
    const size_t read_bytes = std::fread(buffer.data(), 1, buffer.size(), file);
    hasher.Update(absl::string_view(buffer.data(), read_bytes));
    total_bytes += read_bytes;
    if (read_bytes < buffer.size()) break;
  }
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) return absl::DataLossError(absl::StrCat("error reading ", path));
  if (size_bytes != nullptr) *size_bytes = total_bytes;
  return hasher.HexDigest();
}

}  // namespace twin
