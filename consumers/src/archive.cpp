#include "agentwire/consumers/archive.hpp"

#include <agentwire/v1/events.pb.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <stop_token>
#include <string_view>
#include <thread>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "copy_row.hpp"
#include "dead_letter_queue.hpp"
#include "event_text.hpp"
#include "event_time.hpp"
#include "pg_batch_consumer.hpp"

namespace agentwire::consumers {
namespace {

const std::vector<std::string> kEventColumns = {
    "topic",   "partition", "\"offset\"", "event_id",   "user_id", "thread_id", "run_id",
    "run_seq", "type",      "emitted_at", "agent_name", "payload", "raw"};

/// Decodes `value` into `event`; returns why it cannot be archived, or "" when it can.
std::string Decode(const void* key, size_t key_size, const void* value, size_t value_size,
                   v1::AgentEvent& event, std::string* json) {
  if (value == nullptr || value_size == 0) return "empty message value";
  if (!event.ParseFromArray(value, static_cast<int>(value_size))) {
    return "not a serialized agentwire.v1.AgentEvent (protobuf parse failed)";
  }
  if (const auto invalid = schemas::Validate(event)) return invalid->message;
  if (event.event_id().empty()) return "missing event_id";
  const std::string_view key_text(static_cast<const char*>(key), key == nullptr ? 0 : key_size);
  if (key_text != event.user_id()) {
    return fmt::format("key '{:.64}' is not the event's user_id '{:.64}'", key_text,
                       event.user_id());
  }
  if (internal::HasNulCharacter(event)) {
    return "text contains a NUL character (PostgreSQL cannot store it)";
  }
  if (json != nullptr) *json = schemas::ToJson(event);
  return "";
}

std::string_view KeyOf(const rd_kafka_message_t& message) {
  return message.key == nullptr
             ? std::string_view()
             : std::string_view(static_cast<const char*>(message.key), message.key_len);
}

/// How often the retention headroom is measured: a round trip per owned partition each time.
constexpr auto kHeadroomInterval = std::chrono::seconds(5);
/// Bounds one watermark query, and so how long a stop waits for the measurement in progress.
constexpr int kWatermarkTimeoutMs = 2000;
/// Below this ratio the archive warns: a tenth of the retained log is what stands between its
/// position and the next deletion.
constexpr double kHeadroomWarnRatio = 0.1;

/// Where `position` stands in a partition's retained log [low, high), as a fraction of it: 1 at
/// the log end (or when the log is empty), 0 at the log start or before it (the next deletion
/// removes records the archive has not written, or already did).
double HeadroomRatio(int64_t low, int64_t high, int64_t position) {
  if (position < low) return 0.0;  // a hole already
  if (high <= low) return 1.0;     // an empty log: nothing left to lose
  return std::clamp(static_cast<double>(position - low) / static_cast<double>(high - low), 0.0,
                    1.0);
}

}  // namespace

class Archive::Impl final : public internal::BatchWriter {
 public:
  /// `index` of `count`: this writer's place among the process's writers.
  Impl(ArchiveConfig config, metrics::Registry& registry, int index, int count)
      : config_(std::move(config)),
        index_(index),
        count_(count),
        archived_(registry.GetCounter("agentwire_archive_events_total",
                                      "Events inserted into agent_events")),
        duplicates_(registry.GetCounter(
            "agentwire_archive_duplicates_total",
            "Events already in agent_events (same event_id stored twice upstream)")),
        dead_letters_(registry.GetCounter("agentwire_archive_dead_letters_total",
                                          "Messages written to dead_letters and the DLQ topic")),
        dlq_failures_(registry.GetCounter("agentwire_archive_dlq_delivery_failures_total",
                                          "Dead letters the DLQ topic did not acknowledge")),
        times_replaced_(registry.GetCounter(
            "agentwire_archive_event_times_replaced_total",
            "Events whose emitted_at was more than 24 h from their Kafka timestamp (archived "
            "with the Kafka timestamp)")),
        registry_(registry),
        dlq_(config_.client_properties, config_.topic, config_.dead_letter_topic, config_.group_id,
             dlq_failures_),
        consumer_(internal::MakeBatchConsumerConfig(config_, registry, "agentwire_archive"),
                  *this) {}

  void Run(const std::stop_token& stop) { consumer_.Run(stop); }
  bool Ready() const noexcept { return consumer_.Ready(); }
  /// Thread-safe.
  std::map<int32_t, int64_t> OwnedPositions() const { return consumer_.OwnedPositions(); }

