#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <string>

#include "gateway_context.hpp"

namespace agentwire::gateway {

/// Accepts TCP connections and serves HTTP on them: /healthz, /readyz, /metrics, the demo
/// page and its assets, and the /v1/events WebSocket upgrade (auth, Origin, cursor and
/// connection-cap checks happen here, before the upgrade).
class HttpListener final : public std::enable_shared_from_this<HttpListener> {
 public:
  /// Hands out the executor of each accepted connection (all of its handlers run there).
  using ConnectionExecutors = std::function<boost::asio::any_io_executor()>;

  /// The acceptor runs on `ioc`; each connection on the executor `connection_executors` gives.
  HttpListener(boost::asio::io_context& ioc, ConnectionExecutors connection_executors,
               std::shared_ptr<GatewayContext> context);

  /// Binds and listens. Throws ConfigError when the address is unusable or the port taken.
  void Open(const std::string& address, uint16_t port);
  void Start();
  /// Stops accepting new connections (drain).
  void Stop();
  uint16_t Port() const { return port_; }

 private:
  void Accept();

  ConnectionExecutors connection_executors_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_timer_;  // the pause after EMFILE & co (acceptor's strand)
  std::shared_ptr<GatewayContext> context_;
  std::shared_ptr<AcceptThrottle> throttle_;
  uint16_t port_ = 0;
};

/// Splits "/v1/events?a=1&b=x%20y" into the path and percent-decoded parameters (first
/// occurrence wins). Exposed for tests.
struct ParsedTarget {
  std::string path;
  std::vector<std::pair<std::string, std::string>> params;
  std::string Param(std::string_view name) const;
  bool Has(std::string_view name) const;
};
ParsedTarget ParseTarget(std::string_view target);

}  // namespace agentwire::gateway
