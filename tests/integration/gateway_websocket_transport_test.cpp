// The server's read of client messages (WebSocketTransport::Read): an idle connection waits
// with a 64-byte inline buffer and no allocation, and a longer message continues in the
// message itself. Every size around that boundary, fragmented or not, arrives whole and in
// order; a message over the inbound limit still closes with 1009. A Beast client over
// loopback TCP, in this process.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "websocket_transport.hpp"

namespace agentwire::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

constexpr std::size_t kMaxInbound = 64 * 1024;

/// Runs a WebSocketTransport on one side of a loopback connection and a blocking Beast client
/// on the other (its own thread).
class TransportPair {
 public:
  TransportPair() : acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {
    const auto endpoint = acceptor_.local_endpoint();
    client_thread_ = std::thread([this, endpoint] {
      client_.next_layer().connect(endpoint);
      client_.handshake("127.0.0.1", "/v1/events");
    });
    tcp::socket socket = acceptor_.accept();
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    http::read(socket, buffer, request);
    transport_ = std::make_unique<WebSocketTransport>(std::move(socket), std::chrono::seconds(30),
                                                      kMaxInbound);
    std::optional<beast::error_code> accepted;
    transport_->Accept(request, [&](beast::error_code ec) { accepted = ec; });
    while (!accepted) io_.run_one();
    client_thread_.join();
    EXPECT_FALSE(*accepted) << accepted->message();
  }

  /// Reads the server's next message: its text, or the error.
  std::pair<beast::error_code, std::string> ServerRead() {
    std::optional<beast::error_code> done;
    transport_->Read([&](beast::error_code ec) { done = ec; });
    io_.restart();
    while (!done) io_.run_one();
    return {*done, *done ? std::string() : transport_->TakeMessage()};
  }

  websocket::stream<tcp::socket>& Client() { return client_; }

 private:
  asio::io_context io_;
  asio::io_context client_io_;
  tcp::acceptor acceptor_;
  websocket::stream<tcp::socket> client_{client_io_};
  std::thread client_thread_;
  std::unique_ptr<WebSocketTransport> transport_;
};

std::string Message(std::size_t size, char seed) {
  std::string text(size, ' ');
  for (std::size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + (seed + i) % 26);
  return text;
}

TEST(WebSocketTransportRead, EverySizeAroundTheInlineBufferArrivesWhole) {
  TransportPair pair;
  std::vector<std::size_t> sizes{0, 1, 63, 64, 65, 127, 128, 200, 1536, 1537, 5000, 60000};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::string sent = Message(sizes[i], static_cast<char>(i));
    pair.Client().text(true);
    pair.Client().write(asio::buffer(sent));
    const auto [ec, received] = pair.ServerRead();
    ASSERT_FALSE(ec) << "size " << sizes[i] << ": " << ec.message();
    EXPECT_EQ(received, sent) << "size " << sizes[i];
  }
}

TEST(WebSocketTransportRead, FragmentedMessagesArriveWhole) {
  TransportPair pair;
  for (const std::size_t fragment : {1, 10, 64, 65, 1000}) {
    const std::string sent = Message(3000, static_cast<char>(fragment));
    pair.Client().text(true);
    for (std::size_t offset = 0; offset < sent.size(); offset += fragment) {
      const std::size_t n = std::min(fragment, sent.size() - offset);
      pair.Client().write_some(offset + n == sent.size(), asio::buffer(sent.data() + offset, n));
    }
    const auto [ec, received] = pair.ServerRead();
    ASSERT_FALSE(ec) << "fragment " << fragment << ": " << ec.message();
    EXPECT_EQ(received, sent) << "fragment " << fragment;
  }
}

TEST(WebSocketTransportRead, BackToBackMessagesStaySeparate) {
  TransportPair pair;
  // Written before the server reads: several land in one TCP read of Beast's.
  std::vector<std::string> sent;
  sent.reserve(50);
  for (std::size_t i = 0; i < 50; ++i) sent.push_back(Message(i * 7, 'a'));
  pair.Client().text(true);
  for (const auto& message : sent) pair.Client().write(asio::buffer(message));
  for (const auto& message : sent) {
    const auto [ec, received] = pair.ServerRead();
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(received, message);
  }
}

TEST(WebSocketTransportRead, AMessageOverTheLimitFailsTheRead) {
  TransportPair pair;
  const std::string sent = Message(kMaxInbound + 1, 'x');
  pair.Client().text(true);
  // The server fails the connection (1009) while the client still writes: its write may fail.
  beast::error_code ignored;
  pair.Client().write(asio::buffer(sent), ignored);
  const auto [ec, received] = pair.ServerRead();
  EXPECT_EQ(ec, websocket::error::message_too_big) << ec.message();
}

}  // namespace
}  // namespace agentwire::gateway
