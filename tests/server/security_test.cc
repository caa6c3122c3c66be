// Transport security and admin access, in process on loopback with certificates made by the
// openssl command in the test: TLS (plaintext refused), mTLS (a client certificate from the
// configured CA required), certificate rotation without a restart, the TLS settings' errors,
// Admin on its own address, and the Admin bearer token.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/twin_client.h"
#include "server/server_config.h"
#include "server/tls.h"
#include "server/twin_server.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::client::ClientOptions;
using twin::client::TwinClient;
using twin::testing::TempDir;

// Runs a shell command; the test fails (with the command) if it does not succeed.
bool Run(const std::string& command) {
  const int rc = std::system((command + " >/dev/null 2>&1").c_str());
  EXPECT_EQ(rc, 0) << command;
  return rc == 0;
}

// A CA and certificates it signs (EC P-256 keys: quick to make).
class Pki {
 public:
  explicit Pki(std::string dir) : dir_(std::move(dir)) {}
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  bool MakeCa(const std::string& name) {
    return Run(absl::StrCat("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                            "-nodes -days 2 -subj /CN=", name, " -keyout ", Path(name + ".key"),
                            " -out ", Path(name + ".crt")));
  }
  // `name`.crt/.key signed by `ca`; a server certificate for localhost and 127.0.0.1, or a
  // client certificate.
  bool MakeLeaf(const std::string& name, const std::string& ca, bool server) {
    const std::string ext = Path(name + ".ext");
    std::ofstream(ext) << (server ? "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                    "extendedKeyUsage=serverAuth\n"
                                  : "extendedKeyUsage=clientAuth\n");
    return Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                            "-subj /CN=", name, " -keyout ", Path(name + ".key"), " -out ",
                            Path(name + ".csr"))) &&
           Run(absl::StrCat("openssl x509 -req -days 2 -in ", Path(name + ".csr"), " -CA ",
                            Path(ca + ".crt"), " -CAkey ", Path(ca + ".key"),
                            " -CAcreateserial -extfile ", ext, " -out ", Path(name + ".crt")));
  }

 private:
  std::string dir_;
};

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.MakeCa("ca") && pki_.MakeCa("other-ca"));
    ASSERT_TRUE(pki_.MakeLeaf("server", "ca", true) && pki_.MakeLeaf("client", "ca", false) &&
                pki_.MakeLeaf("stranger", "other-ca", false));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  ServerConfig Config() {
    ServerConfig c = twin::testing::LoopbackServerConfig(dir_.Join("cache"));
    c.tls.cert_file = pki_.Path("server.crt");
    c.tls.key_file = pki_.Path("server.key");
    return c;
  }
  void Start(const ServerConfig& config) {
    auto server = twin::testing::StartServer(config, /*load=*/true);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  // GetModelInfo through a fresh channel with `options` (target: the inference port).
  absl::Status Info(ClientOptions options) {
    options.target = absl::StrCat("127.0.0.1:", server_->port());
    options.default_timeout_ms = 5000;
    auto client = TwinClient::Create(options);
    if (!client.ok()) return client.status();
    return (*client)->GetModelInfo().status();
  }
  absl::Status AdminStatus(ClientOptions options) {
    options.target = absl::StrCat("127.0.0.1:", server_->admin_port());
    options.default_timeout_ms = 5000;
    auto client = TwinClient::Create(options);
    if (!client.ok()) return client.status();
    return (*client)->GetServingStatus().status();
  }
  ClientOptions Trusting(const std::string& ca) {
    ClientOptions o;
    o.ca_file = pki_.Path(ca + ".crt");
    return o;
  }

  TempDir dir_;
  Pki pki_{dir_.path()};
  std::unique_ptr<TwinServer> server_;
};

