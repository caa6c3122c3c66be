// Manifest::FromJson on arbitrary bytes (the manifest.json a store returns). Invariants: an
// error has a message; an accepted manifest survives ToJson -> FromJson unchanged.
#include <string>

#include "core/store/manifest.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto manifest = twin::Manifest::FromJson(text);
  FUZZ_NOTE(manifest.status().ToString());
  if (!manifest.ok()) {
    FUZZ_CHECK_EXPLAINED(manifest.status());
    return 0;
  }
  manifest->NamedBlobs();
  manifest->TotalBlobBytes();
  const std::string written = manifest->ToJson();
  auto again = twin::Manifest::FromJson(written);
  FUZZ_CHECK(again.ok(), "an accepted manifest's own ToJson is refused");
  FUZZ_CHECK(again->ToJson() == written, "ToJson -> FromJson -> ToJson changed the manifest");
  return 0;
}
