#include "bench/eval/eval_report.h"

#include <sys/utsname.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace twin::eval {
namespace {

constexpr double kMiB = 1048576.0;

std::string Header(const std::vector<std::string>& cells) { return MarkdownHeader(cells); }
std::string Row(const std::vector<std::string>& cells) { return MarkdownRow(cells); }

std::string MethodTable(const EvalResult& r, bool unknown) {
  std::vector<std::string> head = {"method", "lambda"};
  head.insert(head.end(), r.tasks.begin(), r.tasks.end());
  head.insert(head.end(), {"mean", "normalized"});
  std::string out = Header(head);
  const MethodResult* expert = r.Find("expert");
  for (const MethodResult& m : r.methods) {
    const std::vector<double>& acc = unknown ? m.unknown : m.given;
    std::vector<std::string> cells = {m.label,
                                      m.lambda >= 0 ? absl::StrFormat("%.2f", m.lambda) : ""};
    for (double a : acc) cells.push_back(absl::StrFormat("%.4f", a));
    cells.push_back(absl::StrFormat("%.4f", Mean(acc)));
    cells.push_back(absl::StrFormat("%.1f", NormalizedScore(acc, expert->given)));
    out += Row(cells);
  }
  return out;
}

std::string ClassName(const EvalResult& r, size_t t, size_t c) {
  return t < r.class_names.size() && c < r.class_names[t].size() ? r.class_names[t][c]
                                                                 : absl::StrCat(c);
}

// Task-given accuracy by class of the experts and of Twin-Merging at the headline policy
// (ratio=0.1 when swept, else the first), one table per task: where routing loses accuracy.
std::string ClassTables(const EvalResult& r) {
  std::string policy = r.storage.empty() ? "" : r.storage.front().policy;
  for (const StorageResult& s : r.storage) {
    if (s.policy == "ratio=0.1") policy = s.policy;
  }
  std::vector<const MethodResult*> methods;
  for (const MethodResult& m : r.methods) {
    if (m.id == "expert" || (m.family == "twin" && m.policy == policy)) methods.push_back(&m);
  }
  std::string out =
      absl::StrCat("\n## Accuracy by class (task given; experts and Twin-Merging ", policy, ")\n");
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    std::vector<std::string> head = {r.tasks[t]};
    const size_t classes = t < r.class_names.size() ? r.class_names[t].size() : 0;
    for (size_t c = 0; c < classes; ++c) head.push_back(ClassName(r, t, c));
    absl::StrAppend(&out, "\n", Header(head));
    for (const MethodResult* m : methods) {
      std::vector<std::string> cells = {m->label};
      for (size_t c = 0; c < classes; ++c) {
        const bool known = t < m->class_given.size() && c < m->class_given[t].size() &&
                           !std::isnan(m->class_given[t][c]);
        cells.push_back(known ? absl::StrFormat("%.2f", m->class_given[t][c]) : "-");
      }
      absl::StrAppend(&out, Row(cells));
    }
  }
  return out;
}

// {task: {class: accuracy or null}}
nlohmann::json ClassJson(const EvalResult& r, const std::vector<std::vector<double>>& values) {
  nlohmann::json out = nlohmann::json::object();
  for (size_t t = 0; t < values.size() && t < r.tasks.size(); ++t) {
    for (size_t c = 0; c < values[t].size(); ++c) {
      const double a = values[t][c];
      out[r.tasks[t]][ClassName(r, t, c)] = std::isnan(a) ? nlohmann::json() : nlohmann::json(a);
    }
  }
  return out;
}

