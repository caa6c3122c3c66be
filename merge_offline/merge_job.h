// The twin-merge job: base + T experts -> one verified, versioned Twin-Merging artifact set.
//
// Stages: validate (config, every input file, names and shapes, router data, output store) ->
// merge (tensor by tensor: shared expert theta*, twin vectors v_t = theta_t - theta*, truncated
// SVD per the rank policy, streamed to per-task files) -> router (features from the shared
// model's embed(), MLP trained on labeled examples, early-stopped on a held-out split) ->
// publish (blobs, then manifest.json, then LATEST) with a markdown report.
//
// Memory: experts stream through the merge one tensor at a time (TensorMerger), and each
// compress worker holds one expert's copy of one tensor, so peak memory depends on the
// largest tensor and the number of workers, not on T or the model size.
// Nothing is published unless every stage succeeds.
//
//   ASSIGN_OR_RETURN(MergeJobConfig config, LoadMergeConfig("merge.yaml"));
//   ASSIGN_OR_RETURN(MergeJobResult result, RunMergeJob(config, MergeJobOptions{}));
//
// Thread-safety: one job per call; calls share nothing.
#ifndef TWIN_MERGE_OFFLINE_MERGE_JOB_H_
#define TWIN_MERGE_OFFLINE_MERGE_JOB_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/store/manifest.h"
#include "merge_offline/merge_config.h"

namespace twin {

struct MergeJobOptions {
  bool dry_run = false;       // validate everything, write nothing
  bool quiet = false;         // no progress on stderr
  std::string work_dir;       // scratch space; default: a new directory under $TMPDIR or /tmp
  bool keep_work_dir = false;
};

struct MergeJobResult {
  std::string version;  // empty for a dry run
  std::string uri;      // store URI of the version
  Manifest manifest;
  std::string report_markdown;
};

absl::StatusOr<MergeJobResult> RunMergeJob(const MergeJobConfig& config,
                                           const MergeJobOptions& options);

}  // namespace twin

#endif  // TWIN_MERGE_OFFLINE_MERGE_JOB_H_
