#include "event_stream_transport.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <utility>

namespace agentwire::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;

EventStreamTransport::EventStreamTransport(asio::ip::tcp::socket&& socket,
                                           const std::string& allow_origin,
                                           std::string_view extra_headers,
                                           std::string_view preamble)
    : stream_(std::move(socket)) {
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
  head_.append(extra_headers);
  if (!allow_origin.empty()) {
    head_.append("Access-Control-Allow-Origin: ").append(allow_origin).append("\r\n");
    head_.append("Vary: Origin\r\n");
  }
  head_.append("\r\n").append(preamble);
}

void EventStreamTransport::Accept(const Request& /*request*/, Done done) {
  // The HTTP phase's deadline must not end the stream; a dead client shows as a failed write
  // (keep-alive comments) or a read that ends.
  stream_.next_layer().expires_never();
  stream_.Send({head_}, /*hold=*/false, std::move(done));
}

void EventStreamTransport::Read(Done done) {
  // Anything a client sends after its request is ignored; the read only tells when it left.
  stream_.async_read_some(
      asio::buffer(discard_),
      [done = std::move(done)](beast::error_code ec, std::size_t) { done(ec); });
}

void EventStreamTransport::Close(beast::websocket::close_code code, const std::string& reason,
                                 Done done) {
  // No close frame: the end of the response is the signal (EventSource reconnects with
  // Last-Event-ID, to any replica).
  auto end = [this, done = std::move(done)](beast::error_code) {
    beast::error_code ignored;
    stream_.next_layer().socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    stream_.next_layer().close();
    done({});
  };
  std::string last = ClosingText(code, reason);
  if (!last.empty()) {
    stream_.Send({last}, /*hold=*/false, std::move(end));
    return;
  }
  asio::post(stream_.get_executor(), [end = std::move(end)]() mutable { end({}); });
}

void EventStreamTransport::Abort() {
  beast::error_code ignored;
  stream_.next_layer().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream_.next_layer().close();
}

}  // namespace agentwire::gateway
