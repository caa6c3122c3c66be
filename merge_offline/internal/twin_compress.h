// Pieces of the merge job's compress stage: the scratch directory, a small parallel-for, and
// the twin vector of one (task, tensor): dense for 1-D tensors, SVD factors otherwise.
//
// Thread-safety: CompressTwin may run concurrently for different tasks (each writes only its
// own SafetensorsWriter); WorkDir is owned by one job.
#ifndef TWIN_MERGE_OFFLINE_INTERNAL_TWIN_COMPRESS_H_
#define TWIN_MERGE_OFFLINE_INTERNAL_TWIN_COMPRESS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/manifest.h"
#include "core/safetensors.h"
#include "core/svd_compress.h"
#include "merge_offline/merge_config.h"

namespace twin::merge_internal {

// Scratch directory, removed on every exit path unless kept.
class WorkDir {
 public:
  // `requested` empty = a new directory under $TMPDIR (or /tmp).
  static absl::StatusOr<std::unique_ptr<WorkDir>> Create(const std::string& requested,
                                                         bool keep);
  ~WorkDir();
  const std::string& path() const { return path_; }

 private:
  WorkDir(std::string path, bool keep) : path_(std::move(path)), keep_(keep) {}
  std::string path_;
  bool keep_;
};

// Runs fn(0..n-1) on up to `workers` threads (inline when workers <= 1).
void ParallelFor(size_t n, int workers, const std::function<void(size_t)>& fn);

// Writes task t's twin vector of tensor `name` (index `index` in merge order) to `writer` and,
// for 2-D+ tensors, sets *entry_out to its manifest entry. `budget` holds per-task ranks for
// the budget policy (unused otherwise).
absl::Status CompressTwin(const MergeJobConfig& c, const std::string& name, size_t index,
                          const at::Tensor& shared, const at::Tensor& shared_f,
                          const at::Tensor& expert, size_t t,
                          const std::vector<std::vector<int64_t>>& budget, const SvdOptions& svd,
                          c10::ScalarType twin_type, SafetensorsWriter* writer,
                          std::optional<TwinTensorEntry>* entry_out);

}  // namespace twin::merge_internal

#endif  // TWIN_MERGE_OFFLINE_INTERNAL_TWIN_COMPRESS_H_
