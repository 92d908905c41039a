#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

#include "agentwire/consumers/analytics.hpp"
#include "agentwire/consumers/archive.hpp"
#include "agentwire/consumers/service.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/listen.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "agentwire/gateway/auth.hpp"
#include "agentwire/gateway/gateway.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/run_control.hpp"
#include "agentwire/producers/simulator.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "agentwire/supervisor/supervisor.hpp"
#include "commands.hpp"
#include "embedded_setup.hpp"
#include "gateway_options.hpp"

namespace agentwire::cli {
namespace {

/// Publishes through `inner` and prints every accepted event as a JSON line, so a
/// developer sees what the demo agents emit.
class PrintingSink final : public producers::EventSink {
 public:
  PrintingSink(producers::EventSink& inner, std::ostream& out) : inner_(inner), out_(out) {}

  producers::PublishStatus Publish(const v1::AgentEvent& event,
                                   producers::DeliveryCallback on_delivery,
                                   std::chrono::milliseconds wait_for_space) override {
    auto status = inner_.Publish(event, std::move(on_delivery), wait_for_space);
    if (status == producers::PublishStatus::kAccepted) {
      std::lock_guard lock(mutex_);
      out_ << schemas::ToJson(event) << '\n' << std::flush;
    }
    return status;
  }
  size_t MaxEventBytes() const override { return inner_.MaxEventBytes(); }

 private:
  producers::EventSink& inner_;
  std::ostream& out_;
  std::mutex mutex_;
};

/// `dev --pg`: archive and analytics in this process, each on its own thread, against the
/// embedded Kafka. Stops (finishing the current batch) when destroyed.
class InProcessConsumers {
 public:
  InProcessConsumers(const std::string& dsn, const std::string& brokers, const std::string& topic)
      : archive_(MakeArchiveConfig(dsn, brokers, topic), registry_),
        analytics_(MakeAnalyticsConfig(dsn, brokers, topic), registry_) {
    archive_thread_ = std::jthread(
        [this] { RunGuarded("archive", [this] { archive_.Run(stop_.get_token()); }); });
    analytics_thread_ = std::jthread(
        [this] { RunGuarded("analytics", [this] { analytics_.Run(stop_.get_token()); }); });
  }
  ~InProcessConsumers() {
    stop_.request_stop();
    archive_thread_.join();
    analytics_thread_.join();
  }
  InProcessConsumers(const InProcessConsumers&) = delete;
  InProcessConsumers& operator=(const InProcessConsumers&) = delete;

  /// Waits until both consumers have committed `published` messages (the embedded Kafka dies
  /// with this process, so what they have not read by then is never archived). False on timeout.
  bool WaitForCommitted(uint64_t published, std::chrono::milliseconds timeout) {
    auto& archived = registry_.GetCounter("agentwire_archive_messages_total", "");
    auto& analyzed = registry_.GetCounter("agentwire_analytics_messages_total", "");
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (archived.Value() < published || analyzed.Value() < published) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  }

 private:
  static kafka::Properties Client(const std::string& brokers) {
    // Short batches: a developer watching the tables should see rows within a second.
    return {{"bootstrap.servers", brokers}};
  }
  static consumers::ArchiveConfig MakeArchiveConfig(const std::string& dsn,
                                                    const std::string& brokers,
                                                    const std::string& topic) {
    consumers::ArchiveConfig config;
    config.client_properties = Client(brokers);
    config.topic = topic;
    config.dead_letter_topic = topic + ".dlq";
    config.dsn = dsn;
    config.batch_time = std::chrono::milliseconds(200);
    return config;
  }
  static consumers::AnalyticsConfig MakeAnalyticsConfig(const std::string& dsn,
                                                        const std::string& brokers,
                                                        const std::string& topic) {
    consumers::AnalyticsConfig config;
    config.client_properties = Client(brokers);
    config.topic = topic;
    config.dead_letter_topic = topic + ".dlq";
    config.dsn = dsn;
    config.batch_time = std::chrono::milliseconds(200);
    return config;
  }
  template <typename Fn>
  static void RunGuarded(const char* what, Fn&& run) {
    try {
      run();
    } catch (const std::exception& e) {
      // The gateway and the simulation go on; the developer sees why the tables stopped.
      log::Error("in-process consumer stopped", {{"consumer", what}, {"error", e.what()}});
    }
  }

