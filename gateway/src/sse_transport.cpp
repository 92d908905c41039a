#include "sse_transport.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>
#include <utility>

namespace agentwire::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;

namespace {

// Frames are built by frames.hpp as {"type":"<t>",<fields>}: an event frame's fields are
// "cursor":"<c>","event":{…}. Cursors are base64url and types fixed identifiers, so neither
// needs unescaping.
struct SseParts {
  std::string prefix;     // id:/event: lines and "data: "
  size_t data_begin = 0;  // the data is frame[data_begin, data_begin + data_size) ...
  size_t data_size = 0;
  bool open_brace = false;  // ... after a "{" (control frames lose their "type" field)
};

constexpr std::string_view kTypeHead = R"({"type":")";
constexpr std::string_view kCursorField = R"("cursor":")";
constexpr std::string_view kEventField = R"(,"event":)";
constexpr std::string_view kKeepAlive = ": keep-alive\n\n";
constexpr std::string_view kEnd = "\n\n";

std::string_view CursorIn(std::string_view frame) {
  const auto at = frame.find(kCursorField);
  if (at == std::string_view::npos) return {};
  const auto begin = at + kCursorField.size();
  const auto end = frame.find('"', begin);
  return end == std::string_view::npos ? std::string_view{} : frame.substr(begin, end - begin);
}

SseParts Split(std::string_view frame, FrameKind kind) {
  SseParts parts;
  std::string_view type = "message";
  size_t fields = frame.size();  // where the fields after "type" start
  if (frame.substr(0, kTypeHead.size()) == kTypeHead) {
    const auto end = frame.find('"', kTypeHead.size());
    if (end != std::string_view::npos) {
      type = frame.substr(kTypeHead.size(), end - kTypeHead.size());
      fields = end + 1;
      if (fields < frame.size() && frame[fields] == ',') ++fields;
    }
  }
  const auto cursor = CursorIn(frame.substr(0, std::min(frame.size(), fields + 64)));
  if (!cursor.empty() && (kind == FrameKind::kEvent || type == "ready")) {
    parts.prefix.append("id: ").append(cursor).append("\n");
  }
  parts.prefix.append("event: ").append(type).append("\ndata: ");
  if (kind == FrameKind::kEvent) {
    const auto at = frame.find(kEventField, fields);
    if (at != std::string_view::npos && frame.size() > at + kEventField.size()) {
      parts.data_begin = at + kEventField.size();
      parts.data_size = frame.size() - 1 - parts.data_begin;  // without the envelope's '}'
      return parts;
    }
  }
  // {"type":"ready","cursor":"…","replayed":N} -> {"cursor":"…","replayed":N}
  parts.open_brace = true;
  parts.data_begin = fields;
  parts.data_size = fields < frame.size() ? frame.size() - fields : 0;
  if (parts.data_size == 0) {
    parts.prefix.push_back('}');  // {"type":"x"} -> {}
  }
  return parts;
}

}  // namespace

std::string SseEventText(const std::string& frame, FrameKind kind) {
  if (kind == FrameKind::kKeepAlive) return std::string(kKeepAlive);
  const auto parts = Split(frame, kind);
  std::string text = parts.prefix;
  if (parts.open_brace && parts.data_size > 0) text.push_back('{');
  text.append(frame, parts.data_begin, parts.data_size);
  text.append(kEnd);
  return text;
}

SseTransport::SseTransport(asio::ip::tcp::socket&& socket, std::string allow_origin)
    : stream_(std::move(socket)), allow_origin_(std::move(allow_origin)) {}

void SseTransport::Accept(const Request& /*request*/, Done done) {
  // The response is open-ended: no Content-Length, closed by the server (HTTP/1.1 allows a
  // body delimited by the end of the connection). X-Accel-Buffering stops nginx from holding
  // events back; no-cache/no-transform stops any proxy from storing or compressing them.
  head_ =
      "HTTP/1.1 200 OK\r\n"
      "Server: agentwire-gateway\r\n"
      "Content-Type: text/event-stream; charset=utf-8\r\n"
      "Cache-Control: no-cache, no-store, no-transform\r\n"
      "Connection: close\r\n"
      "X-Accel-Buffering: no\r\n";
  if (!allow_origin_.empty()) {
    head_.append("Access-Control-Allow-Origin: ").append(allow_origin_).append("\r\n");
    head_.append("Vary: Origin\r\n");
  }
  head_.append("\r\nretry: ").append(std::to_string(kRetryMs)).append("\n\n");
  // The HTTP phase's deadline must not end the stream; a dead client shows as a failed write
  // (keep-alive comments) or a read that ends.
  stream_.next_layer().expires_never();
  asio::async_write(stream_, asio::buffer(head_),
                    [done = std::move(done)](beast::error_code ec, std::size_t) { done(ec); });
}

void SseTransport::Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) {
  if (more_follows) stream_.HoldNextWrite();
  auto handler = [this, done = std::move(done)](beast::error_code ec, std::size_t) {
    in_flight_.reset();
    done(ec);
  };
  if (kind == FrameKind::kKeepAlive) {
    asio::async_write(stream_, asio::buffer(kKeepAlive.data(), kKeepAlive.size()),
                      std::move(handler));
    return;
  }
  auto parts = Split(*frame, kind);
  if (parts.open_brace && parts.data_size > 0) parts.prefix.push_back('{');
  prefix_ = std::move(parts.prefix);
  in_flight_ = frame;
  const std::array<asio::const_buffer, 3> buffers{
      asio::buffer(prefix_), asio::buffer(frame->data() + parts.data_begin, parts.data_size),
      asio::buffer(kEnd.data(), kEnd.size())};
  asio::async_write(stream_, buffers, std::move(handler));
}

void SseTransport::Read(Done done) {
  // Anything a client sends after its request is ignored; the read only tells when it left.
  stream_.async_read_some(
      asio::buffer(discard_),
      [done = std::move(done)](beast::error_code ec, std::size_t) { done(ec); });
}

void SseTransport::Close(boost::beast::websocket::close_code code, const std::string& reason,
                         Done done) {
  // SSE has no close frame: the end of the response is the signal, and EventSource
  // reconnects with Last-Event-ID (to any replica). Only the token's end needs words: the
  // client must reconnect with a new token, not the same one.
  auto end = [this, done = std::move(done)](beast::error_code, std::size_t) {
    beast::error_code ignored;
    stream_.next_layer().socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    stream_.next_layer().close();
    done({});
  };
  if (code == kCloseTokenExpired || code == kCloseRefreshRefused) {
    // Reasons are fixed identifiers (token_expired, refresh_refused): no JSON escaping needed.
    prefix_ = "event: error\ndata: {\"error\":\"" + reason + "\"}\n\n";
    asio::async_write(stream_, asio::buffer(prefix_), std::move(end));
    return;
  }
  asio::post(stream_.get_executor(), [end = std::move(end)]() mutable { end({}, 0); });
}

void SseTransport::Abort() {
  beast::error_code ignored;
  stream_.next_layer().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream_.next_layer().close();
}

}  // namespace agentwire::gateway
