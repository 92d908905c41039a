#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace agentwire::gateway {

/// What a frame is, for transports that frame them differently (SSE names each one).
enum class FrameKind {
  kEvent,      // {"type":"event","cursor":…,"event":{…}}: counts as delivered
  kControl,    // {"type":"ready"|"reset"|"cancel_result",…}
  kKeepAlive,  // nothing to say: SSE writes a comment line (WebSocket pings on its own)
};

/// How a session's frames reach its client. A session (catch-up, hand-off to live, filters,
/// limits, drain) is one state machine whatever the wire; a transport only frames and moves
/// bytes: the WebSocket protocol, or Server-Sent Events on a plain HTTP response.
///
/// Close codes of the token lifetime (docs/protocol.md "Token lifetime"); SSE ends the response
/// with `event: token_expired` instead.
inline constexpr auto kCloseTokenExpired = static_cast<boost::beast::websocket::close_code>(4001);
inline constexpr auto kCloseRefreshRefused = static_cast<boost::beast::websocket::close_code>(4003);

/// Every call is made on the transport's executor (the connection's strand), with at most one
/// Write and one Read in flight; handlers run on that executor.
class Transport {
 public:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Done = std::function<void(boost::beast::error_code)>;
  using Frame = std::shared_ptr<const std::string>;

  virtual ~Transport() = default;

  virtual boost::asio::any_io_executor GetExecutor() = 0;
  /// "websocket", "sse" or "ai-sdk", for logs and metrics.
  virtual std::string_view Name() const = 0;
  /// Completes the handshake for the request already read (the upgrade, or the SSE head).
  virtual void Accept(const Request& request, Done done) = 0;
  /// Writes one frame as built by frames.hpp. `more_follows`: another frame is written right
  /// after, so this one may wait to share its write syscall.
  virtual void Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) = 0;
  /// Completes when the client sent a message (TakeMessage returns it) or the connection
  /// ended (the error says how).
  virtual void Read(Done done) = 0;
  /// The message the last successful Read received ("" for transports clients cannot send on).
  virtual std::string TakeMessage() { return {}; }
  /// Ends the stream after the write in flight: a WebSocket close frame with `code`; for SSE,
  /// the end of the response (the browser reconnects with Last-Event-ID).
  virtual void Close(boost::beast::websocket::close_code code, const std::string& reason,
                     Done done) = 0;
  /// Drops the TCP connection now (a client that stopped reading never lets a close finish).
  virtual void Abort() = 0;
  /// The stream is complete (the AI SDK stream after `[DONE]`): the session ends it normally.
  virtual bool Finished() const { return false; }
  /// How often the session writes a keep-alive frame when it has nothing else to send;
  /// nullopt when the protocol keeps the connection alive itself (WebSocket pings).
  virtual std::optional<std::chrono::milliseconds> KeepAliveInterval() const = 0;
};

}  // namespace agentwire::gateway