  void OnConnect(pqxx::connection& connection) override {
    pqxx::nontransaction tx(connection);
    // The fallback path of Write: COPY cannot skip conflicts, so when a batch holds an event
    // already archived, its rows go through a per-connection staging table and
    // INSERT ... ON CONFLICT DO NOTHING instead.
    tx.exec(
        "CREATE TEMP TABLE IF NOT EXISTS agent_events_stage"
        " (LIKE agent_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS");
    stage_dirty_ = false;
  }

  void Write(pqxx::transaction_base& tx,
             const std::vector<const rd_kafka_message_t*>& messages) override {
    StartDecoding();
    // Rows go to PostgreSQL in key (user_id) order, each user's in offset order. Two of the six
    // B-trees of agent_events lead with the user (user/time, user/offset), and thread and run ids
    // often begin with it (the simulator's do), so inserting in that order walks those indexes
    // left to right instead of landing each row on another leaf page (100,000 users: a batch in
    // log order touches a page per row). The primary key and event_id (time-ordered ids) are
    // near-appends either way. Nothing else depends on the order: the batch commits as a whole,
    // and a user's rows keep their offset order (a duplicated event_id keeps the first).
    ordered_.assign(messages.begin(), messages.end());
    std::stable_sort(ordered_.begin(), ordered_.end(),
                     [](const rd_kafka_message_t* a, const rd_kafka_message_t* b) {
                       return KeyOf(*a) < KeyOf(*b);
                     });
    // Writers walking the same indexes in step would queue on the same pages: writer i of n
    // starts i/n of the way through its batch (at a user's first row) and wraps around.
    auto start = ordered_.begin() +
                 static_cast<std::ptrdiff_t>(ordered_.size() * static_cast<size_t>(index_) /
                                             static_cast<size_t>(count_));
    while (start != ordered_.begin() && start != ordered_.end() &&
           KeyOf(**start) == KeyOf(**(start - 1))) {
      ++start;
    }
    std::rotate(ordered_.begin(), start, ordered_.end());
    const size_t inserted = InsertRows(tx, ordered_);
    // What replay --source postgres needs for cursors, so it never has to ask Kafka.
    const int32_t partition_count = consumer_.TopicPartitionCount();
    if (partition_count > 0 && partition_count != stored_partition_count_) {
      tx.exec_params(
          "INSERT INTO archive_topics (topic, partition_count) VALUES ($1, $2)"
          " ON CONFLICT (topic) DO UPDATE SET partition_count = EXCLUDED.partition_count,"
          " updated_at = now()",
          config_.topic, partition_count);
      pending_partition_count_ = partition_count;
    }
    for (const auto& [message, reason] : dead_) InsertDeadLetter(tx, message, reason);
    // Staged only once everything above succeeded (a failed Write stages nothing).
    pending_archived_ += inserted;
    pending_duplicates_ += rows_ - inserted;
    pending_times_replaced_ += batch_times_replaced_;
    for (auto& [message, reason] : dead_) pending_dead_.emplace_back(message, std::move(reason));
    pending_wrong_.insert(pending_wrong_.end(), batch_wrong_.begin(), batch_wrong_.end());
  }

  void WriteRejected(pqxx::transaction_base& tx, const rd_kafka_message_t* message,
                     const std::string& reason) override {
    InsertDeadLetter(tx, message, reason);
    pending_dead_.emplace_back(message, reason);
  }

  void BeforeCommit() override {
    // The DLQ copy is produced before the PostgreSQL commit and waited for: a crash in between
    // produces it again after the restart (at-least-once), never zero times. So unless the DLQ
    // topic acknowledged every dead letter of the batch, the batch is not committed: it is
    // rolled back and retried (the consumer pauses and backs off as for a PostgreSQL outage).
    for (const auto& [message, reason] : pending_dead_) dlq_.Produce(message, reason);
    dlq_.FlushOrThrow();
  }

