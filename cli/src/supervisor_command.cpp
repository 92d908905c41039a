#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "agentwire/consumers/service.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/listen.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "agentwire/supervisor/supervisor.hpp"
#include "commands.hpp"

namespace agentwire::cli {

/// Default --metrics-port: next to archive's (9464) and analytics' (9465).
inline constexpr int kSupervisorMetricsPort = 9466;

CommandAction RegisterSupervisorCommand(CLI::App& app) {
  struct Options {
    KafkaOptions kafka;
    LogOptions log;
    std::string group = "agentwire-supervisor";
    std::string cancel_timeout = "10s";
    std::string check_interval = "1s";
    int metrics_port = kSupervisorMetricsPort;
    std::string metrics_address = "0.0.0.0";
  };
  auto options = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "supervisor",
      "End runs whose worker went silent past its lease (worker_lost) or ignored Stop for "
      "--cancel-timeout (cancelled): a consumer group over the event, .control and .heartbeat "
      "topics (docs/runs.md)");
  AddKafkaOptions(*cmd, options->kafka);
  cmd->add_option("--group", options->group, "Consumer group id")
      ->envname("AGENTWIRE_SUPERVISOR_GROUP")
      ->capture_default_str();
  cmd->add_option("--cancel-timeout", options->cancel_timeout,
                  "End a run as cancelled when no end is in the log this long after a Stop "
                  "(e.g. 10s, 500ms)")
      ->envname("AGENTWIRE_CANCEL_TIMEOUT")
      ->capture_default_str();
  cmd->add_option("--check-interval", options->check_interval,
                  "How often leases and pending Stops are checked (e.g. 1s)")
      ->capture_default_str();
  cmd->add_option("--metrics-port", options->metrics_port,
                  "Port for /metrics, /healthz, /readyz (0 = off)")
      ->envname("AGENTWIRE_METRICS_PORT")
      ->capture_default_str();
  cmd->add_option("--metrics-address", options->metrics_address, "Address for --metrics-port")
      ->capture_default_str();
  AddLogOptions(*cmd, options->log);

  return [options]() {
    options->log.Apply();
    options->kafka.Validate();
    if (options->metrics_port < 0 || options->metrics_port > 65535) {
      throw ConfigError(
          fmt::format("--metrics-port {}: expected 0..65535 (0 = off)", options->metrics_port));
    }
    supervisor::SupervisorConfig config;
    config.client_properties = options->kafka.ClientProperties();
    config.topic = options->kafka.topic;
    config.group = options->group;
    config.cancel_timeout = ParseDuration(options->cancel_timeout, "--cancel-timeout");
    config.check_interval = ParseDuration(options->check_interval, "--check-interval");
    LogFileLimit(StartupFileLimit());

    BlockTerminationSignals();
    metrics::Registry registry;
    // Validates the settings (ConfigError: one line, exit 2) and checks the topics.
    supervisor::Supervisor supervisor(config, registry);
    // The metrics endpoints and the signal handling archive and analytics use (no PostgreSQL
    // is involved: RunService only reads the metrics fields).
    consumers::ServiceOptions service;
    service.metrics_port = options->metrics_port;
    service.metrics_address = options->metrics_address;
    return consumers::RunService(
        service, registry, [&supervisor] { return supervisor.Ready(); },
        [&supervisor](const std::stop_token& stop) { supervisor.Run(stop); });
  };
}

}  // namespace agentwire::cli
