#include "merge_offline/report.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace twin {
namespace {

std::string Mib(uint64_t bytes) { return absl::StrFormat("%.2f MiB", bytes / 1048576.0); }

}  // namespace

std::string RenderReport(const Manifest& m, const ReportSizes& s) {
  std::string out = absl::StrCat("# Twin-Merging artifact set ", m.version, "\n\n");
  absl::StrAppend(&out, "Created ", m.created_at, " by ", m.tool_name, " ", m.tool_version,
                  ".\n\n## Merge\n\n");
  absl::StrAppend(&out, "- shared expert: `", m.merge_method, "` with parameters `",
                  m.merge_parameters.dump(), "`\n");
  absl::StrAppend(&out, "- base model: `", m.base_model.uri, "` (sha256 ", m.base_model.sha256,
                  ")\n");
  bool any_head = false;
  for (const auto& t : m.tasks) any_head |= !t.head_tensors.empty();
  absl::StrAppend(&out, "- head pattern: `", m.head_pattern, "`",
                  any_head ? "" : " (matches no tensor: every tensor is merged)", "\n");
  absl::StrAppend(&out, "- rank policy: `", m.rank_policy.dump(), "`, twin dtype ",
                  m.twin_dtype, "\n\n## Tasks\n\n| task | labels | expert | sha256 |\n|---|---|---|---|\n");
  for (const auto& t : m.tasks) {
    // A causal LM's tasks generate text: they have no labels.
    const std::string labels =
        t.labels.empty() ? "(generates text)" : absl::StrJoin(t.labels, ", ");
    absl::StrAppend(&out, "| ", t.name, " | ", labels, " | `",
                    t.source.uri, "` | ", t.source.sha256.substr(0, 12), " |\n");
  }

  absl::StrAppend(&out, "\n## Sizes\n\n| part | size |\n|---|---|\n");
  const size_t tasks = m.tasks.size();
  const uint64_t twin_total = s.shared_bytes + s.twin_bytes + s.router_bytes;
  absl::StrAppend(&out, "| one expert | ", Mib(s.expert_bytes), " |\n");
  absl::StrAppend(&out, "| ", tasks, " experts | ", Mib(s.expert_bytes * tasks), " |\n");
  absl::StrAppend(&out, "| shared expert | ", Mib(s.shared_bytes), " |\n");
  absl::StrAppend(&out, "| twin vectors + heads (all tasks) | ", Mib(s.twin_bytes), " |\n");
  absl::StrAppend(&out, "| router | ", Mib(s.router_bytes), " |\n");
  absl::StrAppend(&out, "| **total** | **", Mib(twin_total), "** (",
                  absl::StrFormat("%.1f%%", s.expert_bytes ? 100.0 * twin_total /
                                                                 (s.expert_bytes * tasks)
                                                           : 0.0),
                  " of the experts) |\n\n");

  absl::StrAppend(&out, "## Ranks\n\n| task | tensor | shape | rank | relative error |\n"
                        "|---|---|---|---|---|\n");
  for (const auto& e : m.twin_tensors) {
    absl::StrAppend(&out, "| ", e.task, " | ", e.name, " | ", e.rows, "x", e.cols, " | ",
                    e.rank, " | ", absl::StrFormat("%.4f", e.rel_error), " |\n");
  }

  const RouterEntry& r = m.router;
  absl::StrAppend(&out, "\n## Router\n\n");
  absl::StrAppend(&out, absl::StrFormat(
                            "MLP %d -> %d x %d layers -> %d tasks, trained on %d examples, "
                            "%d epochs; held-out routing accuracy **%.4f** on %d examples.\n\n",
                            r.spec.input_dim, r.spec.hidden_dim, r.spec.num_hidden_layers,
                            r.spec.num_tasks, r.train_examples, r.epochs_run,
                            r.validation_accuracy, r.validation_examples));
  if (!r.confusion.empty()) {
    absl::StrAppend(&out, "Confusion (rows: true task, columns: routed task)\n\n| |");
    for (const auto& t : m.tasks) absl::StrAppend(&out, " ", t.name, " |");
    absl::StrAppend(&out, "\n|---|");
    for (size_t i = 0; i < tasks; ++i) absl::StrAppend(&out, "---|");
    absl::StrAppend(&out, "\n");
    for (size_t i = 0; i < r.confusion.size() && i < tasks; ++i) {
      absl::StrAppend(&out, "| ", m.tasks[i].name, " |");
      for (int64_t c : r.confusion[i]) absl::StrAppend(&out, " ", c, " |");
      absl::StrAppend(&out, "\n");
    }
  }
  absl::StrAppend(&out, absl::StrFormat("\nBuilt in %.1f s.\n", s.elapsed_s));
  return out;
}

}  // namespace twin
