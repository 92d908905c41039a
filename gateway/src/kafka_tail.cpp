#include "kafka_tail.hpp"

#include <fmt/format.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/schemas/wire_reader.hpp"
#include "frames.hpp"

namespace agentwire::gateway {
namespace {

constexpr int kMetadataTimeoutMs = 10'000;

std::shared_ptr<const std::string> BuildEventFrame(const LogEntry& entry, std::string_view raw) {
  // Built in a reused buffer, then copied out at its exact size: a frame lives in the cache
  // for minutes, and a buffer reserved for the worst case would be a larger, slower allocation
  // (glibc's per-thread cache stops at 1 KiB) and hold its slack all that time.
  thread_local std::string scratch;
  scratch.clear();
  // Almost every record: printed straight from its wire bytes, never decoded into a message
  // (the decode was half of the frame's cost). The wire reader takes only records whose
  // routing fields ScanRoutingFields read alike (each field once), so the user is the entry's.
  if (TryAppendEventFrameFromWire(entry.cursor, raw, scratch)) {
    return std::make_shared<const std::string>(scratch);
  }
  // The rare record in another shape: decoded into a message, printed by the same writer.
  v1::AgentEvent event;
  if (!event.ParseFromArray(raw.data(), static_cast<int>(raw.size())) ||
      event.user_id() != entry.user_id) {
    // Routable on the wire but not a valid AgentEvent (e.g. a string that is not UTF-8):
    // nobody gets it, on every path alike.
    static log::RateLimited undecodable_log;
    undecodable_log.Warn(
        "record routable but not decodable; delivered to nobody",
        {{"partition", static_cast<int64_t>(entry.cursor.partition)}, {"offset", entry.offset}});
    return nullptr;
  }
  AppendEventFrame(entry.cursor, event, scratch);
  return std::make_shared<const std::string>(scratch);
}

// AgentFailed's error_code (field 1) off the wire; leaves `error_code` empty when malformed
// (the frame builder decides about the record as a whole).
void ScanFailedBody(std::string_view body, std::string_view& error_code) {
  schemas::WireReader reader(body);
  while (!reader.Done()) {
    uint32_t number = 0;
    uint32_t type = 0;
    if (!reader.Next(number, type)) return;
    if (type != schemas::WireReader::kLength) {
      if (type != schemas::WireReader::kVarint || !reader.Skip(type)) return;
      continue;  // AgentFailed has only strings
    }
    std::string_view bytes;
    if (!reader.Bytes(bytes)) return;
    if (number == 1) error_code = bytes;
  }
}

}  // namespace

bool ScanRoutingFields(std::string_view value, RoutingFields& fields) {
  schemas::WireReader reader(value);
  while (!reader.Done()) {
    uint32_t number = 0;
    uint32_t type = 0;
    if (!reader.Next(number, type)) return false;
    if (type != schemas::WireReader::kLength) {
      // Groups (3, 4) are not used by AgentEvent; 6 and 7 do not exist.
      if (!reader.Skip(type)) return false;
      continue;
    }
    // Strings, nested messages, maps. Like protobuf, the last occurrence of a singular field
    // wins.
    std::string_view bytes;
    if (!reader.Bytes(bytes)) return false;
    switch (number) {
      case 2:
        fields.user_id = bytes;
        break;
      case 3:
        fields.thread_id = bytes;
        break;
      case 4:
        fields.run_id = bytes;
        break;
      case 25:  // agent_failed: its error_code (1) says how the run ended
        fields.body_field = 25;
        fields.error_code = {};
        ScanFailedBody(bytes, fields.error_code);
        break;
      default:
        if (number >= 20 && number <= 29) fields.body_field = static_cast<int>(number);
        break;
    }
  }
  return true;
}

kafka::Properties TailConsumerProperties(const kafka::Properties& base,
                                         std::chrono::milliseconds fetch_wait) {
  kafka::Properties properties{
      // The embedded Kafka holds an empty fetch for the whole wait even when data arrives,
      // so this bounds delivery latency; on real Kafka it only costs a few more requests.
      {"fetch.wait.max.ms", std::to_string(fetch_wait.count())},
      {"fetch.error.backoff.ms", "50"},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"enable.partition.eof", "false"},
      // Never jump silently: an out-of-range read becomes an error we turn into `reset`.
      {"auto.offset.reset", "error"},
      {"client.id", "agentwire-gateway"},
      // librdkafka 2.0 refuses assign() without a group.id. The group is never joined
      // (no subscribe) and nothing is committed: a replica owns no offsets.
      {"group.id", "agentwire-gateway-unjoined"},
  };
  for (const auto& [key, value] : base) properties[key] = value;
  return properties;
}

