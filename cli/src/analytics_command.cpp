#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <utility>

#include "agentwire/consumers/analytics.hpp"
#include "agentwire/consumers/service.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/listen.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "commands.hpp"

namespace agentwire::cli {

CommandAction RegisterAnalyticsCommand(CLI::App& app) {
  struct Options {
    KafkaOptions kafka;
    LogOptions log;
    consumers::ServiceOptions service;
    std::string abandon_after = "15m";

    std::string report_dsn;
    LogOptions report_log;
    CLI::App* report = nullptr;
  };
  auto options = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "analytics",
      "Maintain per-run facts (agent_runs) and tool calls (tool_calls) in PostgreSQL, "
      "idempotent under replays. `analytics report` prints a summary.");
  cmd->require_subcommand(0, 1);
  AddKafkaOptions(*cmd, options->kafka);
  consumers::AddServiceOptions(*cmd, options->service, "agentwire-analytics",
                               "AGENTWIRE_ANALYTICS_GROUP", consumers::kAnalyticsMetricsPort);
  cmd->add_option("--abandon-after", options->abandon_after,
                  "Mark a run abandoned when its newest event is this much older than the newest "
                  "event seen (e.g. 15m)")
      ->envname("AGENTWIRE_ABANDON_AFTER")
      ->capture_default_str();
  AddLogOptions(*cmd, options->log);

  auto* report = cmd->add_subcommand(
      "report", "Print runs by status, p50/p95 durations, slowest tools, top failure reasons");
  options->report = report;
  report->add_option("--pg", options->report_dsn, "PostgreSQL connection string")
      ->envname("AGENTWIRE_PG_DSN");
  AddLogOptions(*report, options->report_log);

  return [options]() {
    if (options->report->parsed()) {
      options->report_log.Apply();
      if (options->report_dsn.empty()) {
        throw ConfigError(
            "--pg / AGENTWIRE_PG_DSN is required: a PostgreSQL connection string, e.g. "
            "'host=127.0.0.1 port=5432 user=agentwire dbname=agentwire'");
      }
      consumers::PrintReport(options->report_dsn, std::cout);
      return kExitOk;
    }
    options->log.Apply();
    options->kafka.Validate();
    options->service.Validate();
    LogFileLimit(StartupFileLimit());
    consumers::AnalyticsConfig config;
    config.client_properties = options->kafka.ClientProperties();
    config.topic = options->kafka.topic;
    config.dead_letter_topic = options->kafka.DeadLetterTopic();
    config.group_id = options->service.group;
    config.dsn = options->service.dsn;
    config.batch_size = options->service.batch_size;
    config.batch_time = options->service.BatchTime();
    config.abandon_after = ParseDuration(options->abandon_after, "--abandon-after");

    // Held until the process exits: the kernel releases it however the process ends.
    const auto instance =
        consumers::InstanceClaim::Acquire(options->service.group, options->service.instance_id);
    config.instance_id = instance.Id();
    BlockTerminationSignals();
    consumers::PrepareDatabase(options->service);
    metrics::Registry registry;
    consumers::Analytics analytics(config, registry);
    return consumers::RunService(
        options->service, registry, [&analytics] { return analytics.Ready(); },
        [&analytics](const std::stop_token& stop) { analytics.Run(stop); });
  };
}

}  // namespace agentwire::cli
