// The gateway's plain HTTP side as proxies use it: HEAD on a kept-alive connection (nginx's
// upstream keepalive pools connections) and the token in the Sec-WebSocket-Protocol header,
// which no proxy writes to its access log.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "agentwire/gateway/auth.hpp"
#include "support/gateway_harness.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

TEST(GatewayHttp, HeadThenGetOnOneKeptAliveConnection) {
  GatewayHarness harness(2);
  harness.StartGateway();
  asio::io_context ioc;
  asio::ip::tcp::socket socket(ioc);
  socket.connect({asio::ip::make_address("127.0.0.1"), harness.Port()});
  beast::flat_buffer buffer;

  for (const std::string path : {"/healthz", "/readyz", "/metrics", "/"}) {
    SCOPED_TRACE(path);
    http::request<http::empty_body> head(http::verb::head, path, 11);
    head.set(http::field::host, "gateway");
    http::write(socket, head);
    http::response_parser<http::string_body> head_parser;
    head_parser.skip(true);  // a HEAD response has headers only, whatever Content-Length says
    http::read(socket, buffer, head_parser);
    EXPECT_EQ(head_parser.get().result_int(), 200U);
    EXPECT_TRUE(head_parser.get().keep_alive());
    const std::string length(head_parser.get()[http::field::content_length]);
    EXPECT_NE(length, "0") << "HEAD announces the length GET would send";

    // The next response on the same connection must start right here: a body sent after the
    // HEAD's headers would be parsed as its status line.
    http::request<http::empty_body> get(http::verb::get, path, 11);
    get.set(http::field::host, "gateway");
    http::write(socket, get);
    http::response<http::string_body> response;
    beast::error_code ec;
    http::read(socket, buffer, response, ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(response.result_int(), 200U);
    EXPECT_EQ(std::to_string(response.body().size()), length);
  }
  // Nothing is left over on the connection.
  EXPECT_EQ(buffer.size(), 0U);
}

TEST(GatewayHttp, TokenInTheSecWebSocketProtocolHeader) {
  GatewayHarness harness(2);
  harness.StartGateway();
  const std::string token = harness.Token("alice");

  WsClient client;
  WsClient::Options options;
  options.port = harness.Port();
  options.protocols = std::string(gateway::kBearerSubprotocol) + ", " + token;
  const auto result = client.Connect(options);
  ASSERT_EQ(result.status, 101) << result.body;
  // RFC 6455: the server names one protocol the client offered; never the token.
  EXPECT_EQ(result.protocol, gateway::kBearerSubprotocol);
  auto frames = ReadUntil(
      client, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].type, "ready");
  const auto id = harness.Publish("alice", "r1", 1);
  harness.Flush();
  frames = ReadUntil(
      client, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].event_id, id);
  client.Close();

  // A bad token there is refused like anywhere else, and the marker alone is no token.
  WsClient bad;
  options.protocols = std::string(gateway::kBearerSubprotocol) + ", not.a.jwt";
  EXPECT_EQ(bad.Connect(options).status, 401);
  WsClient none;
  options.protocols = std::string(gateway::kBearerSubprotocol);
  const auto missing = none.Connect(options);
  EXPECT_EQ(missing.status, 401);
  EXPECT_NE(missing.body.find("token_missing"), std::string::npos) << missing.body;

  // A client that offers no protocol gets none back (the token came in the header).
  WsClient plain;
  const auto plain_result = plain.Connect(harness.ClientOptions("alice"));
  ASSERT_EQ(plain_result.status, 101);
  EXPECT_EQ(plain_result.protocol, "");
}

}  // namespace
}  // namespace agentwire::testing
