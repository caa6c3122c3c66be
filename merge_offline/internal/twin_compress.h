// Pieces of the merge job's compress stage: the scratch directory, the worker threads, the
// release of freed memory, and the twin vector of one (task, tensor): dense for 1-D tensors,
// SVD factors otherwise.
//
// Thread-safety: CompressTwin may run concurrently for different tasks (each writes only its
// own SafetensorsWriter); FreeMemoryReleaser is thread-safe; WorkDir and WorkerPool are owned
// and driven by one job's thread.
#ifndef TWIN_MERGE_OFFLINE_INTERNAL_TWIN_COMPRESS_H_
#define TWIN_MERGE_OFFLINE_INTERNAL_TWIN_COMPRESS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/store/manifest.h"
#include "core/io/safetensors.h"
#include "core/merge/svd_compress.h"
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

// Worker threads that live as long as the job. The first parallel op a new thread runs makes
// LibTorch rebuild its (pthreadpool) thread pool, whose fresh threads spin-wait for a while:
// starting threads for every tensor cost the job about a second of CPU time.
class WorkerPool {
 public:
  // `workers` threads; none when workers <= 1, and Run() works inline.
  explicit WorkerPool(int workers);
  ~WorkerPool();  // joins the threads
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs fn(0..n-1) on the threads, each index once, and returns when every call has.
  // Calls of Run() must not overlap.
  void Run(size_t n, const std::function<void(size_t)>& fn);

 private:
  void Work();
  bool HasWorkOrStop() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || next_ < size_; }
  bool AllReturned() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_ == 0; }

  absl::Mutex mu_;
  const std::function<void(size_t)>* fn_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t size_ ABSL_GUARDED_BY(mu_) = 0;     // indices of the current Run()
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;     // next index to hand out
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;  // calls not yet returned
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Keeps freed tensor memory from piling up. glibc before 2.38 rarely reuses a freed
// posix_memalign block (its bug 14581), and LibTorch allocates every CPU tensor that way, so a
// job that reads one expert tensor after another grows its heap by about one tensor per read:
// peak memory would grow with the number of experts. Release(), called between tensors, hands
// the free heap pages back to the system (malloc_trim) once the resident set has grown by
// `slack_bytes` over its level after the last release (or its lowest since): resident memory
// stays within that slack of what is live at those points, without the page faults of
// trimming every time. A no-op without glibc. Thread-safe.
class FreeMemoryReleaser {
 public:
  explicit FreeMemoryReleaser(size_t slack_bytes) : slack_bytes_(slack_bytes) {}
  void Release();

 private:
  const size_t slack_bytes_;
  absl::Mutex mu_;
  size_t baseline_bytes_ ABSL_GUARDED_BY(mu_) = SIZE_MAX;
};

// expert - shared_f in float32. Takes the expert tensor over: when it is float32 already the
// difference is computed in its storage instead of a new tensor.
at::Tensor TwinDelta(at::Tensor expert, const at::Tensor& shared_f);

// Writes task t's twin vector of tensor `name` (index `index` in merge order) to `writer` and,
// for 2-D+ tensors, sets *entry_out to its manifest entry. `budget` holds per-task ranks for
// the budget policy (unused otherwise). Without `keep` (a tensor of the shared prefix,
// twin.from_layer) nothing is written and a 2-D+ tensor's entry has rank 0, recording the
// delta's norm. Takes `expert` over (see TwinDelta).
absl::Status CompressTwin(const MergeJobConfig& c, const std::string& name, size_t index,
                          const at::Tensor& shared, const at::Tensor& shared_f,
                          at::Tensor expert, size_t t,
                          const std::vector<std::vector<int64_t>>& budget, const SvdOptions& svd,
                          c10::ScalarType twin_type, bool keep, SafetensorsWriter* writer,
                          std::optional<TwinTensorEntry>* entry_out);

}  // namespace twin::merge_internal

#endif  // TWIN_MERGE_OFFLINE_INTERNAL_TWIN_COMPRESS_H_
