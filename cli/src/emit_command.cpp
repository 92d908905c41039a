#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <memory>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/json_lines.hpp"
#include "agentwire/producers/run_control.hpp"
#include "agentwire/producers/simulator.hpp"
#include "commands.hpp"

namespace agentwire::cli {
namespace {

producers::PublisherConfig MakePublisherConfig(const KafkaOptions& kafka,
                                               bool serve_reports_in_caller) {
  kafka.Validate();
  producers::PublisherConfig config;
  config.client_properties = kafka.ClientProperties();
  config.topic = kafka.topic;
  config.serve_reports_in_caller = serve_reports_in_caller;
  return config;
}

constexpr const char* kServeReportsHelp =
    "Serve Kafka's delivery reports on the publishing thread instead of a second one "
    "(no poll thread; the default is about as fast: see docs/benchmarks.md)";

// A mistyped --topic fails at start with one line (exit 2) instead of once per event: the
// publisher never creates topics.
void CheckTopic(producers::EventPublisher& publisher) {
  try {
    publisher.CheckTopic(std::chrono::seconds(10));
  } catch (const KafkaError& e) {
    if (e.IsRetryable()) throw;
    throw ConfigError(fmt::format("--topic: {}", e.what()));
  }
}

}  // namespace

CommandAction RegisterEmitCommand(CLI::App& app) {
  struct Options {
    KafkaOptions kafka;
    LogOptions log;
    std::string file;
    std::string flush_timeout = "60s";
    bool truncate = false;
    bool serve_reports_in_caller = false;
    bool sim_serve_reports_in_caller = false;
    size_t max_line_bytes = producers::JsonLinesOptions{}.max_line_bytes;

    KafkaOptions sim_kafka;
    LogOptions sim_log;
    producers::SimulatorOptions simulator;
    std::string duration = "10s";
    std::string lease = "15s";
    std::string heartbeat_interval = "5s";
    bool no_run_control = false;
    CLI::App* simulate = nullptr;
  };
  auto options = std::make_shared<Options>();
  auto* emit = app.add_subcommand(
      "emit",
      "Publish JSON-lines events from stdin (or --file). A bad line is reported as "
      "'line N: reason' and skipped; exit code 1 if any line failed.");
  emit->require_subcommand(0, 1);
  AddKafkaOptions(*emit, options->kafka);
  AddLogOptions(*emit, options->log);
  emit->add_option("--file", options->file, "Read events from this file instead of stdin");
  emit->add_option("--flush-timeout", options->flush_timeout,
                   "How long to wait for Kafka to acknowledge everything")
      ->capture_default_str();
  emit->add_flag("--truncate", options->truncate,
                 "Cut the large text fields of an event over the size limit (9/10 of "
                 "message.max.bytes) to fit, marking it truncated, instead of reporting the line");
  emit->add_option("--max-line-bytes", options->max_line_bytes,
                   "Longer input lines are reported and skipped")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 31));
  emit->add_flag("--serve-reports-in-caller", options->serve_reports_in_caller, kServeReportsHelp);

  auto* simulate = emit->add_subcommand(
      "simulate", "Play realistic agent runs at a given rate (load generator)");
  options->simulate = simulate;
  AddKafkaOptions(*simulate, options->sim_kafka);
  AddLogOptions(*simulate, options->sim_log);
  auto& sim = options->simulator;
  simulate->add_option("--users", sim.users, "Number of simulated users")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000'000));
  simulate->add_option("--rate", sim.events_per_second, "Events per second in total (0 = unpaced)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  simulate->add_option("--duration", options->duration, "How long to run (0 = until SIGINT)")
      ->capture_default_str();
  simulate->add_option("--max-events", sim.max_events,
                       "Stop after this many events (0 = no limit)");
  simulate->add_option("--failure-ratio", sim.failure_ratio, "Share of runs that fail")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  simulate->add_option("--seed", sim.seed, "Random seed (0 = random)");
  simulate->add_option("--user-prefix", sim.user_prefix, "User id prefix")->capture_default_str();
  simulate->add_flag("--serve-reports-in-caller", options->sim_serve_reports_in_caller,
                     kServeReportsHelp);
  simulate
      ->add_option("--lease", options->lease,
                   "Each run's lease: the supervisor ends a run silent this long as "
                   "worker_lost (docs/runs.md)")
      ->capture_default_str();
  simulate
      ->add_option("--heartbeat-interval", options->heartbeat_interval,
                   "How often each open run's heartbeat is published (at most half the lease)")
      ->capture_default_str();
  simulate->add_flag("--no-run-control", options->no_run_control,
                     "Publish unsupervised runs: no lease, no heartbeats, Stop not honoured "
                     "(for topics without the .control and .heartbeat topics)");

  return [options]() -> int {
    if (options->simulate->parsed()) {
      options->sim_log.Apply();
      auto& sim = options->simulator;
      sim.duration = ParseDuration(options->duration, "--duration");
      auto config = MakePublisherConfig(options->sim_kafka, options->sim_serve_reports_in_caller);
      BlockTerminationSignals();
      producers::EventPublisher publisher(config);
      CheckTopic(publisher);
      std::unique_ptr<producers::RunControl> control;
      if (!options->no_run_control) {
        producers::RunControlConfig control_config;
        control_config.client_properties = config.client_properties;
        control_config.topic = config.topic;
        control_config.lease = ParseDuration(options->lease, "--lease");
        control_config.heartbeat_interval =
            ParseDuration(options->heartbeat_interval, "--heartbeat-interval");
        control = std::make_unique<producers::RunControl>(control_config);
        sim.control = control.get();
      }
      std::stop_source stop;
      std::thread signal_watcher([&stop] {
        while (!stop.stop_requested()) {
          if (WaitForTerminationSignal(std::chrono::milliseconds(200))) stop.request_stop();
        }
      });
      const auto stats = producers::RunSimulation(
          publisher, sim, stop.get_token(), [](const producers::SimulatorStats& s) {
            std::cerr << fmt::format("simulate: {} events, {} runs started\n", s.events,
                                     s.runs_started);
          });
      stop.request_stop();
      signal_watcher.join();
      const size_t left = publisher.Flush(std::chrono::seconds(60));
      const auto published = publisher.Stats();
      std::cerr << fmt::format(
          "simulate: {} events ({} delivered, {} failed, {} undelivered); runs: {} completed, "
          "{} failed, {} cancelled, {} abandoned\n",
          stats.events, published.delivered, published.failed, left, stats.runs_completed,
          stats.runs_failed, stats.runs_cancelled, stats.runs_abandoned);
      return published.failed == 0 && left == 0 ? kExitOk : kExitFailure;
    }

    options->log.Apply();
    auto config = MakePublisherConfig(options->kafka, options->serve_reports_in_caller);
    producers::JsonLinesOptions lines;
    lines.flush_timeout = ParseDuration(options->flush_timeout, "--flush-timeout");
    lines.truncate = options->truncate;
    lines.max_line_bytes = options->max_line_bytes;
    std::ifstream file;
    if (!options->file.empty()) {
      file.open(options->file);
      if (!file) throw ConfigError(fmt::format("--file {}: cannot open", options->file));
    }
    std::istream& in = options->file.empty() ? std::cin : file;
    producers::EventPublisher publisher(config);
    CheckTopic(publisher);
    const auto result = producers::PublishJsonLines(in, publisher, std::cerr, lines);
    std::cerr << fmt::format(
        "emit: {} published, {} failed ({} bad lines, {} not delivered){}\n", result.published,
        result.bad_lines + result.delivery_failed + result.undelivered, result.bad_lines,
        result.delivery_failed + result.undelivered,
        result.truncated > 0 ? fmt::format(", {} cut to fit", result.truncated) : "");
    return result.AllOk() ? kExitOk : kExitFailure;
  };
}

}  // namespace agentwire::cli
