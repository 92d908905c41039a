#include <CLI/CLI.hpp>
#include <memory>
#include <utility>

#include "agentwire/consumers/archive.hpp"
#include "agentwire/consumers/service.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/listen.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "commands.hpp"

namespace agentwire::cli {

CommandAction RegisterArchiveCommand(CLI::App& app) {
  struct Options {
    KafkaOptions kafka;
    LogOptions log;
    consumers::ServiceOptions service;
    int writers = 2;
  };
  auto options = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "archive",
      "Archive every event into PostgreSQL agent_events exactly once (rows and offsets in one "
      "transaction); undecodable messages go to dead_letters and <topic>.dlq. Runs until "
      "SIGINT/SIGTERM.");
  AddKafkaOptions(*cmd, options->kafka);
  // The archive's own default (ArchiveConfig): larger batches than analytics'.
  options->service.batch_size = consumers::ArchiveConfig{}.batch_size;
  consumers::AddServiceOptions(*cmd, options->service, "agentwire-archive",
                               "AGENTWIRE_ARCHIVE_GROUP", consumers::kArchiveMetricsPort);
  AddLogOptions(*cmd, options->log);
  cmd->add_option("--writers", options->writers,
                  "Group members in this process, each with its own PostgreSQL connection, "
                  "writing disjoint partitions side by side (up to the cores PostgreSQL has)")
      ->envname("AGENTWIRE_ARCHIVE_WRITERS")
      ->capture_default_str();

  return [options]() {
    options->log.Apply();
    options->kafka.Validate();
    options->service.Validate();
    // Before PostgreSQL is touched: a bad flag is one line and exit code 2, whatever the DSN.
    consumers::ValidateWriters(options->writers);
    LogFileLimit(StartupFileLimit());
    consumers::ArchiveConfig config;
    config.client_properties = options->kafka.ClientProperties();
    config.topic = options->kafka.topic;
    config.dead_letter_topic = options->kafka.DeadLetterTopic();
    config.group_id = options->service.group;
    config.dsn = options->service.dsn;
    config.batch_size = options->service.batch_size;
    config.batch_time = options->service.BatchTime();
    config.writers = options->writers;

    // Held until the process exits: the kernel releases it however the process ends.
    const auto instance =
        consumers::InstanceClaim::Acquire(options->service.group, options->service.instance_id);
    config.instance_id = instance.Id();
    BlockTerminationSignals();  // before librdkafka and libpq start threads
    consumers::PrepareDatabase(options->service);
    metrics::Registry registry;
    consumers::Archive archive(config, registry);
    return consumers::RunService(
        options->service, registry, [&archive] { return archive.Ready(); },
        [&archive](const std::stop_token& stop) { archive.Run(stop); });
  };
}

}  // namespace agentwire::cli