LogEntryPtr MakeLogEntry(const TopicIdentity& identity, int partition, int64_t offset,
                         int64_t timestamp_ms, std::string_view key, std::string_view value,
                         EntryProblem* problem) {
  auto fail = [problem](EntryProblem why) -> LogEntryPtr {
    if (problem != nullptr) *problem = why;
    return nullptr;
  };
  if (problem != nullptr) *problem = EntryProblem::kNone;
  RoutingFields routing;
  if (!ScanRoutingFields(value, routing) || routing.user_id.empty()) {
    return fail(EntryProblem::kUndecodable);
  }
  if (routing.user_id != key) return fail(EntryProblem::kKeyMismatch);
  auto entry = std::make_shared<LogEntry>();
  entry->offset = offset;
  entry->timestamp_ms = timestamp_ms;
  entry->user_id = routing.user_id;
  entry->thread_id = routing.thread_id;
  entry->run_id = routing.run_id;
  entry->kind = static_cast<EventKind>(routing.body_field);
  entry->end = RunEndOf(entry->kind, routing.error_code);
  entry->cursor = identity.CursorAt(partition, offset + 1);
  // JSON spells out field names and escapes some bytes: about twice the record, plus the
  // envelope and cursor. Only the cache's byte budget uses the estimate.
  entry->SetLazyFrame(std::string(value), &BuildEventFrame, 2 * value.size() + 128);
  return entry;
}

KafkaTailer::KafkaTailer(kafka::Properties properties, TopicIdentity identity, PartitionHub& hub,
                         metrics::Registry& metrics, WarmStart warm, TailPolicy policy)
    : properties_(std::move(properties)),
      identity_(std::move(identity)),
      hub_(hub),
      consumed_(metrics.GetCounter("agentwire_gateway_kafka_messages_total",
                                   "Messages read from the topic")),
      retention_gaps_(metrics.GetCounter(
          "agentwire_gateway_retention_gaps_total",
          "Times retention deleted events of a partition before this replica read them "
          "(its sessions got reset)")),
      undecodable_(metrics.GetCounter("agentwire_gateway_undecodable_total",
                                      "Messages skipped because they are not AgentEvents")),
      key_mismatch_(metrics.GetCounter(
          "agentwire_gateway_key_mismatch_total",
          "Messages skipped because their key is not their user_id (delivered to nobody)")),
      registry_(metrics),
      wrong_partition_(static_cast<size_t>(std::max(0, identity_.partition_count)), nullptr),
      lag_(metrics.GetGauge("agentwire_gateway_consumer_lag",
                            "Messages between the high watermark and the tailer, all partitions")),
      warm_start_(warm),
      policy_(policy),
      tailed_gauge_(metrics.GetGauge("agentwire_gateway_tailed_partitions",
                                     "Partitions this replica reads now (all of them with --tail "
                                     "all; those its sessions need with --tail auto)")),
      warm_gauge_(metrics.GetGauge("agentwire_gateway_warm",
                                   "1 once the warm start filled the cache (or timed out)")) {}

KafkaTailer::~KafkaTailer() { Stop(); }

bool KafkaTailer::FindStart(int partition, int timeout_ms, int64_t& start, int64_t& high) {
  const auto marks =
      reader_->QueryWatermarks(partition, std::chrono::milliseconds(timeout_ms), &last_error_);
  if (!marks) return false;
  high = marks->high;
  start = std::max(marks->low, high - warm_start_.entries_per_partition);
  hub_.SetLogStart(partition, marks->low);
  return true;
}

