#include "client/cli_format.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace twin::client {

absl::StatusOr<std::vector<int64_t>> ParseIdList(absl::string_view text,
                                                 absl::string_view what) {
  std::vector<int64_t> ids;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(entry), &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": '", entry, "' is not an integer (expected e.g. 1,2,3)"));
    }
    ids.push_back(id);
  }
  return ids;
}

std::string FormatInferResponse(const twinmerge::v1::InferResponse& reply) {
  std::string out;
  if (!reply.request_id().empty()) absl::StrAppend(&out, "request_id: ", reply.request_id(), "\n");
  absl::StrAppend(&out, "task: ", reply.task(), "\n");
  absl::StrAppend(&out, "label: ", reply.label(), " (index ", reply.label_index(), ")\n");
  absl::StrAppend(&out, "probabilities: [",
                  absl::StrJoin(reply.probabilities(), ", ",
                                [](std::string* s, float p) {
                                  absl::StrAppend(s, absl::StrFormat("%.4f", p));
                                }),
                  "]\n");
  absl::StrAppend(&out, "router_weights:");
  for (const auto& weight : reply.router_weights()) {
    absl::StrAppend(&out, absl::StrFormat(" %s=%.4f", weight.task(), weight.weight()));
  }
  absl::StrAppend(&out, "\n");
  absl::StrAppend(&out, "cluster_key: ", reply.cluster_key(), "\n");
  absl::StrAppend(&out, "cache_hit: ", reply.cache_hit() ? "true" : "false", "\n");
  absl::StrAppend(&out, "artifact_version: ", reply.artifact_version(), "\n");
  const auto& t = reply.timing();
  absl::StrAppend(&out, "timing_us: queue ", t.queue_us(), ", route ", t.route_us(), ", fuse ",
                  t.fuse_us(), ", forward ", t.forward_us(), ", total ", t.total_us(), "\n");
  return out;
}

std::string FormatModelInfo(const twinmerge::v1::ModelInfo& info) {
  std::string out;
  absl::StrAppend(&out, "artifact_version: ", info.artifact_version(), "\n");
  absl::StrAppend(&out, "merge_method: ", info.merge_method(), "\n");
  absl::StrAppend(&out, "rank_policy: ", info.rank_policy(), "\n");
  absl::StrAppend(&out, "router_validation_accuracy: ",
                  absl::StrFormat("%.4f", info.router_validation_accuracy()), "\n");
  absl::StrAppend(&out, "num_parameters: ", info.num_parameters(), "\n");
  absl::StrAppend(&out, "tokenizer: ", info.tokenizer(), "\n");
  if (!info.model_kind().empty()) absl::StrAppend(&out, "model_kind: ", info.model_kind(), "\n");
  if (info.model_kind() == "generation") {
    absl::StrAppend(&out, "max_context_tokens: ", info.max_context_tokens(),
                    ", max_new_tokens: ", info.max_new_tokens(), "\n");
  }
  absl::StrAppend(&out, "device: ", info.device(), "\n");
  absl::StrAppend(&out, "tasks:\n");
  for (int i = 0; i < info.tasks_size(); ++i) {
    const auto& task = info.tasks(i);
    absl::StrAppend(&out, "  ", task.name(), ": labels [", absl::StrJoin(task.labels(), ", "),
                    "]");
    if (i < info.mean_rank_size()) {
      absl::StrAppend(&out, absl::StrFormat(", mean rank %.2f", info.mean_rank(i)));
    }
    absl::StrAppend(&out, "\n");
  }
  const auto& l = info.limits();
  absl::StrAppend(&out, "limits: max_batch_size ", l.max_batch_size(), ", max_input_length ",
                  l.max_input_length(), ", max_top_k ", l.max_top_k(), ", default_top_k ",
                  l.default_top_k(), ", default_temperature ",
                  absl::StrFormat("%.3g", l.default_temperature()), ", max_queue_size ",
                  l.max_queue_size(), "\n");
  return out;
}

std::string FormatGenerateStart(const twinmerge::v1::GenerateResponse& reply) {
  std::string out = absl::StrCat("[task ", reply.task().empty() ? "-" : reply.task(), ", ",
                                 reply.batch_mode());
  if (reply.router_weights_size() > 0) {
    absl::StrAppend(&out, ", weights");
    for (const auto& w : reply.router_weights()) {
      absl::StrAppend(&out, " ", w.task(), "=", absl::StrFormat("%.3f", w.weight()));
    }
  }
  absl::StrAppend(&out, ", version ", reply.artifact_version(), "]\n");
  return out;
}

std::string FormatGenerateEnd(const twinmerge::v1::GenerateResponse& reply) {
  const auto& u = reply.usage();
  return absl::StrFormat(
      "[finish %s, prompt %d tokens, generated %d tokens, first token %.1f ms, total %.1f ms, "
      "seed %u]\n",
      reply.finish_reason().empty() ? "-" : reply.finish_reason(), u.prompt_tokens(),
      u.generated_tokens(), u.time_to_first_token_us() / 1e3, u.total_us() / 1e3, u.seed());
}

}  // namespace twin::client