  void AfterCommit() override {
    if (pending_partition_count_ > 0) stored_partition_count_ = pending_partition_count_;
    archived_.Inc(pending_archived_);
    duplicates_.Inc(pending_duplicates_);
    dead_letters_.Inc(pending_dead_.size());
    times_replaced_.Inc(pending_times_replaced_);
    if (pending_times_replaced_ > 0) {
      log::Warn(
          "emitted_at more than 24 h away from the Kafka timestamp (a worker's clock is off): "
          "archived with the Kafka timestamp in agent_events.emitted_at; payload and raw keep "
          "the original",
          {{"topic", config_.topic}, {"count", static_cast<uint64_t>(pending_times_replaced_)}});
    }
    for (const auto& [message, reason] : pending_dead_) {
      log::Warn("dead letter", {{"topic", config_.topic},
                                {"partition", message->partition},
                                {"offset", message->offset},
                                {"error", reason}});
    }
    ReportWrongPartitions();
    Reset();
  }

  void AfterAbort() override { Reset(); }

 private:
  /// A row of agent_events (kEventColumns) in COPY text form.
  using Row = std::string;

  /// Forgets what DecodeRest found so far: the next call decodes the batch from its start.
  void StartDecoding() {
    rows_ = 0;
    dead_.clear();
    next_message_ = 0;
    batch_times_replaced_ = 0;
    batch_wrong_.clear();
  }

  /// Decodes messages[next_message_..], counting rows_ (or adding to dead_) and handing each
  /// new row to `on_row`; stops early only when `on_row` throws.
  template <typename OnRow>
  void DecodeRest(const std::vector<const rd_kafka_message_t*>& messages, OnRow&& on_row) {
    for (; next_message_ < messages.size();) {
      const auto* message = messages[next_message_++];
      CheckPartition(*message);
      event_.Clear();
      std::string reason =
          Decode(message->key, message->key_len, message->payload, message->len, event_, &json_);
      if (!reason.empty()) {
        dead_.emplace_back(message, std::move(reason));
        continue;
      }
      // A clock far off the Kafka timestamp does not get to place the event in another era:
      // the column (what time queries and replay --source postgres use) gets the Kafka
      // timestamp then; payload and raw keep what the worker sent.
      std::optional<std::string> emitted_at;
      rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
      bool replaced = false;
      if (const auto nanos = internal::EventTimeNanos(
              event_, rd_kafka_message_timestamp(message, &type), &replaced)) {
        emitted_at = internal::TimestampTextFromNanos(*nanos);
      }
      if (replaced) ++batch_times_replaced_;
      row_.Clear();
      row_.Text(config_.topic)
          .Int(message->partition)
          .Int(message->offset)
          .Text(event_.event_id())
          .Text(event_.user_id())
          .Text(event_.thread_id())
          .Text(event_.run_id())
          .Int(static_cast<int64_t>(event_.run_seq()))
          .Text(schemas::EventType(event_))
          .TextOrNull(emitted_at)
          .Text(event_.agent_name())
          .Text(json_)
          .Bytea(message->payload, message->len);
      ++rows_;
      on_row(row_.Line());
    }
  }

  /// Decodes the batch and inserts its rows; returns how many were new. The common case (no
  /// event archived before) is one COPY straight into agent_events under a savepoint, fed while
  /// decoding so PostgreSQL parses rows while the next ones are decoded. Only a batch that hits
  /// a unique violation (an event_id published twice upstream) pays for the staging table.
  size_t InsertRows(pqxx::transaction_base& tx,
                    const std::vector<const rd_kafka_message_t*>& messages) {
    auto& parent = dynamic_cast<pqxx::dbtransaction&>(tx);
    try {
      pqxx::subtransaction direct(parent, "archive_copy");
      {
        internal::CopyWriter copy(direct, "agent_events", kEventColumns);
        DecodeRest(messages, [&copy](const Row& row) { copy.Write(row); });
        copy.Complete();
      }
      direct.commit();
      return rows_;
    } catch (const pqxx::sql_error& e) {
      if (e.sqlstate() != "23505") throw;  // unique_violation; anything else is not ours
    }
    // The rows are not kept from the first attempt (a copy of every row, a kilobyte or more
    // each, for a path only duplicates upstream take): the batch is decoded again.
    StartDecoding();
    if (stage_dirty_) tx.exec("TRUNCATE agent_events_stage");
    {
      internal::CopyWriter copy(tx, "agent_events_stage", kEventColumns);
      stage_dirty_ = true;
      DecodeRest(messages, [&copy](const Row& row) { copy.Write(row); });
      copy.Complete();
    }
    if (rows_ == 0) return 0;
    const auto result = tx.exec(
        "INSERT INTO agent_events (topic, partition, \"offset\", event_id, user_id, thread_id,"
        " run_id, run_seq, type, emitted_at, agent_name, payload, raw)"
        " SELECT topic, partition, \"offset\", event_id, user_id, thread_id, run_id, run_seq,"
        " type, emitted_at, agent_name, payload, raw FROM agent_events_stage"
        " ON CONFLICT DO NOTHING");
    return static_cast<size_t>(result.affected_rows());
  }

