#include "agentwire/core/http_metrics_server.hpp"

#include <fmt/format.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <thread>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/listen.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/metrics.hpp"

namespace agentwire::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr auto kRequestTimeout = std::chrono::seconds(10);

/// One connection: read a request, answer, close. Owned by its own handlers (shared_ptr).
class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, Registry& registry, const std::function<bool()>& ready)
      : stream_(std::move(socket)), registry_(registry), ready_(ready) {}

  void Start() {
    stream_.expires_after(kRequestTimeout);
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (!ec) self->Answer();
                     });
  }

 private:
  void Answer() {
    response_.version(request_.version());
    response_.keep_alive(false);
    response_.set(http::field::server, "agentwire");
    const std::string target(request_.target());
    const std::string path = target.substr(0, target.find('?'));
    if (request_.method() != http::verb::get && request_.method() != http::verb::head) {
      Reply(http::status::method_not_allowed, "text/plain", "method not allowed\n");
    } else if (path == "/metrics") {
      Reply(http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
            registry_.RenderPrometheus());
    } else if (path == "/healthz") {
      Reply(http::status::ok, "text/plain", "ok\n");
    } else if (path == "/readyz") {
      bool ready = true;
      try {
        ready = !ready_ || ready_();
      } catch (const std::exception&) {
        ready = false;
      }
      if (ready) {
        Reply(http::status::ok, "text/plain", "ready\n");
      } else {
        Reply(http::status::service_unavailable, "text/plain", "not ready\n");
      }
    } else {
      Reply(http::status::not_found, "text/plain", "not found\n");
    }
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  void Reply(http::status status, const char* content_type, std::string body) {
    response_.result(status);
    response_.set(http::field::content_type, content_type);
    if (request_.method() != http::verb::head) response_.body() = std::move(body);
    response_.prepare_payload();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  Registry& registry_;
  const std::function<bool()>& ready_;
};

}  // namespace

class HttpMetricsServer::Impl final {
 public:
  Impl(Registry& registry, const std::string& address, uint16_t port, std::function<bool()> ready,
       const std::string& what)
      : registry_(registry),
        ready_(std::move(ready)),
        acceptor_(io_),
        retry_timer_(io_),
        throttle_(registry, "agentwire_metrics_endpoint_", "metrics") {
    OpenListener(acceptor_, address, port, what,
                 "choose another port, or 0 to turn the endpoint off");
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    log::Info("metrics endpoint listening", {{"address", address}, {"port", uint32_t{port_}}});
  }

  ~Impl() {
    asio::post(io_, [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
      retry_timer_.cancel();
    });
    io_.stop();
    thread_.join();
  }

  uint16_t Port() const noexcept { return port_; }

 private:
  void Accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
        // Out of descriptors (or buffers): accepting again at once would fail again and spin.
        const auto delay = throttle_.OnError(ec);
        if (delay.count() == 0) {
          Accept();
        } else {
          retry_timer_.expires_after(delay);
          retry_timer_.async_wait([this](beast::error_code wait_ec) {
            if (!wait_ec && acceptor_.is_open()) Accept();
          });
        }
        return;
      }
      throttle_.OnAccepted();
      std::make_shared<Connection>(std::move(socket), registry_, ready_)->Start();
      Accept();
    });
  }

  Registry& registry_;
  std::function<bool()> ready_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  AcceptThrottle throttle_;
  uint16_t port_ = 0;
  std::thread thread_;
};

HttpMetricsServer::HttpMetricsServer(Registry& registry, const std::string& address, uint16_t port,
                                     std::function<bool()> ready, const std::string& what)
    : impl_(std::make_unique<Impl>(registry, address, port, std::move(ready), what)) {}

HttpMetricsServer::~HttpMetricsServer() = default;

uint16_t HttpMetricsServer::Port() const noexcept { return impl_->Port(); }

}  // namespace agentwire::metrics
