#include "pg_batch_consumer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/logging.hpp"

namespace agentwire::consumers::internal {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kPollSlice = std::chrono::milliseconds(100);
constexpr int kSeekTimeoutMs = 10'000;

void RebalanceCallback(rd_kafka_t* consumer, rd_kafka_resp_err_t err,
                       rd_kafka_topic_partition_list_t* partitions, void* opaque) {
  // No exception may cross into librdkafka.
  try {
    static_cast<PgBatchConsumer*>(opaque)->OnRebalance(consumer, err, partitions);
  } catch (const std::exception& e) {
    log::Error("rebalance handling failed", {{"error", e.what()}});
  }
}

int32_t LockKey(const std::string& group, const std::string& topic) {
  // FNV-1a of "group/topic": the first key of pg_advisory_xact_lock(int, int); the partition
  // is the second.
  return static_cast<int32_t>(Fnv1a32(group + "/" + topic));
}

kafka::TopicPartitionListPtr PartitionList(const std::string& topic,
                                           const std::vector<int32_t>& partitions) {
  kafka::TopicPartitionListPtr list(
      rd_kafka_topic_partition_list_new(static_cast<int>(partitions.size())));
  for (const int32_t p : partitions)
    rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p);
  return list;
}

}  // namespace

bool IsConnectionError(const std::exception& error) {
  return dynamic_cast<const pqxx::broken_connection*>(&error) != nullptr ||
         dynamic_cast<const pqxx::in_doubt_error*>(&error) != nullptr ||
         dynamic_cast<const pqxx::insufficient_resources*>(&error) != nullptr ||
         // 57P01 admin_shutdown etc. arrive as sql_error with a class 57/08 SQLSTATE.
         [&] {
           const auto* sql = dynamic_cast<const pqxx::sql_error*>(&error);
           if (sql == nullptr) return false;
           const std::string state = sql->sqlstate();
           return state.rfind("08", 0) == 0 || state.rfind("57", 0) == 0 ||
                  state.rfind("53", 0) == 0 || state == "40001" || state == "40P01";
         }();
}

std::string RefusalState(const std::exception& error) {
  const auto* sql = dynamic_cast<const pqxx::sql_error*>(&error);
  if (sql == nullptr || IsConnectionError(error) || IsDataError(error)) return "";
  return sql->sqlstate().empty() ? "unknown" : sql->sqlstate();
}

bool IsDataError(const std::exception& error) {
  const auto* sql = dynamic_cast<const pqxx::sql_error*>(&error);
  if (sql == nullptr || IsConnectionError(error)) return false;
  // 22 data exception, 23 integrity constraint violation, 54 program limit exceeded: the data
  // of some message is at fault. Anything else (a missing column, a syntax error, permissions)
  // is the deployment's fault and must never turn good events into dead letters.
  const std::string state = sql->sqlstate();
  return state.rfind("22", 0) == 0 || state.rfind("23", 0) == 0 || state.rfind("54", 0) == 0;
}

std::string ByteaHex(const void* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.resize(2 + size * 2);
  out[0] = '\\';
  out[1] = 'x';
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    out[2 + 2 * i] = kDigits[bytes[i] >> 4];
    out[3 + 2 * i] = kDigits[bytes[i] & 0x0f];
  }
  return out;
}

std::string TimestampText(int64_t seconds, int32_t nanos) {
  const time_t t = static_cast<time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nanos / 1000);
}

std::string TimestampTextFromNanos(int64_t nanos) {
  int64_t seconds = nanos / 1'000'000'000;
  int64_t rest = nanos % 1'000'000'000;
  if (rest < 0) {
    rest += 1'000'000'000;
    --seconds;
  }
  return TimestampText(seconds, static_cast<int32_t>(rest));
}