TEST_F(SecurityTest, TlsServesTlsClientsAndRefusesPlaintextAndUntrustedServers) {
  Start(Config());
  EXPECT_TRUE(Info(Trusting("ca")).ok()) << Info(Trusting("ca"));
  // Plaintext against a TLS port: the handshake never happens.
  EXPECT_EQ(Info(ClientOptions()).code(), absl::StatusCode::kUnavailable);
  // A client that trusts another CA refuses the server's certificate.
  EXPECT_EQ(Info(Trusting("other-ca")).code(), absl::StatusCode::kUnavailable);
  // The Admin port uses the same credentials.
  EXPECT_TRUE(AdminStatus(Trusting("ca")).ok());
  EXPECT_FALSE(AdminStatus(ClientOptions()).ok());
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateFromTheConfiguredCa) {
  ServerConfig config = Config();
  config.tls.client_ca_file = pki_.Path("ca.crt");
  Start(config);
  ClientOptions with_cert = Trusting("ca");
  with_cert.cert_file = pki_.Path("client.crt");
  with_cert.key_file = pki_.Path("client.key");
  EXPECT_TRUE(Info(with_cert).ok()) << Info(with_cert);
  EXPECT_FALSE(Info(Trusting("ca")).ok()) << "no client certificate";
  ClientOptions stranger = Trusting("ca");
  stranger.cert_file = pki_.Path("stranger.crt");
  stranger.key_file = pki_.Path("stranger.key");
  EXPECT_FALSE(Info(stranger).ok()) << "a certificate from another CA";
  EXPECT_FALSE(Info(ClientOptions()).ok()) << "plaintext";
}

