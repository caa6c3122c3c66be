// A C++ client for the TwinMerge service (proto/twinmerge/v1/twinmerge.proto) and the standard
// grpc.health.v1 health service the server exposes next to it.
//
// One TwinClient owns one gRPC channel. The target is "host:port", or "dns:///name:port" to
// resolve every address of a name (e.g. a Kubernetes headless Service) and, with
// load_balancing_policy "round_robin", spread calls over all of them on the client side.
// Channels are insecure (plaintext): TLS is out of scope for this client; put the service
// behind a mesh or a TLS-terminating proxy when the network is not trusted.
//
//   ClientOptions options;
//   options.target = "dns:///twin-server-headless:50051";
//   options.load_balancing_policy = "round_robin";
//   ASSIGN_OR_RETURN(auto client, TwinClient::Create(options));
//   twinmerge::v1::InferRequest request;
//   request.set_text("win a free phone now");
//   ASSIGN_OR_RETURN(twinmerge::v1::InferResponse reply, client->Infer(request));
//
// Errors: every call returns the RPC's status as an absl::Status with the same code and
// message (FromGrpcStatus). A deadline that passes gives DEADLINE_EXCEEDED.
//
// Thread-safety: TwinClient is thread-safe; share one per process (a channel multiplexes
// concurrent calls). An InferStream is used by at most one writer thread and one reader
// thread at a time (gRPC's rule for bidirectional streams).
#ifndef TWIN_CLIENT_TWIN_CLIENT_H_
#define TWIN_CLIENT_TWIN_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "twinmerge/v1/admin.grpc.pb.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin::client {

struct ClientOptions {
  // "host:port", or any gRPC target URI such as "dns:///name:port".
  std::string target = "localhost:50051";
  // "" or "pick_first": gRPC's default (one connection to the first address that works).
  // "round_robin": one connection per resolved address, calls spread over the ready ones.
  std::string load_balancing_policy;
  // Client-side health checking (grpc.health.v1 Watch on each connection): a server that
  // reports NOT_SERVING, as twin-server does as soon as it starts draining, gets no new
  // calls; with no healthy server left calls fail UNAVAILABLE at once. Needs round_robin
  // (pick_first ignores health), which it selects when no policy is named.
  bool health_check = false;
  // Deadline of a call made without an explicit timeout.
  int64_t default_timeout_ms = 5000;
  // Largest reply accepted (gRPC's default is 4 MiB; ModelInfo and replies are far smaller).
  int max_receive_message_bytes = 16 << 20;
  // HTTP/2 keepalive pings, so idle connections through proxies and load balancers stay open
  // and a dead peer is noticed. The server must permit pings this frequent.
  int64_t keepalive_time_ms = 30000;
  // Wait this long for a ping's acknowledgement before closing the connection.
  int64_t keepalive_timeout_ms = 10000;
  // Ping even when no call is in flight (GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS).
  bool keepalive_permit_without_calls = true;
  // TLS: on when `tls` or any of the files below is set. ca_file: PEM roots that signed the
  // server's certificate (empty: the system's roots); cert_file + key_file: this client's
  // certificate, for servers that require mTLS. server_name: the name to verify the server's
  // certificate against when it differs from the target's host (ssl target name override).
  bool tls = false;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string server_name;
  // Sent as "authorization: Bearer <token>" on Admin calls (Reload, GetServingStatus); read
  // from admin_token_file's first line when that is set.
  std::string admin_token;
  std::string admin_token_file;
};

// Marks "use ClientOptions::default_timeout_ms" in the methods below.
inline constexpr absl::Duration kDefaultTimeout = absl::ZeroDuration();

// The one place a grpc::Status becomes an absl::Status: codes map 1:1, the message is kept.
absl::Status FromGrpcStatus(const grpc::Status& status);

// The status a reply carries on InferStream (error_code/error_message; OK when error_code is 0).
absl::Status ReplyStatus(const twinmerge::v1::InferResponse& reply);