PgBatchConsumer::PgBatchConsumer(BatchConsumerConfig config, BatchWriter& writer)
    : config_(std::move(config)),
      writer_(writer),
      backoff_(config_.min_backoff),
      lock_key_(LockKey(config_.group_id, config_.topic)),
      messages_(config_.registry->GetCounter(config_.metric_prefix + "_messages_total",
                                             "Kafka messages committed to PostgreSQL (rows, "
                                             "dead letters and skipped alike)")),
      batches_(config_.registry->GetCounter(config_.metric_prefix + "_batches_total",
                                            "Batches committed to PostgreSQL")),
      batch_seconds_(config_.registry->GetHistogram(
          config_.metric_prefix + "_batch_seconds",
          "Time to write and commit one batch (rows plus offsets)", metrics::LatencyBuckets())),
      pg_errors_(config_.registry->GetCounter(
          config_.metric_prefix + "_pg_errors_total",
          "PostgreSQL failures (connection lost, refused, transaction failed)")),
      retention_gap_(config_.registry->GetCounter(
          config_.metric_prefix + "_retention_gap_messages_total",
          "Messages deleted by Kafka retention before this group read them (never written)")),
      retention_holes_(config_.registry->GetCounter(
          config_.metric_prefix + "_retention_holes_total",
          "Offsets deleted by Kafka retention before this group wrote them: in neither Kafka nor "
          "PostgreSQL (counted once, by the commit that moves past them)")),
      fenced_(config_.registry->GetCounter(
          config_.metric_prefix + "_fenced_total",
          "Partitions left out of a batch because another owner had moved their stored offset")),
      lag_(config_.registry->GetGauge(
          config_.metric_prefix + "_consumer_lag",
          "Messages between the stored offsets and the high watermarks, over assigned partitions")),
      assigned_(config_.registry->GetGauge(config_.metric_prefix + "_assigned_partitions",
                                           "Partitions currently assigned to this process")) {}

PgBatchConsumer::~PgBatchConsumer() {
  ReportShare(lag_, reported_lag_, 0);
  ReportShare(assigned_, reported_assigned_, 0);
}

void PgBatchConsumer::Run(const std::stop_token& stop) {
  kafka::Properties properties = {
      {"group.id", config_.group_id},
      {"partition.assignment.strategy", "cooperative-sticky"},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"},
      {"enable.partition.eof", "false"},
      {"fetch.wait.max.ms", "100"},
      {"client.id", config_.metric_prefix},
      // How long a crashed member holds its partitions: the group waits that long for a member
      // that stopped heartbeating before it rebalances without it. librdkafka's default (45 s)
      // made a crash loop of the archive stop archiving for minutes (each dead member of each
      // killed process is waited for). Heartbeats come from librdkafka's own thread, not from
      // the batch loop, so a slow PostgreSQL commit never misses one: only a dead, frozen or
      // cut-off process does. 10 s is above the brokers' group.min.session.timeout.ms (6 s)
      // with three heartbeats per session, and a restart (static membership below) comes back
      // well within it. docs/operations.md "Crashes, restarts and the consumer group".
      {"session.timeout.ms", std::to_string(kSessionTimeout.count())},
      {"heartbeat.interval.ms", std::to_string(kHeartbeatInterval.count())},
  };
  if (!config_.group_instance_id.empty()) {
    // Static membership (KIP-345): a process restarted with the same ids gets its partitions
    // back from the broker at once, without a rebalance and without waiting for the session
    // of its dead predecessor. The embedded Kafka (librdkafka's mock cluster) ignores it.
    properties["group.instance.id"] = config_.group_instance_id;
  }
  for (const auto& [key, value] : config_.client_properties) properties[key] = value;
  auto conf = kafka::MakeConf(properties);
  rd_kafka_conf_set_rebalance_cb(conf.get(), RebalanceCallback);
  rd_kafka_conf_set_opaque(conf.get(), this);
  consumer_ = kafka::MakeClient(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(consumer_.get());

  // A typo in --topic must fail now with one clear line, not subscribe to nothing forever. (An
  // unreachable cluster is not a reason to exit: the consumer waits for it like for
  // PostgreSQL.)
  try {
    if (!kafka::FindPartitionCount(consumer_.get(), config_.topic, std::chrono::seconds(10))) {
      throw ConfigError(
          fmt::format("--topic {}: {}", config_.topic, kafka::MissingTopicText(config_.topic)));
    }
  } catch (const KafkaError& e) {
    log::Warn("cannot check the topic yet", {{"topic", config_.topic}, {"error", e.what()}});
  }

  if (!Connect()) MarkPostgresDown("initial connection failed");

  auto topics = PartitionList(config_.topic, {RD_KAFKA_PARTITION_UA});
  if (const auto err = rd_kafka_subscribe(consumer_.get(), topics.get()); err) {
    throw KafkaError(fmt::format("subscribe to {}: {}", config_.topic, kafka::ErrorText(err)),
                     false);
  }
  log::Info(
      "consumer started",
      {{"topic", config_.topic},
       {"group", config_.group_id},
       {"instance", config_.group_instance_id},
       {"session_timeout_ms", static_cast<int64_t>(std::stoll(properties["session.timeout.ms"]))}});

  while (!stop.stop_requested()) {
    bool positions_needed = false;
    for (const auto& [p, state] : partitions_) positions_needed |= state.needs_position;
    if (postgres_down_ || positions_needed) Recover();
    if (partition_count_stale_) RefreshPartitionCount();
    ready_.store(!postgres_down_ && connection_ != nullptr, std::memory_order_relaxed);

    auto timeout = kPollSlice;
    if (!batch_.empty()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(batch_deadline_ - Clock::now());
      timeout = std::clamp(left, std::chrono::milliseconds(0), kPollSlice);
    }
    kafka::MessagePtr message(
        rd_kafka_consumer_poll(consumer_.get(), static_cast<int>(timeout.count())));
    if (message) {
      if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        // not an error
      } else if (message->err == RD_KAFKA_RESP_ERR__FATAL) {
        ThrowFatal();
      } else if (message->err) {
        log::Warn("consumer error", {{"topic", config_.topic},
                                     {"partition", message->partition},
                                     {"error", kafka::ErrorText(message->err)}});
      } else {
        const auto found = partitions_.find(message->partition);
        // A message of a partition waiting to be re-positioned was fetched before the pause:
        // it is read again after the seek.
        if (found != partitions_.end() && !found->second.needs_position) {
          if (batch_.empty()) batch_deadline_ = Clock::now() + config_.batch_time;
          batch_.push_back(std::move(message));
        }
      }
    }
    if (batch_.size() >= config_.batch_size ||
        (!batch_.empty() && Clock::now() >= batch_deadline_)) {
      Flush();
    }
  }

  log::Info("consumer stopping", {{"topic", config_.topic}, {"count", batch_.size()}});
  if (!batch_.empty() && !postgres_down_) Flush();
  batch_.clear();
  ready_.store(false);
  WaitForFirstAssignment();
  rd_kafka_consumer_close(consumer_.get());
  consumer_.reset();
  connection_.reset();
  partitions_.clear();
  PublishPositions();
}