void KafkaTailer::Start() {
  reader_ = std::make_unique<kafka::TopicReader>(properties_, identity_.topic);
  warm_targets_.assign(static_cast<size_t>(identity_.partition_count), -1);
  started_at_ = std::chrono::steady_clock::now();
  if (policy_.on_demand) {
    // No partition yet: the first session of each starts its tail. Nothing to warm up.
    hub_.SetTailRequestHook([reader = reader_.get()] { reader->Wake(); });
    log::Info("tailing on demand",
              {{"topic", identity_.topic},
               {"partitions", identity_.partition_count},
               {"warm_window_ms", static_cast<int64_t>(policy_.warm_window.count())}});
    thread_ = std::thread([this] { Run(); });
    return;
  }
  std::vector<kafka::PartitionStart> assignment;
  int64_t warm_total = 0;
  for (int p = 0; p < identity_.partition_count; ++p) {
    int64_t start = 0;
    int64_t high = 0;
    if (!FindStart(p, kMetadataTimeoutMs, start, high)) {
      throw KafkaError(fmt::format("watermarks of {} [{}]: {}. Hint: check --brokers",
                                   identity_.topic, p, last_error_),
                       true);
    }
    warm_targets_[static_cast<size_t>(p)] = high;
    warm_total += high - start;
    hub_.StartTail(p, start, high);
    assigned_.insert(p);
    assignment.push_back({p, start});
  }
  if (const auto error = reader_->Assign(assignment); !error.empty()) {
    throw KafkaError(fmt::format("assign {}: {}", identity_.topic, error), true);
  }
  tailed_gauge_.Set(static_cast<double>(assigned_.size()));
  log::Info("tailing topic", {{"topic", identity_.topic},
                              {"partitions", identity_.partition_count},
                              {"warm_start_messages", warm_total}});
  thread_ = std::thread([this] { Run(); });
}

void KafkaTailer::Stop() {
  stop_.store(true);
  hub_.SetTailRequestHook({});  // before the queue it yields goes
  if (thread_.joinable()) thread_.join();
  reader_.reset();
}

void KafkaTailer::StartRequestedTails() {
  for (const int p : hub_.TakeTailRequests()) requested_.insert(p);
  if (requested_.empty()) return;
  std::vector<kafka::PartitionStart> additions;
  struct Start {
    int partition;
    int64_t offset;
    int64_t high;
  };
  std::vector<Start> starts;
  for (const int p : requested_) {
    int64_t start = 0;
    int64_t high = 0;
    // Short: every other partition waits meanwhile; an unanswered one is retried.
    if (!FindStart(p, 2000, start, high)) continue;
    starts.push_back({p, start, high});
    additions.push_back({p, start});
  }
  if (starts.empty()) {
    static log::RateLimited unreachable_log;
    unreachable_log.Warn("cannot start tailing a partition yet; its sessions wait, retrying",
                         {{"topic", identity_.topic}, {"error", last_error_}});
    return;
  }
  if (const auto error = reader_->AddPartitions(additions); !error.empty()) {
    static log::RateLimited assign_log;
    assign_log.Warn("cannot add partitions to the tail yet; retrying",
                    {{"topic", identity_.topic}, {"error", error}});
    return;
  }
  // Registered after the assignment succeeded, and before this thread polls again: sessions
  // waiting for the partition learn their attach point before its first message.
  for (const auto& start : starts) {
    hub_.StartTail(start.partition, start.offset, start.high);
    assigned_.insert(start.partition);
    requested_.erase(start.partition);
    log::Info(
        "started tailing a partition",
        {{"topic", identity_.topic}, {"partition", start.partition}, {"offset", start.offset}});
  }
  tailed_gauge_.Set(static_cast<double>(assigned_.size()));
}

void KafkaTailer::StopIdleTails() {
  const auto idle = hub_.StopIdleTails(policy_.warm_window);
  if (idle.empty()) return;
  for (const int p : idle) {
    assigned_.erase(p);
    behind_retention_.erase(p);
    log::Info("stopped tailing an idle partition", {{"topic", identity_.topic}, {"partition", p}});
  }
  // Whatever was fetched for these before is dropped by the hub (not tailed), so a failure
  // here only costs fetches.
  if (const auto error = reader_->RemovePartitions(idle); !error.empty()) {
    log::Warn("cannot remove idle partitions from the tail",
              {{"topic", identity_.topic}, {"error", error}});
  }
  tailed_gauge_.Set(static_cast<double>(assigned_.size()));
}

