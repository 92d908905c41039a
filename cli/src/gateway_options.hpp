#pragma once

#include <string>

#include "agentwire/core/options.hpp"
#include "agentwire/gateway/gateway.hpp"

namespace CLI {
class App;
}

namespace agentwire::cli {

/// The gateway's flags, shared by `agentwire gateway` and `agentwire dev`.
struct GatewayOptions {
  gateway::GatewayConfig config;
  std::string listen = "127.0.0.1";
  int port = 8080;
  std::string port_file;
  std::string allowed_origins = "*";
  int fetch_wait_ms = 5;
  std::string idle_timeout = "60s";
  std::string drain_grace = "10s";
  std::string warm_start_timeout = "30s";
  std::string tail = "all";
  std::string tail_warm_window = "5m";
  std::string catchup_stall_timeout = "15s";
  std::string archive_statement_timeout = "5s";
  std::string jwt_leeway = "30s";

  /// Validates everything; throws ConfigError.
  gateway::GatewayConfig Build(const KafkaOptions& kafka);
};

void AddGatewayOptions(CLI::App& cmd, GatewayOptions& options);
/// Prints the gateway URL on stdout (the line scripts wait for) and writes --port-file.
void AnnounceGateway(const std::string& listen, uint16_t port, const std::string& port_file);

}  // namespace agentwire::cli
