// The archive source of `agentwire replay --source postgres`: reads agent_events (written by
// `agentwire archive`, see infra/sql/0001_agent_events.sql) for ranges beyond Kafka's
// retention. Each partition is read through its own server-side cursor in offset order and
// the partitions go through the same merge as the Kafka source; events are decoded from the
// archived message bytes (`raw`) and filtered by the same predicate, so both sources print the
// same lines for the same events. (The archive does not keep the Kafka message timestamp:
// "timestamp" is null in this source's JSON lines.)

#include <fmt/format.h>

#include <limits>
#include <pqxx/pqxx>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "replay_internal.hpp"

namespace agentwire::consumers::replay {
namespace {

constexpr int kFetchRows = 2000;
constexpr const char* kContentType = "application/x-protobuf";
constexpr const char* kSchemaName = "agentwire.v1.AgentEvent";

// One snapshot for every partition's cursor: a consistent view while the archive keeps writing.
using ReadTransaction = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

// SQL timestamptz literal with microseconds (PostgreSQL's precision).
std::string SqlTime(int64_t nanos) {
  const auto time =
      TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(nanos)));
  std::string text = FormatTimeMillis(time);  // "...SS.mmmZ"
  const int64_t micros_in_ms = ((nanos % 1'000'000) + 1'000'000) % 1'000'000 / 1000;
  text.insert(text.size() - 1, fmt::format("{:03}", micros_in_ms));
  return text;
}

class PostgresPartitionReader final : public PartitionReader {
 public:
  PostgresPartitionReader(ReadTransaction& tx, int32_t partition, std::string cursor_name,
                          const EventFilter& filter, bool keep_raw, Progress& progress)
      : tx_(tx),
        partition_(partition),
        cursor_name_(std::move(cursor_name)),
        filter_(filter),
        keep_raw_(keep_raw),
        progress_(progress) {}

  int32_t Partition() const override { return partition_; }

  bool Fill(RecordBuffer& out, std::stop_token /*stop*/) override {
    const pqxx::result rows = tx_.exec(fmt::format("FETCH {} FROM {}", kFetchRows, cursor_name_));
    for (const auto& row : rows) {
      progress_.scanned.fetch_add(1, std::memory_order_relaxed);
      const pqxx::binarystring raw(row[2]);
      Record& record = out.Append();
      if (!record.event.ParseFromArray(raw.data(), static_cast<int>(raw.size())) ||
          record.event.user_id().empty()) {
        progress_.undecodable.fetch_add(1, std::memory_order_relaxed);
        out.DropLast();
        continue;
      }
      // The archive stored the event's time as the Kafka source computes it (emitted_at, or the
      // Kafka timestamp when emitted_at was more than 24 h off), in microseconds: the event's
      // own nanoseconds when they agree, else the stored time.
      const int64_t emitted_ns = EmittedAtNanos(record.event);
      record.time_replaced = false;
      if (row[3].is_null()) {
        record.time_ns = emitted_ns;
      } else {
        const auto stored_us = row[3].as<int64_t>();
        const int64_t emitted_us =
            emitted_ns / 1000 - (emitted_ns % 1000 < 0 ? 1 : 0);  // floor, as PostgreSQL stores
        record.time_replaced = stored_us != emitted_us;
        constexpr int64_t kMaxMicros = std::numeric_limits<int64_t>::max() / 1000;
        record.time_ns = !record.time_replaced    ? emitted_ns
                         : stored_us > kMaxMicros ? std::numeric_limits<int64_t>::max()
                                                  : stored_us * 1000;
      }
      if (!filter_.MatchesKey(record.event.user_id()) || !filter_.Matches(record.event) ||
          !filter_.MatchesTime(record.time_ns)) {
        out.DropLast();
        continue;
      }
      if (record.time_replaced) progress_.times_replaced.fetch_add(1, std::memory_order_relaxed);
      record.partition = row[0].as<int32_t>();
      record.offset = row[1].as<int64_t>();
      record.timestamp_ms = -1;
      // The archive only keeps messages whose key is their user_id.
      record.key = record.event.user_id();
      if (keep_raw_) {
        record.value.assign(reinterpret_cast<const char*>(raw.data()), raw.size());
        record.headers = {{"content-type", kContentType}, {"schema", kSchemaName}};
      }
    }
    return static_cast<int>(rows.size()) == kFetchRows;
  }

 private:
  ReadTransaction& tx_;
  int32_t partition_;
  std::string cursor_name_;
  const EventFilter& filter_;
  bool keep_raw_;
  Progress& progress_;
};

class PostgresSource final : public Source {
 public:
  PostgresSource(const ReplayConfig& config, Progress& progress, Console& console)
      : config_(config), progress_(progress), console_(console), filter_(config.selection) {}