void KafkaTailer::RecoverFromRetention() {
  // Where each partition with a gap starts now.
  std::map<int, int64_t> resume;
  for (const int partition : behind_retention_) {
    std::string error;
    const auto marks = reader_->QueryWatermarks(partition, std::chrono::seconds(5), &error);
    if (!marks) {
      log::Warn("cannot read the log start yet; retrying",
                {{"topic", identity_.topic}, {"partition", partition}, {"error", error}});
      continue;
    }
    // Never back before what was dispatched (that would hand sessions offsets twice).
    resume[partition] = std::max(marks->low, hub_.DispatchedEnd(partition));
  }
  if (resume.empty()) return;
  // A partition stopped by an out-of-range error cannot be seeked (librdkafka answers
  // _STATE), so the whole assignment is renewed: every other partition continues exactly
  // where dispatch stands (messages fetched but not yet dispatched are fetched again).
  std::vector<kafka::PartitionStart> assignment;
  for (const int p : assigned_) {
    const auto it = resume.find(p);
    assignment.push_back({p, it != resume.end() ? it->second : hub_.DispatchedEnd(p)});
  }
  if (const auto error = reader_->Assign(assignment); !error.empty()) {
    log::Warn("cannot renew the assignment past retention yet; retrying",
              {{"topic", identity_.topic}, {"error", error}});
    return;
  }
  for (const auto& [partition, offset] : resume) {
    const int64_t was_at = hub_.DispatchedEnd(partition);
    log::Warn("retention deleted events this replica had not delivered; sessions get reset",
              {{"topic", identity_.topic},
               {"partition", partition},
               {"offset", was_at},
               {"count", offset - was_at}});
    retention_gaps_.Inc();
    hub_.Gap(partition, offset);
    behind_retention_.erase(partition);
  }
}

