// SHA-256 digests (OpenSSL EVP) as lowercase hex, for blob verification.
//
//   Sha256Hasher h; h.Update(bytes); std::string hex = h.HexDigest();
//   ASSIGN_OR_RETURN(std::string hex, Sha256File("/tmp/blob"));
//
// Thread-safety: a Sha256Hasher is not thread-safe; the free functions are.
#ifndef TWIN_CORE_IO_SHA256_H_
#define TWIN_CORE_IO_SHA256_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {

class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  void Update(absl::string_view bytes);
  // Finalises; the hasher must not be updated afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(absl::string_view bytes);
// Streams the file in chunks; also reports its size.
absl::StatusOr<std::string> Sha256File(const std::string& path, uint64_t* size_bytes = nullptr);

}  // namespace twin

#endif  // TWIN_CORE_IO_SHA256_H_
