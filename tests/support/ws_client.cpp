#include "support/ws_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

namespace agentwire::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

struct WsClient::State {
  asio::io_context ioc;
  websocket::stream<tcp::socket> ws{ioc};
  beast::flat_buffer buffer;
  std::deque<std::string> frames;
  bool reading = false;
  bool closed = false;
  int close_code = 0;

  void StartRead() {
    if (reading || closed) return;
    reading = true;
    ws.async_read(buffer, [this](beast::error_code ec, std::size_t) {
      reading = false;
      if (ec) {
        closed = true;
        close_code = ws.reason().code;
        return;
      }
      frames.push_back(beast::buffers_to_string(buffer.data()));
      buffer.consume(buffer.size());
      StartRead();
    });
  }
};

namespace {

WsClient::HandshakeResult RawUpgrade(const WsClient::Options& options) {
  WsClient::HandshakeResult result;
  asio::io_context ioc;
  tcp::socket socket(ioc);
  beast::error_code ec;
  socket.connect({asio::ip::make_address(options.host), options.port}, ec);
  if (ec) return result;
  http::request<http::empty_body> request(http::verb::get, options.target, 11);
  request.set(http::field::host, options.host + ":" + std::to_string(options.port));
  request.set(http::field::upgrade, "websocket");
  request.set(http::field::connection, "Upgrade");
  request.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
  request.set(http::field::sec_websocket_version, "13");
  if (!options.bearer.empty()) request.set(http::field::authorization, "Bearer " + options.bearer);
  if (!options.origin.empty()) request.set(http::field::origin, options.origin);
  if (!options.protocols.empty()) {
    request.set(http::field::sec_websocket_protocol, options.protocols);
  }
  http::write(socket, request, ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.skip(false);
  http::read_header(socket, buffer, parser, ec);
  result.status = static_cast<int>(parser.get().result_int());
  result.retry_after = std::string(parser.get()[http::field::retry_after]);
  result.protocol = std::string(parser.get()[http::field::sec_websocket_protocol]);
  if (!ec && result.status != 101) {
    http::read(socket, buffer, parser, ec);
    result.body = parser.get().body();
  }
  return result;
}

}  // namespace

WsClient::WsClient() : state_(std::make_unique<State>()) {}

WsClient::~WsClient() {
  if (!state_->closed) Abort();
}

WsClient::HandshakeResult WsClient::Connect(const Options& options) {
  HandshakeResult result;
  beast::error_code ec;
  auto& socket = state_->ws.next_layer();
  socket.open(tcp::v4(), ec);
  if (options.receive_buffer_bytes > 0) {
    socket.set_option(asio::socket_base::receive_buffer_size(options.receive_buffer_bytes), ec);
  }
  if (options.send_buffer_bytes > 0) {
    socket.set_option(asio::socket_base::send_buffer_size(options.send_buffer_bytes), ec);
  }
  socket.connect({asio::ip::make_address(options.host), options.port}, ec);
  if (ec) {
    result.error = ec.message();
    return result;
  }
  state_->ws.set_option(websocket::stream_base::decorator([options](websocket::request_type& req) {
    if (!options.bearer.empty()) req.set(http::field::authorization, "Bearer " + options.bearer);
    if (!options.origin.empty()) req.set(http::field::origin, options.origin);
    if (!options.protocols.empty()) req.set(http::field::sec_websocket_protocol, options.protocols);
  }));
  websocket::response_type response;
  state_->ws.handshake(response, options.host + ":" + std::to_string(options.port), options.target,
                       ec);
  result.status = static_cast<int>(response.result_int());
  result.body = response.body();
  if (ec) {
    // Beast does not hand back a refused handshake's response: ask again as plain HTTP to
    // learn the status and JSON body the server answers with.
    result = RawUpgrade(options);
    result.error = ec.message();
    state_->closed = true;
    return result;
  }
  result.status = 101;
  result.protocol = std::string(response[http::field::sec_websocket_protocol]);
  state_->StartRead();
  return result;
}

std::optional<std::string> WsClient::Read(std::chrono::milliseconds timeout) {
  auto& s = *state_;
  if (s.frames.empty() && !s.closed) {
    s.StartRead();
    s.ioc.restart();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (s.frames.empty() && !s.closed && std::chrono::steady_clock::now() < deadline) {
      s.ioc.run_one_until(deadline);
    }
  }
  if (s.frames.empty()) return std::nullopt;
  auto frame = std::move(s.frames.front());
  s.frames.pop_front();
  return frame;
}

bool WsClient::Closed() const { return state_->closed && state_->frames.empty(); }
int WsClient::CloseCode() const { return state_->close_code; }

void WsClient::Send(const std::string& text) {
  beast::error_code ec;
  state_->ws.text(true);
  state_->ws.write(asio::buffer(text), ec);
}

void WsClient::Close() {
  beast::error_code ec;
  state_->ws.close(websocket::close_code::normal, ec);
  state_->closed = true;
}

void WsClient::Abort() {
  beast::error_code ec;
  state_->ws.next_layer().shutdown(tcp::socket::shutdown_both, ec);
  state_->ws.next_layer().close(ec);
  state_->closed = true;
}

HttpResponse HttpGet(uint16_t port, const std::string& target, const std::string& authorization) {
  asio::io_context ioc;
  tcp::socket socket(ioc);
  beast::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return {};
  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) request.set(http::field::authorization, authorization);
  http::write(socket, request, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response, ec);
  return {static_cast<int>(response.result_int()), response.body()};
}

}  // namespace agentwire::testing