void PgBatchConsumer::ThrowFatal() {
  char text[512] = "";
  const rd_kafka_resp_err_t err = rd_kafka_fatal_error(consumer_.get(), text, sizeof(text));
  std::string hint;
  if (err == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID) {
    // Two processes with one group.instance.id fence each other in turn: the broker hands the
    // id to the newest and this one can never consume again.
    hint = fmt::format(
        ". Hint: another process of group {} uses group.instance.id {} (the same --instance-id "
        "/ AGENTWIRE_INSTANCE_ID on another host): give each process its own",
        config_.group_id, config_.group_instance_id);
  }
  throw KafkaError(fmt::format("consumer of {}: fatal Kafka error: {}{}", config_.topic,
                               *text != 0 ? text : kafka::ErrorText(err), hint),
                   false);
}

void PgBatchConsumer::WaitForFirstAssignment() {
  // librdkafka 2.0's cooperative-sticky assignor aborts the process (assertion `assignor_state'
  // in rd_kafka_sticky_assignor_state_destroy) when a consumer is destroyed before its first
  // assignment; fixed in librdkafka 2.3 (librdkafka#4312). A SIGTERM during the group's first
  // rebalance hit it, more often with several writers, whose joins make that rebalance longer.
  // The first assignment comes with the rebalance, empty or not: wait for it, bounded. What is
  // polled meanwhile is dropped unwritten (the stored offsets, not Kafka's, say where to
  // resume).
  constexpr auto kWait = std::chrono::seconds(15);
  const auto deadline = Clock::now() + kWait;
  if (!assigned_once_) {
    log::Info("waiting for the group's first assignment before leaving it",
              {{"topic", config_.topic}});
  }
  while (!assigned_once_ && Clock::now() < deadline) {
    const kafka::MessagePtr ignored(rd_kafka_consumer_poll(consumer_.get(), 100));
  }
}

