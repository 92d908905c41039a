#pragma once

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <chrono>
#include <cstddef>
#include <string>

#include "coalescing_stream.hpp"
#include "transport.hpp"

namespace agentwire::gateway {

/// The longest header of an unmasked (server) WebSocket frame: 2 bytes and a 64-bit length.
inline constexpr std::size_t kMaxServerFrameHeader = 10;

/// Writes the header of a final, unmasked text frame of `payload_size` bytes (RFC 6455 5.2)
/// into `header`; returns its length (2, 4 or 10).
std::size_t EncodeServerFrameHeader(std::size_t payload_size,
                                    std::array<char, kMaxServerFrameHeader>& header);

/// The WebSocket protocol (RFC 6455) over a CoalescingStream: text frames, Beast's keep-alive
/// pings and idle timeout (our own frames are framed here and written through the
/// CoalescingStream, which serializes them with Beast's control frames), the inbound frame limit
/// (1009), and the subprotocol echo of the token's marker (never the token).
class WebSocketTransport final : public Transport {
 public:
  WebSocketTransport(boost::asio::ip::tcp::socket&& socket, std::chrono::seconds idle_timeout,
                     std::size_t max_inbound_frame_bytes);

  boost::asio::any_io_executor GetExecutor() override { return ws_.get_executor(); }
  std::string_view Name() const override { return "websocket"; }
  void Accept(const Request& request, Done done) override;
  void Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) override;
  void Read(Done done) override;
  std::string TakeMessage() override;
  void Close(boost::beast::websocket::close_code code, const std::string& reason,
             Done done) override;
  void Abort() override;
  std::optional<std::chrono::milliseconds> KeepAliveInterval() const override {
    return std::nullopt;
  }

 private:
  /// Reads the next part of the client's message (see Read).
  void ReadPart(Done done);

  /// Parts that fit in the inline buffer: what an idle connection waits with.
  static constexpr std::size_t kInlineReadBytes = 64;

  // A plain socket below: Beast's websocket stream keeps its own timeouts, and a tcp_stream
  // would add its timers and a larger pending read to every idle connection (~0.5 KiB).
  boost::beast::websocket::stream<CoalescingStream<boost::asio::ip::tcp::socket>> ws_;
  std::chrono::seconds idle_timeout_;
  std::size_t max_inbound_frame_bytes_;
  std::string message_;  // the client's message read so far
  std::array<char, kInlineReadBytes> first_part_{};
};

}  // namespace agentwire::gateway