// A bidirectional InferStream: write requests, read replies (in completion order; match them by
// request_id), then WritesDone() and Finish(). Obtained from TwinClient::OpenStream().
class InferStream {
 public:
  ~InferStream();  // cancels the stream if Finish() was not reached
  InferStream(const InferStream&) = delete;
  InferStream& operator=(const InferStream&) = delete;

  // Sends one request. Fails (UNAVAILABLE) once the stream is broken; Finish() then tells why.
  absl::Status Write(const twinmerge::v1::InferRequest& request);
  // Blocks for the next reply; false when the server has no more replies (stream over).
  bool Read(twinmerge::v1::InferResponse* reply);
  // No more requests will be written.
  absl::Status WritesDone();
  // Waits for the end of the stream (read every reply first) and returns the RPC's status.
  absl::Status Finish();
  // Aborts the stream from any thread; pending Read() calls return false.
  void Cancel();

 private:
  friend class TwinClient;
  InferStream() = default;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<twinmerge::v1::InferRequest,
                                           twinmerge::v1::InferResponse>>
      stream_;
  bool finished_ = false;
};

class TwinClient {
 public:
  // Validates the options and creates the channel. Connecting is lazy: an unreachable server
  // shows up as UNAVAILABLE on the first call, not here.
  static absl::StatusOr<std::unique_ptr<TwinClient>> Create(const ClientOptions& options);

  absl::StatusOr<twinmerge::v1::InferResponse> Infer(const twinmerge::v1::InferRequest& request,
                                                      absl::Duration timeout = kDefaultTimeout);

  // Non-blocking Infer: `done` runs once, on a gRPC thread, when the call ends (it must not
  // block for long). Used by the open-loop load generator so a slow reply never delays the
  // next arrival. Every `done` must have run before the TwinClient is destroyed.
  using InferCallback = std::function<void(absl::StatusOr<twinmerge::v1::InferResponse>)>;
  void InferAsync(const twinmerge::v1::InferRequest& request, absl::Duration timeout,
                  InferCallback done);

  absl::StatusOr<twinmerge::v1::ModelInfo> GetModelInfo(absl::Duration timeout = kDefaultTimeout);

  // Generate (causal LM versions): `on_reply` runs on the calling thread for every reply as it
  // arrives (new tokens and their text; the last one has the finish reason and usage);
  // returning false cancels the call, which ends the sequence on the server. Returns the RPC's
  // status (CANCELLED after a cancel). `timeout` bounds the whole generation.
  using GenerateCallback = std::function<bool(const twinmerge::v1::GenerateResponse&)>;
  absl::Status Generate(const twinmerge::v1::GenerateRequest& request,
                        const GenerateCallback& on_reply,
                        absl::Duration timeout = kDefaultTimeout);

  // twinmerge.v1.Admin: load `version` now ("" = follow LATEST again) / the serving status.
  // A reload answers when the load has finished, so give it a timeout that covers one.
  absl::StatusOr<twinmerge::v1::ReloadResponse> Reload(const std::string& version,
                                                       absl::Duration timeout);
  absl::StatusOr<twinmerge::v1::ServingStatus> GetServingStatus(
      absl::Duration timeout = kDefaultTimeout);

  // grpc.health.v1 Check: "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN" for
  // `service` ("" = the server as a whole). A service the server does not know is NOT_FOUND.
  absl::StatusOr<std::string> Health(const std::string& service = "",
                                     absl::Duration timeout = kDefaultTimeout);

  // Opens an InferStream. `timeout` bounds the whole stream (infinite by default).
  absl::StatusOr<std::unique_ptr<InferStream>> OpenStream(
      absl::Duration timeout = absl::InfiniteDuration());

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  TwinClient() = default;
  void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) const;
  void AddAdminToken(grpc::ClientContext* context) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<twinmerge::v1::TwinMerge::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
  std::unique_ptr<twinmerge::v1::Admin::Stub> admin_stub_;
};

}  // namespace twin::client

#endif  // TWIN_CLIENT_TWIN_CLIENT_H_
