#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <string>

#include "event_stream_transport.hpp"

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
class SseTransport final : public EventStreamTransport {
 public:
  /// `allow_origin`: the request's Origin when it is allowed (CORS), else empty.
  SseTransport(boost::asio::ip::tcp::socket&& socket, const std::string& allow_origin);

  std::string_view Name() const override { return "sse"; }
  void Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) override;

  /// EventSource waits this long before it reconnects after the response ends.
  static constexpr int kRetryMs = 1000;

 private:
  /// The token's end (4001, 4003) is said as `event: token_expired` (`event: refresh_refused`):
  /// the client must reconnect with a new token, not the same one. Any other end is just the end
  /// of the response.
  std::string ClosingText(boost::beast::websocket::close_code code,
                          const std::string& reason) override;
};

/// The SSE text of one frame, for tests and for transports that need it whole:
/// `id:` (events and ready), `event:`, `data:`, blank line.
std::string SseEventText(const std::string& frame, FrameKind kind);

}  // namespace agentwire::gateway
