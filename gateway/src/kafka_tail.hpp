#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/metrics.hpp"
#include "partition_hub.hpp"

namespace agentwire::gateway {

/// What a cursor minted by this replica carries besides partition and offset.
struct TopicIdentity {
  std::string topic;
  uint32_t epoch = 1;
  uint32_t topic_hash = 0;
  int partition_count = 0;
};

/// Decodes one Kafka message into a LogEntry with its frame; nullptr when the value is not
/// an AgentEvent (the archive sends those to the DLQ; the gateway just skips them).
LogEntryPtr MakeLogEntry(const TopicIdentity& identity, int partition, int64_t offset,
                         int64_t timestamp_ms, std::string_view value);

/// Consumer properties for latency-sensitive reads (no group, no commits, short fetch wait).
kafka::Properties TailConsumerProperties(const kafka::Properties& base,
                                         std::chrono::milliseconds fetch_wait);

/// Tails every partition of the topic from its end at start-up (manual assignment, no
/// consumer group: a replica owns nothing) and dispatches each event to the hub.
class KafkaTailer final {
 public:
  KafkaTailer(kafka::Properties properties, TopicIdentity identity, PartitionHub& hub,
              metrics::Registry& metrics);
  ~KafkaTailer();

  /// Assigns every partition at its current high watermark and starts the thread.
  /// Throws KafkaError when the cluster cannot be reached.
  void Start();
  void Stop();
  /// Assigned and caught up (lag below a small threshold on every partition).
  bool Ready() const { return ready_.load(); }

 private:
  void Run();
  void UpdateLag();
  void RecoverFromRetention();

  kafka::Properties properties_;
  TopicIdentity identity_;
  PartitionHub& hub_;
  metrics::Counter& consumed_;
  metrics::Counter& retention_gaps_;
  metrics::Counter& undecodable_;
  metrics::Gauge& lag_;
  kafka::HandlePtr consumer_;
  std::set<int> behind_retention_;  // partitions to seek to their low watermark (tailer thread)
  std::vector<int64_t> start_offsets_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> ready_{false};
  std::thread thread_;
};

/// Reads a user's events from Kafka for cursors older than the cache. Each call uses its own
/// short-lived consumer (resumes from Kafka are the rare path). Blocking; call it off the
/// I/O threads.
class HistoryReader final {
 public:
  HistoryReader(kafka::Properties properties, TopicIdentity identity);

  struct Watermarks {
    int64_t low = -1;
    int64_t high = -1;
  };
  /// nullopt-like {-1,-1} when Kafka did not answer.
  Watermarks QueryWatermarks(int partition) const;

  enum class Outcome { kOk, kOutOfRange, kError };
  struct Result {
    Outcome outcome = Outcome::kError;
    std::vector<LogEntryPtr> entries;  // the user's entries in [from, to), in offset order
    std::string error;
  };
  Result Read(int partition, int64_t from, int64_t to, const std::string& user_id) const;

 private:
  kafka::Properties properties_;
  TopicIdentity identity_;
};

}  // namespace agentwire::gateway
