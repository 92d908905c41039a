#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "agentwire/core/kafka_properties.hpp"

namespace agentwire::metrics {
class Registry;
}

namespace agentwire::consumers {

struct ArchiveConfig {
  kafka::Properties client_properties;  // bootstrap.servers and --kafka extras
  std::string topic = "agent.lifecycle.v1";
  std::string dead_letter_topic = "agent.lifecycle.v1.dlq";
  std::string group_id = "agentwire-archive";
  std::string dsn;
  /// Most messages per transaction. 20,000 rather than analytics' 5,000: each batch's rows go
  /// in user order, and the more rows a batch holds the closer together they land in the
  /// user-led indexes (docs/benchmarks.md, "Archive into PostgreSQL"). A steady stream below the
  /// archive's capacity is cut by batch_time long before that.
  size_t batch_size = 20000;
  std::chrono::milliseconds batch_time{200};
  /// Members of the consumer group in this process, each with its own Kafka consumer and
  /// PostgreSQL connection: they write disjoint partition sets side by side (PostgreSQL's
  /// backend, one per connection, is what limits one writer).
  int writers = 2;
  /// The process's instance name (see InstanceClaim): writer i's group.instance.id is
  /// "<instance_id>-w<i>". "" = dynamic membership.
  std::string instance_id;
};

/// Throws ConfigError unless `writers` is 1-64 (--writers / AGENTWIRE_ARCHIVE_WRITERS).
void ValidateWriters(int writers);

/// `agentwire archive`: copies every message of the topic into agent_events exactly once (the
/// batch's rows and the partitions' next offsets in one PostgreSQL transaction, fenced against
/// stale owners). Undecodable messages become dead_letters rows and are produced to the DLQ
/// topic with the reason in the `agentwire-dlq-reason` header; the consumer goes on.
/// PostgreSQL down: consumption pauses, reconnects back off, nothing is skipped.
/// Meanwhile it measures its retention headroom (agentwire_archive_retention_headroom_*): how far
/// its stored positions are ahead of Kafka's log start, and warns before retention deletes
/// records it has not written.
class Archive final {
 public:
  /// Throws ConfigError for bad Kafka properties.
  Archive(const ArchiveConfig& config, metrics::Registry& registry);
  ~Archive();
  Archive(const Archive&) = delete;
  Archive& operator=(const Archive&) = delete;

  /// Consumes until `stop`, then writes the batch in hand and leaves the group.
  void Run(const std::stop_token& stop);
  /// PostgreSQL reachable and subscribed (for /readyz). Thread-safe.
  bool Ready() const noexcept;

 private:
  class Impl;
  class RetentionHeadroom;
  std::vector<std::unique_ptr<Impl>> writers_;
  std::unique_ptr<RetentionHeadroom> headroom_;
};

}  // namespace agentwire::consumers