std::string SweepTable(const EvalResult& r) {
  std::vector<std::string> routings;
  for (const MethodResult& m : r.methods) {
    if (m.family == "twin" && m.policy == r.storage.front().policy) routings.push_back(m.routing);
  }
  std::vector<std::string> head = {"policy", "kept rank", "rel. error"};
  for (const std::string& routing : routings) head.push_back(routing + " (given / unknown)");
  head.insert(head.end(), {"bytes (fp32 twin)", "bytes (fp16 twin)", "of T experts"});
  std::string out = Header(head);
  const MethodResult* expert = r.Find("expert");
  for (const StorageResult& s : r.storage) {
    std::vector<std::string> cells = {s.policy, absl::StrFormat("%.3f", s.kept_rank_fraction),
                                      absl::StrFormat("%.3f", s.mean_rel_error)};
    for (const std::string& routing : routings) {
      const MethodResult* m = r.Find(absl::StrCat("twin:", s.policy, ":", routing));
      cells.push_back(m == nullptr
                          ? ""
                          : absl::StrFormat("%.1f / %.1f", NormalizedScore(m->given, expert->given),
                                            NormalizedScore(m->unknown, expert->given)));
    }
    cells.push_back(absl::StrFormat("%.3f MiB", s.total_bytes() / kMiB));
    cells.push_back(absl::StrFormat("%.3f MiB", s.total_fp16_bytes() / kMiB));
    cells.push_back(absl::StrFormat("%.1f%% / %.1f%%", 100.0 * s.total_bytes() / s.experts_bytes,
                                    100.0 * s.total_fp16_bytes() / s.experts_bytes));
    out += Row(cells);
  }
  return out;
}

std::string RatioText(double ratio) { return ratio < 0 ? "none" : absl::StrCat(ratio); }

nlohmann::json PerTask(const EvalResult& r, const std::vector<double>& values) {
  nlohmann::json out = nlohmann::json::object();
  for (size_t t = 0; t < r.tasks.size() && t < values.size(); ++t) out[r.tasks[t]] = values[t];
  return out;
}

nlohmann::json OrNull(double v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); }

}  // namespace

std::string MarkdownHeader(const std::vector<std::string>& cells) {
  std::string out = absl::StrCat("| ", absl::StrJoin(cells, " | "), " |\n|");
  for (size_t i = 0; i < cells.size(); ++i) out += "---|";
  return out + "\n";
}

std::string MarkdownRow(const std::vector<std::string>& cells) {
  return absl::StrCat("| ", absl::StrJoin(cells, " | "), " |\n");
}

std::string LambdaSearchList(const std::vector<LambdaSearch>& searches) {
  std::string out;
  for (const LambdaSearch& s : searches) {
    std::vector<std::string> points;
    for (size_t i = 0; i < s.validation_mean.size(); ++i) {
      points.push_back(absl::StrFormat("%.2f: %.4f", s.grid[i], s.validation_mean[i]));
    }
    absl::StrAppend(&out, "- ", s.method, ": chosen ", absl::StrFormat("%.2f", s.chosen),
                    points.empty() ? " (default: no validation rows)" : "",
                    points.empty() ? "" : " (", absl::StrJoin(points, ", "),
                    points.empty() ? "" : ")", "\n");
  }
  return out;
}

std::string StorageTable(const std::vector<StorageResult>& storage) {
  std::string out = Header({"policy", "shared", "twin fp32", "twin fp16", "heads", "router",
                            "total", "total (fp16 twin)", "T experts"});
  for (const StorageResult& s : storage) {
    absl::StrAppend(&out, Row({s.policy, absl::StrCat(s.shared_bytes), absl::StrCat(s.twin_bytes),
                               absl::StrCat(s.twin_fp16_bytes), absl::StrCat(s.head_bytes),
                               absl::StrCat(s.router_bytes), absl::StrCat(s.total_bytes()),
                               absl::StrCat(s.total_fp16_bytes()), absl::StrCat(s.experts_bytes)}));
  }
  absl::StrAppend(&out, "\nBytes; the shared expert, heads and router are float32.\n");
  return out;
}

nlohmann::json LambdaSearchJson(const std::vector<LambdaSearch>& searches) {
  nlohmann::json out = nlohmann::json::array();
  for (const LambdaSearch& s : searches) {
    out.push_back({{"method", s.method},
                   {"grid", s.grid},
                   {"validation_mean", s.validation_mean},
                   {"chosen", s.chosen}});
  }
  return out;
}

nlohmann::json StorageJson(const std::vector<StorageResult>& storage) {
  nlohmann::json out = nlohmann::json::array();
  for (const StorageResult& s : storage) {
    out.push_back({{"policy", s.policy},
                   {"kept_rank_fraction", s.kept_rank_fraction},
                   {"mean_rel_error", s.mean_rel_error},
                   {"shared_bytes", s.shared_bytes},
                   {"twin_bytes", s.twin_bytes},
                   {"twin_fp16_bytes", s.twin_fp16_bytes},
                   {"head_bytes", s.head_bytes},
                   {"router_bytes", s.router_bytes},
                   {"total_bytes", s.total_bytes()},
                   {"total_fp16_bytes", s.total_fp16_bytes()},
                   {"experts_bytes", s.experts_bytes}});
  }
  return out;
}

