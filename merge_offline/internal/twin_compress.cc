#include "merge_offline/internal/twin_compress.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin::merge_internal {

absl::StatusOr<std::unique_ptr<WorkDir>> WorkDir::Create(const std::string& requested,
                                                        bool keep) {
  std::string path = requested;
  if (path.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/twin-merge-XXXXXX");
    if (mkdtemp(templ.data()) == nullptr) {
      return absl::InternalError(absl::StrCat("cannot create a work directory under ", templ));
    }
    path = templ;
  } else {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", ec.message()));
  }
  return std::unique_ptr<WorkDir>(new WorkDir(path, keep));
}

WorkDir::~WorkDir() {
  if (keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

WorkerPool::WorkerPool(int workers) {
  if (workers <= 1) return;
  for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { Work(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (auto& thread : threads_) thread.join();
}

void WorkerPool::Run(size_t n, const std::function<void(size_t)>& fn) {
  if (threads_.empty()) {
    for (size_t k = 0; k < n; ++k) fn(k);
    return;
  }
  absl::MutexLock lock(&mu_);
  fn_ = &fn;
  size_ = n;
  next_ = 0;
  pending_ = n;
  mu_.Await(absl::Condition(this, &WorkerPool::AllReturned));
  fn_ = nullptr;
  size_ = next_ = 0;
}

void WorkerPool::Work() {
  mu_.Lock();
  for (;;) {
    mu_.Await(absl::Condition(this, &WorkerPool::HasWorkOrStop));
    if (next_ >= size_) break;  // stopping, nothing left
    const size_t k = next_++;
    const std::function<void(size_t)>* fn = fn_;
    mu_.Unlock();
    (*fn)(k);
    mu_.Lock();
    --pending_;
  }
  mu_.Unlock();
}

namespace {

// Resident set size of this process, 0 if unknown.
size_t ResidentBytes() {
  long pages = 0, resident = 0;
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  const bool read = std::fscanf(f, "%ld %ld", &pages, &resident) == 2;
  std::fclose(f);
  return read && resident > 0 ? static_cast<size_t>(resident) * ::sysconf(_SC_PAGESIZE) : 0;
}

}  // namespace

void FreeMemoryReleaser::Release() {
#ifdef __GLIBC__
  absl::MutexLock lock(&mu_);
  const size_t resident = ResidentBytes();
  if (resident == 0) return;
  baseline_bytes_ = std::min(baseline_bytes_, resident);
  if (resident <= baseline_bytes_ + slack_bytes_) return;
  malloc_trim(0);
  baseline_bytes_ = ResidentBytes();
#endif
}

at::Tensor TwinDelta(at::Tensor expert, const at::Tensor& shared_f) {
  at::Tensor delta = expert.to(at::kFloat);
  expert = at::Tensor();
  // Sole owner (the caller gave the tensor up, or to() made a copy): subtract in place.
  if (delta.use_count() == 1 && delta.storage().use_count() == 1) return delta.sub_(shared_f);
  return delta - shared_f;
}

namespace {

// The manifest entry of task t's twin of the 2-D+ tensor `name`, before its factors.
absl::StatusOr<TwinTensorEntry> EntryOf(const MergeJobConfig& c, const std::string& name,
                                        const at::Tensor& shared, size_t t) {
  ASSIGN_OR_RETURN(auto md, MatrixDims(shared.sizes().vec()));
  TwinTensorEntry entry;
  entry.task = c.experts[t].name;
  entry.name = name;
  entry.shape = shared.sizes().vec();
  entry.rows = md.first;
  entry.cols = md.second;
  return entry;
}

}  // namespace

// Twin vector of task t for tensor `name`: dense for 1-D tensors, factored otherwise.
absl::Status CompressTwin(const MergeJobConfig& c, const std::string& name, size_t index,
                          const at::Tensor& shared, const at::Tensor& shared_f,
                          at::Tensor expert, size_t t,
                          const std::vector<std::vector<int64_t>>& budget, const SvdOptions& svd,
                          c10::ScalarType twin_type, bool keep, SafetensorsWriter* writer,
                          std::optional<TwinTensorEntry>* entry_out) {
  try {
    const at::Tensor delta = TwinDelta(std::move(expert), shared_f);
    if (!keep) {
      if (shared.dim() < 2) return absl::OkStatus();
      ASSIGN_OR_RETURN(TwinTensorEntry entry, EntryOf(c, name, shared, t));
      entry.delta_norm = delta.norm().item<double>();
      entry.rel_error = entry.delta_norm > 0 ? 1.0 : 0.0;  // all of it dropped
      *entry_out = std::move(entry);
      return absl::OkStatus();
    }
    if (shared.dim() < 2) {
      if (delta.abs().max().item<double>() > 0) {
        RETURN_IF_ERROR(writer->Add(name + ".delta", delta.to(twin_type)));
      }
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(auto md, MatrixDims(shared.sizes().vec()));
    int64_t rank = 0;
    if (c.rank_policy.kind == RankPolicy::kBudget) {
      rank = budget[t][index];
    } else if (c.rank_policy.kind == RankPolicy::kEnergy) {
      ASSIGN_OR_RETURN(at::Tensor s, SingularValues(delta));
      rank = ChooseRank(c.rank_policy, md.first, md.second, s);
    } else {
      rank = ChooseRank(c.rank_policy, md.first, md.second, at::Tensor());
    }
    ASSIGN_OR_RETURN(Factorization f, CompressDelta(delta, rank, svd));
    ASSIGN_OR_RETURN(TwinTensorEntry entry, EntryOf(c, name, shared, t));
    entry.rank = f.norm > 0 ? f.rank : 0;
    entry.rel_error = f.rel_error;
    entry.delta_norm = f.norm;
    if (entry.rank > 0) {
      RETURN_IF_ERROR(writer->Add(name + ".us", f.us.to(twin_type)));
      RETURN_IF_ERROR(writer->Add(name + ".v", f.v.to(twin_type)));
    }
    *entry_out = std::move(entry);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("tensor '", name, "' of task ", c.experts[t].name,
                                            ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace twin::merge_internal
