#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>

namespace CLI {
class App;
}

namespace agentwire::metrics {
class Registry;
}

namespace agentwire::consumers {

/// Flags archive and analytics share (besides the Kafka and log flags).
struct ServiceOptions {
  std::string dsn;                          // --pg, AGENTWIRE_PG_DSN (required)
  std::string group;                        // --group
  bool migrate = false;                     // --migrate
  size_t batch_size = 5000;                 // --batch-size
  std::string batch_time = "200";           // --batch-ms (milliseconds, or a duration like 1s)
  int metrics_port = 0;                     // --metrics-port, AGENTWIRE_METRICS_PORT (0 = off)
  std::string metrics_address = "0.0.0.0";  // --metrics-address

  /// Throws ConfigError naming the flag.
  void Validate() const;
  std::chrono::milliseconds BatchTime() const;
};

/// Default --metrics-port of each service: distinct, so archive and analytics can run on one
/// host with their defaults.
inline constexpr int kArchiveMetricsPort = 9464;
inline constexpr int kAnalyticsMetricsPort = 9465;

/// Registers the flags above on `app`; `group_env` is the group's variable name.
void AddServiceOptions(CLI::App& app, ServiceOptions& options, const std::string& default_group,
                       const std::string& group_env, int default_metrics_port);

/// --migrate: applies pending migrations; otherwise checks that the schema is current.
/// Throws ConfigError.
void PrepareDatabase(const ServiceOptions& options);

/// Runs `run` until SIGINT/SIGTERM, serving /metrics, /healthz and /readyz (with `ready`) on
/// --metrics-port meanwhile. BlockTerminationSignals() must have been called before any thread
/// started. Returns the exit code (0 after a clean stop).
int RunService(const ServiceOptions& options, metrics::Registry& registry,
               const std::function<bool()>& ready, const std::function<void(std::stop_token)>& run);

}  // namespace agentwire::consumers
