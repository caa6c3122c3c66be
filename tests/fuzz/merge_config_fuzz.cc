// merge.yaml on arbitrary text (paths resolve against a folder that need not exist; parsing
// reads no file). Invariant: errors have messages.
#include <string>

#include "merge_offline/merge_config.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = twin::ParseMergeConfig(text, "/nonexistent/fuzz");
  FUZZ_NOTE(config.status().ToString());
  if (!config.ok()) {
    FUZZ_CHECK_EXPLAINED(config.status());
    return 0;
  }
  config->ToMergeOptions();
  return 0;
}
