#include "merge_offline/internal/twin_compress.h"

#include <atomic>
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

// Runs fn(0..n-1) on up to `workers` threads (inline when workers <= 1).
void ParallelFor(size_t n, int workers, const std::function<void(size_t)>& fn) {
  const size_t threads = std::min<size_t>(n, static_cast<size_t>(std::max(1, workers)));
  if (threads <= 1) {
    for (size_t k = 0; k < n; ++k) fn(k);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (size_t w = 0; w < threads; ++w) {
    pool.emplace_back([&] {
      for (size_t k; (k = next.fetch_add(1)) < n;) fn(k);
    });
  }
  for (auto& th : pool) th.join();
}

// Twin vector of task t for tensor `name`: dense for 1-D tensors, factored otherwise.
absl::Status CompressTwin(const MergeJobConfig& c, const std::string& name, size_t index,
                          const at::Tensor& shared, const at::Tensor& shared_f,
                          const at::Tensor& expert, size_t t,
                          const std::vector<std::vector<int64_t>>& budget, const SvdOptions& svd,
                          c10::ScalarType twin_type, SafetensorsWriter* writer,
                          std::optional<TwinTensorEntry>* entry_out) {
  try {
    const at::Tensor delta = expert.to(at::kFloat) - shared_f;
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
    TwinTensorEntry entry;
    entry.task = c.experts[t].name;
    entry.name = name;
    entry.shape = shared.sizes().vec();
    entry.rows = md.first;
    entry.cols = md.second;
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
