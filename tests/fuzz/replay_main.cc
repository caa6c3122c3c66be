// Runs a fuzz target over files once, without libFuzzer: every regular file under each
// argument (a file or a folder, recursively), in sorted order. Exits 0 when every input
// returned; a broken invariant aborts (FUZZ_CHECK) and names nothing else, so the input is
// printed before it runs.
//
//   fuzz_manifest_replay tests/fuzz/corpus/manifest
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_target.h"

// Targets without an initializer get this one; a target's own definition takes precedence.
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int*, char***) { return 0; }

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  LLVMFuzzerInitialize(&argc, &argv);
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path root(argv[i]);
    std::error_code error;
    if (fs::is_regular_file(root, error)) {
      files.push_back(root);
    } else if (fs::is_directory(root, error)) {
      for (const auto& entry : fs::recursive_directory_iterator(root)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
    } else {
      std::cerr << "replay: " << root << " is neither a file nor a folder\n";
      return 2;
    }
  }
  if (files.empty()) {
    std::cerr << "replay: no input files (usage: " << argv[0] << " FILE_OR_FOLDER...)\n";
    return 2;
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& path : files) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::cerr << "replay: cannot read " << path << "\n";
      return 2;
    }
    std::cerr << "replay: " << path.string() << " (" << bytes.size() << " bytes)\n";
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::cerr << "replay: " << files.size() << " inputs, no failure\n";
  return 0;
}