/// Adds to `holes` the offsets one partition's batch skips: between the stored position and its
/// first message, and between consecutive messages. Positioned at a stored offset that
/// retention has since deleted, or overtaken by retention while behind, the consumer goes on
/// from the oldest retained message (auto.offset.reset=earliest): what lies between is in
/// neither Kafka nor PostgreSQL. Counted at the commit that moves the stored offset past it, not
/// when read: a batch rolled back (PostgreSQL down, refused, fenced, revoked) is read again and
/// would count its hole again, while the fenced commit across a hole happens once per group.
/// Assumes a partition's offsets are dense, as the idempotent, non-transactional producers
/// agentwire supports write them (a transaction's commit marker would count as a hole of 1).
void PgBatchConsumer::FindHoles(std::optional<int64_t> stored,
                                const std::vector<const rd_kafka_message_t*>& messages,
                                std::vector<Hole>& holes) {
  if (messages.empty()) return;
  // No stored offset: the group's first read of the partition, which starts wherever the log
  // starts; nothing the group had to write is missing.
  int64_t expected = stored.value_or(messages.front()->offset);
  for (const auto* message : messages) {
    if (message->offset > expected) {
      holes.push_back({message->partition, expected, message->offset - expected});
    }
    expected = message->offset + 1;
  }
}

void PgBatchConsumer::ReportHoles(const std::vector<Hole>& holes) {
  for (const auto& hole : holes) {
    retention_gap_.Inc(static_cast<uint64_t>(hole.count));
    retention_holes_.Inc(static_cast<uint64_t>(hole.count));
    log::Error(
        "messages deleted by Kafka retention before this group read them: they are not in "
        "PostgreSQL (the consumer was down or behind for longer than the topic's retention)",
        {{"topic", config_.topic},
         {"partition", hole.partition},
         {"offset", hole.first},
         {"count", hole.count}});
  }
}

std::map<int32_t, int64_t> PgBatchConsumer::OwnedPositions() const {
  std::lock_guard lock(positions_mutex_);
  return positions_;
}

void PgBatchConsumer::PublishPositions() {
  std::map<int32_t, int64_t> positions;
  for (const auto& [p, state] : partitions_) {
    if (state.stored) positions.emplace(p, *state.stored);
  }
  std::lock_guard lock(positions_mutex_);
  positions_.swap(positions);
}

void PgBatchConsumer::RefreshPartitionCount() {
  partition_count_stale_ = false;
  try {
    partition_count_ =
        kafka::FindPartitionCount(consumer_.get(), config_.topic, std::chrono::seconds(5))
            .value_or(0);
  } catch (const std::exception& e) {
    log::Warn("cannot read the topic's partition count",
              {{"topic", config_.topic}, {"error", e.what()}});
  }
}

