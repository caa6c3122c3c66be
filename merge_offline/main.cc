// twin-merge: builds and publishes a Twin-Merging artifact set from merge.yaml.
//
//   twin-merge --config merge.yaml [--output file:///dir] [--version v1] [--dry_run] [--quiet]

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"

ABSL_FLAG(std::string, config, "", "Path to merge.yaml (required).");
ABSL_FLAG(std::string, output, "", "Object store URI; overrides `output` in the config.");
ABSL_FLAG(std::string, version, "", "Version name; overrides `version` (default: timestamp).");
ABSL_FLAG(int, threads, -1, "Intra-op threads; overrides `threads` (0 = all cores).");
ABSL_FLAG(bool, dry_run, false, "Validate the config and every input, write nothing.");
ABSL_FLAG(bool, quiet, false, "No progress lines on stderr.");
ABSL_FLAG(std::string, work_dir, "", "Scratch directory (default: a new one under $TMPDIR).");
ABSL_FLAG(bool, keep_work_dir, false, "Keep the scratch directory (for debugging).");
ABSL_FLAG(std::string, report, "", "Also write the report (markdown) to this local path.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Builds a Twin-Merging artifact set (shared expert, compressed task knowledge, router) "
      "and publishes it to an object store.\nUsage: twin-merge --config merge.yaml");
  absl::ParseCommandLine(argc, argv);
  const std::string config_path = absl::GetFlag(FLAGS_config);
  if (config_path.empty()) {
    std::fprintf(stderr, "twin-merge: --config is required (see --help)\n");
    return 2;
  }
  auto config = twin::LoadMergeConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "twin-merge: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_output).empty()) config->output = absl::GetFlag(FLAGS_output);
  if (!absl::GetFlag(FLAGS_version).empty()) config->version = absl::GetFlag(FLAGS_version);
  if (absl::GetFlag(FLAGS_threads) >= 0) config->threads = absl::GetFlag(FLAGS_threads);

  twin::MergeJobOptions options;
  options.dry_run = absl::GetFlag(FLAGS_dry_run);
  options.quiet = absl::GetFlag(FLAGS_quiet);
  options.work_dir = absl::GetFlag(FLAGS_work_dir);
  options.keep_work_dir = absl::GetFlag(FLAGS_keep_work_dir);
  auto result = twin::RunMergeJob(*config, options);
  if (!result.ok()) {
    std::fprintf(stderr, "twin-merge: %s\n", result.status().ToString().c_str());
    return 1;
  }
  if (options.dry_run) {
    std::printf("dry run OK: %s\n", config_path.c_str());
    return 0;
  }
  const std::string report_path = absl::GetFlag(FLAGS_report);
  if (!report_path.empty()) {
    std::FILE* f = std::fopen(report_path.c_str(), "wb");
    if (f == nullptr) {
      std::fprintf(stderr, "twin-merge: cannot write report to %s\n", report_path.c_str());
      return 1;
    }
    std::fwrite(result->report_markdown.data(), 1, result->report_markdown.size(), f);
    std::fclose(f);
  }
  std::printf("%s\n", result->uri.c_str());
  return 0;
}
