#include "client/workload.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/io/safetensors.h"
#include "core/status_macros.h"

namespace twin::client {
namespace {

constexpr char kInputIds[] = "input_ids";
constexpr char kAttentionMask[] = "attention_mask";
constexpr char kLabels[] = "labels";

// Copies a 1-D or 2-D int64 tensor into a flat row-major vector.
std::vector<int64_t> ToVector(const at::Tensor& tensor) {
  at::Tensor flat = tensor.contiguous();
  const int64_t* data = flat.data_ptr<int64_t>();
  return std::vector<int64_t>(data, data + flat.numel());
}

struct TokenTensors {
  int64_t rows = 0;
  int64_t length = 0;
  std::vector<int64_t> ids;
  std::vector<int64_t> mask;    // empty when the file has none
  std::vector<int64_t> labels;  // empty when the file has none
};

absl::StatusOr<TokenTensors> ReadTokenTensors(const std::string& path) {
  ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(path));
  TokenTensors out;
  try {
    ASSIGN_OR_RETURN(at::Tensor ids, reader->Get(kInputIds, c10::kLong));
    if (ids.dim() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", kInputIds, "' must be [N,L], got ", ids.dim(), "-D"));
    }
    out.rows = ids.size(0);
    out.length = ids.size(1);
    out.ids = ToVector(ids);
    if (reader->Contains(kAttentionMask)) {
      ASSIGN_OR_RETURN(at::Tensor mask, reader->Get(kAttentionMask, c10::kLong));
      if (mask.sizes() != ids.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", kAttentionMask,
                                                       "' must have the shape of '", kInputIds,
                                                       "' [", out.rows, ",", out.length, "]"));
      }
      out.mask = ToVector(mask);
    }
    if (reader->Contains(kLabels)) {
      ASSIGN_OR_RETURN(at::Tensor labels, reader->Get(kLabels, c10::kLong));
      if (labels.dim() != 1 || labels.size(0) != out.rows) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", kLabels, "' must be [", out.rows, "]"));
      }
      out.labels = ToVector(labels);
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read tensors: ", e.what()));
  }
  return out;
}

// One row as a TokenInput with trailing padding (mask 0) removed. The mask is sent only when
// zeros remain inside the kept prefix, since the server's default is all ones.
absl::StatusOr<twinmerge::v1::TokenInput> RowTokens(const TokenTensors& t, int64_t row,
                                                    const std::string& path) {
  const int64_t begin = row * t.length;
  int64_t kept = t.length;
  bool inner_zero = false;
  if (!t.mask.empty()) {
    for (int64_t j = 0; j < t.length; ++j) {
      const int64_t m = t.mask[begin + j];
      if (m != 0 && m != 1) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", kAttentionMask, "' row ",
                                                       row, " has value ", m, " (must be 0 or 1)"));
      }
    }
    while (kept > 0 && t.mask[begin + kept - 1] == 0) --kept;
    if (kept == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", kAttentionMask, "' row ", row, " is all padding"));
    }
    for (int64_t j = 0; j < kept; ++j) inner_zero |= t.mask[begin + j] == 0;
  }
  twinmerge::v1::TokenInput tokens;
  for (int64_t j = 0; j < kept; ++j) tokens.add_input_ids(t.ids[begin + j]);
  if (inner_zero) {
    for (int64_t j = 0; j < kept; ++j) tokens.add_attention_mask(t.mask[begin + j]);
  }
  return tokens;
}

}  // namespace

size_t Workload::size() const {
  size_t n = 0;
  for (const auto& task_items : items) n += task_items.size();
  return n;
}

absl::StatusOr<std::vector<WorkItem>> LoadSafetensorsItems(const std::string& path,
                                                           const std::string& task) {
  ASSIGN_OR_RETURN(TokenTensors tensors, ReadTokenTensors(path));
  std::vector<WorkItem> items;
  items.reserve(tensors.rows);
  for (int64_t row = 0; row < tensors.rows; ++row) {
    WorkItem item;
    item.task = task;
    ASSIGN_OR_RETURN(*item.request.mutable_tokens(), RowTokens(tensors, row, path));
    if (!tensors.labels.empty()) item.label_index = static_cast<int>(tensors.labels[row]);
    items.push_back(std::move(item));
  }
  return items;
}

namespace {

// Calls `item` for each non-blank line of the text file `path` (a trailing \r removed) with its
// 1-based number; the items it returns, in order.
absl::StatusOr<std::vector<WorkItem>> ReadLineItems(
    const std::string& path,
    const std::function<absl::StatusOr<WorkItem>(int line_number, absl::string_view line)>& item) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<WorkItem> items;
  std::string line;
  for (int line_number = 1; std::getline(in, line); ++line_number) {
    absl::string_view view = absl::StripSuffix(line, "\r");
    if (absl::StripAsciiWhitespace(view).empty()) continue;
    ASSIGN_OR_RETURN(WorkItem parsed, item(line_number, view));
    items.push_back(std::move(parsed));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return items;
}

}  // namespace

