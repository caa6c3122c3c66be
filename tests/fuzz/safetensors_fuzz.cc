// SafetensorsReader on arbitrary file contents: the header's length prefix and JSON, the data
// offsets, and every tensor read back (stored dtype and converted to float). Invariants: an
// error has a message; an opened file's tensors all read or fail with a status, never crash.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <ATen/ATen.h>

#include "core/io/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

std::string* g_path = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One file, rewritten for every input (the reader maps a path).
  const char* dir = std::getenv("TMPDIR");
  std::string pattern = std::string(dir && *dir ? dir : "/tmp") + "/twin-fuzz-XXXXXX";
  const int fd = mkstemp(pattern.data());
  FUZZ_CHECK(fd >= 0, "cannot make a temporary file");
  close(fd);
  g_path = new std::string(pattern);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_path == nullptr) LLVMFuzzerInitialize(nullptr, nullptr);
  std::FILE* f = std::fopen(g_path->c_str(), "wb");
  FUZZ_CHECK(f != nullptr, "cannot write the temporary file");
  FUZZ_CHECK(size == 0 || std::fwrite(data, 1, size, f) == size, "short write");
  std::fclose(f);

  auto reader = twin::SafetensorsReader::Open(*g_path);
  FUZZ_NOTE(reader.status().ToString());
  if (!reader.ok()) {
    FUZZ_CHECK_EXPLAINED(reader.status());
    return 0;
  }
  int read = 0;
  for (const std::string& name : (*reader)->names()) {
    auto info = (*reader)->Info(name);
    FUZZ_CHECK(info.ok(), "a listed tensor has no info");
    FUZZ_CHECK(info->end >= info->begin, "a tensor ends before it begins");
    auto tensor = (*reader)->Get(name);
    if (tensor.ok()) {
      ++read;
      FUZZ_CHECK(static_cast<uint64_t>(tensor->nbytes()) == info->num_bytes(),
                 "a tensor's bytes differ from its data offsets");
    }
    auto as_float = (*reader)->Get(name, at::kFloat);
    if (as_float.ok()) FUZZ_CHECK(as_float->scalar_type() == at::kFloat, "not converted");
  }
  FUZZ_NOTE(std::to_string(read) + " of " + std::to_string((*reader)->names().size()) +
            " tensors read");
  return 0;
}
