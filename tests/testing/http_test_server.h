// A small threaded HTTP/1.1 server on 127.0.0.1 (ephemeral port) for testing HTTP clients.
//
// Every request (bodies by Content-Length; "Expect: 100-continue" is answered) goes to the
// handler, whose reply is an answer or a transport fault: the connection dropped without an
// answer, a stall (no answer until the client goes away), or the answer cut off halfway
// through its body. Connections are kept alive; each has its own thread.
//
//   HttpTestServer server([](const HttpRequest& r) { return HttpReply{{200, {}, "hi"}}; });
//   std::string url = absl::StrCat("http://127.0.0.1:", server.port(), "/x");
//
// Thread-safety: the handler runs on the connection threads, possibly concurrently.
// Destruction closes every connection and joins the threads.
#ifndef TWIN_TESTS_TESTING_HTTP_TEST_SERVER_H_
#define TWIN_TESTS_TESTING_HTTP_TEST_SERVER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace twin::testing {

struct HttpRequest {
  std::string method;
  std::string target;                          // as received: "/path?query"
  std::string path;                            // raw (percent-encoded)
  std::string query;                           // raw, without '?'
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;

  // The header's value, or "" when absent.
  std::string Header(const std::string& lowercase_name) const;
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Answers to HEAD announce this Content-Length (or the body's size when < 0) and send no body.
  int64_t head_length = -1;
};

enum class HttpDisposition {
  kRespond,       // send the response
  kDrop,          // close the connection without an answer
  kStall,         // send nothing; close once the client has gone
  kTruncateBody,  // send the response cut off halfway through its body, then close
  kEndlessBody,   // 200 with a 1 TiB Content-Length, then zeros until the client leaves
};

struct HttpReply {
  HttpResponse response;
  HttpDisposition disposition = HttpDisposition::kRespond;
};

class HttpTestServer {
 public:
  using Handler = std::function<HttpReply(const HttpRequest&)>;

  explicit HttpTestServer(Handler handler);  // listens at once; aborts the binary on failure
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  int port() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_HTTP_TEST_SERVER_H_
