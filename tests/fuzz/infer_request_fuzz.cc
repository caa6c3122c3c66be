// twinmerge.v1.InferRequest bytes through a running TwinServer (the tiny zoo, in process):
// validation (MakePayload), routing, the forward and the reply, as a gRPC handler would call
// Submit. Invariants: every request is answered within its deadline (never a hang); an error
// has a message; a reply's probabilities are a distribution over its task's labels and its
// label index is inside it.
#include <chrono>
#include <cmath>
#include <future>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "server/twin_server.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/temp_dir.h"

namespace {

twin::TwinServer* g_server = nullptr;
twin::testing::TempDir* g_cache = nullptr;

// libFuzzer and the replay driver both end with exit(): drain the server before its cache
// folder goes.
void StopServer() {
  if (g_server != nullptr) g_server->Shutdown();
  delete g_server;
  g_server = nullptr;
  delete g_cache;
  g_cache = nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_cache = new twin::testing::TempDir();
  twin::ServerConfig config = twin::testing::LoopbackServerConfig(g_cache->Join("cache"));
  config.metrics_address.clear();  // no metrics port
  auto server = twin::testing::StartServer(config, /*load=*/true);
  if (!server.ok()) {
    std::fprintf(stderr, "cannot start the server: %s\n", server.status().ToString().c_str());
    std::abort();
  }
  g_server = server->release();
  std::atexit(StopServer);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_server == nullptr) LLVMFuzzerInitialize(nullptr, nullptr);
  twinmerge::v1::InferRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    FUZZ_NOTE("not an InferRequest");
    return 0;
  }

  auto done = std::make_shared<std::promise<absl::StatusOr<twinmerge::v1::InferResponse>>>();
  auto result = done->get_future();
  g_server->Submit(request, absl::Now() + absl::Seconds(20),
                   std::make_shared<std::atomic<bool>>(false), "fuzz",
                   [done](absl::StatusOr<twinmerge::v1::InferResponse> reply) {
                     done->set_value(std::move(reply));
                   });
  FUZZ_CHECK(result.wait_for(std::chrono::seconds(60)) == std::future_status::ready,
             "no reply within 60 s for a 20 s deadline");
  const absl::StatusOr<twinmerge::v1::InferResponse> reply = result.get();
  FUZZ_NOTE(reply.ok() ? "OK " + reply->task() + " " + reply->label() : reply.status().ToString());
  if (!reply.ok()) {
    FUZZ_CHECK_EXPLAINED(reply.status());
    return 0;
  }
  FUZZ_CHECK(reply->probabilities_size() > 0, "a reply without probabilities");
  double sum = 0;
  for (float p : reply->probabilities()) {
    FUZZ_CHECK(std::isfinite(p) && p >= 0 && p <= 1, "a probability outside [0, 1]");
    sum += p;
  }
  // float32 softmax over a few labels: far inside 1e-3 of 1.
  FUZZ_CHECK(std::abs(sum - 1.0) < 1e-3, "probabilities do not sum to 1");
  FUZZ_CHECK(reply->label_index() >= 0 && reply->label_index() < reply->probabilities_size(),
             "the label index is outside the probabilities");
  return 0;
}