std::string DescribeMachine() {
  std::string out;
  struct utsname u;
  if (uname(&u) == 0) out = absl::StrCat(u.sysname, " ", u.release, " ", u.machine);
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      absl::StrAppend(&out, ", ", line.substr(line.find(':') + 2));
      break;
    }
  }
  absl::StrAppend(&out, ", ", std::thread::hardware_concurrency(), " CPUs");
  return out;
}

std::string NowUtc() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
}

std::string CommandLine(int argc, char** argv) {
  std::vector<std::string> parts;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.find_first_of(" \t\"'$\\`;&|<>*?()") != std::string::npos) {
      std::string quoted = "'";
      for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
      arg = quoted + "'";
    }
    parts.push_back(arg);
  }
  return absl::StrJoin(parts, " ");
}

std::string ResultMarkdown(const EvalResult& r, const RunInfo& info) {
  std::string out = "# Twin-Merging quality on the byte-level zoo (twin-eval)\n\n";
  absl::StrAppend(&out, "Command:\n\n```sh\n", info.command, "\n```\n\n");
  absl::StrAppend(&out, "Machine: ", info.machine, "; ", info.threads,
                  " intra-op thread(s). Date: ", info.date, ". Total time ",
                  absl::StrFormat("%.1f", r.seconds), " s.\n\n");
  absl::StrAppend(
      &out, "Zoo `", info.zoo_dir, "`, data `", info.data_dir, "`, artifact set version `",
      r.version, "` (shared expert: ", r.shared_method, "). Model: ",
      r.engine == "native" ? "the native engine (every twin row mixed per row, unfused, as the "
                             "server's unfused batches do)"
                           : "TorchScript (every twin row fused per distinct weight vector)",
      ".\n\n");
  std::vector<std::string> rows;
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    rows.push_back(absl::StrCat(r.tasks[t], " ", r.test_rows[t], " / ", r.validation_rows[t]));
  }
  absl::StrAppend(&out, "Rows per task (test / validation): ", absl::StrJoin(rows, ", "),
                  ". Normalized = 100 x accuracy / the expert's task-given accuracy, averaged "
                  "over tasks.\n\n");
  absl::StrAppend(&out, "## Task given (the client names the task; its head is used)\n\n",
                  "The two serving policies for a named task (twin-server `routing.task_given`): "
                  "`task` (the default) weights the named task's twin alone, which is the "
                  "oracle rows below; `router` weights it by the router, which is the router "
                  "and key rows.\n\n",
                  MethodTable(r, false), "\n");
  absl::StrAppend(&out,
                  "## Task unknown (the router's top task picks the head; a wrong task counts "
                  "as wrong)\n\nStatic merges, experts and the exact router use the router's "
                  "argmax; key modes the cluster key's top task; oracle the true task.\n\n",
                  MethodTable(r, true), "\n");
  absl::StrAppend(&out, "## Twin-Merging rank sweep (normalized score)\n\n", SweepTable(r), "\n");
  std::vector<std::string> mins;
  for (const EvalResult::MinRatio& m : r.min_ratios) {
    mins.push_back(absl::StrCat(m.routing, " ", RatioText(m.given), " / ", RatioText(m.unknown)));
  }
  absl::StrAppend(&out,
                  absl::StrFormat("Smallest swept rank ratio from which the normalized "
                                  "score stays >= %.0f (task given / unknown): ",
                                  r.target_normalized),
                  absl::StrJoin(mins, "; "), ".\n\n");
  std::vector<std::string> head = {"routing"};
  head.insert(head.end(), r.tasks.begin(), r.tasks.end());
  head.push_back("mean");
  absl::StrAppend(&out, "## Routing accuracy (top task = true task)\n\n", Header(head));
  for (const RoutingResult& rr : r.routing) {
    std::vector<std::string> cells = {rr.routing};
    for (double a : rr.accuracy) cells.push_back(absl::StrFormat("%.4f", a));
    cells.push_back(absl::StrFormat("%.4f", Mean(rr.accuracy)));
    absl::StrAppend(&out, Row(cells));
  }
  for (const RoutingResult& rr : r.routing) {
    if (rr.confusion.empty()) continue;
    std::vector<std::string> confusion_head = {"true task \\ top task"};
    confusion_head.insert(confusion_head.end(), r.tasks.begin(), r.tasks.end());
    absl::StrAppend(&out, "\nConfusion of the ", rr.routing, " (test rows):\n\n",
                    Header(confusion_head));
    for (size_t t = 0; t < rr.confusion.size() && t < r.tasks.size(); ++t) {
      std::vector<std::string> cells = {r.tasks[t]};
      for (int64_t c : rr.confusion[t]) cells.push_back(absl::StrCat(c));
      absl::StrAppend(&out, Row(cells));
    }
  }
  for (const RoutingResult& rr : r.routing) {
    if (rr.confusion.empty() || rr.class_accuracy.size() != r.tasks.size()) continue;
    absl::StrAppend(&out, "\nRouting accuracy of the ", rr.routing,
                    " by class (share of the class's test rows whose top task is their task):\n\n",
                    Header({"task", "by class"}));
    for (size_t t = 0; t < r.tasks.size(); ++t) {
      std::vector<std::string> parts;
      for (size_t c = 0; c < rr.class_accuracy[t].size(); ++c) {
        const double a = rr.class_accuracy[t][c];
        parts.push_back(absl::StrCat(ClassName(r, t, c), " ",
                                     std::isnan(a) ? "-" : absl::StrFormat("%.2f", a)));
      }
      absl::StrAppend(&out, Row({r.tasks[t], absl::StrJoin(parts, ", ")}));
    }
  }
  absl::StrAppend(&out, ClassTables(r));
  absl::StrAppend(&out, "\n## Lambda search (mean validation accuracy over tasks)\n\n",
                  LambdaSearchList(r.searches));
  absl::StrAppend(&out, "\n## Storage\n\n", StorageTable(r.storage));
  return out;
}

