#include "tests/testing/http_test_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"

namespace twin::testing {
namespace {

constexpr int kPollIntervalMs = 50;
constexpr size_t kMaxHeadBytes = 64 << 10;
constexpr size_t kReadChunkBytes = 64 << 10;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "HttpTestServer: %s\n", what.c_str());
  std::abort();
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 416:
      return "Range Not Satisfiable";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

// Reads HTTP messages from, and writes answers to, one socket.
class Connection {
 public:
  explicit Connection(int fd) : fd_(fd) {}
  bool ReadHead(std::string* head) {
    while (true) {
      const size_t end = buffer_.find("\r\n\r\n");
      if (end != std::string::npos) {
        *head = buffer_.substr(0, end);
        buffer_.erase(0, end + 4);
        return true;
      }
      if (buffer_.size() > kMaxHeadBytes || !Fill()) return false;
    }
  }
  bool ReadBody(size_t size, std::string* body) {
    while (buffer_.size() < size) {
      if (!Fill()) return false;
    }
    *body = buffer_.substr(0, size);
    buffer_.erase(0, size);
    return true;
  }
  bool Write(absl::string_view data) {
    while (!data.empty()) {
      const ssize_t sent = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) continue;
      if (sent <= 0) return false;
      data.remove_prefix(static_cast<size_t>(sent));
    }
    return true;
  }

 private:
  bool Fill() {
    char chunk[kReadChunkBytes];
    ssize_t got;
    do {
      got = ::recv(fd_, chunk, sizeof(chunk), 0);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(got));
    return true;
  }
  int fd_;
  std::string buffer_;
};

bool ParseHead(const std::string& head, HttpRequest* request) {
  const std::vector<std::string> lines = absl::StrSplit(head, "\r\n");
  const std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
  if (first.size() != 3 || !absl::StartsWith(first[2], "HTTP/1.")) return false;
  request->method = first[0];
  request->target = first[1];
  const size_t question = request->target.find('?');
  request->path = request->target.substr(0, question);
  request->query = question == std::string::npos ? "" : request->target.substr(question + 1);
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) return false;
    request->headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  return true;
}

std::string Serialize(const HttpResponse& r, bool head_request) {
  std::string out = absl::StrCat("HTTP/1.1 ", r.status, " ", Reason(r.status), "\r\n");
  for (const auto& [name, value] : r.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  const int64_t length =
      head_request && r.head_length >= 0 ? r.head_length : static_cast<int64_t>(r.body.size());
  absl::StrAppend(&out, "Content-Length: ", length, "\r\n\r\n");
  if (!head_request) out += r.body;
  return out;
}

HttpResponse Plain(int status, const std::string& text) { return HttpResponse{status, {}, text}; }

}  // namespace

std::string HttpRequest::Header(const std::string& lowercase_name) const {
  const auto it = headers.find(lowercase_name);
  return it == headers.end() ? std::string() : it->second;
}

struct HttpTestServer::State {
  Handler handler;
  int listen_fd = -1;
  int port = 0;
  int wake[2] = {-1, -1};
  std::thread acceptor;
  std::atomic<bool> stopping{false};

  absl::Mutex mu;
  std::vector<std::thread> connections ABSL_GUARDED_BY(mu);
  std::set<int> open_fds ABSL_GUARDED_BY(mu);

  void AcceptLoop();
  void Serve(int fd);
  void WaitForPeerToLeave(int fd);
};

void HttpTestServer::State::AcceptLoop() {
  while (!stopping) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) Die("poll failed");
    if (stopping || (fds[1].revents & POLLIN)) return;
    if (!(fds[0].revents & POLLIN)) continue;
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    absl::MutexLock lock(&mu);
    open_fds.insert(fd);
    connections.emplace_back([this, fd] { Serve(fd); });
  }
}

void HttpTestServer::State::WaitForPeerToLeave(int fd) {
  while (!stopping) {
    pollfd p = {fd, POLLIN, 0};
    if (::poll(&p, 1, kPollIntervalMs) > 0) {
      char byte;
      if (::recv(fd, &byte, 1, MSG_PEEK) <= 0) return;
    }
  }
}

void HttpTestServer::State::Serve(int fd) {
  Connection connection(fd);
  std::string head;
  while (!stopping && connection.ReadHead(&head)) {
    HttpRequest request;
    if (!ParseHead(head, &request)) {
      connection.Write(Serialize(Plain(400, "malformed request head"), false));
      break;
    }
    if (!request.Header("transfer-encoding").empty()) {
      connection.Write(Serialize(Plain(501, "only Content-Length bodies"), false));
      break;
    }
    if (absl::EqualsIgnoreCase(request.Header("expect"), "100-continue")) {
      connection.Write("HTTP/1.1 100 Continue\r\n\r\n");
    }
    size_t length = 0;
    const std::string length_header = request.Header("content-length");
    if (!length_header.empty() && !absl::SimpleAtoi(length_header, &length)) break;
    if (!connection.ReadBody(length, &request.body)) break;

    const HttpReply reply = handler(request);
    const bool head_request = request.method == "HEAD";
    if (reply.disposition == HttpDisposition::kDrop) break;
    if (reply.disposition == HttpDisposition::kStall) {
      WaitForPeerToLeave(fd);
      break;
    }
    if (reply.disposition == HttpDisposition::kEndlessBody) {
      constexpr uint64_t kDeclaredBytes = uint64_t{1} << 40;
      if (!connection.Write(absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", kDeclaredBytes,
                                         "\r\nContent-Type: application/octet-stream\r\n\r\n"))) {
        break;
      }
      const std::string chunk(1 << 20, '\0');
      for (uint64_t sent = 0; sent < kDeclaredBytes && connection.Write(chunk);) {
        sent += chunk.size();
      }
      break;
    }
    const std::string answer = Serialize(reply.response, head_request);
    if (reply.disposition == HttpDisposition::kTruncateBody) {
      const size_t cut = head_request ? 0 : reply.response.body.size() / 2;
      connection.Write(absl::string_view(answer).substr(0, answer.size() - cut));
      break;
    }
    if (!connection.Write(answer)) break;
    if (absl::EqualsIgnoreCase(request.Header("connection"), "close")) break;
  }
  absl::MutexLock lock(&mu);
  open_fds.erase(fd);
  ::close(fd);
}

HttpTestServer::HttpTestServer(Handler handler) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.handler = std::move(handler);
  if (::pipe2(s.wake, O_CLOEXEC) != 0) Die("pipe failed");
  s.listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s.listen_fd < 0) Die("socket failed");
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;  // the kernel picks a free port
  socklen_t size = sizeof(address);
  if (::bind(s.listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(s.listen_fd, SOMAXCONN) != 0 ||
      ::getsockname(s.listen_fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    Die("cannot listen on 127.0.0.1");
  }
  s.port = ntohs(address.sin_port);
  s.acceptor = std::thread([&s] { s.AcceptLoop(); });
}

HttpTestServer::~HttpTestServer() {
  State& s = *state_;
  s.stopping = true;
  const char byte = 0;
  if (::write(s.wake[1], &byte, 1) != 1) Die("cannot wake the acceptor");
  s.acceptor.join();
  std::vector<std::thread> connections;
  {
    absl::MutexLock lock(&s.mu);
    for (int fd : s.open_fds) ::shutdown(fd, SHUT_RDWR);
    connections.swap(s.connections);
  }
  for (std::thread& t : connections) t.join();
  ::close(s.listen_fd);
  ::close(s.wake[0]);
  ::close(s.wake[1]);
}

int HttpTestServer::port() const { return state_->port; }

}  // namespace twin::testing