absl::StatusOr<std::vector<WorkItem>> LoadTsvItems(const std::string& path,
                                                   const std::string& task) {
  return ReadLineItems(
      path, [&](int line_number, absl::string_view view) -> absl::StatusOr<WorkItem> {
        std::vector<absl::string_view> parts = absl::StrSplit(view, absl::MaxSplits('\t', 1));
        if (parts.size() != 2 || parts[0].empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ":", line_number, ": expected label<TAB>text"));
        }
        WorkItem item;
        item.task = task;
        item.request.set_text(std::string(parts[1]));
        int index = 0;
        if (absl::SimpleAtoi(parts[0], &index) && index >= 0) {
          item.label_index = index;
        } else {
          item.label = std::string(parts[0]);
        }
        return item;
      });
}

absl::StatusOr<std::vector<WorkItem>> LoadJsonlItems(const std::string& path,
                                                     const std::string& task) {
  return ReadLineItems(
      path, [&](int line_number, absl::string_view view) -> absl::StatusOr<WorkItem> {
        const nlohmann::json row =
            nlohmann::json::parse(view.begin(), view.end(), nullptr, /*allow_exceptions=*/false);
        if (!row.is_object() || !row.contains("prompt") || !row["prompt"].is_string() ||
            row["prompt"].get_ref<const std::string&>().empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ":", line_number, ": expected {\"prompt\": non-empty string}"));
        }
        WorkItem item;
        item.task = task;
        item.request.set_text(row["prompt"].get<std::string>());
        return item;
      });
}

absl::StatusOr<Workload> LoadWorkload(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  std::map<std::string, std::vector<WorkItem>> by_task;  // sorted by task name
  std::map<std::string, std::string> first_file;         // for error messages
  std::vector<std::filesystem::path> files;
  for (const auto& entry : it) files.push_back(entry.path());
  std::sort(files.begin(), files.end());  // deterministic item order
  for (const auto& file : files) {
    const std::string name = file.filename().string();
    std::string task;
    absl::StatusOr<std::vector<WorkItem>> items;
    if (absl::EndsWith(name, kSafetensorsSuffix)) {
      task = std::string(absl::StripSuffix(name, kSafetensorsSuffix));
      items = LoadSafetensorsItems(file.string(), task);
    } else if (absl::EndsWith(name, kTsvSuffix)) {
      task = std::string(absl::StripSuffix(name, kTsvSuffix));
      items = LoadTsvItems(file.string(), task);
    } else if (absl::EndsWith(name, kJsonlSuffix)) {
      task = std::string(absl::StripSuffix(name, kJsonlSuffix));
      items = LoadJsonlItems(file.string(), task);
    } else {
      continue;
    }
    if (!items.ok()) return items.status();
    if (task.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(file.string(), ": empty task name"));
    }
    first_file.emplace(task, file.string());
    auto& task_items = by_task[task];
    for (auto& item : *items) task_items.push_back(std::move(item));
  }
  if (by_task.empty()) {
    return absl::NotFoundError(absl::StrCat("no *", kSafetensorsSuffix, ", *", kTsvSuffix, " or *",
                                            kJsonlSuffix, " files in ", dir));
  }
  Workload workload;
  for (auto& [task, items] : by_task) {
    if (items.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(first_file[task], ": task '", task, "' has no examples"));
    }
    workload.tasks.push_back(task);
    workload.items.push_back(std::move(items));
  }
  return workload;
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<TaskMix> TaskMix::Parse(const std::string& spec,
                                       const std::vector<std::string>& tasks) {
  if (tasks.empty()) return absl::InvalidArgumentError("task mix over no tasks");
  TaskMix mix;
  mix.weights_.assign(tasks.size(), absl::StripAsciiWhitespace(spec).empty() ? 1.0 : 0.0);
  if (!absl::StripAsciiWhitespace(spec).empty()) {
    for (absl::string_view entry : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
      std::vector<absl::string_view> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
      double weight = 0;
      if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &weight) || !std::isfinite(weight) ||
          weight < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "task mix entry '", entry, "' is not task=weight with a finite weight >= 0"));
      }
      const std::string name(absl::StripAsciiWhitespace(kv[0]));
      auto found = std::find(tasks.begin(), tasks.end(), name);
      if (found == tasks.end()) {
        return absl::InvalidArgumentError(absl::StrCat("task mix names unknown task '", name,
                                                       "'; known: ", absl::StrJoin(tasks, ",")));
      }
      mix.weights_[found - tasks.begin()] = weight;
    }
  }
  double sum = 0;
  for (double w : mix.weights_) mix.cumulative_.push_back(sum += w);
  if (sum <= 0) return absl::InvalidArgumentError("task mix weights sum to 0");
  return mix;
}

size_t TaskMix::Pick(std::mt19937_64& rng) const {
  std::uniform_real_distribution<double> uniform(0.0, cumulative_.back());
  const double u = uniform(rng);
  // First task whose running sum exceeds u; zero-weight tasks never satisfy this.
  auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), u);
  if (it == cumulative_.end()) --it;  // u == total, only by rounding
  while (weights_[it - cumulative_.begin()] == 0) --it;
  return static_cast<size_t>(it - cumulative_.begin());
}

WorkloadSampler::WorkloadSampler(const Workload* workload, const TaskMix* mix, uint64_t seed)
    : workload_(workload), mix_(mix), rng_(seed) {}

const WorkItem& WorkloadSampler::Next() {
  const std::vector<WorkItem>& items = workload_->items[mix_->Pick(rng_)];
  std::uniform_int_distribution<size_t> pick(0, items.size() - 1);
  return items[pick(rng_)];
}

}  // namespace twin::client