void KafkaTailer::UpdateLag() {
  int64_t total = 0;
  bool known = true;
  for (const int p : assigned_) {
    // Cached from fetch responses: no request, no blocking.
    const auto marks = reader_->CachedWatermarks(p);
    if (!marks) {
      known = false;
      continue;
    }
    if (marks->low >= 0) hub_.SetLogStart(p, marks->low);
    const int64_t next = hub_.DispatchedEnd(p);
    total += std::max<int64_t>(0, marks->high - next);
  }
  lag_.Set(static_cast<double>(total));
  // A replica that falls far behind reports not-ready until it recovers.
  if (warm_.load()) ready_.store(known ? total < 10'000 : ready_.load());
}

void KafkaTailer::CheckWarm() {
  if (warm_.load()) return;
  bool reached = true;
  for (int p = 0; p < identity_.partition_count && reached; ++p) {
    const int64_t target = warm_targets_[static_cast<size_t>(p)];  // -1: none
    reached = target < 0 || hub_.DispatchedEnd(p) >= target;
  }
  const auto elapsed = std::chrono::steady_clock::now() - started_at_;
  if (!reached && elapsed < warm_start_.timeout) return;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  if (reached) {
    log::Info("warm start done: cache filled", {{"topic", identity_.topic},
                                                {"elapsed_ms", static_cast<int64_t>(ms)},
                                                {"messages", consumed_.Value()}});
  } else {
    log::Warn("warm start timed out; ready anyway (older cursors resume from Kafka)",
              {{"topic", identity_.topic}, {"elapsed_ms", static_cast<int64_t>(ms)}});
  }
  warm_.store(true);
  warm_gauge_.Set(1);
  // Offsets were fixed at assignment, so nothing published meanwhile can be missed.
  ready_.store(true);
}

void KafkaTailer::Run() {
  // Named, so per-thread CPU (top -H, perf, the ingest benchmark) tells it from the server's.
  pthread_setname_np(pthread_self(), "aw-tail");
  auto next_lag_check = std::chrono::steady_clock::now();
  auto next_warm_check = next_lag_check;
  auto next_idle_check = next_lag_check;
  auto next_tail_retry = next_lag_check;
  // Bounds the messages held at once (and the time until the loop's checks run again).
  constexpr size_t kMaxBatch = 256;
  std::vector<kafka::Record> records;
  records.reserve(kMaxBatch);
  while (!stop_.load()) {
    if (policy_.on_demand) {
      const auto now = std::chrono::steady_clock::now();
      // New requests at once; requests Kafka did not answer for, twice a second.
      if (hub_.HasTailRequests() || (!requested_.empty() && now >= next_tail_retry)) {
        StartRequestedTails();
        next_tail_retry = now + std::chrono::milliseconds(500);
      }
      if (now >= next_idle_check) {
        StopIdleTails();
        next_idle_check = now + std::chrono::seconds(1);
      }
    }
    // Waits for the first message only, then takes what is queued behind it. Waiting for a
    // full batch (rd_kafka_consume_batch_queue with a timeout) added the whole timeout to every
    // event's latency at a low rate (measured: p50 56 ms instead of 8 ms at 1,000 events/s).
    reader_->PollBatch(std::chrono::milliseconds(100), kMaxBatch, records);
    const auto now = std::chrono::steady_clock::now();
    if (!behind_retention_.empty()) RecoverFromRetention();
    if (!warm_.load() && now >= next_warm_check) {
      CheckWarm();
      next_warm_check = now + std::chrono::milliseconds(20);
    }
    if (now >= next_lag_check) {
      UpdateLag();
      next_lag_check = now + std::chrono::milliseconds(500);
    }
    for (const auto& record : records) Handle(record);
    records.clear();  // the messages go back to librdkafka before the next wait
  }
}

void KafkaTailer::CheckPartition(int partition, int64_t offset, std::string_view key) {
  const int expected = PartitionForKey(key, identity_.partition_count);
  if (expected == partition || partition < 0 ||
      static_cast<size_t>(partition) >= wrong_partition_.size()) {
    return;
  }
  // A producer that does not partition by murmur2 (librdkafka's and confluent_kafka's default
  // is CRC32): sessions and resumes read the user's partition by murmur2, so this record reaches
  // nobody. Counted here, where every record passes once; docs/operations.md says how to fix it.
  auto& counter = wrong_partition_[static_cast<size_t>(partition)];
  if (counter == nullptr) {
    counter = &registry_.GetCounter(
        "agentwire_gateway_wrong_partition_total",
        "Records whose key does not hash (murmur2) to the partition they are in: never delivered "
        "(fix the producer's partitioner; docs/operations.md)",
        {{"partition", std::to_string(partition)}});
  }
  counter->Inc();
  static log::RateLimited wrong_partition_log(std::chrono::seconds(10));
  wrong_partition_log.Warn(
      "record in the wrong partition for its key; no session will get it (set the producer's "
      "partitioner to murmur2_random)",
      {{"topic", identity_.topic},
       {"partition", partition},
       {"offset", offset},
       {"expected_partition", expected},
       {"user", std::string(key)}});
}

void KafkaTailer::Handle(const kafka::Record& record) {
  const int partition = record.Partition();
  if (const auto error = record.ErrorKind(); error != kafka::Record::Error::kNone) {
    if (error == kafka::Record::Error::kPartitionEnd) return;
    if (error == kafka::Record::Error::kOutOfRange && partition >= 0 &&
        partition < identity_.partition_count) {
      // Retention deleted messages this replica had not read yet. librdkafka stops fetching
      // the partition (auto.offset.reset=error): move on to the log's start, and tell the
      // partition's sessions with `reset` instead of skipping the lost events silently.
      behind_retention_.insert(partition);
    }
    static log::RateLimited consume_error_log;
    consume_error_log.Warn(
        "kafka consume error",
        {{"topic", identity_.topic}, {"partition", partition}, {"error", record.ErrorText()}});
    return;
  }
  consumed_.Inc();
  const int64_t offset = record.Offset();
  if (!record.Key().empty()) CheckPartition(partition, offset, record.Key());
  EntryProblem problem = EntryProblem::kNone;
  auto entry = MakeLogEntry(identity_, partition, offset, record.TimestampMs(), record.Key(),
                            record.Value(), &problem);
  if (!entry) {
    // Per message: rate-limited, the counters have the totals.
    static log::RateLimited undecodable_log;
    static log::RateLimited mismatch_log;
    const bool mismatch = problem == EntryProblem::kKeyMismatch;
    (mismatch ? key_mismatch_ : undecodable_).Inc();
    (mismatch ? mismatch_log : undecodable_log)
        .Warn(mismatch ? "skipping a message whose key is not its user_id"
                       : "skipping a message that is not an AgentEvent",
              {{"topic", identity_.topic}, {"partition", partition}, {"offset", offset}});
    hub_.Skip(partition, offset);
    return;
  }
  hub_.Dispatch(partition, entry);
}

}  // namespace agentwire::gateway