  metrics::Registry registry_;
  consumers::Archive archive_;
  consumers::Analytics analytics_;
  std::stop_source stop_;
  std::jthread archive_thread_;
  std::jthread analytics_thread_;
};

}  // namespace

CommandAction RegisterDevCommand(CLI::App& app) {
  struct Options {
    int brokers = 1;
    int partitions = 12;
    std::string topic = kDefaultTopic;
    std::string bootstrap_file;
    producers::SimulatorOptions simulator;
    std::string duration = "0";
    bool print_events = false;
    std::string pg_dsn;
    LogOptions log;
    GatewayOptions gateway;
  };
  auto options = std::make_shared<Options>();
  options->simulator.users = 3;
  options->simulator.user_prefix = "demo-";
  options->simulator.events_per_second = 4;
  auto* cmd = app.add_subcommand(
      "dev",
      "Everything on one machine: embedded Kafka, the gateway on 127.0.0.1:8080 with the demo "
      "page, and simulated agent runs for a few demo users. Prints the page URL with a dev token.");
  cmd->add_option("--kafka-brokers", options->brokers, "Embedded Kafka broker count")
      ->capture_default_str();
  cmd->add_option("--partitions", options->partitions, "Partitions of the event topic")
      ->capture_default_str();
  cmd->add_option("--topic", options->topic, "Event topic")
      ->envname("AGENTWIRE_TOPIC")
      ->capture_default_str();
  cmd->add_option("--bootstrap-file", options->bootstrap_file,
                  "Write the embedded Kafka's bootstrap servers to this file");
  cmd->add_option("--users", options->simulator.users, "Simulated demo users")
      ->capture_default_str();
  cmd->add_option("--rate", options->simulator.events_per_second, "Simulated events per second")
      ->capture_default_str();
  cmd->add_option("--duration", options->duration, "Stop after this long (0 = until Ctrl-C)")
      ->capture_default_str();
  cmd->add_flag("--print-events", options->print_events, "Also print every event as a JSON line");
  cmd->add_option("--pg", options->pg_dsn,
                  "Also run archive and analytics into this PostgreSQL (migrated first), e.g. "
                  "'host=127.0.0.1 port=5432 user=agentwire dbname=agentwire'")
      ->envname("AGENTWIRE_PG_DSN");
  AddLogOptions(*cmd, options->log);
  AddGatewayOptions(*cmd, options->gateway);

  return [options]() -> int {
    options->log.Apply();
    kafka::ValidateTopicName(options->topic, "--topic");
    auto& sim = options->simulator;
    sim.duration = ParseDuration(options->duration, "--duration");
    LogFileLimit(StartupFileLimit());

    BlockTerminationSignals();
    if (!options->pg_dsn.empty()) {
      // Before anything starts: a wrong DSN is a one-line error, not a half-started demo.
      consumers::ServiceOptions service;
      service.dsn = options->pg_dsn;
      service.migrate = true;
      consumers::PrepareDatabase(service);
    }
    auto cluster = StartEmbeddedKafka(options->brokers,
                                      kafka::DefaultTopics(options->topic, options->partitions));
    WriteBootstrapFile(options->bootstrap_file, cluster->BootstrapServers());

    // A dev secret unless one was given: tokens printed below only work for this run.
    auto& auth = options->gateway.config.auth;
    if (auth.hs256_secret.empty() && auth.jwks_file.empty()) {
      auth.hs256_secret = "dev-" + schemas::NewEventId() + schemas::NewEventId();
    }
    KafkaOptions kafka;
    kafka.brokers = cluster->BootstrapServers();
    kafka.topic = options->topic;
    auto gateway_config = options->gateway.Build(kafka);
    // With --pg the gateway reads the archive it runs as the cold tier: cursors older than the
    // embedded Kafka keeps (about 5 MiB per partition) resume from PostgreSQL.
    if (gateway_config.archive.dsn.empty()) gateway_config.archive.dsn = options->pg_dsn;
    gateway::Gateway gateway(std::move(gateway_config));
    gateway.Start();
    const std::string host =
        options->gateway.listen == "0.0.0.0" ? "127.0.0.1" : options->gateway.listen;
    const std::string base = fmt::format("http://{}:{}", host, gateway.Port());
    AnnounceGateway(options->gateway.listen, gateway.Port(), options->gateway.port_file);

    std::string banner = fmt::format(
        "\nagentwire dev\n  kafka:   {}  (topic {}; kcat -b {} -C -t {})\n"
        "  agents:  {} demo users, {} events/s\n  demo:    open one of these in a browser:\n",
        cluster->BootstrapServers(), options->topic, cluster->BootstrapServers(), options->topic,
        sim.users, sim.events_per_second);
    if (!auth.hs256_secret.empty()) {
      for (int i = 1; i <= std::min(sim.users, 3); ++i) {
        const auto user = fmt::format("{}{:04}", sim.user_prefix, i);
        banner +=
            fmt::format("           {}/?token={}\n", base,
                        gateway::MintHs256Token(auth.hs256_secret, user, std::chrono::hours(24)));
      }
    }
    if (!options->pg_dsn.empty()) {
      banner +=
          "  pg:      archive -> agent_events, dead_letters (the gateway's cold tier); "
          "analytics -> agent_runs, tool_calls\n"
          "           (agentwire analytics report --pg '<dsn>')\n";
    }
    banner += "  stop:    Ctrl-C\n\n";
    std::cerr << banner;

    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", cluster->BootstrapServers()}};
    config.topic = options->topic;
    producers::EventPublisher publisher(config);
    // The demo's agents are supervised and honour Stop like real ones (docs/runs.md).
    producers::RunControlConfig control_config;
    control_config.client_properties = config.client_properties;
    control_config.topic = options->topic;
    producers::RunControl run_control(control_config);
    sim.control = &run_control;
    // The supervisor ends the runs of a worker that died and the Stops nobody confirmed.
    metrics::Registry supervisor_metrics;
    supervisor::SupervisorConfig supervisor_config;
    supervisor_config.client_properties = config.client_properties;
    supervisor_config.topic = options->topic;
    supervisor::Supervisor run_supervisor(supervisor_config, supervisor_metrics);
    std::stop_source supervisor_stop;
    std::jthread supervisor_thread([&run_supervisor, &supervisor_stop] {
      try {
        run_supervisor.Run(supervisor_stop.get_token());
      } catch (const std::exception& e) {
        log::Error("in-process supervisor stopped", {{"error", e.what()}});
      }
    });
    std::optional<InProcessConsumers> in_process;
    if (!options->pg_dsn.empty()) {
      in_process.emplace(options->pg_dsn, cluster->BootstrapServers(), options->topic);
    }

    std::stop_source stop;
    std::thread signal_watcher([&stop] {
      while (!stop.stop_requested()) {
        if (WaitForTerminationSignal(std::chrono::milliseconds(200))) stop.request_stop();
      }
    });
    PrintingSink printing(publisher, std::cout);
    producers::EventSink& sink =
        options->print_events ? static_cast<producers::EventSink&>(printing) : publisher;
    const auto stats = producers::RunSimulation(sink, sim, stop.get_token());
    stop.request_stop();
    signal_watcher.join();
    publisher.Flush(std::chrono::seconds(10));
    if (in_process) {
      const auto delivered = publisher.Stats().delivered;
      if (!in_process->WaitForCommitted(delivered, std::chrono::seconds(30))) {
        log::Warn("archive/analytics had not caught up after 30 s; stopping them anyway",
                  {{"count", delivered}});
      }
      in_process.reset();
    }
    supervisor_stop.request_stop();
    supervisor_thread.join();
    gateway.Drain();
    log::Info("dev stopped", {{"count", stats.events}});
    return kExitOk;
  };
}

}  // namespace agentwire::cli