  /// A record whose key does not hash (murmur2, as EventPublisher, librdkafka's murmur2_random
  /// and Java's default partitioner do) to the partition it was read from was produced with
  /// another partitioner (e.g. confluent_kafka's default, CRC32). It is archived like any other
  /// (the log is the truth), but the gateway looks for the user's events in the key's partition
  /// only: live clients and resumes never see it. Noted here, counted and logged on commit.
  void CheckPartition(const rd_kafka_message_t& message) {
    const int32_t partition_count = consumer_.TopicPartitionCount();
    if (partition_count <= 0 || message.key == nullptr || message.key_len == 0) return;
    const std::string_view key(static_cast<const char*>(message.key), message.key_len);
    const int32_t expected = PartitionForKey(key, partition_count);
    if (expected != message.partition) {
      batch_wrong_.push_back({message.partition, expected, message.offset,
                              std::string(key.substr(0, 128)), partition_count});
    }
  }

  void ReportWrongPartitions() {
    // One limiter for every writer of the process: a producer with the wrong partitioner sends
    // most of its records to the wrong partition, and a line per record would flood the log.
    static log::RateLimited limit;
    for (const auto& wrong : pending_wrong_) {
      auto& counter = wrong_partition_[wrong.partition];
      if (counter == nullptr) {
        counter = &registry_.GetCounter(
            "agentwire_archive_wrong_partition_total",
            "Records whose key does not hash (murmur2) to the partition they were read from: a "
            "producer with another partitioner; archived, but never delivered by the gateways",
            {{"partition", std::to_string(wrong.partition)}});
      }
      counter->Inc();
      limit.Warn(
          "record in a partition its key does not hash to (murmur2): its producer uses another "
          "partitioner (e.g. confluent_kafka's default CRC32; set partitioner=murmur2_random). "
          "Archived, but gateways look for the user's events in expected_partition only, so "
          "clients never receive it",
          {{"topic", config_.topic},
           {"partition", wrong.partition},
           {"offset", wrong.offset},
           {"user", wrong.key},
           {"expected_partition", wrong.expected},
           {"partitions", wrong.partition_count}});
    }
  }

  void Reset() {
    pending_wrong_.clear();
    pending_archived_ = 0;
    pending_duplicates_ = 0;
    pending_times_replaced_ = 0;
    pending_partition_count_ = 0;
    pending_dead_.clear();
    stage_dirty_ = false;  // ON COMMIT DELETE ROWS / rollback emptied it
  }

  void InsertDeadLetter(pqxx::transaction_base& tx, const rd_kafka_message_t* message,
                        const std::string& reason) {
    std::optional<std::string> key;
    if (message->key != nullptr) key = internal::ByteaHex(message->key, message->key_len);
    std::optional<std::string> raw;
    if (message->payload != nullptr) raw = internal::ByteaHex(message->payload, message->len);
    tx.exec_params(
        "INSERT INTO dead_letters (topic, partition, \"offset\", group_id, reason, key, raw)"
        " VALUES ($1, $2, $3, $4, $5, $6::bytea, $7::bytea) ON CONFLICT DO NOTHING",
        config_.topic, message->partition, message->offset, config_.group_id, reason, key, raw);
  }

