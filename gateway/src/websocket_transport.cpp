#include "websocket_transport.hpp"

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <string>
#include <utility>

#include "agentwire/gateway/auth.hpp"

namespace agentwire::gateway {

namespace beast = boost::beast;
namespace websocket = beast::websocket;

std::size_t EncodeServerFrameHeader(std::size_t payload_size,
                                    std::array<char, kMaxServerFrameHeader>& header) {
  // RFC 6455 5.2: FIN + opcode 1 (text); a server's frames are not masked; the length takes
  // 7 bits, or 126 and 16 bits, or 127 and 64 bits, in network byte order.
  header[0] = static_cast<char>(0x81);
  std::size_t size = 2;
  if (payload_size < 126) {
    header[1] = static_cast<char>(payload_size);
  } else if (payload_size <= 0xFFFF) {
    header[1] = static_cast<char>(126);
    size += 2;
  } else {
    header[1] = static_cast<char>(127);
    size += 8;
  }
  for (std::size_t i = 2; i < size; ++i) {
    header[i] = static_cast<char>((payload_size >> (8 * (size - 1 - i))) & 0xFF);
  }
  return size;
}

WebSocketTransport::WebSocketTransport(boost::asio::ip::tcp::socket&& socket,
                                       std::chrono::seconds idle_timeout,
                                       std::size_t max_inbound_frame_bytes)
    : ws_(std::move(socket)),
      idle_timeout_(idle_timeout),
      max_inbound_frame_bytes_(max_inbound_frame_bytes) {}

void WebSocketTransport::Accept(const Request& request, Done done) {
  auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::server);
  timeouts.handshake_timeout = std::chrono::seconds(10);
  timeouts.idle_timeout = idle_timeout_;
  timeouts.keep_alive_pings = true;
  ws_.set_option(timeouts);
  // RFC 6455: name the subprotocol the client offered (the token's marker), never the token.
  const auto offered = request[beast::http::field::sec_websocket_protocol];
  ws_.set_option(websocket::stream_base::decorator(
      [protocol = std::string(AcceptedSubprotocol({offered.data(), offered.size()}))](
          websocket::response_type& response) {
        response.set(beast::http::field::server, "agentwire-gateway");
        if (!protocol.empty()) response.set(beast::http::field::sec_websocket_protocol, protocol);
      }));
  ws_.read_message_max(max_inbound_frame_bytes_);
  ws_.auto_fragment(false);
  // The stream's own timeouts now govern; the HTTP phase's deadline must not fire.
  beast::get_lowest_layer(ws_).expires_never();
  ws_.async_accept(request, [this, done = std::move(done)](beast::error_code ec) {
    if (!ec) ws_.text(true);
    done(ec);
  });
}

void WebSocketTransport::Write(const Frame& frame, FrameKind /*kind*/, bool more_follows,
                               Done done) {
  // Once a close frame was received (Beast has answered it) or sent, no data frame may follow
  // (RFC 6455 5.5.1): our frames bypass Beast's write path, so the check is ours.
  if (!ws_.is_open()) {
    boost::asio::post(ws_.get_executor(),
                      [done = std::move(done)] { done(boost::beast::websocket::error::closed); });
    return;
  }
  // The frame is built here, not by Beast's per-message write: a catch-up of hundreds of
  // events then costs one copy each and one write syscall (CoalescingStream), and the stream
  // keeps Beast's control frames from landing inside it.
  std::array<char, kMaxServerFrameHeader> header{};
  const std::size_t header_size = EncodeServerFrameHeader(frame->size(), header);
  ws_.next_layer().Send({std::string_view(header.data(), header_size), *frame},
                        /*hold=*/more_follows, std::move(done));
}

void WebSocketTransport::Read(Done done) {
  read_buffer_.consume(read_buffer_.size());
  ws_.async_read(read_buffer_,
                 [done = std::move(done)](beast::error_code ec, std::size_t) { done(ec); });
}

std::string WebSocketTransport::TakeMessage() {
  std::string message = beast::buffers_to_string(read_buffer_.data());
  read_buffer_.consume(read_buffer_.size());
  return message;
}

void WebSocketTransport::Close(websocket::close_code code, const std::string& reason, Done done) {
  ws_.async_close(websocket::close_reason(code, reason), std::move(done));
}

void WebSocketTransport::Abort() {
  beast::error_code ignored;
  beast::get_lowest_layer(ws_).socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both,
                                                 ignored);
  beast::get_lowest_layer(ws_).close();
}

}  // namespace agentwire::gateway
