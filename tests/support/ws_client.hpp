#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

namespace agentwire::testing {

/// A plain WebSocket client for tests (Boost.Beast), one io_context of its own, driven only
/// while the test waits in Read(): not calling Read() means not reading the socket, which is
/// how tests play a client that stopped reading.
class WsClient final {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;
    std::string target = "/v1/events";
    std::string bearer;            // Authorization: Bearer <bearer> when non-empty
    std::string origin;            // Origin header when non-empty
    std::string protocols;         // Sec-WebSocket-Protocol header when non-empty
    int receive_buffer_bytes = 0;  // SO_RCVBUF when > 0 (slow-client tests)
    // SO_SNDBUF when > 0. A frame the server refuses must fit, so that the write completes
    // before the server closes: Beast 1.74's teardown stops draining after one read (its
    // issue 1373), the unread rest makes the kernel send RST, and a client still inside
    // write() would fail there and never read the close frame with its code.
    int send_buffer_bytes = 0;
  };
  struct HandshakeResult {
    int status = 0;  // 101 on success, else the HTTP status (0: no HTTP answer)
    std::string body;
    std::string error;
    std::string retry_after;  // the response's Retry-After header
    std::string protocol;     // the response's Sec-WebSocket-Protocol header
  };

  WsClient();
  ~WsClient();
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  HandshakeResult Connect(const Options& options);

  /// The next text frame, or nullopt when `timeout` passes or the connection closed.
  std::optional<std::string> Read(std::chrono::milliseconds timeout);
  bool Closed() const;
  /// The close code the server sent (0 when none / abnormal).
  int CloseCode() const;

  void Send(const std::string& text);
  /// Clean close handshake.
  void Close();
  /// Drops the TCP connection without a close frame (network failure).
  void Abort();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// A raw HTTP GET, for /healthz, /readyz, /metrics and pre-upgrade errors.
struct HttpResponse {
  int status = 0;
  std::string body;
};
HttpResponse HttpGet(uint16_t port, const std::string& target,
                     const std::string& authorization = {});

}  // namespace agentwire::testing
