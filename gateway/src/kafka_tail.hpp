#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/core/topic_reader.hpp"
#include "partition_hub.hpp"

namespace agentwire::gateway {

/// Why a message produced no LogEntry.
enum class EntryProblem { kNone, kUndecodable, kKeyMismatch };

/// The routing fields of an AgentEvent record (user_id = 2, thread_id = 3, run_id = 4), read
/// straight off the protobuf wire format without decoding the rest; views into `value`.
struct RoutingFields {
  std::string_view user_id;
  std::string_view thread_id;
  std::string_view run_id;
  int body_field = 0;  // the oneof body's field number (20 agent_started ... 26 message_delta)
  std::string_view error_code;  // agent_failed's error_code (docs/runs.md), when the body is one
};
/// false when `value` is not well-formed protobuf wire format.
bool ScanRoutingFields(std::string_view value, RoutingFields& fields);

/// Turns one Kafka message into a LogEntry (routing fields now, the frame on first use);
/// nullptr when the value is not an
/// AgentEvent (the archive sends those to the DLQ; the gateway just skips them) or when its key
/// is not its user_id. One routing rule for every path (live, cache, Kafka catch-up): a record
/// belongs to the user its key names, and one whose payload names another user is delivered to
/// nobody: it sits in another user's partition order, so no resume could ever deliver it again.
LogEntryPtr MakeLogEntry(const TopicIdentity& identity, int partition, int64_t offset,
                         int64_t timestamp_ms, std::string_view key, std::string_view value,
                         EntryProblem* problem = nullptr);

/// Consumer properties for latency-sensitive reads (no group, no commits, short fetch wait).
kafka::Properties TailConsumerProperties(const kafka::Properties& base,
                                         std::chrono::milliseconds fetch_wait);

/// Tails the topic's partitions (manual assignment, no consumer group: a replica owns nothing)
/// and dispatches each event to the hub: every partition with --tail all, only those its
/// sessions need with --tail auto (TailPolicy).
///
/// Warm start: a new replica starts each partition far enough back to fill its share of the
/// recent-log cache (`warm_entries` messages before the high watermark, at most the log start)
/// and reports ready only once it has read up to the high watermark it found at start (or
/// the warm-start timeout passed). A deploy or crash sends every client of the old replica here
/// with a cursor a few seconds old: those resumes are then served from memory, not from Kafka.
struct WarmStart {
  int64_t entries_per_partition = 0;  // 0: start at the high watermark (cold)
  std::chrono::milliseconds timeout{30'000};
};

/// Which partitions a replica reads (--tail).
struct TailPolicy {
  /// false (--tail all): every partition, always. true (--tail auto): a partition only while
  /// the replica has sessions whose users hash to it, plus `warm_window` after the last left;
  /// the first session of a partition starts its tail (PartitionHub::Attach).
  bool on_demand = false;
  std::chrono::milliseconds warm_window{300'000};
};

class KafkaTailer final {
 public:
  KafkaTailer(kafka::Properties properties, TopicIdentity identity, PartitionHub& hub,
              metrics::Registry& metrics, WarmStart warm = {}, TailPolicy policy = {});
  ~KafkaTailer();

  /// --tail all: assigns every partition at its start offset; --tail auto: none yet. Then
  /// starts the thread. Throws KafkaError when the cluster cannot be reached.
  void Start();
  void Stop();
  /// Warmed up, and caught up (lag below a small threshold on every partition).
  bool Ready() const { return ready_.load(); }
  bool Warm() const { return warm_.load(); }

 private:
  void Run();
  /// One consumed message: dispatched to the hub, or skipped and counted.
  void Handle(const kafka::Record& record);
  /// Counts and logs (rate-limited) a record whose key does not hash to its partition.
  void CheckPartition(int partition, int64_t offset, std::string_view key);
  void UpdateLag();
  void CheckWarm();
  void RecoverFromRetention();
  /// Where a partition's tail starts: `warm_start_.entries_per_partition` before the high
  /// watermark, at most the log start. false when Kafka did not answer in `timeout_ms`.
  bool FindStart(int partition, int timeout_ms, int64_t& start, int64_t& high);
  /// --tail auto: starts the partitions sessions asked for (retried while Kafka does not
  /// answer) and stops those idle for the warm window.
  void StartRequestedTails();
  void StopIdleTails();

  kafka::Properties properties_;
  TopicIdentity identity_;
  PartitionHub& hub_;
  metrics::Counter& consumed_;
  metrics::Counter& retention_gaps_;
  metrics::Counter& undecodable_;
  metrics::Counter& key_mismatch_;
  /// Records whose key hashes (murmur2) to another partition than the one they are in, per
  /// partition; created on first use (tailer thread).
  metrics::Registry& registry_;
  std::vector<metrics::Counter*> wrong_partition_;
  metrics::Gauge& lag_;
  std::unique_ptr<kafka::TopicReader> reader_;
  std::set<int> behind_retention_;     // partitions to seek to their low watermark (tailer thread)
  std::set<int> assigned_;             // partitions tailed now (tailer thread)
  std::set<int> requested_;            // --tail auto: asked for, not started yet (tailer thread)
  std::vector<int64_t> warm_targets_;  // high watermarks found at start; -1: not warmed
  std::string last_error_;             // of the last watermark query (tailer thread)
  WarmStart warm_start_;
  TailPolicy policy_;
  metrics::Gauge& tailed_gauge_;
  std::chrono::steady_clock::time_point started_at_;
  metrics::Gauge& warm_gauge_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> warm_{false};
  std::atomic<bool> ready_{false};
  std::thread thread_;
};

}  // namespace agentwire::gateway
