// The archive side of `agentwire replay` (the postgres source, and the auto source's part below
// Kafka's log start): reads agent_events (written by `agentwire archive`, see
// infra/sql/0001_agent_events.sql) for ranges beyond Kafka's retention. Each partition is read
// through its own server-side cursor in offset order and the partitions go through the same
// merge as the Kafka source; events are decoded from the archived message bytes (`raw`) and
// filtered by the same predicate, so both sources print the same lines for the same events.
// (The archive does not keep the Kafka message timestamp: "timestamp" is null in this source's
// JSON lines.)

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

class PostgresArchiveTable final : public ArchiveTable {
 public:
  PostgresArchiveTable(const ReplayConfig& config, Progress& progress)
      : config_(config), progress_(progress), filter_(config.selection) {}

  void Open() {
    try {
      connection_ = std::make_unique<pqxx::connection>(config_.pg_dsn);
    } catch (const pqxx::broken_connection& e) {
      throw std::runtime_error(fmt::format(
          "cannot connect to PostgreSQL (--pg / AGENTWIRE_PG_DSN): {}", FirstLine(e.what())));
    } catch (const std::exception& e) {
      throw ConfigError(fmt::format("--pg / AGENTWIRE_PG_DSN: {}", FirstLine(e.what())));
    }
    tx_ = std::make_unique<ReadTransaction>(*connection_, "replay");
    if (!TableExists("agent_events")) {
      throw ConfigError(
          "--pg database has no agent_events table: point --pg at the archive's database (run "
          "`agentwire archive --migrate` once to create it)");
    }
  }

  int32_t MaxPartition() override {
    const auto row = tx_->exec1(fmt::format(
        "SELECT max(partition) FROM agent_events WHERE topic = {}", tx_->quote(config_.topic)));
    return row[0].is_null() ? -1 : row[0].as<int32_t>();
  }

  int32_t RecordedPartitionCount() override {
    if (!TableExists("archive_topics")) return 0;
    const auto stored = tx_->exec(fmt::format(
        "SELECT partition_count FROM archive_topics WHERE topic = {}", tx_->quote(config_.topic)));
    return stored.empty() ? 0 : stored[0][0].as<int32_t>();
  }

  std::unordered_map<int32_t, int64_t> CommittedOffsets(const std::string& group) override {
    std::unordered_map<int32_t, int64_t> offsets;
    if (!TableExists("consumer_offsets")) return offsets;
    const auto rows = tx_->exec(fmt::format(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = {} AND topic = {}",
        tx_->quote(group), tx_->quote(config_.topic)));
    for (const auto& row : rows) offsets[row[0].as<int32_t>()] = row[1].as<int64_t>();
    return offsets;
  }

  std::unique_ptr<PartitionReader> MakeReader(int32_t partition, int64_t from,
                                              std::optional<int64_t> to) override {
    // One name per reader: the auto source may read a partition's rows in several ranges.
    const std::string name = fmt::format("replay_p{}_{}", partition, readers_made_++);
    tx_->exec(fmt::format("DECLARE {} NO SCROLL CURSOR FOR {}", name, Query(partition, from, to)));
    return std::make_unique<PostgresPartitionReader>(*tx_, partition, name, filter_,
                                                     !config_.republish_to.empty(), progress_);
  }

 private:
  bool TableExists(const std::string& table) {
    return !tx_->exec1(fmt::format("SELECT to_regclass({}) IS NULL", tx_->quote(table)))[0]
                .as<bool>();
  }

  // The SQL narrows with the indexed columns; the exact predicate (nanosecond times included)
  // is EventFilter's, the same as the Kafka source's.
  std::string Query(int32_t partition, int64_t from, std::optional<int64_t> to) const {
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
    if (from > 0) where += fmt::format(" AND \"offset\" >= {}", from);
    if (to) where += fmt::format(" AND \"offset\" < {}", *to);
    return fmt::format(
        "SELECT partition, \"offset\", raw,"
        " (extract(epoch FROM emitted_at) * 1000000)::bigint"
        " FROM agent_events WHERE {} ORDER BY \"offset\"",
        where);
  }

  static std::string FirstLine(const std::string& text) {
    const auto end = text.find('\n');
    return end == std::string::npos ? text : text.substr(0, end);
  }

  const ReplayConfig& config_;
  Progress& progress_;
  EventFilter filter_;
  std::unique_ptr<pqxx::connection> connection_;
  std::unique_ptr<ReadTransaction> tx_;
  int readers_made_ = 0;
};

class PostgresSource final : public Source {
 public:
  PostgresSource(const ReplayConfig& config, Progress& progress, Console& console)
      : config_(config), progress_(progress), console_(console) {}

  void Open() override {
    archive_ = OpenArchiveTable(config_, progress_);
    max_partition_ = archive_->MaxPartition();
    partition_count_ = config_.partition_count;
    // The archive records the count it saw (archive_topics): reading the archive needs no Kafka.
    if (partition_count_ == 0) partition_count_ = archive_->RecordedPartitionCount();
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
    const auto& cursor = config_.selection.from_cursor;
    std::vector<std::unique_ptr<PartitionReader>> readers;
    for (int32_t partition = 0; partition <= max_partition_; ++partition) {
      if (cursor && static_cast<int32_t>(cursor->partition) != partition) continue;
      readers.push_back(
          archive_->MakeReader(partition, cursor ? cursor->next_offset : 0, std::nullopt));
    }
    return MergePartitions(readers, sink, stop);
  }

 private:
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

  const ReplayConfig& config_;
  Progress& progress_;
  Console& console_;
  std::unique_ptr<ArchiveTable> archive_;
  int32_t max_partition_ = -1;
  int32_t partition_count_ = 0;
};

}  // namespace

std::unique_ptr<ArchiveTable> OpenArchiveTable(const ReplayConfig& config, Progress& progress) {
  auto table = std::make_unique<PostgresArchiveTable>(config, progress);
  table->Open();
  return table;
}

std::unique_ptr<Source> MakePostgresSource(const ReplayConfig& config, Progress& progress,
                                           Console& console) {
  return std::make_unique<PostgresSource>(config, progress, console);
}

}  // namespace agentwire::consumers::replay
