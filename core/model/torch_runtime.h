// Process-wide LibTorch settings: intra-op threads (LibTorch starts with 1 on Debian's build),
// inter-op threads, and a warning when OPENBLAS_NUM_THREADS is unset (nested BLAS threads
// slow LibTorch down).
//
// Thread-safety: call once at start-up, before any model runs.
#ifndef TWIN_CORE_MODEL_TORCH_RUNTIME_H_
#define TWIN_CORE_MODEL_TORCH_RUNTIME_H_

#include <string>

#include "absl/status/statusor.h"

namespace twin {

struct TorchRuntimeOptions {
  int intra_op_threads = 0;  // 0 = number of online CPUs
};

// Applies the options; returns a one-line description for the log.
std::string ConfigureTorchRuntime(const TorchRuntimeOptions& options);

// "cpu", "cuda", "cuda:1", or "auto" (cuda:0 when available, else cpu).
absl::StatusOr<std::string> ResolveDevice(const std::string& spec);

}  // namespace twin

#endif  // TWIN_CORE_MODEL_TORCH_RUNTIME_H_
