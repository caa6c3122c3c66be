// twin-inspect: fetches a published artifact set, verifies every blob's digest, prints a
// summary, and with --zoo evaluates Twin-Merging against the experts.
//
//   twin-inspect --store file:///data/store --cache /tmp/cache [--version v1] [--zoo DIR]

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "core/store/object_store.h"
#include "core/model/torch_runtime.h"
#include "merge_offline/inspect.h"

ABSL_FLAG(std::string, store, "", "Object store URI (required).");
ABSL_FLAG(std::string, version, "LATEST", "Version to inspect.");
ABSL_FLAG(std::string, cache, "", "Local directory for fetched blobs (required).");
ABSL_FLAG(std::string, zoo, "", "Directory with <task>.pt and <task>.test.safetensors.");
ABSL_FLAG(int, max_examples, 200, "Test examples per task.");
ABSL_FLAG(int, threads, 0, "Intra-op threads (0 = all cores).");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Verifies and summarises a Twin-Merging artifact set.\n"
                               "Usage: twin-inspect --store URI --cache DIR");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_store).empty() || absl::GetFlag(FLAGS_cache).empty()) {
    std::fprintf(stderr, "twin-inspect: --store and --cache are required\n");
    return 2;
  }
  twin::ConfigureTorchRuntime({absl::GetFlag(FLAGS_threads)});
  auto store = twin::OpenObjectStore(absl::GetFlag(FLAGS_store));
  if (!store.ok()) {
    std::fprintf(stderr, "twin-inspect: %s\n", store.status().ToString().c_str());
    return 1;
  }
  twin::InspectOptions options;
  options.version = absl::GetFlag(FLAGS_version);
  options.cache_dir = absl::GetFlag(FLAGS_cache);
  options.zoo_dir = absl::GetFlag(FLAGS_zoo);
  options.max_examples = absl::GetFlag(FLAGS_max_examples);
  auto result = twin::InspectArtifactSet(store->get(), options);
  if (!result.ok()) {
    std::fprintf(stderr, "twin-inspect: %s\n", result.status().ToString().c_str());
    return 1;
  }
  std::printf("%s", result->summary.c_str());
  return 0;
}
