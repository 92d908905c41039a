#pragma once

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <string>

#include "coalescing_stream.hpp"
#include "transport.hpp"

namespace agentwire::gateway {

/// Server-Sent Events (the `text/event-stream` of the HTML standard) on the HTTP response to
/// `GET /v1/events` with `Accept: text/event-stream`. Each frame the session writes becomes
/// one SSE event: an `event` frame becomes `id: <cursor>` / `event: event` / `data: <the event
/// object>`, `ready` also carries its cursor as `id:` (so EventSource's Last-Event-ID is always
/// a resume point), `reset` and `error` carry the frame's fields as data. The event object is
/// sliced out of the shared frame, not copied or re-encoded.
///
/// The response has no length: it ends when the session closes (drain, slow client, expired
/// token) and the browser's EventSource reconnects by itself with Last-Event-ID. A `retry:`
/// hint follows the head; a comment line keeps proxies from timing the response out.
class SseTransport final : public Transport {
 public:
  /// `allow_origin`: the request's Origin when it is allowed (CORS), else empty.
  SseTransport(boost::asio::ip::tcp::socket&& socket, std::string allow_origin);

  boost::asio::any_io_executor GetExecutor() override { return stream_.get_executor(); }
  std::string_view Name() const override { return "sse"; }
  void Accept(const Request& request, Done done) override;
  void Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) override;
  void Read(Done done) override;
  void Close(boost::beast::websocket::close_code code, const std::string& reason,
             Done done) override;
  void Abort() override;
  std::optional<std::chrono::milliseconds> KeepAliveInterval() const override {
    return kKeepAliveInterval;
  }

  /// A comment line at least this often (the protocol promises one every 15 s).
  static constexpr std::chrono::milliseconds kKeepAliveInterval{10'000};
  /// EventSource waits this long before it reconnects after the response ends.
  static constexpr int kRetryMs = 1000;

 private:
  CoalescingStream<boost::beast::tcp_stream> stream_;
  std::string allow_origin_;
  std::string head_;                 // the response head, then the `retry:` hint
  std::string prefix_;               // the fields before this write's data
  Frame in_flight_;                  // keeps the frame alive while its slice is being written
  std::array<char, 512> discard_{};  // a client has nothing to send: read and dropped
};

/// The SSE text of one frame, for tests and for transports that need it whole:
/// `id:` (events and ready), `event:`, `data:`, blank line.
std::string SseEventText(const std::string& frame, FrameKind kind);

}  // namespace agentwire::gateway