void PgBatchConsumer::OnRebalance(rd_kafka_t* consumer, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t* partitions) {
  const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(consumer)) == "COOPERATIVE";
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    assigned_once_ = true;
    partition_count_stale_ = true;  // partitions may have been added
    std::vector<int32_t> assigned;
    assigned.reserve(partitions->cnt);
    for (int i = 0; i < partitions->cnt; ++i) assigned.push_back(partitions->elems[i].partition);
    bool positioned = false;
    if (!postgres_down_ && connection_) {
      try {
        pqxx::nontransaction tx(*connection_);
        const auto stored = LoadStoredOffsets(tx);
        for (int i = 0; i < partitions->cnt; ++i) {
          auto& element = partitions->elems[i];
          const auto found = stored.find(element.partition);
          PartitionState state;
          state.needs_position = false;
          if (found != stored.end()) state.stored = found->second;
          element.offset = state.stored.value_or(RD_KAFKA_OFFSET_BEGINNING);
          partitions_[element.partition] = state;
        }
        positioned = true;
      } catch (const std::exception& e) {
        refusal_ = RefusalState(e);
        MarkPostgresDown(e.what());
      }
    }
    if (!positioned) {
      for (const int32_t p : assigned) partitions_[p] = PartitionState{};
    }
    kafka::ErrorPtr error;
    if (cooperative) {
      error.reset(rd_kafka_incremental_assign(consumer, partitions));
    } else {
      // An eager protocol (set with --kafka) hands over the whole assignment each time.
      rd_kafka_assign(consumer, partitions);
    }
    if (error) {
      log::Error("incremental assign failed", {{"error", rd_kafka_error_string(error.get())}});
    }
    if (!positioned) Pause(assigned);
    log::Info("partitions assigned", {{"topic", config_.topic},
                                      {"count", static_cast<uint64_t>(assigned.size())},
                                      {"positioned", positioned}});
  } else {
    // Revoked (or lost): write what we hold for them first, when we still can, so the next
    // owner starts where we stopped; then forget them.
    const bool lost = rd_kafka_assignment_lost(consumer) != 0;
    if (!batch_.empty() && !postgres_down_ && !lost) Flush();
    std::vector<int32_t> revoked;
    revoked.reserve(partitions->cnt);
    for (int i = 0; i < partitions->cnt; ++i) revoked.push_back(partitions->elems[i].partition);
    for (const int32_t p : revoked) partitions_.erase(p);
    std::erase_if(batch_, [&](const kafka::MessagePtr& m) {
      return std::find(revoked.begin(), revoked.end(), m->partition) != revoked.end();
    });
    if (cooperative) {
      if (const kafka::ErrorPtr error{rd_kafka_incremental_unassign(consumer, partitions)}) {
        log::Error("incremental unassign failed", {{"error", rd_kafka_error_string(error.get())}});
      }
    } else {
      rd_kafka_assign(consumer, nullptr);
      partitions_.clear();
      batch_.clear();
    }
    log::Info(lost ? "partitions lost" : "partitions revoked",
              {{"topic", config_.topic}, {"count", static_cast<uint64_t>(revoked.size())}});
  }
  ReportShare(assigned_, reported_assigned_, static_cast<double>(partitions_.size()));
  PublishPositions();
}

std::map<int32_t, int64_t> PgBatchConsumer::LoadStoredOffsets(pqxx::transaction_base& tx) {
  std::map<int32_t, int64_t> stored;
  const auto rows = tx.exec_params(
      "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
      config_.group_id, config_.topic);
  for (const auto& row : rows) stored[row[0].as<int32_t>()] = row[1].as<int64_t>();
  return stored;
}

bool PgBatchConsumer::Connect() {
  try {
    connection_ = std::make_unique<pqxx::connection>(config_.dsn);
    writer_.OnConnect(*connection_);
    return true;
  } catch (const std::exception& e) {
    connection_.reset();
    refusal_ = RefusalState(e);
    if (refusal_.empty()) {
      log::Warn("cannot connect to PostgreSQL", {{"error", e.what()}});
    } else {
      log::Warn("PostgreSQL refused the consumer's set-up statements (schema or permission)",
                {{"sqlstate", refusal_}, {"error", e.what()}});
    }
    return false;
  }
}

void PgBatchConsumer::Pause(const std::vector<int32_t>& partitions) {
  if (partitions.empty() || !consumer_) return;
  auto list = PartitionList(config_.topic, partitions);
  rd_kafka_pause_partitions(consumer_.get(), list.get());
}

void PgBatchConsumer::MarkPostgresDown(const std::string& error) {
  pg_errors_.Inc();
  if (!not_committed_.empty()) {
    // Logged every time: each retry is a batch that could not be committed.
    log::Error("batch not committed: pausing consumption and retrying with backoff",
               {{"topic", config_.topic}, {"error", not_committed_}});
  } else if (!postgres_down_) {
    if (!refusal_.empty()) {
      // Reachable, but the statement was refused: a missing table or column, a permission. No
      // use saying "unavailable": the operator must change the schema or the grants.
      log::Error(
          "PostgreSQL refused the consumer's statements (schema or permission problem, not an "
          "outage): pausing consumption and retrying with backoff; nothing is skipped. Hint: run "
          "with --migrate, or grant the role SELECT/INSERT/UPDATE on the agentwire tables",
          {{"topic", config_.topic}, {"sqlstate", refusal_}, {"error", error}});
    } else {
      log::Error("PostgreSQL unavailable: pausing consumption until it is back",
                 {{"topic", config_.topic}, {"error", error}});
    }
  }
  refusal_.clear();
  not_committed_.clear();
  postgres_down_ = true;
  ready_.store(false);
  connection_.reset();
  batch_.clear();  // re-read after the re-seek to the stored offsets
  writer_.AfterAbort();
  std::vector<int32_t> all;
  for (auto& [p, state] : partitions_) {
    state.needs_position = true;
    all.push_back(p);
  }
  Pause(all);
  next_attempt_ = Clock::now() + backoff_;
  backoff_ = std::min(backoff_ * 2, config_.max_backoff);
}