  ArchiveConfig config_;
  int index_;  // among the process's writers
  int count_;
  metrics::Counter& archived_;
  metrics::Counter& duplicates_;
  metrics::Counter& dead_letters_;
  metrics::Counter& dlq_failures_;
  metrics::Counter& times_replaced_;
  metrics::Registry& registry_;
  std::map<int32_t, metrics::Counter*> wrong_partition_;  // by partition, created on first use
  struct WrongPartition {
    int32_t partition = 0;
    int32_t expected = 0;
    int64_t offset = 0;
    std::string key;
    int32_t partition_count = 0;
  };
  std::vector<WrongPartition> batch_wrong_;    // found by this Write
  std::vector<WrongPartition> pending_wrong_;  // staged until the commit
  internal::DeadLetterQueue dlq_;
  internal::PgBatchConsumer consumer_;
  // The batch being written, reused across batches.
  std::vector<const rd_kafka_message_t*> ordered_;  // Write's messages in insertion order
  size_t rows_ = 0;                                 // rows decoded so far
  internal::CopyRow row_;
  std::vector<std::pair<const rd_kafka_message_t*, std::string>> dead_;
  size_t next_message_ = 0;
  v1::AgentEvent event_;
  std::string json_;
  bool stage_dirty_ = false;
  size_t pending_archived_ = 0;
  size_t pending_duplicates_ = 0;
  size_t batch_times_replaced_ = 0;
  size_t pending_times_replaced_ = 0;
  int32_t stored_partition_count_ = 0;  // in archive_topics (as far as this process knows)
  int32_t pending_partition_count_ = 0;
  std::vector<std::pair<const rd_kafka_message_t*, std::string>> pending_dead_;
};

/// Retention headroom of the partitions this process owns: how many of the records the archive
/// has written Kafka still holds (its stored position minus the log start). Gateways serve a
/// resume older than Kafka's log from agent_events and switch to Kafka at the archive's stored
/// position, so that position must stay inside the retained log: an offset retention deletes
/// before the archive wrote it exists nowhere.
///
/// Measured on its own thread with its own Kafka client, every kHeadroomInterval: each query is
/// a round trip to a partition leader, which the batch loop must not wait for, and the headroom
/// matters most while the writers are stuck (PostgreSQL down or refusing: every partition
/// paused). The consumers' cached watermarks (rd_kafka_get_watermark_offsets) will not do:
/// librdkafka refreshes the low one only with statistics.interval.ms set, and neither for paused
/// partitions.
class Archive::RetentionHeadroom final {
 public:
  /// Throws ConfigError for bad Kafka properties.
  RetentionHeadroom(const ArchiveConfig& config, metrics::Registry& registry)
      : topic_(config.topic),
        registry_(registry),
        ratio_(registry.GetGauge(
            "agentwire_archive_retention_headroom_ratio",
            "Min over the partitions this process owns of (stored offset - log start) / (log end "
            "- log start): 1 = archived up to the log end, 0 = the next retention deletion "
            "removes records not archived yet (1 while it owns none)")) {
    ratio_.Set(1);
    kafka::Properties properties = {{"client.id", "agentwire_archive_headroom"}};
    for (const auto& [key, value] : config.client_properties) properties[key] = value;
    client_ = kafka::MakeClient(RD_KAFKA_CONSUMER, kafka::MakeConf(properties));
  }

  /// Measures every kHeadroomInterval until `stop`. `positions` returns the stored offsets of
  /// the partitions the process owns; it is called on this thread, so it must be thread-safe.
  void Run(const std::stop_token& stop,
           const std::function<std::map<int32_t, int64_t>()>& positions) noexcept {
    try {
      std::mutex mutex;
      std::condition_variable_any wake;
      std::unique_lock lock(mutex);
      while (true) {
        wake.wait_for(lock, stop, kHeadroomInterval, [] { return false; });
        if (stop.stop_requested()) break;
        Measure(positions(), stop);
      }
      Measure({}, stop);  // leaving: the process owns nothing any more
    } catch (const std::exception& e) {
      log::Error("retention headroom measurement stopped",
                 {{"topic", topic_}, {"error", e.what()}});
    }
  }

 private:
  struct Partition {
    metrics::Gauge* gauge = nullptr;  // agentwire_archive_retention_headroom_records
    int64_t records = 0;              // as last measured
    double ratio = 1;
  };

