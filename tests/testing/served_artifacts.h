// A published tiny-zoo artifact set (version "v1", three tasks, twin rank ratio 0.5) built once
// per test binary, and a loopback server configuration that serves it.
//
//   ServerConfig c = twin::testing::LoopbackServerConfig(dir.Join("cache"));
//   auto server = TwinServer::Start(c);
//
// Thread-safety: ServedArtifacts::Get() is safe to call from tests (built on first use).
#ifndef TWIN_TESTS_TESTING_SERVED_ARTIFACTS_H_
#define TWIN_TESTS_TESTING_SERVED_ARTIFACTS_H_

#include <string>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/server_config.h"
#include "server/twin_server.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_models.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin::testing {

class ServedArtifacts {
 public:
  static ServedArtifacts& Get();
  // file store root holding version v1
  std::string store() const { return dir_.Join("store"); }
  const TinyZoo& zoo() const { return zoo_; }

 private:
  ServedArtifacts();
  TempDir dir_;
  TinyZoo zoo_;
};

// Merges `zoo` (rank ratio 0.5, the model's own router features) and publishes it as version
// "v1" under the file store `store`; `work` holds the merge config's relative paths.
absl::Status PublishTinyZoo(const TinyZoo& zoo, const std::string& store, const std::string& work);

// Listens on 127.0.0.1 with OS-chosen ports, CPU, exact routing (no key quantisation).
ServerConfig LoopbackServerConfig(const std::string& cache_dir);
// The same for the artifact store `store`.
ServerConfig LoopbackServerConfigFor(const std::string& store, const std::string& cache_dir);

// Starts a TwinServer with `config` and, when `load`, loads and warms up its artifact version.
absl::StatusOr<std::unique_ptr<TwinServer>> StartServer(const ServerConfig& config, bool load);

// Starts a server with `config`, loads its version and sends every text as an Infer call
// (task unknown, or tasks[k] when given; all at once, one thread each, when `concurrent`);
// returns the replies in order and shuts the server down. Failures are test failures.
std::vector<twinmerge::v1::InferResponse> InferTexts(const ServerConfig& config,
                                                     const std::vector<std::string>& texts,
                                                     bool concurrent,
                                                     const std::vector<std::string>& tasks = {});

// a[k] and b[k] answer alike: the same task, probabilities within `bound` of each other.
void ExpectSameReplies(const std::vector<twinmerge::v1::InferResponse>& a,
                       const std::vector<twinmerge::v1::InferResponse>& b,
                       const std::vector<std::string>& texts, const std::string& what,
                       double bound);

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_SERVED_ARTIFACTS_H_
