#include "websocket_transport.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
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
  ws_.async_accept(request, [this, done = std::move(done)](beast::error_code ec) {
    if (!ec) ws_.text(true);
    // The stream keeps its decorator for the connection's life: drop the one that holds the
    // handshake's strings.
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type&) {}));
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
  // Beast's async_read into a dynamic buffer prepares room for the whole next message before
  // a byte has arrived: ~1.5 KiB held by every idle connection, most of what one cost beyond
  // Beast's own stream. So the wait happens with a small inline buffer and no allocation, and
  // a message that turns out longer continues straight into message_.
  message_ = std::string();
  ReadPart(std::move(done));
}

void WebSocketTransport::ReadPart(Done done) {
  const bool first = message_.empty();
  const std::size_t offset = message_.size();
  boost::asio::mutable_buffer into = boost::asio::buffer(first_part_);
  if (!first) {
    // Beast enforces read_message_max across parts and frames (1009); the hint is at most the
    // frame's rest. It must be asked for at least a byte: a message at the limit whose next
    // frame is on its way fails there, not here.
    const std::size_t left = max_inbound_frame_bytes_ - std::min(offset, max_inbound_frame_bytes_);
    const std::size_t room =
        std::clamp<std::size_t>(ws_.read_size_hint(std::max<std::size_t>(left, 1)), 1, 64 * 1024);
    message_.resize(offset + room);
    into = boost::asio::buffer(message_.data() + offset, room);
  }
  ws_.async_read_some(into, [this, first, offset, done = std::move(done)](beast::error_code ec,
                                                                          std::size_t n) mutable {
    if (ec) {
      message_ = std::string();
      done(ec);
      return;
    }
    if (first) {
      message_.assign(first_part_.data(), n);
    } else {
      message_.resize(offset + n);
    }
    if (ws_.is_message_done()) {
      done({});
      return;
    }
    ReadPart(std::move(done));
  });
}

std::string WebSocketTransport::TakeMessage() { return std::exchange(message_, std::string()); }

void WebSocketTransport::Close(websocket::close_code code, const std::string& reason, Done done) {
  ws_.async_close(websocket::close_reason(code, reason), std::move(done));
}

void WebSocketTransport::Abort() {
  auto& socket = beast::get_lowest_layer(ws_);
  beast::error_code ignored;
  socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

}  // namespace agentwire::gateway