  void Open() override {
    try {
      connection_ = std::make_unique<pqxx::connection>(config_.pg_dsn);
    } catch (const pqxx::broken_connection& e) {
      throw std::runtime_error(fmt::format(
          "cannot connect to PostgreSQL (--pg / AGENTWIRE_PG_DSN): {}", FirstLine(e.what())));
    } catch (const std::exception& e) {
      throw ConfigError(fmt::format("--pg / AGENTWIRE_PG_DSN: {}", FirstLine(e.what())));
    }
    tx_ = std::make_unique<ReadTransaction>(*connection_, "replay");
    if (tx_->exec1("SELECT to_regclass('agent_events') IS NULL")[0].as<bool>()) {
      throw ConfigError(
          "--pg database has no agent_events table: point --pg at the archive's database (run "
          "`agentwire archive --migrate` once to create it)");
    }
    const auto max_row = tx_->exec1(fmt::format(
        "SELECT max(partition) FROM agent_events WHERE topic = {}", tx_->quote(config_.topic)));
    max_partition_ = max_row[0].is_null() ? -1 : max_row[0].as<int32_t>();

    partition_count_ = config_.partition_count;
    // The archive records the count it saw (archive_topics): reading the archive needs no Kafka.
    if (partition_count_ == 0 &&
        !tx_->exec1("SELECT to_regclass('archive_topics') IS NULL")[0].as<bool>()) {
      const auto stored =
          tx_->exec(fmt::format("SELECT partition_count FROM archive_topics WHERE topic = {}",
                                tx_->quote(config_.topic)));
      if (!stored.empty()) partition_count_ = stored[0][0].as<int32_t>();
    }
    if (partition_count_ == 0) partition_count_ = PartitionCountFromKafka();
    if (partition_count_ == 0) {
      console_.Line(
          "replay: warning: partition count unknown (not recorded by the archive, Kafka not "
          "reachable, and no --partition-count): \"cursor\" is null in the output");
    }
    CheckCursorAgainstTopic(config_, partition_count_);
  }

  int32_t PartitionCount() const override { return partition_count_; }

  bool Run(const RecordSink& sink, std::stop_token stop) override {
    const auto& selection = config_.selection;
    std::vector<std::unique_ptr<PartitionReader>> readers;
    const bool keep_raw = !config_.republish_to.empty();
    for (int32_t partition = 0; partition <= max_partition_; ++partition) {
      if (selection.from_cursor &&
          static_cast<int32_t>(selection.from_cursor->partition) != partition) {
        continue;
      }
      const std::string name = fmt::format("replay_p{}", partition);
      tx_->exec(fmt::format("DECLARE {} NO SCROLL CURSOR FOR {}", name, Query(partition)));
      readers.push_back(std::make_unique<PostgresPartitionReader>(*tx_, partition, name, filter_,
                                                                  keep_raw, progress_));
    }
    return MergePartitions(readers, sink, stop);
  }

 private:
  // The SQL narrows with the indexed columns; the exact predicate (nanosecond times included)
  // is EventFilter's, the same as the Kafka source's.
  std::string Query(int32_t partition) const {
    const auto& s = config_.selection;
    std::string where =
        fmt::format("topic = {} AND partition = {}", tx_->quote(config_.topic), partition);
    if (!s.user_id.empty()) where += " AND user_id = " + tx_->quote(s.user_id);
    if (!s.run_id.empty()) where += " AND run_id = " + tx_->quote(s.run_id);
    if (!s.thread_id.empty()) where += " AND thread_id = " + tx_->quote(s.thread_id);
    if (!s.types.empty()) {
      std::string list;
      for (const auto& type : s.types) list += (list.empty() ? "" : ", ") + tx_->quote(type);
      where += " AND type IN (" + list + ")";
    }
    // One microsecond of margin each side: PostgreSQL rounds nanoseconds away.
    if (s.since) {
      where +=
          fmt::format(" AND emitted_at >= '{}'::timestamptz", SqlTime(ToNanos(*s.since) - 1000));
    }
    if (s.until) {
      where +=
          fmt::format(" AND emitted_at <= '{}'::timestamptz", SqlTime(ToNanos(*s.until) + 1000));
    }
    if (s.from_cursor) where += fmt::format(" AND \"offset\" >= {}", s.from_cursor->next_offset);
    return fmt::format(
        "SELECT partition, \"offset\", raw,"
        " (extract(epoch FROM emitted_at) * 1000000)::bigint"
        " FROM agent_events WHERE {} ORDER BY \"offset\"",
        where);
  }

  // Cursors printed from the archive must resume on the gateways, which know the live count.
  int32_t PartitionCountFromKafka() const {
    if (!config_.client_properties.contains("bootstrap.servers")) return 0;
    try {
      kafka::Properties properties = config_.client_properties;
      properties["client.id"] = "agentwire-replay-metadata";
      auto client = kafka::MakeClient(RD_KAFKA_PRODUCER, kafka::MakeConf(properties));
      return ExistingTopicPartitions(client.get(), config_.topic, "--topic",
                                     std::chrono::seconds(3));
    } catch (const std::exception&) {
      return 0;
    }
  }

  static std::string FirstLine(const std::string& text) {
    const auto end = text.find('\n');
    return end == std::string::npos ? text : text.substr(0, end);
  }

  const ReplayConfig& config_;
  Progress& progress_;
  Console& console_;
  EventFilter filter_;
  std::unique_ptr<pqxx::connection> connection_;
  std::unique_ptr<ReadTransaction> tx_;
  int32_t max_partition_ = -1;
  int32_t partition_count_ = 0;
};

}  // namespace

std::unique_ptr<Source> MakePostgresSource(const ReplayConfig& config, Progress& progress,
                                           Console& console) {
  return std::make_unique<PostgresSource>(config, progress, console);
}

}  // namespace agentwire::consumers::replay
