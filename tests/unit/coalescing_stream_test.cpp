// The socket's one writer: the session's own WebSocket frames (built by EncodeServerFrameHeader,
// sent through CoalescingStream::Send, many per write) and Beast's control frames (pongs
// started by Beast's read while our frames are on the wire) must never interleave inside a
// frame. A Beast client on the other end of a socket pair reads every frame and every pong.
#include "coalescing_stream.hpp"

#include <gtest/gtest.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "websocket_transport.hpp"

namespace agentwire::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using LocalSocket = asio::local::stream_protocol::socket;

std::string HeaderBytes(std::size_t payload_size) {
  std::array<char, kMaxServerFrameHeader> header{};
  return {header.data(), EncodeServerFrameHeader(payload_size, header)};
}

TEST(ServerFrameHeader, UsesTheShortestLengthEncoding) {
  EXPECT_EQ(HeaderBytes(0), std::string("\x81\x00", 2));
  EXPECT_EQ(HeaderBytes(125), std::string("\x81\x7d", 2));
  EXPECT_EQ(HeaderBytes(126), std::string("\x81\x7e\x00\x7e", 4));
  EXPECT_EQ(HeaderBytes(65535), std::string("\x81\x7e\xff\xff", 4));
  EXPECT_EQ(HeaderBytes(65536), std::string("\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10));
}

TEST(CoalescingStream, OwnFramesAndBeastPongsNeverInterleave) {
  asio::io_context io;
  LocalSocket server_socket(io);
  LocalSocket client_socket(io);
  asio::local::connect_pair(server_socket, client_socket);
  websocket::stream<CoalescingStream<LocalSocket>> server(std::move(server_socket));
  websocket::stream<LocalSocket> client(std::move(client_socket));

  // Sizes around every length encoding, and large frames that take several write syscalls
  // (the moments a pong could land inside a frame).
  std::mt19937 random(7);
  std::vector<std::string> frames;
  const std::array<std::size_t, 9> sizes{0, 1, 125, 126, 127, 65535, 65536, 70000, 300000};
  for (int i = 0; i < 2000; ++i) {
    const std::size_t size = i % 10 == 0 ? sizes.at(random() % sizes.size()) : random() % 400;
    frames.emplace_back(size, static_cast<char>('a' + i % 26));
  }
  constexpr int kPings = 300;

  std::vector<std::string> received;
  int pongs = 0;
  int pings_sent = 0;
  bool server_reading = true;
  beast::flat_buffer client_buffer;
  beast::flat_buffer server_buffer;

  client.control_callback([&](websocket::frame_type kind, beast::string_view) {
    if (kind == websocket::frame_type::pong) ++pongs;
  });
  std::function<void()> client_read = [&] {
    client.async_read(client_buffer, [&](beast::error_code ec, std::size_t) {
      ASSERT_FALSE(ec) << ec.message();
      received.push_back(beast::buffers_to_string(client_buffer.data()));
      client_buffer.consume(client_buffer.size());
      if (received.size() < frames.size() || pongs < kPings) client_read();
    });
  };
  std::function<void()> client_ping = [&] {
    client.async_ping({}, [&](beast::error_code ec) {
      ASSERT_FALSE(ec) << ec.message();
      if (++pings_sent < kPings) client_ping();
    });
  };
  // Beast answers pings from inside its read: the server keeps one read pending.
  std::function<void()> server_read = [&] {
    server.async_read(server_buffer, [&](beast::error_code ec, std::size_t) {
      if (ec) server_reading = false;  // the test ends by closing the sockets
    });
  };
  std::size_t next = 0;
  std::function<void()> server_send = [&] {
    if (next == frames.size()) return;
    const std::string& frame = frames[next++];
    const bool hold = next < frames.size() && random() % 4 != 0;
    server.next_layer().Send({HeaderBytes(frame.size()), frame}, hold, [&](beast::error_code ec) {
      ASSERT_FALSE(ec) << ec.message();
      server_send();
    });
  };

  server.async_accept([&](beast::error_code ec) {
    ASSERT_FALSE(ec) << ec.message();
    server_read();
    server_send();
  });
  client.async_handshake("localhost", "/", [&](beast::error_code ec) {
    ASSERT_FALSE(ec) << ec.message();
    client_read();
    client_ping();
  });
  // Run until the client has every frame and every pong (or a read failed).
  while (io.run_one() > 0) {
    if (received.size() == frames.size() && pongs == kPings) break;
  }
  beast::error_code ignored;
  beast::get_lowest_layer(client).close(ignored);
  beast::get_lowest_layer(server).close(ignored);
  io.run();

  EXPECT_EQ(pongs, kPings);
  ASSERT_EQ(received.size(), frames.size());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    ASSERT_EQ(received[i], frames[i]) << "frame " << i;
  }
  EXPECT_GT(server.next_layer().CoalescedWrites(), 1000U);
  EXPECT_FALSE(server_reading);
}

}  // namespace
}  // namespace agentwire::gateway