void PgBatchConsumer::Recover() {
  if (Clock::now() < next_attempt_) return;
  if (!connection_ && !Connect()) {
    pg_errors_.Inc();
    next_attempt_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, config_.max_backoff);
    return;
  }
  std::map<int32_t, int64_t> stored;
  try {
    pqxx::nontransaction tx(*connection_);
    stored = LoadStoredOffsets(tx);
  } catch (const std::exception& e) {
    connection_.reset();
    refusal_ = RefusalState(e);
    MarkPostgresDown(e.what());
    return;
  }
  if (postgres_down_) log::Info("PostgreSQL is back: resuming from the stored offsets");
  postgres_down_ = false;
  backoff_ = config_.min_backoff;

  std::vector<int32_t> waiting;
  for (const auto& [p, state] : partitions_) {
    if (state.needs_position) waiting.push_back(p);
  }
  if (waiting.empty()) return;
  auto list = PartitionList(config_.topic, waiting);
  for (int i = 0; i < list->cnt; ++i) {
    auto& element = list->elems[i];
    const auto found = stored.find(element.partition);
    element.offset = found != stored.end() ? found->second : RD_KAFKA_OFFSET_BEGINNING;
  }
  // Resume first, then seek: the seek discards anything fetched from the old position.
  rd_kafka_resume_partitions(consumer_.get(), list.get());
  if (const kafka::ErrorPtr error{
          rd_kafka_seek_partitions(consumer_.get(), list.get(), kSeekTimeoutMs)}) {
    log::Warn("seek failed; will retry", {{"error", rd_kafka_error_string(error.get())}});
    Pause(waiting);
    next_attempt_ = Clock::now() + config_.min_backoff;
    return;
  }
  std::vector<int32_t> failed;
  for (int i = 0; i < list->cnt; ++i) {
    const auto& element = list->elems[i];
    auto& state = partitions_[element.partition];
    if (element.err) {
      failed.push_back(element.partition);
      continue;
    }
    const auto found = stored.find(element.partition);
    state.stored = found != stored.end() ? std::optional<int64_t>(found->second) : std::nullopt;
    state.needs_position = false;
  }
  PublishPositions();
  if (!failed.empty()) {
    Pause(failed);
    next_attempt_ = Clock::now() + config_.min_backoff;
  }
  UpdateLag();
}

void PgBatchConsumer::Flush() {
  if (batch_.empty()) return;
  if (postgres_down_ || !connection_) {
    MarkPostgresDown("no connection");
    return;
  }
  const auto started = Clock::now();
  std::string error;
  Outcome outcome = WriteBatch(/*one_by_one=*/false, error);
  if (outcome == Outcome::kDataError) {
    log::Warn("PostgreSQL refused the batch; retrying it one message at a time",
              {{"topic", config_.topic}, {"error", error}});
    pg_errors_.Inc();
    outcome = WriteBatch(/*one_by_one=*/true, error);
  }
  if (outcome != Outcome::kCommitted) {
    MarkPostgresDown(error);
    return;
  }
  batch_seconds_.Observe(std::chrono::duration<double>(Clock::now() - started).count());
  batches_.Inc();
  batch_.clear();
  UpdateLag();
}

