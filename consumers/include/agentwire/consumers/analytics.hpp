#pragma once

#include <chrono>
#include <cstddef>
#include <iosfwd>
#include <memory>
#include <stop_token>
#include <string>

#include "agentwire/core/kafka_properties.hpp"

namespace agentwire::metrics {
class Registry;
}

namespace agentwire::consumers {

struct AnalyticsConfig {
  kafka::Properties client_properties;  // bootstrap.servers and --kafka extras
  std::string topic = "agent.lifecycle.v1";
  std::string dead_letter_topic = "agent.lifecycle.v1.dlq";
  std::string group_id = "agentwire-analytics";
  std::string dsn;
  size_t batch_size = 5000;
  std::chrono::milliseconds batch_time{200};
  /// group.instance.id of the consumer (static membership, see InstanceClaim); "" = dynamic.
  std::string instance_id;
  /// A run whose newest event is older than this, measured against the newest event time seen
  /// (not the wall clock, so a replay of old data judges runs the same way), is abandoned.
  std::chrono::milliseconds abandon_after{15 * 60 * 1000};
};

/// `agentwire analytics`: maintains agent_runs and tool_calls from the topic with the same
/// offsets-in-the-transaction pattern as the archive. A run ends with its first terminal event
/// in log order (docs/runs.md): status ('completed', 'failed', 'cancelled' for agent_failed
/// {cancelled}), ended_at and the error come from it; later events of the run ("late", e.g. a
/// zombie worker's after the supervisor's worker_lost) are only counted (agent_runs.late_events,
/// agentwire_analytics_late_events_total) and never reopen the run. Every update is a merge that
/// gives the same row when applied twice (earliest start, latest event, the terminal with the
/// lowest offset, late events counted once per offset, tool counts recomputed from tool_calls),
/// so replays and redelivery change nothing.
/// Messages it cannot apply (undecodable, invalid, NUL in a text) are skipped, counted and
/// copied to the DLQ topic like the archive does (header agentwire-dlq-group tells the groups
/// apart); a batch commits only once the DLQ acknowledged them.
class Analytics final {
 public:
  Analytics(AnalyticsConfig config, metrics::Registry& registry);
  ~Analytics();
  Analytics(const Analytics&) = delete;
  Analytics& operator=(const Analytics&) = delete;

  void Run(const std::stop_token& stop);
  bool Ready() const noexcept;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

/// `agentwire analytics report`: runs by status, p50/p95 run duration and time to first
/// thought, slowest tools by p95, top failure reasons, as aligned text tables.
/// Throws ConfigError when the database cannot be reached.
void PrintReport(const std::string& dsn, std::ostream& out);

}  // namespace agentwire::consumers
