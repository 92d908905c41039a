#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace agentwire::metrics {

class Registry;

/// A tiny HTTP/1.1 server for the consumers' operational endpoints, on its own thread:
///   GET /metrics  Prometheus text exposition of `registry`
///   GET /healthz  200 "ok" while the process runs
///   GET /readyz   200 "ready" when `ready()` says so (always, without a callback), else 503
/// Anything else: 404 (405 for other methods). One request per connection.
/// Construction binds and starts serving; destruction stops and joins the thread.
class HttpMetricsServer final {
 public:
  /// `port` 0 picks a free port (see Port()). `ready` is called on the server thread, so it
  /// must be thread-safe. Throws ConfigError naming `what` when the address cannot be bound.
  HttpMetricsServer(Registry& registry, const std::string& address, uint16_t port,
                    std::function<bool()> ready = {}, const std::string& what = "--metrics-port");
  ~HttpMetricsServer();
  HttpMetricsServer(const HttpMetricsServer&) = delete;
  HttpMetricsServer& operator=(const HttpMetricsServer&) = delete;

  /// The bound port.
  uint16_t Port() const noexcept;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentwire::metrics
