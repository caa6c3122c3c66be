#include "server/tls.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin {
namespace {

// PEM files of certificates and keys are small; a bigger file is a mistake, not a bundle.
constexpr std::streamoff kMaxPemBytes = 1 << 20;

absl::StatusOr<std::string> ReadPem(const std::string& field, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(field, ": cannot read ", path));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size <= 0 || size > kMaxPemBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", path, " is ",
                                                   size <= 0 ? "empty" : "larger than 1 MiB"));
  }
  in.seekg(0);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "not PEM";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  return buffer;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& text) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The first certificate of a PEM text (and how many it holds).
absl::StatusOr<std::unique_ptr<X509, X509Free>> FirstCertificate(const std::string& field,
                                                                 const std::string& path,
                                                                 const std::string& pem) {
  auto bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", path, " holds no PEM certificate (", OpenSslError(), ")"));
  }
  return cert;
}

}  // namespace

absl::Status ValidateTlsConfig(const TlsConfig& tls) {
  if (!tls.enabled()) {
    if (!tls.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "tls.client_ca_file is set but tls.cert_file and tls.key_file are not (mTLS needs the "
          "server's own certificate)");
    }
    return absl::OkStatus();
  }
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls.", tls.cert_file.empty() ? "cert_file" : "key_file",
        " is empty: TLS needs both tls.cert_file and tls.key_file"));
  }
  if (tls.refresh_interval_s < 1) {
    return absl::InvalidArgumentError("tls.refresh_interval_s must be >= 1");
  }
  ASSIGN_OR_RETURN(std::string cert_pem, ReadPem("tls.cert_file", tls.cert_file));
  ASSIGN_OR_RETURN(std::string key_pem, ReadPem("tls.key_file", tls.key_file));
  ASSIGN_OR_RETURN(auto cert, FirstCertificate("tls.cert_file", tls.cert_file, cert_pem));
  auto key_bio = MemoryBio(key_pem);
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls.key_file: ", tls.key_file, " holds no PEM private key (", OpenSslError(), ")"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("tls.key_file: ", tls.key_file,
                                                   " is not the key of the certificate in ",
                                                   tls.cert_file));
  }
  if (!tls.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(std::string ca_pem, ReadPem("tls.client_ca_file", tls.client_ca_file));
    RETURN_IF_ERROR(
        FirstCertificate("tls.client_ca_file", tls.client_ca_file, ca_pem).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsConfig& tls) {
  RETURN_IF_ERROR(ValidateTlsConfig(tls));
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.client_ca_file,
      static_cast<unsigned int>(tls.refresh_interval_s));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::experimental::TlsServerCredentials(options);
  if (credentials == nullptr) return absl::InternalError("gRPC refused the TLS settings");
  return credentials;
}

}  // namespace twin
