#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <stop_token>
#include <thread>

#include "agentwire/consumers/replay.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "commands.hpp"

namespace agentwire::cli {
namespace {

struct ReplayFlags {
  KafkaOptions kafka;
  LogOptions log;
  std::string user;
  std::string run;
  std::string thread;
  std::vector<std::string> types;
  std::string since;
  std::string until;
  std::string from_cursor;
  uint64_t limit = 0;
  std::string source = "kafka";
  std::string pg_dsn;
  std::string archive_group = "agentwire-archive";  // `agentwire archive --group`'s default
  std::string format = "jsonl";
  bool follow = false;
  bool gaps = false;
  std::string republish_to;
  double rate = 0;
  bool allow_same_topic = false;
  uint32_t topic_epoch = 1;
  std::string time_slack = "60s";
  int32_t partition_count = 0;
  std::string progress = "auto";
};

consumers::ReplayConfig MakeConfig(const ReplayFlags& flags) {
  flags.kafka.Validate();
  consumers::ReplayConfig config;
  auto& selection = config.selection;
  selection.user_id = flags.user;
  selection.run_id = flags.run;
  selection.thread_id = flags.thread;
  for (const auto& entry : flags.types) {
    // --type a,b and --type a --type b both work.
    size_t begin = 0;
    while (begin <= entry.size()) {
      const size_t comma = std::min(entry.find(',', begin), entry.size());
      if (comma > begin) selection.types.push_back(entry.substr(begin, comma - begin));
      begin = comma + 1;
    }
  }
  const auto now = std::chrono::system_clock::now();
  if (!flags.since.empty())
    selection.since = consumers::ParseTimeArgument(flags.since, "--since", now);
  if (!flags.until.empty())
    selection.until = consumers::ParseTimeArgument(flags.until, "--until", now);
  if (!flags.from_cursor.empty() && flags.from_cursor != "earliest") {
    selection.from_cursor = DecodeCursor(flags.from_cursor);
    if (!selection.from_cursor) {
      throw ConfigError(fmt::format(
          "--from-cursor '{}': not a cursor a gateway issued (expected the 34-character URL-safe "
          "value of a frame's \"cursor\", percent-decoded)",
          flags.from_cursor));
    }
  }
  selection.limit = flags.limit;

  if (flags.source == "kafka") {
    config.source = consumers::ReplaySource::kKafka;
  } else if (flags.source == "postgres") {
    config.source = consumers::ReplaySource::kPostgres;
  } else if (flags.source == "auto") {
    config.source = consumers::ReplaySource::kAuto;
  } else {
    throw ConfigError(fmt::format("--source '{}': expected kafka, postgres or auto", flags.source));
  }
  if (flags.format == "jsonl") {
    config.format = consumers::ReplayFormat::kJsonl;
  } else if (flags.format == "table") {
    config.format = consumers::ReplayFormat::kTable;
  } else {
    throw ConfigError(fmt::format("--format '{}': expected jsonl or table", flags.format));
  }
  if (flags.progress == "auto") {
    config.progress = isatty(STDERR_FILENO) == 1 ? consumers::ReplayProgress::kBar
                                                 : consumers::ReplayProgress::kLines;
  } else if (flags.progress == "bar") {
    config.progress = consumers::ReplayProgress::kBar;
  } else if (flags.progress == "lines") {
    config.progress = consumers::ReplayProgress::kLines;
  } else if (flags.progress == "off") {
    config.progress = consumers::ReplayProgress::kOff;
  } else {
    throw ConfigError(
        fmt::format("--progress '{}': expected auto, bar, lines or off", flags.progress));
  }

  config.client_properties = flags.kafka.ClientProperties();
  config.topic = flags.kafka.topic;
  config.topic_epoch = flags.topic_epoch;
  config.time_slack = ParseDuration(flags.time_slack, "--time-slack");
  config.pg_dsn = flags.pg_dsn;
  config.archive_group = flags.archive_group;
  config.partition_count = flags.partition_count;
  config.follow = flags.follow;
  config.gap_report = flags.gaps;
  config.republish_to = flags.republish_to;
  config.republish_rate = flags.rate;
  config.allow_same_topic = flags.allow_same_topic;
  consumers::ValidateReplayConfig(config);
  return config;
}

}  // namespace

CommandAction RegisterReplayCommand(CLI::App& app) {
  auto flags = std::make_shared<ReplayFlags>();
  auto* cmd = app.add_subcommand(
      "replay",
      "Print (or re-drive) stored events for SREs: select by user, run, thread, type, time or a "
      "gateway cursor, from Kafka, the PostgreSQL archive, or both. Events on stdout, progress "
      "and the summary on stderr. Never joins a consumer group, never commits offsets.");
  AddKafkaOptions(*cmd, flags->kafka);
  AddLogOptions(*cmd, flags->log);
  auto& f = *flags;
  cmd->add_option("--user", f.user, "Only this user's events (reads only the user's partition)");
  cmd->add_option("--run", f.run, "Only this run's events");
  cmd->add_option("--thread", f.thread, "Only this thread's events");
  cmd->add_option("--type", f.types,
                  "Only these event types (repeatable or comma-separated), e.g. agent_failed");
  cmd->add_option("--since", f.since,
                  "Events emitted at or after: RFC 3339 (2026-11-22T10:00:00Z) or an age (15m, "
                  "2h, 7d)");
  cmd->add_option("--until", f.until, "Events emitted before: RFC 3339 or an age");
  cmd->add_option("--from-cursor", f.from_cursor,
                  "A gateway cursor: the events after it in its partition (add --user for "
                  "exactly what that client would receive)");
  cmd->add_option("--limit", f.limit, "Stop after this many events (0 = no limit)");
  cmd->add_option("--source", f.source,
                  "kafka; postgres (the archive, beyond retention); or auto: all of history once, "
                  "the archive below Kafka's log start then Kafka, reporting offsets in neither "
                  "(needs --pg)")
      ->capture_default_str();
  cmd->add_option("--pg", f.pg_dsn, "PostgreSQL connection string of the archive")
      ->envname("AGENTWIRE_PG_DSN");
  cmd->add_option("--archive-group", f.archive_group,
                  "With --source auto: the archive's consumer group (its --group), whose "
                  "committed positions say how far the archive is complete")
      ->envname("AGENTWIRE_ARCHIVE_GROUP")
      ->capture_default_str();
  cmd->add_option("--format", f.format, "jsonl (one object per line) or table (human)")
      ->capture_default_str();
  cmd->add_flag("--follow", f.follow, "Keep printing new events after the end (until SIGINT)");
  cmd->add_flag("--gaps", f.gaps,
                "Report runs with run_seq holes or no terminal event, and offsets in neither the "
                "archive nor Kafka with --source auto (always on with table)");
  cmd->add_option("--republish-to", f.republish_to,
                  "Re-drive the selection to this topic (keys, headers, values unchanged)");
  cmd->add_option("--rate", f.rate, "Republish rate limit in events/s (0 = unlimited)")
      ->capture_default_str();
  cmd->add_flag("--allow-same-topic", f.allow_same_topic,
                "Allow --republish-to to name the source topic (duplicates every event)");
  cmd->add_option("--topic-epoch", f.topic_epoch,
                  "The gateways' topic epoch, written into output cursors and checked in "
                  "--from-cursor")
      ->envname("AGENTWIRE_TOPIC_EPOCH")
      ->capture_default_str();
  cmd->add_option("--time-slack", f.time_slack,
                  "Tolerated gap between emitted_at and the Kafka timestamp (producer delay, "
                  "clock skew) when seeking by time")
      ->capture_default_str();
  cmd->add_option("--partition-count", f.partition_count,
                  "Partition count for output cursors with --source postgres (0 = ask Kafka)");
  cmd->add_option("--progress", f.progress,
                  "Progress on stderr: auto (a bar on a terminal, else a line every 5 s), bar, "
                  "lines, off")
      ->capture_default_str();

  return [flags]() -> int {
    flags->log.Apply();
    const auto config = MakeConfig(*flags);
    BlockTerminationSignals();  // before librdkafka starts its threads
    std::stop_source stop;
    std::atomic<bool> finished{false};
    std::thread signal_watcher([&stop, &finished] {
      while (!finished.load()) {
        if (WaitForTerminationSignal(std::chrono::milliseconds(200))) stop.request_stop();
      }
    });
    struct JoinOnExit {
      std::atomic<bool>& finished;
      std::thread& thread;
      ~JoinOnExit() {
        finished.store(true);
        thread.join();
      }
    } join{finished, signal_watcher};

    try {
      const auto stats = consumers::RunReplay(config, std::cout, std::cerr, stop.get_token());
      return stats.republish_failed == 0 ? kExitOk : kExitFailure;
    } catch (const ConfigError&) {
      throw;
    } catch (const KafkaError&) {
      throw;
    } catch (const std::exception& e) {
      std::cerr << "agentwire replay: " << e.what() << '\n';
      return kExitFailure;
    }
  };
}

}  // namespace agentwire::cli