// The files are re-read: a certificate rotated in place (as a Kubernetes Secret update does)
// serves new connections without a restart.
TEST_F(SecurityTest, RotatedServerCertificateIsServedWithoutARestart) {
  ASSERT_TRUE(pki_.MakeLeaf("server2", "other-ca", true));
  ServerConfig config = Config();
  config.tls.refresh_interval_s = 1;
  Start(config);
  ASSERT_TRUE(Info(Trusting("ca")).ok());
  EXPECT_FALSE(Info(Trusting("other-ca")).ok());
  // Replace both files atomically (rename), key first never matters: the provider re-reads both.
  std::filesystem::copy_file(pki_.Path("server2.key"), pki_.Path("server.key.new"));
  std::filesystem::copy_file(pki_.Path("server2.crt"), pki_.Path("server.crt.new"));
  std::filesystem::rename(pki_.Path("server.key.new"), pki_.Path("server.key"));
  std::filesystem::rename(pki_.Path("server.crt.new"), pki_.Path("server.crt"));
  bool rotated = false;
  for (int i = 0; i < 60 && !rotated; ++i) {
    rotated = Info(Trusting("other-ca")).ok();
    if (!rotated) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_TRUE(rotated) << "the new certificate was not served within 30 s";
  EXPECT_FALSE(Info(Trusting("ca")).ok()) << "new connections still got the old certificate";
}

TEST_F(SecurityTest, TlsSettingsThatCannotWorkAreRefusedNamingTheField) {
  TlsConfig tls;
  tls.cert_file = pki_.Path("server.crt");
  EXPECT_THAT(ValidateTlsConfig(tls).ToString(), HasSubstr("tls.key_file is empty"));
  tls.key_file = pki_.Path("client.key");
  EXPECT_THAT(ValidateTlsConfig(tls).ToString(), HasSubstr("is not the key of the certificate"));
  tls.key_file = pki_.Path("absent.key");
  EXPECT_THAT(ValidateTlsConfig(tls).ToString(), HasSubstr("tls.key_file: cannot read"));
  std::ofstream(pki_.Path("garbage.crt")) << "not a certificate\n";
  tls.cert_file = pki_.Path("garbage.crt");
  tls.key_file = pki_.Path("server.key");
  EXPECT_THAT(ValidateTlsConfig(tls).ToString(), HasSubstr("holds no PEM certificate"));
  TlsConfig ca_only;
  ca_only.client_ca_file = pki_.Path("ca.crt");
  EXPECT_THAT(ValidateTlsConfig(ca_only).ToString(), HasSubstr("tls.client_ca_file is set"));
  tls.cert_file = pki_.Path("server.crt");
  tls.refresh_interval_s = 0;
  EXPECT_THAT(ValidateTlsConfig(tls).ToString(), HasSubstr("refresh_interval_s"));
  // Through server.yaml: the same checks when the configuration is validated (at start).
  auto parsed = ParseServerConfig(absl::StrCat("artifact_uri: file:///s\ntls: {cert_file: ",
                                               pki_.Path("server.crt"), ", key_file: ",
                                               pki_.Path("other-ca.key"), "}\n"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(ValidateServerConfig(*parsed).ToString(),
              HasSubstr("is not the key of the certificate"));
  EXPECT_THAT(ParseServerConfig("tls: {certfile: x}\n").status().ToString(), HasSubstr("certfile"));
}

// Admin listens on its own address only; with a token file each call needs the bearer token,
// which is re-read when the file changes.
TEST_F(SecurityTest, AdminIsOnItsOwnAddressAndNeedsTheBearerToken) {
  const std::string token_file = dir_.Join("admin-token");
  std::ofstream(token_file) << "first-secret\n";
  ServerConfig config = twin::testing::LoopbackServerConfig(dir_.Join("cache"));
  config.admin_token_file = token_file;
  Start(config);
  ASSERT_GT(server_->admin_port(), 0);
  ASSERT_NE(server_->admin_port(), server_->port());
  // Not on the inference port.
  {
    ClientOptions o;
    o.target = absl::StrCat("127.0.0.1:", server_->port());
    auto client = TwinClient::Create(o);
    ASSERT_TRUE(client.ok());
    EXPECT_EQ((*client)->GetServingStatus().status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_TRUE((*client)->GetModelInfo().ok());
  }
  ClientOptions none;
  EXPECT_EQ(AdminStatus(none).code(), absl::StatusCode::kUnauthenticated);
  ClientOptions wrong;
  wrong.admin_token = "first-secreT";
  EXPECT_EQ(AdminStatus(wrong).code(), absl::StatusCode::kPermissionDenied);
  ClientOptions right;
  right.admin_token_file = token_file;
  EXPECT_TRUE(AdminStatus(right).ok()) << AdminStatus(right);
  const std::string metrics = server_->metrics().Scrape();
  EXPECT_THAT(metrics, HasSubstr("twin_admin_denied_total{reason=\"unauthenticated\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("twin_admin_denied_total{reason=\"permission_denied\"} 1"));

  // Rotation: the new token works, the old one no longer does (the size changes, so the re-read
  // does not depend on the file system's timestamp resolution).
  std::ofstream(token_file) << "second-secret-rotated\n";
  ClientOptions rotated;
  rotated.admin_token = "second-secret-rotated";
  EXPECT_TRUE(AdminStatus(rotated).ok()) << AdminStatus(rotated);
  ClientOptions old;
  old.admin_token = "first-secret";
  EXPECT_EQ(AdminStatus(old).code(), absl::StatusCode::kPermissionDenied);
  // An emptied token file lets nobody in.
  std::ofstream(token_file) << "\n";
  EXPECT_EQ(AdminStatus(rotated).code(), absl::StatusCode::kUnavailable);
}

TEST(AdminConfigTest, AdminAddressAndTokenFileAreChecked) {
  auto same = ParseServerConfig("artifact_uri: file:///s\nlisten_address: 127.0.0.1:7000\n"
                                "admin: {listen_address: 127.0.0.1:7000}\n");
  ASSERT_TRUE(same.ok());
  EXPECT_THAT(ValidateServerConfig(*same).ToString(), HasSubstr("admin.listen_address"));
  auto missing =
      ParseServerConfig("artifact_uri: file:///s\nadmin: {token_file: /nonexistent/token}\n");
  ASSERT_TRUE(missing.ok());
  EXPECT_THAT(ValidateServerConfig(*missing).ToString(), HasSubstr("admin.token_file"));
  auto inline_admin = ParseServerConfig("admin: {listen_address: \"\"}\n");
  ASSERT_TRUE(inline_admin.ok()) << inline_admin.status();
  EXPECT_EQ(inline_admin->admin_listen_address, "");
  auto defaults = ParseServerConfig("");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->admin_listen_address, "127.0.0.1:50052");
}

}  // namespace
}  // namespace twin
