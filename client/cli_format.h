// Text helpers for the twin-client CLI: parsing id lists and printing replies.
//
// Thread-safety: pure functions.
#ifndef TWIN_CLIENT_CLI_FORMAT_H_
#define TWIN_CLIENT_CLI_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin::client {

// "1,2,3" (spaces allowed) -> {1, 2, 3}. INVALID_ARGUMENT naming `what` and the bad entry.
absl::StatusOr<std::vector<int64_t>> ParseIdList(absl::string_view text, absl::string_view what);

// Multi-line "key: value" report of one reply: task, label, probabilities, router weights,
// cluster key, cache hit, artifact version, server timing.
std::string FormatInferResponse(const twinmerge::v1::InferResponse& reply);

// Multi-line report of the server's model: version, tasks and labels, merge, limits.
std::string FormatModelInfo(const twinmerge::v1::ModelInfo& info);

// One line on the first Generate reply: task, router weights, batch mode, version.
std::string FormatGenerateStart(const twinmerge::v1::GenerateResponse& reply);
// One line on the last Generate reply: finish reason, token counts, time to first token, total.
std::string FormatGenerateEnd(const twinmerge::v1::GenerateResponse& reply);

}  // namespace twin::client

#endif  // TWIN_CLIENT_CLI_FORMAT_H_
