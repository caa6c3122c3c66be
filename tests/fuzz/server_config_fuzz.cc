// server.yaml on arbitrary text: ParseServerConfig, then ValidateServerConfig on what parsed.
// Invariant: errors have messages (and name a key, which the unit tests check).
#include <string>

#include "server/server_config.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = twin::ParseServerConfig(text);
  FUZZ_NOTE(config.status().ToString());
  if (!config.ok()) {
    FUZZ_CHECK_EXPLAINED(config.status());
    return 0;
  }
  const absl::Status valid = twin::ValidateServerConfig(*config);
  FUZZ_NOTE("validate " + valid.ToString());
  FUZZ_CHECK_EXPLAINED(valid);
  return 0;
}
