#include "server/admin_service.h"

#include <openssl/crypto.h>
#include <sys/stat.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/sha256.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/twin_server.h"
#include "server/twin_service.h"

namespace twin {
namespace {

constexpr char kBearer[] = "Bearer ";

std::array<uint8_t, 32> DigestOf(absl::string_view text) {
  const std::string hex = Sha256Hex(text);
  std::array<uint8_t, 32> out = {};
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

}  // namespace

absl::Status AdminTokenCheck::Refresh() {
  struct stat st;
  if (::stat(token_file_.c_str(), &st) != 0) {
    loaded_ = false;
    return absl::UnavailableError(
        absl::StrCat("admin.token_file ", token_file_, " cannot be read: no Admin call is let in"));
  }
  const int64_t mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (loaded_ && mtime_ns == mtime_ns_ && st.st_size == size_) return absl::OkStatus();
  std::ifstream in(token_file_);
  std::string line;
  if (!in || !std::getline(in, line)) line.clear();
  const std::string token(absl::StripAsciiWhitespace(line));
  if (token.empty()) {
    loaded_ = false;
    return absl::UnavailableError(absl::StrCat("admin.token_file ", token_file_,
                                               " holds no token: no Admin call is let in"));
  }
  digest_ = DigestOf(token);
  mtime_ns_ = mtime_ns;
  size_ = st.st_size;
  loaded_ = true;
  return absl::OkStatus();
}

absl::Status AdminTokenCheck::Check(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "Admin needs \"authorization: Bearer <token>\" (admin.token_file)");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, kBearer)) {
    return absl::UnauthenticatedError("the authorization header is not \"Bearer <token>\"");
  }
  const std::array<uint8_t, 32> presented =
      DigestOf(absl::StripAsciiWhitespace(value.substr(sizeof(kBearer) - 1)));
  absl::MutexLock lock(&mu_);
  if (absl::Status refreshed = Refresh(); !refreshed.ok()) return refreshed;
  if (CRYPTO_memcmp(presented.data(), digest_.data(), digest_.size()) != 0) {
    return absl::PermissionDeniedError("the Admin token is not valid");
  }
  return absl::OkStatus();
}

AdminService::AdminService(TwinServer* server, ServerMetrics* metrics,
                           const std::string& token_file)
    : server_(server),
      metrics_(metrics),
      token_(token_file.empty() ? nullptr : std::make_unique<AdminTokenCheck>(token_file)) {}

absl::Status AdminService::Authorize(grpc::CallbackServerContext* context, const char* method) {
  if (token_ == nullptr) return absl::OkStatus();
  absl::Status status = token_->Check(*context);
  if (!status.ok()) {
    const std::string reason = absl::IsUnauthenticated(status)      ? "unauthenticated"
                               : absl::IsPermissionDenied(status) ? "permission_denied"
                                                                  : "no_token";
    if (metrics_ != nullptr) metrics_->RecordAdminDenied(reason);
    LogLine(LogLevel::kWarning, absl::StrCat("Admin/", method, " from ", context->peer(),
                                             " refused: ", status.message()));
  }
  return status;
}

grpc::ServerUnaryReactor* AdminService::Reload(grpc::CallbackServerContext* context,
                                               const twinmerge::v1::ReloadRequest* request,
                                               twinmerge::v1::ReloadResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status allowed = Authorize(context, "Reload"); !allowed.ok()) {
    reactor->Finish(ToGrpcStatus(allowed));
    return reactor;
  }
  server_->RequestReload(request->version(),
                         [reactor, response](absl::StatusOr<LoadOutcome> outcome) {
                           if (!outcome.ok()) {
                             reactor->Finish(ToGrpcStatus(outcome.status()));
                             return;
                           }
                           response->set_previous_version(outcome->previous_version);
                           response->set_version(outcome->version);
                           response->set_changed(outcome->changed);
                           response->set_seconds(outcome->seconds);
                           reactor->Finish(grpc::Status::OK);
                         });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::GetServingStatus(
    grpc::CallbackServerContext* context, const twinmerge::v1::GetServingStatusRequest*,
    twinmerge::v1::ServingStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status allowed = Authorize(context, "GetServingStatus"); !allowed.ok()) {
    reactor->Finish(ToGrpcStatus(allowed));
    return reactor;
  }
  *response = server_->ServingStatus();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace twin