PgBatchConsumer::Outcome PgBatchConsumer::WriteBatch(bool one_by_one, std::string& error) {
  // Group by partition, keeping each partition's offset order.
  std::map<int32_t, std::vector<const rd_kafka_message_t*>> by_partition;
  for (const auto& message : batch_) by_partition[message->partition].push_back(message.get());

  std::vector<const rd_kafka_message_t*> accepted;
  std::vector<std::pair<int32_t, int64_t>> next_offsets;
  std::vector<int32_t> fenced;
  std::vector<Hole> holes;
  try {
    pqxx::work tx(*connection_);
    for (const auto& [partition, messages] : by_partition) {
      tx.exec_params("SELECT pg_advisory_xact_lock($1, $2)", lock_key_, partition);
      const auto row = tx.exec_params(
          "SELECT next_offset FROM consumer_offsets"
          " WHERE group_id = $1 AND topic = $2 AND partition = $3",
          config_.group_id, config_.topic, partition);
      const std::optional<int64_t> stored =
          row.empty() ? std::nullopt : std::optional<int64_t>(row[0][0].as<int64_t>());
      if (stored != partitions_[partition].stored) {
        fenced.push_back(partition);
        continue;
      }
      accepted.insert(accepted.end(), messages.begin(), messages.end());
      next_offsets.emplace_back(partition, messages.back()->offset + 1);
      FindHoles(stored, messages, holes);
    }
    if (!accepted.empty()) {
      if (!one_by_one) {
        writer_.Write(tx, accepted);
      } else {
        for (const auto* message : accepted) {
          try {
            pqxx::subtransaction one(tx, "message");
            writer_.Write(one, {message});
            one.commit();
          } catch (const pqxx::sql_error& e) {
            if (!IsDataError(e)) throw;
            log::Warn("PostgreSQL refused one message", {{"topic", config_.topic},
                                                         {"partition", message->partition},
                                                         {"offset", message->offset},
                                                         {"error", e.what()}});
            writer_.WriteRejected(tx, message, fmt::format("postgres rejected: {}", e.what()));
          }
        }
      }
    }
    for (const auto& [partition, next] : next_offsets) {
      // Never backwards: the fence above makes this hold already; the condition keeps it true
      // even if the fence is ever weakened.
      const auto updated = tx.exec_params(
          "INSERT INTO consumer_offsets AS o (group_id, topic, partition, next_offset)"
          " VALUES ($1, $2, $3, $4)"
          " ON CONFLICT (group_id, topic, partition) DO UPDATE"
          " SET next_offset = EXCLUDED.next_offset, updated_at = now()"
          " WHERE o.next_offset < EXCLUDED.next_offset",
          config_.group_id, config_.topic, partition, next);
      if (updated.affected_rows() != 1) {
        throw std::logic_error(
            fmt::format("offset of partition {} would move backwards to {}", partition, next));
      }
    }
    writer_.BeforeCommit();
    tx.commit();
  } catch (const std::exception& e) {
    writer_.AfterAbort();
    error = e.what();
    refusal_ = RefusalState(e);
    if (dynamic_cast<const BatchNotCommitted*>(&e) != nullptr) not_committed_ = e.what();
    const bool data_error = IsDataError(e) && !one_by_one;
    return data_error ? Outcome::kDataError : Outcome::kConnectionLost;
  }
  writer_.AfterCommit();
  messages_.Inc(accepted.size());
  ReportHoles(holes);

  for (const auto& [partition, next] : next_offsets) partitions_[partition].stored = next;
  PublishPositions();
  if (!next_offsets.empty()) {
    // Informational copy for Kafka tooling (lag dashboards); PostgreSQL stays the truth.
    kafka::TopicPartitionListPtr list(
        rd_kafka_topic_partition_list_new(static_cast<int>(next_offsets.size())));
    for (const auto& [partition, next] : next_offsets) {
      rd_kafka_topic_partition_list_add(list.get(), config_.topic.c_str(), partition)->offset =
          next;
    }
    rd_kafka_commit(consumer_.get(), list.get(), /*async=*/1);
  }
  if (!fenced.empty()) {
    fenced_.Inc(fenced.size());
    log::Warn("stored offsets moved by another consumer: re-reading those partitions",
              {{"topic", config_.topic}, {"count", static_cast<uint64_t>(fenced.size())}});
    for (const int32_t p : fenced) partitions_[p].needs_position = true;
    Pause(fenced);
  }
  return Outcome::kCommitted;
}

void PgBatchConsumer::UpdateLag() {
  int64_t lag = 0;
  for (const auto& [p, state] : partitions_) {
    int64_t low = 0;
    int64_t high = 0;
    if (rd_kafka_get_watermark_offsets(consumer_.get(), config_.topic.c_str(), p, &low, &high) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        high < 0) {
      continue;
    }
    lag += std::max<int64_t>(0, high - std::max(low, state.stored.value_or(low)));
  }
  ReportShare(lag_, reported_lag_, static_cast<double>(lag));
}

}  // namespace agentwire::consumers::internal