  void Measure(const std::map<int32_t, int64_t>& positions, const std::stop_token& stop) {
    rd_kafka_poll(client_.get(), 0);  // serves the client's error and log events
    for (auto& [p, partition] : partitions_) {
      // Series stay once created: a partition this process no longer owns reports its share,
      // 0, and the owner the value (sum by partition over the instances gives the group's).
      if (!positions.contains(p)) partition.gauge->Set(0);
    }
    std::optional<int32_t> worst;
    for (const auto& [p, position] : positions) {
      auto& partition = partitions_[p];
      if (partition.gauge == nullptr) {
        partition.gauge = &registry_.GetGauge(
            "agentwire_archive_retention_headroom_records",
            "Records the archive has written that Kafka still holds (stored offset - log start); "
            "<= 0: the next retention deletion removes records not archived yet, < 0: that many "
            "were removed already. 0 in a process that does not own the partition",
            {{"partition", std::to_string(p)}});
      }
      if (stop.stop_requested()) return;  // leaving: Run's last call resets the gauges
      int64_t low = 0;
      int64_t high = 0;
      const auto err = rd_kafka_query_watermark_offsets(client_.get(), topic_.c_str(), p, &low,
                                                        &high, kWatermarkTimeoutMs);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        partition.records = position - low;
        partition.ratio = HeadroomRatio(low, high, position);
        partition.gauge->Set(static_cast<double>(partition.records));
      } else {
        // The gauges keep their last values; the next round tries again.
        query_log_.Warn(
            "cannot read the partition's watermarks: its retention headroom is not measured",
            {{"topic", topic_}, {"partition", p}, {"error", kafka::ErrorText(err)}});
      }
      if (!worst || partition.ratio < partitions_[*worst].ratio) worst = p;
    }
    const double ratio = worst ? partitions_[*worst].ratio : 1.0;
    ratio_.Set(ratio);
    if (worst && ratio < kHeadroomWarnRatio) {
      low_headroom_log_.Warn(
          "the archive is close to Kafka's log start: the next retention deletions remove records "
          "it has not written, which then exist nowhere (resumes past retention get a hole). "
          "Raise the archive's write rate (more --writers or instances, up to the partition "
          "count; a faster PostgreSQL), fix PostgreSQL if it is down or refusing writes, or raise "
          "the topic's retention.ms / retention.bytes",
          {{"topic", topic_},
           {"partition", *worst},
           {"headroom_records", partitions_[*worst].records},
           {"ratio", ratio}});
    }
  }

  std::string topic_;
  metrics::Registry& registry_;
  metrics::Gauge& ratio_;
  std::map<int32_t, Partition> partitions_;  // every partition this process has owned
  kafka::HandlePtr client_;
  log::RateLimited low_headroom_log_{std::chrono::minutes(1)};
  log::RateLimited query_log_{std::chrono::minutes(1)};
};

void ValidateWriters(int writers) {
  if (writers < 1 || writers > 64) {
    throw ConfigError(fmt::format(
        "--writers / AGENTWIRE_ARCHIVE_WRITERS {}: expected 1-64 (PostgreSQL connections, each "
        "writing its own partitions)",
        writers));
  }
}

Archive::Archive(const ArchiveConfig& config, metrics::Registry& registry) {
  ValidateWriters(config.writers);
  for (int i = 0; i < config.writers; ++i) {
    ArchiveConfig writer = config;
    if (!config.instance_id.empty())
      writer.instance_id = fmt::format("{}-w{}", config.instance_id, i);
    writers_.push_back(std::make_unique<Impl>(std::move(writer), registry, i, config.writers));
  }
  headroom_ = std::make_unique<RetentionHeadroom>(config, registry);
}
Archive::~Archive() = default;

void Archive::Run(const std::stop_token& stop) {
  // One thread per writer; the first failure (e.g. a bad Kafka setting) stops them all and is
  // rethrown, so a process never goes on archiving with part of its writers.
  std::stop_source all;
  std::stop_callback forward(stop, [&all] { all.request_stop(); });
  std::mutex mutex;
  std::exception_ptr failure;
  auto run = [&](Impl& writer) {
    try {
      writer.Run(all.get_token());
    } catch (...) {
      std::lock_guard lock(mutex);
      if (!failure) failure = std::current_exception();
      all.request_stop();
    }
  };
  {
    // Destroyed last in this block (stop requested, then joined): measures while writers run.
    std::jthread headroom([this](const std::stop_token& own) {
      headroom_->Run(own, [this] {
        std::map<int32_t, int64_t> positions;
        for (const auto& writer : writers_) positions.merge(writer->OwnedPositions());
        return positions;
      });
    });
    std::vector<std::jthread> others;
    for (size_t i = 1; i < writers_.size(); ++i) {
      others.emplace_back([&run, writer = writers_[i].get()] { run(*writer); });
    }
    run(*writers_.front());
  }
  if (failure) std::rethrow_exception(failure);
}

bool Archive::Ready() const noexcept {
  return std::all_of(writers_.begin(), writers_.end(),
                     [](const auto& writer) { return writer->Ready(); });
}

}  // namespace agentwire::consumers
