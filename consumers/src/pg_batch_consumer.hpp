#pragma once

// The exactly-once machinery archive and analytics share: a Kafka consumer group whose
// positions live in PostgreSQL (consumer_offsets), written in the same transaction as the rows
// they produce. Private to agentwire_consumers.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/metrics.hpp"

namespace agentwire::consumers::internal {

struct BatchConsumerConfig {
  kafka::Properties client_properties;  // bootstrap.servers and --kafka extras (extras win)
  std::string topic;
  std::string group_id;
  std::string dsn;
  size_t batch_size = 5000;
  std::chrono::milliseconds batch_time{200};
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  metrics::Registry* registry = nullptr;  // required
  std::string metric_prefix;              // e.g. "agentwire_archive"
  /// group.instance.id (static membership): a restarted member with the same id takes its
  /// place back without a rebalance. Empty: a dynamic member (leaves the group on close).
  std::string group_instance_id;
};

/// The session timeout the consumers run with unless --kafka session.timeout.ms says
/// otherwise, and their heartbeat interval (a third of it). See the .cpp for why.
inline constexpr std::chrono::milliseconds kSessionTimeout{10'000};
inline constexpr std::chrono::milliseconds kHeartbeatInterval{3'000};

/// The batch consumer's settings from a service's config (ArchiveConfig, AnalyticsConfig: the
/// same Kafka, PostgreSQL and batching fields).
template <typename ServiceConfig>
BatchConsumerConfig MakeBatchConsumerConfig(const ServiceConfig& config,
                                            metrics::Registry& registry,
                                            std::string metric_prefix) {
  BatchConsumerConfig c;
  c.client_properties = config.client_properties;
  c.topic = config.topic;
  c.group_id = config.group_id;
  c.dsn = config.dsn;
  c.batch_size = config.batch_size;
  c.batch_time = config.batch_time;
  c.registry = &registry;
  c.metric_prefix = std::move(metric_prefix);
  c.group_instance_id = config.instance_id;
  return c;
}

/// Thrown by a BatchWriter (e.g. from BeforeCommit) when the batch must not be committed for
/// a reason that is not PostgreSQL's: the batch is rolled back, consumption pauses and the
/// batch is retried with backoff, and the log says what() instead of "PostgreSQL unavailable".
class BatchNotCommitted final : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// What a consumer does with a batch, inside the transaction that also moves its offsets.
/// Called on the consumer's thread only.
class BatchWriter {
 public:
  virtual ~BatchWriter() = default;
  /// Once per new PostgreSQL connection (temp tables, prepared statements).
  virtual void OnConnect(pqxx::connection& connection) = 0;
  /// Writes whatever `messages` mean. For each partition they are the contiguous run of
  /// messages after the stored position, ascending. Throws pqxx errors; a pqxx::sql_error that
  /// is not a connection loss makes the consumer retry the batch one message at a time.
  virtual void Write(pqxx::transaction_base& tx,
                     const std::vector<const rd_kafka_message_t*>& messages) = 0;
  /// One message PostgreSQL refused on its own (found while retrying one at a time): record it
  /// (e.g. as a dead letter) inside `tx`, or skip it.
  virtual void WriteRejected(pqxx::transaction_base& tx, const rd_kafka_message_t* message,
                             const std::string& reason) = 0;
  /// Just before COMMIT (e.g. wait for DLQ deliveries, so the DLQ topic is at-least-once).
  virtual void BeforeCommit() {}
  /// The transaction committed / was abandoned: publish or drop what Write staged.
  virtual void AfterCommit() {}
  virtual void AfterAbort() {}
};

/// Consumer group on one topic whose positions are stored in PostgreSQL.
///
/// Exactly-once: each batch's rows and the partitions' next offsets are committed in one
/// transaction. Inside it, per partition, a transaction-scoped advisory lock serializes writers
/// and the stored next_offset must equal the position this consumer started the batch from (a
/// compare-and-set fence); a partition that fails the check (another owner moved it) is left out
/// and re-seeked to the stored offset. On assignment, partitions start at the stored offsets.
/// PostgreSQL down: the batch is dropped, every partition paused, reconnects back off
/// exponentially, then partitions are re-seeked to the stored offsets and resumed. Kafka offsets
/// are committed after the PostgreSQL commit, for tooling only.
///
/// Not thread-safe except Ready(): Run() owns everything.
class PgBatchConsumer final {
 public:
  PgBatchConsumer(BatchConsumerConfig config, BatchWriter& writer);
  ~PgBatchConsumer();
  PgBatchConsumer(const PgBatchConsumer&) = delete;
  PgBatchConsumer& operator=(const PgBatchConsumer&) = delete;

  /// Consumes until `stop`; then writes the current batch (when PostgreSQL is up), leaves the
  /// group and returns. Throws ConfigError for bad Kafka settings.
  void Run(const std::stop_token& stop);

  /// PostgreSQL reachable and the consumer subscribed. Thread-safe.
  bool Ready() const noexcept { return ready_.load(std::memory_order_relaxed); }

  /// The topic's partition count as last read from the cluster's metadata (on start and after
  /// each assignment); 0 while unknown. Consumer thread only (e.g. from BatchWriter::Write).
  int32_t TopicPartitionCount() const noexcept { return partition_count_; }

  /// The stored next offset (consumer_offsets.next_offset) of each partition this consumer owns,
  /// as of its last assignment, commit or re-positioning. Partitions whose stored offset is not
  /// known (the group never wrote them, or PostgreSQL was down when they were assigned) are left
  /// out. Thread-safe: for monitors on other threads (the archive's retention headroom).
  std::map<int32_t, int64_t> OwnedPositions() const;

  /// Called by the rebalance callback (a free function).
  void OnRebalance(rd_kafka_t* consumer, rd_kafka_resp_err_t err,
                   rd_kafka_topic_partition_list_t* partitions);

 private:
  struct PartitionState {
    std::optional<int64_t> stored;  // next_offset PostgreSQL holds (nullopt: no row yet)
    bool needs_position = true;     // paused until seeked to `stored`
  };
  /// Offsets a batch skips: retention deleted them before the group read them.
  struct Hole {
    int32_t partition = 0;
    int64_t first = 0;  // the first missing offset
    int64_t count = 0;
  };

  void Flush();
  enum class Outcome { kCommitted, kDataError, kConnectionLost };
  Outcome WriteBatch(bool one_by_one, std::string& error);
  void MarkPostgresDown(const std::string& error);
  void Recover();
  bool Connect();
  std::map<int32_t, int64_t> LoadStoredOffsets(pqxx::transaction_base& tx);
  void Pause(const std::vector<int32_t>& partitions);
  void UpdateLag();
  void RefreshPartitionCount();
  /// Adds the offsets one partition's batch skips to `holes` (see the .cpp for when).
  static void FindHoles(std::optional<int64_t> stored,
                        const std::vector<const rd_kafka_message_t*>& messages,
                        std::vector<Hole>& holes);
  void ReportHoles(const std::vector<Hole>& holes);
  /// Copies the stored offsets of partitions_ to what OwnedPositions() returns.
  void PublishPositions();
  /// A fatal consumer error (FENCED_INSTANCE_ID: another process took this instance id):
  /// throws KafkaError with a hint.
  [[noreturn]] void ThrowFatal();
  /// Before leaving the group: see librdkafka#4312 in the .cpp.
  void WaitForFirstAssignment();
  /// Several consumers of one process (archive --writers) share the process's gauges: each
  /// adds the change of its own part, and takes its part away when it goes.
  static void ReportShare(metrics::Gauge& gauge, double& reported, double value) {
    gauge.Add(value - reported);
    reported = value;
  }

  BatchConsumerConfig config_;
  BatchWriter& writer_;
  kafka::HandlePtr consumer_;
  std::unique_ptr<pqxx::connection> connection_;
  std::map<int32_t, PartitionState> partitions_;  // assigned partitions
  std::vector<kafka::MessagePtr> batch_;
  std::chrono::steady_clock::time_point batch_deadline_{};
  bool postgres_down_ = false;
  std::chrono::milliseconds backoff_{};
  std::chrono::steady_clock::time_point next_attempt_{};
  int32_t lock_key_ = 0;       // advisory lock namespace for (group, topic)
  std::string refusal_;        // SQLSTATE of the last refused statement, until it is logged
  std::string not_committed_;  // a BatchNotCommitted's what(), until it is logged
  int32_t partition_count_ = 0;
  bool partition_count_stale_ = true;
  std::atomic<bool> ready_{false};

  metrics::Counter& messages_;
  metrics::Counter& batches_;
  metrics::Histogram& batch_seconds_;
  metrics::Counter& pg_errors_;
  metrics::Counter& retention_gap_;
  metrics::Counter& retention_holes_;
  metrics::Counter& fenced_;
  metrics::Gauge& lag_;
  metrics::Gauge& assigned_;
  bool assigned_once_ = false;    // the group's first assignment arrived (OnRebalance)
  double reported_lag_ = 0;       // this consumer's part of lag_
  double reported_assigned_ = 0;  // and of assigned_
  mutable std::mutex positions_mutex_;
  std::map<int32_t, int64_t> positions_;  // guarded by positions_mutex_ (OwnedPositions)
};

/// libpq connection errors (server gone, connection cut, commit outcome unknown).
bool IsConnectionError(const std::exception& error);

/// SQLSTATE classes 22, 23, 54: one message's data is at fault (retry one at a time).
bool IsDataError(const std::exception& error);

/// The SQLSTATE of an error by which a reachable PostgreSQL refused a statement for a reason
/// that is neither a connection problem nor one message's data (42P01 undefined table, 42501
/// insufficient privilege...): the schema or the grants must change. "" otherwise.
std::string RefusalState(const std::exception& error);

/// "\\x0a1b..." (bytea hex input form).
std::string ByteaHex(const void* data, size_t size);

/// RFC 3339 UTC with microseconds for a protobuf Timestamp given as seconds and nanos.
std::string TimestampText(int64_t seconds, int32_t nanos);
/// The same for nanoseconds since the epoch.
std::string TimestampTextFromNanos(int64_t nanos);

}  // namespace agentwire::consumers::internal
