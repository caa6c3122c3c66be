// twin-server: serves a Twin-Merging artifact set over gRPC.
//
//   twin-server --config server.yaml [--artifact_uri file:///data/store] [--listen 0.0.0.0:50051]

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "core/model/torch_runtime.h"
#include "server/log.h"
#include "server/server_config.h"
#include "server/twin_server.h"

ABSL_FLAG(std::string, config, "", "Path to server.yaml (optional; flags override it).");
ABSL_FLAG(std::string, artifact_uri, "", "Object store URI of the artifact sets.");
ABSL_FLAG(std::string, artifact_version, "", "Version to serve (default LATEST).");
ABSL_FLAG(std::string, listen, "", "gRPC listen address, e.g. 0.0.0.0:50051.");
ABSL_FLAG(std::string, metrics_listen, "", "Prometheus listen address; 'off' disables it.");
ABSL_FLAG(std::string, cache_dir, "", "Local directory for verified blobs.");
ABSL_FLAG(std::string, device, "", "auto | cpu | cuda | cuda:N.");
ABSL_FLAG(int, threads, -1, "LibTorch intra-op threads (0 = all cores).");
ABSL_FLAG(int, load_retry_ms, -1,
          "Wait between attempts while the first version cannot load (reload.retry_interval_ms).");
ABSL_FLAG(std::string, admin_listen, "",
          "twinmerge.v1.Admin listen address (admin.listen_address, default 127.0.0.1:50052); "
          "'inline' serves it on the gRPC port.");
ABSL_FLAG(std::string, admin_token_file, "",
          "File whose first line is the bearer token Admin calls must present (admin.token_file).");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (tls.cert_file).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert (tls.key_file).");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates it signed, mTLS (tls.client_ca_file).");
ABSL_FLAG(int, poll_interval_ms, -1,
          "Re-check the artifact version this often; 0 = never (reload.poll_interval_ms).");

namespace {

// SIGTERM/SIGINT write one byte here; a thread reads it and drains. A handler (rather than a
// blocked signal mask) is needed because libraries start threads before main() runs, and a
// signal delivered to one of them would otherwise take its default action and kill the process.
int g_signal_pipe[2] = {-1, -1};

extern "C" void OnSignal(int sig) {
  const unsigned char byte = static_cast<unsigned char>(sig);
  const int saved = errno;
  (void)!write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

void Log(const std::string& line) { twin::LogLine(twin::LogLevel::kInfo, line); }
void LogError(const std::string& line) { twin::LogLine(twin::LogLevel::kError, line); }

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Serves a Twin-Merging artifact set over gRPC.\n"
                               "Usage: twin-server --config server.yaml");
  absl::ParseCommandLine(argc, argv);

  twin::ServerConfig config;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    auto loaded = twin::LoadServerConfig(absl::GetFlag(FLAGS_config));
    if (!loaded.ok()) {
      LogError(loaded.status().ToString());
      return 2;
    }
    config = *loaded;
  }
  if (!absl::GetFlag(FLAGS_artifact_uri).empty()) config.artifact_uri = absl::GetFlag(FLAGS_artifact_uri);
  if (!absl::GetFlag(FLAGS_artifact_version).empty()) {
    config.artifact_version = absl::GetFlag(FLAGS_artifact_version);
  }
  if (!absl::GetFlag(FLAGS_listen).empty()) config.listen_address = absl::GetFlag(FLAGS_listen);
  if (absl::GetFlag(FLAGS_metrics_listen) == "off") {
    config.metrics_address.clear();
  } else if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    config.metrics_address = absl::GetFlag(FLAGS_metrics_listen);
  }
  if (!absl::GetFlag(FLAGS_cache_dir).empty()) config.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  if (!absl::GetFlag(FLAGS_device).empty()) config.device = absl::GetFlag(FLAGS_device);
  if (absl::GetFlag(FLAGS_threads) >= 0) config.intra_op_threads = absl::GetFlag(FLAGS_threads);
  if (absl::GetFlag(FLAGS_load_retry_ms) >= 0) {
    config.reload.retry_interval_ms = absl::GetFlag(FLAGS_load_retry_ms);
  }
  if (absl::GetFlag(FLAGS_poll_interval_ms) >= 0) {
    config.reload.poll_interval_ms = absl::GetFlag(FLAGS_poll_interval_ms);
  }
  if (absl::GetFlag(FLAGS_admin_listen) == "inline") {
    config.admin_listen_address.clear();
  } else if (!absl::GetFlag(FLAGS_admin_listen).empty()) {
    config.admin_listen_address = absl::GetFlag(FLAGS_admin_listen);
  }
  if (!absl::GetFlag(FLAGS_admin_token_file).empty()) {
    config.admin_token_file = absl::GetFlag(FLAGS_admin_token_file);
  }
  if (!absl::GetFlag(FLAGS_tls_cert).empty()) config.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  if (!absl::GetFlag(FLAGS_tls_key).empty()) config.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  if (!absl::GetFlag(FLAGS_tls_client_ca).empty()) {
    config.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  }
  if (absl::Status valid = twin::ValidateServerConfig(config); !valid.ok()) {
    LogError(valid.ToString());
    return 2;
  }

  if (pipe(g_signal_pipe) != 0) {
    LogError("cannot create the signal pipe");
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Log(twin::ConfigureTorchRuntime({config.intra_op_threads}));
  auto server = twin::TwinServer::Start(config);
  if (!server.ok()) {
    LogError(server.status().ToString());
    return 1;
  }
  Log("gRPC on port " + std::to_string((*server)->port()) + ", metrics on port " +
      std::to_string((*server)->metrics_port()) + ", admin on port " +
      std::to_string((*server)->admin_port() > 0 ? (*server)->admin_port()
                                                 : (*server)->port()) +
      (!config.tls.enabled()              ? ""
       : config.tls.client_ca_file.empty() ? " (TLS)"
                                           : " (TLS, mTLS)") +
      "; NOT_SERVING until loaded");

  std::atomic<bool> stop{false};
  std::thread signal_thread([&] {
    unsigned char sig = 0;
    while (read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    if (sig == 0) return;  // woken by main at exit
    Log(std::string("signal ") + std::to_string(sig) + ": draining");
    stop = true;
    (*server)->Shutdown();
  });

  // Loads in the background: retries until the store answers and the version verifies, then
  // follows artifact_version (LATEST) every reload.poll_interval_ms; Admin.Reload on demand.
  (*server)->StartWatching();
  (*server)->Wait();
  if (!stop) {
    const unsigned char wake = 0;
    (void)!write(g_signal_pipe[1], &wake, 1);
  }
  signal_thread.join();
  Log("stopped");
  return 0;
}
