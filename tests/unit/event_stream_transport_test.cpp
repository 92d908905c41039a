// The `text/event-stream` transports on a loopback socket pair (port 0, nothing else): what a
// frame that renders to nothing does to the bytes held back before it.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "ai_sdk_transport.hpp"

namespace agentwire::gateway {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

struct SocketPair {
  explicit SocketPair(asio::io_context& ioc) : server(ioc), client(ioc) {
    tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    client.connect(acceptor.local_endpoint());
    acceptor.accept(server);
  }
  tcp::socket server;
  tcp::socket client;
};

/// Everything the client can read without waiting.
std::string ReadAvailable(tcp::socket& socket) {
  std::string out;
  boost::system::error_code ec;
  while (socket.available(ec) > 0 && !ec) {
    std::string chunk(socket.available(ec), '\0');
    const size_t n = socket.read_some(asio::buffer(chunk), ec);
    out.append(chunk, 0, n);
  }
  return out;
}

TEST(AiSdkTransportTest, AFrameThatRendersNothingDoesNotHoldBackTheBytesBeforeIt) {
  asio::io_context ioc;
  SocketPair pair(ioc);
  AiSdkTransport transport(std::move(pair.server), "");
  int completed = 0;
  auto done = [&](boost::beast::error_code ec) {
    EXPECT_FALSE(ec) << ec.message();
    ++completed;
  };
  transport.Accept({}, done);
  const auto event = std::make_shared<const std::string>(
      R"({"type":"event","cursor":"x","event":{"type":"message_delta","run_id":"r",)"
      R"("message_delta":{"text":"hello"}}})");
  // The event is written with `ready` right behind it (more_follows), so it may wait to share
  // that write; `ready` says nothing in this protocol, and nothing follows it.
  transport.Write(event, FrameKind::kEvent, /*more_follows=*/true, done);
  transport.Write(std::make_shared<const std::string>(R"({"type":"ready","cursor":"x"})"),
                  FrameKind::kControl, /*more_follows=*/false, done);
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  std::string received;
  while (received.find("hello") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    ioc.run_for(10ms);
    ioc.restart();
    received += ReadAvailable(pair.client);
  }
  EXPECT_EQ(completed, 3);
  EXPECT_NE(received.find(R"("delta":"hello")"), std::string::npos)
      << "the event's chunks were held back behind a frame that rendered nothing: " << received;
}

}  // namespace
}  // namespace agentwire::gateway
