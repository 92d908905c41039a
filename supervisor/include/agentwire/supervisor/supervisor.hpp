#pragma once

#include <chrono>
#include <memory>
#include <stop_token>
#include <string>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/options.hpp"

namespace agentwire::metrics {
class Registry;
}

namespace agentwire::supervisor {

struct SupervisorConfig {
  kafka::Properties client_properties;  // bootstrap.servers + --kafka extras
  std::string topic = kDefaultTopic;    // the event topic; control/heartbeat topics derived
  std::string group = "agentwire-supervisor";
  std::chrono::milliseconds cancel_timeout{10'000};  // --cancel-timeout
  std::chrono::milliseconds check_interval{1'000};   // --check-interval
};

/// `agentwire supervisor` (docs/runs.md, "The supervisor"): a consumer group over the event
/// topic, its `.control` and its `.heartbeat` topic with the `range` assignor, so partition N of
/// all three belongs to one member. It keeps the open runs of its partitions and ends, with
/// `agent_failed` written to the event topic, a leased run silent past its lease
/// (`worker_lost`) and a run whose Stop no worker confirmed within `cancel_timeout`
/// (`cancelled`). It decides only for partitions it has read to the log's end, and forgets a
/// run only when it has read the run's end back, so a run is never ended twice by it, across
/// restarts and rebalances included (its committed offsets let a successor rebuild the state).
///
/// Thread-safety: Run() owns everything and is called once, from one thread; Ready() may be
/// called from any thread.
class Supervisor final {
 public:
  /// Creates the consumer and the publisher and checks the three topics. Throws ConfigError
  /// (bad properties, a missing topic, bad durations) or KafkaError.
  Supervisor(SupervisorConfig config, metrics::Registry& registry);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  /// Supervises until `stop`; then commits and leaves the group cleanly.
  void Run(const std::stop_token& stop);
  /// Has an assignment and has read its partitions to the end once. Thread-safe.
  bool Ready() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentwire::supervisor
