#include "agentwire/consumers/service.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <thread>

#include "agentwire/consumers/migrations.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/http_metrics_server.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"

namespace agentwire::consumers {

void ServiceOptions::Validate() const {
  if (dsn.empty()) {
    throw ConfigError(
        "--pg / AGENTWIRE_PG_DSN is required: a PostgreSQL connection string, e.g. "
        "'host=127.0.0.1 port=5432 user=agentwire dbname=agentwire' or postgresql://...");
  }
  if (group.empty()) throw ConfigError("--group: the consumer group id must not be empty");
  if (batch_size == 0 || batch_size > 1'000'000) {
    throw ConfigError(fmt::format("--batch-size {}: expected 1..1000000", batch_size));
  }
  if (metrics_port < 0 || metrics_port > 65535) {
    throw ConfigError(fmt::format("--metrics-port {}: expected 0..65535 (0 = off)", metrics_port));
  }
  (void)BatchTime();
}

std::chrono::milliseconds ServiceOptions::BatchTime() const {
  // A plain number is milliseconds here (the flag is --batch-ms).
  const bool plain =
      !batch_time.empty() && batch_time.find_first_not_of("0123456789") == std::string::npos;
  const auto value = plain ? std::chrono::milliseconds(std::stoll(batch_time))
                           : ParseDuration(batch_time, "--batch-ms");
  if (value.count() < 1) throw ConfigError("--batch-ms: must be at least 1 ms");
  return value;
}

void AddServiceOptions(CLI::App& app, ServiceOptions& options, const std::string& default_group,
                       const std::string& group_env, int default_metrics_port) {
  options.group = default_group;
  options.metrics_port = default_metrics_port;
  app.add_option("--pg", options.dsn, "PostgreSQL connection string")->envname("AGENTWIRE_PG_DSN");
  app.add_option("--group", options.group, "Consumer group id (offsets are kept per group)")
      ->envname(group_env)
      ->capture_default_str();
  app.add_flag("--migrate", options.migrate,
               "Apply pending infra/sql migrations (embedded in the binary) before starting");
  app.add_option("--batch-size", options.batch_size, "Most messages per PostgreSQL transaction")
      ->capture_default_str();
  app.add_option("--batch-ms", options.batch_time,
                 "Longest wait before a partial batch is written (milliseconds)")
      ->capture_default_str();
  app.add_option("--metrics-port", options.metrics_port,
                 "Port for /metrics, /healthz, /readyz (0 = off)")
      ->envname("AGENTWIRE_METRICS_PORT")
      ->capture_default_str();
  app.add_option("--metrics-address", options.metrics_address, "Address for --metrics-port")
      ->capture_default_str();
}

void PrepareDatabase(const ServiceOptions& options) {
  if (options.migrate) {
    const int applied = ApplyMigrations(options.dsn);
    log::Info("database schema up to date", {{"count", applied}});
  } else {
    RequireSchema(options.dsn);
  }
}

int RunService(const ServiceOptions& options, metrics::Registry& registry,
               const std::function<bool()>& ready,
               const std::function<void(std::stop_token)>& run) {
  std::unique_ptr<metrics::HttpMetricsServer> server;
  if (options.metrics_port != 0) {
    server = std::make_unique<metrics::HttpMetricsServer>(
        registry, options.metrics_address, static_cast<uint16_t>(options.metrics_port), ready);
  }
  std::stop_source stop;
  std::thread signal_watcher([&stop] {
    while (!stop.stop_requested()) {
      if (const auto signal = WaitForTerminationSignal(std::chrono::milliseconds(200))) {
        log::Info("signal received: finishing the current batch", {{"signal", *signal}});
        stop.request_stop();
      }
    }
  });
  try {
    run(stop.get_token());
  } catch (...) {
    stop.request_stop();
    signal_watcher.join();
    throw;
  }
  stop.request_stop();
  signal_watcher.join();
  return kExitOk;
}

}  // namespace agentwire::consumers
