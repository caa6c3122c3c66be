// twin-eval's outputs: a markdown page (tables per head mode, the rank sweep, routing, lambda
// search, storage, and the command, machine and date that produced them) and the same figures
// as JSON for scripts and tests.
//
// JSON layout (keys as written):
//   {"run": {"command", "machine", "date", "threads", "zoo", "data", "version",
//            "shared_method", "seconds"},
//    "tasks": [{"name", "test_rows", "validation_rows"}],
//    "methods": [{"id", "label", "family", "policy", "routing", "lambda" (or null), "fusions",
//                 "given": {"<task>": acc, ...}, "unknown": {...},
//                 "mean_given", "mean_unknown", "normalized_given", "normalized_unknown"}],
//    "lambda_search": [{"method", "grid", "validation_mean", "chosen"}],
//    "routing": [{"routing", "accuracy": {"<task>": acc}, "mean"}],
//    "storage": [{"policy", "kept_rank_fraction", "mean_rel_error", "shared_bytes",
//                 "twin_bytes", "twin_fp16_bytes", "head_bytes", "router_bytes",
//                 "total_bytes", "total_fp16_bytes", "experts_bytes"}],
//    "target_normalized",
//    "min_ratio": [{"routing", "given", "unknown"}] (a ratio, or null when none)}
//
// Thread-safety: pure functions.
#ifndef TWIN_BENCH_EVAL_EVAL_REPORT_H_
#define TWIN_BENCH_EVAL_EVAL_REPORT_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/eval/eval.h"

namespace twin::eval {

struct RunInfo {
  std::string command;  // the exact command line
  std::string machine;  // DescribeMachine()
  std::string date;     // RFC 3339, UTC
  int threads = 1;
  std::string zoo_dir, data_dir;
};

// "Linux 6.1.0 x86_64, <CPU model>, N CPUs".
std::string DescribeMachine();
std::string NowUtc();
// argv joined with spaces, arguments with shell-special characters single-quoted.
std::string CommandLine(int argc, char** argv);

std::string ResultMarkdown(const EvalResult& result, const RunInfo& info);

// Pieces shared with the generative report (generative_eval.h): a Markdown table's header (with
// its rule) and row; the lambda search as a list; the storage table; their JSON.
std::string MarkdownHeader(const std::vector<std::string>& cells);
std::string MarkdownRow(const std::vector<std::string>& cells);
std::string LambdaSearchList(const std::vector<LambdaSearch>& searches);
std::string StorageTable(const std::vector<StorageResult>& storage);
nlohmann::json LambdaSearchJson(const std::vector<LambdaSearch>& searches);
nlohmann::json StorageJson(const std::vector<StorageResult>& storage);
std::string ResultJson(const EvalResult& result, const RunInfo& info);

}  // namespace twin::eval

#endif  // TWIN_BENCH_EVAL_EVAL_REPORT_H_
