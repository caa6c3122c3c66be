#include "client/twin_client.h"

#include <chrono>
#include <utility>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace twin::client {
namespace {

using twinmerge::v1::GetModelInfoRequest;
using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;
using twinmerge::v1::ModelInfo;

constexpr char kPickFirst[] = "pick_first";
constexpr char kRoundRobin[] = "round_robin";

// gRPC's deadlines are absolute; an infinite timeout means no deadline at all.
std::chrono::system_clock::time_point DeadlineAfter(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

absl::StatusOr<std::string> ReadFile(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, ": cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool WantsTls(const ClientOptions& o) {
  return o.tls || !o.ca_file.empty() || !o.cert_file.empty() || !o.key_file.empty();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> CredentialsFor(
    const ClientOptions& o) {
  if (!WantsTls(o)) return grpc::InsecureChannelCredentials();
  if (o.cert_file.empty() != o.key_file.empty()) {
    return absl::InvalidArgumentError("a client certificate needs both cert_file and key_file");
  }
  grpc::SslCredentialsOptions ssl;
  if (!o.ca_file.empty()) {
    auto ca = ReadFile("ca_file", o.ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  if (!o.cert_file.empty()) {
    auto cert = ReadFile("cert_file", o.cert_file);
    if (!cert.ok()) return cert.status();
    auto key = ReadFile("key_file", o.key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  return grpc::SslCredentials(ssl);
}

absl::Status ValidateOptions(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("client target is empty");
  const std::string& lb = options.load_balancing_policy;
  if (!lb.empty() && lb != kPickFirst && lb != kRoundRobin) {
    return absl::InvalidArgumentError(absl::StrCat("load_balancing_policy '", lb,
                                                   "' is not one of: pick_first, round_robin"));
  }
  if (options.health_check && lb == kPickFirst) {
    return absl::InvalidArgumentError(
        "health_check needs load_balancing_policy round_robin (pick_first ignores health)");
  }
  if (options.default_timeout_ms <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_timeout_ms must be > 0, got ", options.default_timeout_ms));
  }
  if (options.max_receive_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_receive_message_bytes must be > 0, got ", options.max_receive_message_bytes));
  }
  if (options.keepalive_time_ms <= 0 || options.keepalive_timeout_ms <= 0) {
    return absl::InvalidArgumentError("keepalive_time_ms and keepalive_timeout_ms must be > 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  // grpc::StatusCode and absl::StatusCode share the canonical numbering 0..16.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::Status ReplyStatus(const InferResponse& reply) {
  if (reply.error_code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(reply.error_code()), reply.error_message());
}

// ---------------------------------------------------------------------------------------------
// InferStream

InferStream::~InferStream() {
  if (finished_ || stream_ == nullptr) return;
  // gRPC wants every call finished; after a cancel, Finish() returns at once.
  context_->TryCancel();
  stream_->Finish().IgnoreError();
}

absl::Status InferStream::Write(const InferRequest& request) {
  if (!stream_->Write(request)) {
    return absl::UnavailableError("InferStream is closed; Finish() returns the reason");
  }
  return absl::OkStatus();
}

bool InferStream::Read(InferResponse* reply) { return stream_->Read(reply); }

absl::Status InferStream::WritesDone() {
  if (!stream_->WritesDone()) {
    return absl::UnavailableError("InferStream is closed; Finish() returns the reason");
  }
  return absl::OkStatus();
}

absl::Status InferStream::Finish() {
  finished_ = true;
  return FromGrpcStatus(stream_->Finish());
}

void InferStream::Cancel() { context_->TryCancel(); }

// ---------------------------------------------------------------------------------------------
// TwinClient

absl::StatusOr<std::unique_ptr<TwinClient>> TwinClient::Create(const ClientOptions& options) {
  if (absl::Status status = ValidateOptions(options); !status.ok()) return status;

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(options.keepalive_time_ms));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(options.keepalive_timeout_ms));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
              options.keepalive_permit_without_calls ? 1 : 0);
  const std::string policy = options.health_check && options.load_balancing_policy.empty()
                                 ? std::string(kRoundRobin)
                                 : options.load_balancing_policy;
  if (!policy.empty()) {
    // The service config is the supported way to pick a policy; a resolver-provided config
    // (none for plain DNS) would take precedence. serviceName "" is the whole server.
    args.SetServiceConfigJSON(absl::StrCat(
        R"({"loadBalancingConfig":[{")", policy, R"(":{}}])",
        options.health_check ? R"(,"healthCheckConfig":{"serviceName":""})" : "", "}"));
  }

  if (!options.server_name.empty()) {
    args.SetSslTargetNameOverride(options.server_name);
  }
  auto credentials = CredentialsFor(options);
  if (!credentials.ok()) return credentials.status();
  auto client = std::unique_ptr<TwinClient>(new TwinClient());
  client->options_ = options;
  if (!options.admin_token_file.empty()) {
    auto token = ReadFile("admin_token_file", options.admin_token_file);
    if (!token.ok()) return token.status();
    std::string line = token->substr(0, token->find('\n'));
    client->options_.admin_token = std::string(absl::StripAsciiWhitespace(line));
  }
  client->channel_ = grpc::CreateCustomChannel(options.target, *credentials, args);
  if (client->channel_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create a channel to '", options.target, "'"));
  }
  client->stub_ = twinmerge::v1::TwinMerge::NewStub(client->channel_);
  client->health_stub_ = grpc::health::v1::Health::NewStub(client->channel_);
  client->admin_stub_ = twinmerge::v1::Admin::NewStub(client->channel_);
  return client;
}

void TwinClient::AddAdminToken(grpc::ClientContext* context) const {
  if (!options_.admin_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.admin_token));
  }
}

void TwinClient::SetDeadline(grpc::ClientContext* context, absl::Duration timeout) const {
  if (timeout == kDefaultTimeout) timeout = absl::Milliseconds(options_.default_timeout_ms);
  if (timeout == absl::InfiniteDuration()) return;
  context->set_deadline(DeadlineAfter(timeout));
}

absl::StatusOr<InferResponse> TwinClient::Infer(const InferRequest& request,
                                                absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  InferResponse reply;
  grpc::Status status = stub_->Infer(&context, request, &reply);
  if (!status.ok()) return FromGrpcStatus(status);
  return reply;
}

absl::Status TwinClient::Generate(const twinmerge::v1::GenerateRequest& request,
                                  const GenerateCallback& on_reply, absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  std::unique_ptr<grpc::ClientReader<twinmerge::v1::GenerateResponse>> reader =
      stub_->Generate(&context, request);
  twinmerge::v1::GenerateResponse reply;
  bool cancelled = false;
  while (reader->Read(&reply)) {
    if (!on_reply(reply)) {
      context.TryCancel();
      cancelled = true;
      break;
    }
  }
  if (cancelled) {
    while (reader->Read(&reply)) {
    }
  }
  return FromGrpcStatus(reader->Finish());
}

void TwinClient::InferAsync(const InferRequest& request, absl::Duration timeout,
                            InferCallback done) {
  // Everything the call touches lives until its completion callback, which frees it.
  struct Call {
    grpc::ClientContext context;
    InferRequest request;
    InferResponse reply;
    InferCallback done;
  };
  auto* call = new Call();
  SetDeadline(&call->context, timeout);
  call->request = request;
  call->done = std::move(done);
  stub_->async()->Infer(&call->context, &call->request, &call->reply,
                        [call](grpc::Status status) {
                          std::unique_ptr<Call> owned(call);
                          InferCallback done = std::move(owned->done);
                          absl::StatusOr<InferResponse> result =
                              status.ok() ? absl::StatusOr<InferResponse>(std::move(owned->reply))
                                          : FromGrpcStatus(status);
                          // The context holds a channel reference: drop it before `done`
                          // reports completion, so the owner of the TwinClient can destroy the
                          // channel as soon as `done` has run.
                          owned.reset();
                          done(std::move(result));
                        });
}

absl::StatusOr<ModelInfo> TwinClient::GetModelInfo(absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  ModelInfo info;
  grpc::Status status = stub_->GetModelInfo(&context, GetModelInfoRequest(), &info);
  if (!status.ok()) return FromGrpcStatus(status);
  return info;
}

absl::StatusOr<twinmerge::v1::ReloadResponse> TwinClient::Reload(const std::string& version,
                                                                 absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  AddAdminToken(&context);
  twinmerge::v1::ReloadRequest request;
  request.set_version(version);
  twinmerge::v1::ReloadResponse response;
  grpc::Status status = admin_stub_->Reload(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<twinmerge::v1::ServingStatus> TwinClient::GetServingStatus(
    absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  AddAdminToken(&context);
  twinmerge::v1::ServingStatus status_reply;
  grpc::Status status = admin_stub_->GetServingStatus(
      &context, twinmerge::v1::GetServingStatusRequest(), &status_reply);
  if (!status.ok()) return FromGrpcStatus(status);
  return status_reply;
}

absl::StatusOr<std::string> TwinClient::Health(const std::string& service,
                                               absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse reply;
  grpc::Status status = health_stub_->Check(&context, request, &reply);
  if (!status.ok()) return FromGrpcStatus(status);
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(reply.status());
}

absl::StatusOr<std::unique_ptr<InferStream>> TwinClient::OpenStream(absl::Duration timeout) {
  auto stream = std::unique_ptr<InferStream>(new InferStream());
  stream->context_ = std::make_unique<grpc::ClientContext>();
  SetDeadline(stream->context_.get(), timeout);
  stream->stream_ = stub_->InferStream(stream->context_.get());
  if (stream->stream_ == nullptr) return absl::InternalError("cannot open InferStream");
  return stream;
}

}  // namespace twin::client
