// The entry points every fuzz target defines (libFuzzer's), and a check that aborts with a
// message: a fuzz target's only way to report a broken invariant, which libFuzzer then saves
// as a crashing input.
//
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
//     FUZZ_CHECK(parsed.ok() || !parsed.status().message().empty(), "an error without a message");
//     return 0;
//   }
//
// Built two ways (tests/fuzz/CMakeLists.txt): with libFuzzer under clang (TWIN_FUZZ=ON,
// scripts/fuzz.sh) and, in every build, against replay_main.cc, which runs the seed corpus once
// as a CTest.
#ifndef TWIN_TESTS_FUZZ_FUZZ_TARGET_H_
#define TWIN_TESTS_FUZZ_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);

// With TWIN_FUZZ_VERBOSE set, targets print what each input came to (for keeping the seed
// corpus useful: valid seeds should be accepted).
inline bool FuzzVerbose() {
  static const bool verbose = std::getenv("TWIN_FUZZ_VERBOSE") != nullptr;
  return verbose;
}
#define FUZZ_NOTE(what)                                                 \
  do {                                                                  \
    if (FuzzVerbose()) std::fprintf(stderr, "  -> %s\n", std::string(what).c_str()); \
  } while (0)

#define FUZZ_CHECK(condition, message)                                                  \
  do {                                                                                  \
    if (!(condition)) {                                                                 \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s: %s\n", __FILE__, __LINE__,    \
                   #condition, message);                                                \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

// Every error a parser returns must say what was wrong: an empty message is a finding.
#define FUZZ_CHECK_EXPLAINED(status) \
  FUZZ_CHECK((status).ok() || !(status).message().empty(), "an error without a message")

#endif  // TWIN_TESTS_FUZZ_FUZZ_TARGET_H_
