#include "core/model/torch_runtime.h"

#include <cstdlib>
#include <thread>

#include <ATen/Parallel.h>
#include <ATen/Context.h>
#include <torch/cuda.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace twin {

std::string ConfigureTorchRuntime(const TorchRuntimeOptions& options) {
  int threads = options.intra_op_threads;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  std::string line = absl::StrCat("torch: ", at::get_num_threads(), " intra-op threads");
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr) {
    absl::StrAppend(&line, "; OPENBLAS_NUM_THREADS is unset (set it to 1 to avoid nested "
                           "BLAS threads)");
  }
  return line;
}

absl::StatusOr<std::string> ResolveDevice(const std::string& spec) {
  if (spec == "cpu") return spec;
  const bool cuda = torch::cuda::is_available();
  if (spec == "auto") return cuda ? std::string("cuda:0") : std::string("cpu");
  if (spec == "cuda" || absl::StartsWith(spec, "cuda:")) {
    if (!cuda) {
      return absl::FailedPreconditionError(
          absl::StrCat("device '", spec, "' requested but CUDA is not available"));
    }
    int index = 0;
    if (spec.size() > 5 && !absl::SimpleAtoi(spec.substr(5), &index)) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", spec, "'"));
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(absl::StrCat("device '", spec, "': only ",
                                                     torch::cuda::device_count(),
                                                     " CUDA devices"));
    }
    return absl::StrCat("cuda:", index);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad device '", spec, "' (expected auto, cpu, cuda or cuda:N)"));
}

}  // namespace twin
