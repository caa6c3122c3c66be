// A minimal HTTP/1.x endpoint for Prometheus scrapes: GET /metrics returns the text
// exposition; /healthz returns "ok" (the process is alive); /readyz 200 while the server is
// SERVING and 503 otherwise (an HTTP readiness probe for when the gRPC port speaks TLS, which
// the kubelet's gRPC probe cannot); anything else 404. One thread, one connection at a time,
// with socket timeouts, which is what a scrape endpoint needs.
//
// (prometheus-cpp's own exposer embeds civetweb, which fails to start when LibTorch is loaded
// in the same process, so the server serves its registry through this endpoint instead.)
//
//   ASSIGN_OR_RETURN(auto http, MetricsHttpServer::Start("0.0.0.0:9090", [&] { return text; }));
//   http->port();
//
// Thread-safety: Start/Stop from one owner; the handler runs on the server's thread.
#ifndef TWIN_SERVER_METRICS_HTTP_H_
#define TWIN_SERVER_METRICS_HTTP_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace twin {

class MetricsHttpServer {
 public:
  using Handler = std::function<std::string()>;
  using ReadyHandler = std::function<bool()>;
  // `address` is "host:port" (IPv4; port 0 picks a free port). Without `ready`, /readyz is 404.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                                  Handler handler,
                                                                  ReadyHandler ready = nullptr);
  ~MetricsHttpServer();
  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(int fd, int port, Handler handler, ReadyHandler ready);
  void Loop();
  void Serve(int client);
  int fd_;
  int port_;
  Handler handler_;
  ReadyHandler ready_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace twin

#endif  // TWIN_SERVER_METRICS_HTTP_H_
