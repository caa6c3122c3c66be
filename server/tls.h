// Transport security of the gRPC ports: TLS with a server certificate, optionally mTLS (clients
// must present a certificate a given CA signed). The files are checked when the server starts
// (readable PEM, the key belongs to the certificate) and then re-read every
// `refresh_interval_s`, so a rotated Kubernetes Secret takes effect without a restart (new
// connections get the new certificate; open ones keep theirs).
//
//   ASSIGN_OR_RETURN(auto credentials, ServerCredentialsFor(config.tls));
//   builder.AddListeningPort(address, credentials, &port);
//
// Thread-safety: free functions.
#ifndef TWIN_SERVER_TLS_H_
#define TWIN_SERVER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ServerCredentials;
}  // namespace grpc

namespace twin {

struct TlsConfig {
  std::string cert_file;       // PEM certificate chain; with key_file: the port speaks TLS only
  std::string key_file;        // PEM private key of cert_file's first certificate
  std::string client_ca_file;  // PEM CA bundle: set, clients must present a certificate it signed
  int refresh_interval_s = 60;  // how often the files are re-read
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// INVALID_ARGUMENT naming the field and the file when the TLS settings cannot work: only one of
// cert_file/key_file, client_ca_file without them, a file that is missing or not PEM, a key that
// does not belong to the certificate, a refresh interval below 1 s.
absl::Status ValidateTlsConfig(const TlsConfig& tls);

// Insecure credentials when TLS is off; else TLS (mTLS with client_ca_file) whose files are
// re-read every refresh_interval_s. Validates first.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsConfig& tls);

}  // namespace twin

#endif  // TWIN_SERVER_TLS_H_
