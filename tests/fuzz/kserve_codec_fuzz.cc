// The Open Inference Protocol codec on arbitrary ModelInferRequest bytes: DecodeModelInfer
// (inputs, shapes, typed and raw contents, BYTES length prefixes, parameters, requested
// outputs), then EncodeModelInfer of one synthetic reply per decoded row. Invariants: errors
// have messages; a decoded request has 1..max_rows rows; the response carries exactly the
// requested outputs (all five when none is named), raw or typed as asked.
#include <string>
#include <vector>

#include "server/kserve_codec.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int kMaxRows = 16;
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    FUZZ_NOTE("not a ModelInferRequest");
    return 0;
  }
  auto decoded = twin::DecodeModelInfer(request, kMaxRows);
  FUZZ_NOTE(decoded.status().ToString());
  if (!decoded.ok()) {
    FUZZ_CHECK_EXPLAINED(decoded.status());
    return 0;
  }
  FUZZ_CHECK(!decoded->rows.empty() && decoded->rows.size() <= kMaxRows, "row count out of range");

  const std::vector<std::string> tasks = {"alpha", "beta", "gamma"};
  std::vector<twinmerge::v1::InferResponse> replies(decoded->rows.size());
  for (size_t b = 0; b < replies.size(); ++b) {
    auto& r = replies[b];
    r.set_task(tasks[b % tasks.size()]);
    r.set_label(b % 2 ? "yes" : "no");
    r.set_label_index(static_cast<int32_t>(b % 2));
    for (size_t c = 0; c <= b % 3; ++c) r.add_probabilities(1.0f / static_cast<float>(b % 3 + 1));
    auto* w = r.add_router_weights();
    w->set_task(tasks[b % tasks.size()]);
    w->set_weight(1.0f);
    r.set_cache_hit(b % 2 == 0);
  }
  inference::ModelInferResponse response;
  const absl::Status encoded = twin::EncodeModelInfer(*decoded, replies, tasks, &response);
  FUZZ_CHECK(encoded.ok(), "a decoded request's replies could not be encoded");
  const size_t expected = decoded->outputs.empty() ? std::size(twin::kOutputNames)
                                                   : decoded->outputs.size();
  FUZZ_CHECK(static_cast<size_t>(response.outputs_size()) == expected,
             "the response's outputs are not the requested ones");
  FUZZ_CHECK(static_cast<size_t>(response.raw_output_contents_size()) ==
                 (decoded->raw ? expected : 0),
             "raw contents do not match the request's choice");
  return 0;
}
