// The model card published with every artifact set (report.md): merge method and parameters,
// tasks, ranks and reconstruction errors, sizes and compression ratio, router accuracy and
// confusion matrix.
//
// Thread-safety: a pure function.
#ifndef TWIN_MERGE_OFFLINE_REPORT_H_
#define TWIN_MERGE_OFFLINE_REPORT_H_

#include <cstdint>
#include <string>

#include "core/store/manifest.h"

namespace twin {

struct ReportSizes {
  uint64_t expert_bytes = 0;  // one full model, as stored by its inputs (float32 equivalent)
  uint64_t shared_bytes = 0;
  uint64_t twin_bytes = 0;    // all tasks' factors + dense deltas + heads
  uint64_t router_bytes = 0;
  double elapsed_s = 0.0;
};

std::string RenderReport(const Manifest& manifest, const ReportSizes& sizes);

}  // namespace twin

#endif  // TWIN_MERGE_OFFLINE_REPORT_H_