std::string ResultJson(const EvalResult& r, const RunInfo& info) {
  nlohmann::json j;
  j["run"] = {{"command", info.command}, {"machine", info.machine},
              {"date", info.date},       {"threads", info.threads},
              {"zoo", info.zoo_dir},     {"data", info.data_dir},
              {"version", r.version},    {"shared_method", r.shared_method},
              {"engine", r.engine},      {"seconds", r.seconds}};
  j["tasks"] = nlohmann::json::array();
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    j["tasks"].push_back({{"name", r.tasks[t]},
                          {"test_rows", r.test_rows[t]},
                          {"validation_rows", r.validation_rows[t]}});
  }
  const MethodResult* expert = r.Find("expert");
  j["methods"] = nlohmann::json::array();
  for (const MethodResult& m : r.methods) {
    j["methods"].push_back({{"id", m.id},
                            {"label", m.label},
                            {"family", m.family},
                            {"policy", m.policy},
                            {"routing", m.routing},
                            {"lambda", OrNull(m.lambda)},
                            {"fusions", m.fusions},
                            {"given", PerTask(r, m.given)},
                            {"unknown", PerTask(r, m.unknown)},
                            {"mean_given", Mean(m.given)},
                            {"mean_unknown", Mean(m.unknown)},
                            {"normalized_given", NormalizedScore(m.given, expert->given)},
                            {"normalized_unknown", NormalizedScore(m.unknown, expert->given)},
                            {"class_given", ClassJson(r, m.class_given)}});
  }
  j["lambda_search"] = LambdaSearchJson(r.searches);
  j["routing"] = nlohmann::json::array();
  for (const RoutingResult& rr : r.routing) {
    j["routing"].push_back({{"routing", rr.routing},
                            {"accuracy", PerTask(r, rr.accuracy)},
                            {"mean", Mean(rr.accuracy)},
                            {"class_accuracy", ClassJson(r, rr.class_accuracy)},
                            {"confusion", rr.confusion}});
  }
  j["storage"] = StorageJson(r.storage);
  j["target_normalized"] = r.target_normalized;
  j["min_ratio"] = nlohmann::json::array();
  for (const EvalResult::MinRatio& m : r.min_ratios) {
    j["min_ratio"].push_back(
        {{"routing", m.routing}, {"given", OrNull(m.given)}, {"unknown", OrNull(m.unknown)}});
  }
  return j.dump(2) + "\n";
}

}  // namespace twin::eval
