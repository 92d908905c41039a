// The Kafka side of `agentwire replay` (the kafka source, and the auto source's part above the
// log start): manual per-partition reads (librdkafka's simple consumer API: no consumer group,
// nothing ever committed), start offsets from the cursor and from time lookups, end offsets from
// the high watermarks seen at start.

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <array>
#include <thread>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/logging.hpp"
#include "event_time.hpp"
#include "replay_internal.hpp"

namespace agentwire::consumers::replay {
namespace {

using kafka::TopicPtr;

constexpr auto kMetadataTimeout = std::chrono::seconds(10);
constexpr int kBatch = 500;
constexpr int kPollMs = 100;

// Replay reads; it never stores, commits or joins anything (no group.id: there is no group to
// commit to, and offsets are never stored).
kafka::Properties ReaderProperties(const ReplayConfig& config, size_t partitions, bool probe) {
  kafka::Properties properties = {
      {"client.id", probe ? "agentwire-replay-seek" : "agentwire-replay"},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"},
      {"enable.partition.eof", "true"},
      // Short: an empty fetch on the embedded Kafka waits the whole time (matters at the end
      // of a partition and with --follow).
      {"fetch.wait.max.ms", "10"},
  };
  if (probe) {
    // A probe needs one message: small fetches. (Not a small queued.min.messages: librdkafka
    // 2.0 backs a partition off for a whole second once its queue holds that many, which made
    // every probe after the first wait a second.)
    properties["max.partition.fetch.bytes"] = "65536";
  } else {
    // The simple consumer's prefetch limit is per partition: keep the total near 256 MiB.
    const size_t per_partition_kb =
        std::clamp<size_t>(262'144 / std::max<size_t>(partitions, 1), 1024, 65'536);
    properties["queued.max.messages.kbytes"] = std::to_string(per_partition_kb);
    properties["max.partition.fetch.bytes"] = "4194304";
    properties["fetch.max.bytes"] = "52428800";
  }
  for (const auto& [key, value] : config.client_properties) properties[key] = value;
  return properties;
}

bool Decode(const rd_kafka_message_t& message, const EventFilter& filter, bool keep_raw,
            Progress& progress, Record& record) {
  const std::string_view key(static_cast<const char*>(message.key), message.key_len);
  if (!filter.MatchesKey(key)) return false;
  if (!record.event.ParseFromArray(message.payload, static_cast<int>(message.len)) ||
      record.event.user_id().empty()) {
    progress.undecodable.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (!filter.Matches(record.event)) return false;
  rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  record.timestamp_ms = rd_kafka_message_timestamp(&message, &type);
  record.time_replaced = false;
  record.time_ns =
      internal::EventTimeNanos(record.event, record.timestamp_ms, &record.time_replaced)
          .value_or(0);
  if (!filter.MatchesTime(record.time_ns)) return false;
  if (record.time_replaced) progress.times_replaced.fetch_add(1, std::memory_order_relaxed);
  record.partition = message.partition;
  record.offset = message.offset;
  record.key.assign(key);
  if (keep_raw) {
    record.value.assign(static_cast<const char*>(message.payload), message.len);
    record.headers.clear();
    rd_kafka_headers_t* headers = nullptr;  // owned by the message
    if (rd_kafka_message_headers(&message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t i = 0;
           rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
           ++i) {
        record.headers.emplace_back(name, value == nullptr
                                              ? std::string()
                                              : std::string(static_cast<const char*>(value), size));
      }
    }
  }
  return true;
}

// One partition read by the simple consumer API, from `start` up to `end` (exclusive).
class KafkaPartitionReader final : public PartitionReader {
 public:
  KafkaPartitionReader(rd_kafka_t* client, rd_kafka_topic_t* topic, const KafkaPartitionPlan& plan,
                       const EventFilter& filter, std::optional<int64_t> stop_at_ms, bool keep_raw,
                       RetentionSkipHandler on_skip, Progress& progress, Console& console)
      : client_(client),
        topic_(topic),
        partition_(plan.partition),
        next_(plan.start),
        end_(plan.high),
        filter_(filter),
        stop_at_ms_(stop_at_ms),
        keep_raw_(keep_raw),
        on_skip_(std::move(on_skip)),
        progress_(progress),
        console_(console) {}

  ~KafkaPartitionReader() override { Stop(); }

  int32_t Partition() const override { return partition_; }
  int64_t Next() const { return next_; }

  void Start() {
    if (started_ || next_ >= end_) return;
    if (rd_kafka_consume_start(topic_, partition_, next_) == -1) {
      throw KafkaError(fmt::format("start reading {} partition {}: {}", rd_kafka_topic_name(topic_),
                                   partition_, kafka::ErrorText(rd_kafka_last_error())),
                       true);
    }
    started_ = true;
  }

  void Stop() {
    if (started_) (void)rd_kafka_consume_stop(topic_, partition_);
    started_ = false;
  }

  bool Fill(RecordBuffer& out, std::stop_token /*stop*/) override {
    if (done_ || next_ >= end_) return false;
    Start();
    std::array<rd_kafka_message_t*, kBatch> messages{};
    // consume_batch waits until it has *all* it was asked for (or the timeout): take what is
    // queued now, and only when nothing is, wait for one message. Waiting for a full batch
    // would stall the merge on every partition whose next fetch is still on its way.
    const auto wanted = static_cast<size_t>(std::min<int64_t>(kBatch, end_ - next_));
    ssize_t count = rd_kafka_consume_batch(topic_, partition_, 0, messages.data(), wanted);
    if (count == 0) count = rd_kafka_consume_batch(topic_, partition_, kPollMs, messages.data(), 1);
    if (count < 0) {
      throw KafkaError(fmt::format("read {} partition {}: {}", rd_kafka_topic_name(topic_),
                                   partition_, kafka::ErrorText(rd_kafka_last_error())),
                       true);
    }
    bool paused = false;
    for (ssize_t i = 0; i < count; ++i) {
      kafka::MessagePtr message(messages[static_cast<size_t>(i)]);
      if (done_ || paused) continue;  // (what a pause drops is fetched again on resuming)
      if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        paused = SkippedByRetention(message->offset);
        if (!paused && message->offset >= end_) done_ = true;
        continue;
      }
      if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        Warn(*message);
        continue;
      }
      if (SkippedByRetention(message->offset)) {
        paused = true;
        continue;
      }
      if (message->offset >= end_) {
        done_ = true;
        continue;
      }
      next_ = message->offset + 1;
      progress_.scanned.fetch_add(1, std::memory_order_relaxed);
      if (stop_at_ms_) {
        rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        if (rd_kafka_message_timestamp(message.get(), &type) >= *stop_at_ms_) {
          done_ = true;  // past --until (plus the slack): later offsets are later still
          continue;
        }
      }
      if (!Decode(*message, filter_, keep_raw_, progress_, out.Append())) out.DropLast();
    }
    return !done_ && next_ < end_;
  }

 private:
  // Retention deleted the offsets from next_ up to `offset` before this reader fetched them:
  // librdkafka (auto.offset.reset=earliest) moves to the log start without telling the
  // application, so the jump is recognized by the log start (from the last fetch) having
  // passed next_. Never silent: the handler fills the range from elsewhere (the reader pauses
  // here for it and refetches from `offset` next time), or else a warning names it. Returns true
  // when paused.
  bool SkippedByRetention(int64_t offset) {
    if (offset <= next_) return false;
    int64_t low = -1;
    int64_t high = -1;
    if (rd_kafka_get_watermark_offsets(client_, rd_kafka_topic_name(topic_), partition_, &low,
                                       &high) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        low <= next_) {
      return false;  // a gap in the offsets that is not retention's (e.g. transaction markers)
    }
    const int64_t from = next_;
    const int64_t to = std::min(offset, end_);
    next_ = offset;
    if (on_skip_) {
      on_skip_(partition_, from, to);
      Stop();
      return true;
    }
    console_.Line(fmt::format(
        "replay: warning: {} partition {}: offsets [{}, {}) ({} messages) were deleted by "
        "retention while reading; continuing from offset {} (--source auto reads them from the "
        "archive)",
        rd_kafka_topic_name(topic_), partition_, from, to, to - from, offset));
    return false;
  }

  void Warn(const rd_kafka_message_t& message) {
    if (warnings_++ < 5) {
      console_.Line(fmt::format("replay: warning: {} partition {}: {}", rd_kafka_topic_name(topic_),
                                partition_, kafka::ErrorText(message.err)));
    }
  }

  rd_kafka_t* client_;
  rd_kafka_topic_t* topic_;
  int32_t partition_;
  int64_t next_;
  int64_t end_;
  const EventFilter& filter_;
  std::optional<int64_t> stop_at_ms_;
  bool keep_raw_;
  RetentionSkipHandler on_skip_;
  Progress& progress_;
  Console& console_;
  bool started_ = false;
  bool done_ = false;
  int warnings_ = 0;
};

class KafkaLogImpl final : public KafkaLog {
 public:
  KafkaLogImpl(const ReplayConfig& config, Progress& progress, Console& console,
               bool archive_below_low)
      : config_(config),
        progress_(progress),
        console_(console),
        filter_(config.selection),
        archive_below_low_(archive_below_low) {
    if (config_.selection.until) {
      stop_at_ms_ = ToMillis(*config_.selection.until) + config_.time_slack.count();
    }
  }

  ~KafkaLogImpl() override {
    topic_.reset();  // before the client that owns it
    client_.reset();
  }

  KafkaLogImpl(const KafkaLogImpl&) = delete;
  KafkaLogImpl& operator=(const KafkaLogImpl&) = delete;

  void Open() {
    client_ =
        kafka::MakeClient(RD_KAFKA_CONSUMER, kafka::MakeConf(ReaderProperties(config_, 64, false)));
    partition_count_ =
        ExistingTopicPartitions(client_.get(), config_.topic, "--topic", kMetadataTimeout);
    CheckCursorAgainstTopic(config_, partition_count_);
    // The prefetch limit depends on how many partitions are read: rebuild with the real count.
    PlanPartitions();
    client_.reset();
    client_ = kafka::MakeClient(RD_KAFKA_CONSUMER,
                                kafka::MakeConf(ReaderProperties(config_, plans_.size(), false)));
    topic_.reset(rd_kafka_topic_new(client_.get(), config_.topic.c_str(), nullptr));
    if (!topic_) {
      throw KafkaError(fmt::format("topic handle {}: {}", config_.topic,
                                   kafka::ErrorText(rd_kafka_last_error())),
                       false);
    }
    uint64_t expected = 0;
    for (const auto& plan : plans_) expected += static_cast<uint64_t>(plan.high - plan.start);
    progress_.expected.store(expected);
  }

  int32_t PartitionCount() const override { return partition_count_; }
  const std::vector<KafkaPartitionPlan>& Plans() const override { return plans_; }

  std::unique_ptr<PartitionReader> MakeReader(const KafkaPartitionPlan& plan,
                                              RetentionSkipHandler on_skip) override {
    auto reader = std::make_unique<KafkaPartitionReader>(client_.get(), topic_.get(), plan, filter_,
                                                         stop_at_ms_, !config_.republish_to.empty(),
                                                         std::move(on_skip), progress_, console_);
    reader->Start();  // every partition fetches from the start, in parallel
    return reader;
  }

  // After the catch-up: every partition into one queue, events printed as they arrive.
  bool Follow(const std::vector<PartitionReader*>& readers, const RecordSink& sink,
              const std::stop_token& stop) override {
    kafka::QueuePtr queue(rd_kafka_queue_new(client_.get()));
    for (auto* base : readers) {
      auto* reader = static_cast<KafkaPartitionReader*>(base);  // made by MakeReader
      reader->Stop();
      if (rd_kafka_consume_start_queue(topic_.get(), reader->Partition(), reader->Next(),
                                       queue.get()) == -1) {
        throw KafkaError(fmt::format("tail {} partition {}: {}", config_.topic, reader->Partition(),
                                     kafka::ErrorText(rd_kafka_last_error())),
                         true);
      }
    }
    const bool keep_raw = !config_.republish_to.empty();
    std::array<rd_kafka_message_t*, kBatch> messages{};
    Record live;
    bool keep_going = true;
    while (keep_going && !stop.stop_requested()) {
      const ssize_t count = rd_kafka_consume_batch_queue(queue.get(), kPollMs, messages.data(), 64);
      for (ssize_t i = 0; i < std::max<ssize_t>(count, 0); ++i) {
        kafka::MessagePtr message(messages[static_cast<size_t>(i)]);
        if (!keep_going || message->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
        progress_.scanned.fetch_add(1, std::memory_order_relaxed);
        if (Decode(*message, filter_, keep_raw, progress_, live)) keep_going = sink(live);
      }
    }
    for (auto* reader : readers) (void)rd_kafka_consume_stop(topic_.get(), reader->Partition());
    return keep_going && !stop.stop_requested();
  }

 private:
  void PlanPartitions() {
    std::vector<int32_t> partitions;
    const auto& selection = config_.selection;
    if (selection.from_cursor) {
      partitions.push_back(static_cast<int32_t>(selection.from_cursor->partition));
    } else if (!selection.user_id.empty()) {
      partitions.push_back(PartitionForKey(selection.user_id, partition_count_));
    } else {
      for (int32_t p = 0; p < partition_count_; ++p) partitions.push_back(p);
    }
    for (const int32_t partition : partitions) {
      KafkaPartitionPlan plan;
      plan.partition = partition;
      const auto err = rd_kafka_query_watermark_offsets(
          client_.get(), config_.topic.c_str(), partition, &plan.low, &plan.high,
          static_cast<int>(std::chrono::milliseconds(kMetadataTimeout).count()));
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw KafkaError(fmt::format("watermarks of {} partition {}: {}", config_.topic, partition,
                                     kafka::ErrorText(err)),
                         true);
      }
      plan.start = plan.low;
      plans_.push_back(plan);
    }
    if (selection.from_cursor) ApplyCursor(plans_.front(), *selection.from_cursor);
    if (selection.since) ApplySince(*selection.since);
  }

  void ApplyCursor(KafkaPartitionPlan& plan, const Cursor& cursor) {
    if (cursor.next_offset < plan.low) {
      plan.start = plan.low;
      if (archive_below_low_) return;  // the archive has what retention deleted
      console_.Line(fmt::format(
          "replay: warning: the cursor's offset {} in {} partition {} is older than the retained "
          "log (oldest offset {}): {} events were deleted by retention; read them with --source "
          "auto (the archive, then Kafka)",
          cursor.next_offset, config_.topic, plan.partition, plan.low,
          plan.low - cursor.next_offset));
    } else if (cursor.next_offset > plan.high) {
      console_.Line(fmt::format(
          "replay: warning: the cursor's offset {} is past the end of {} partition {} ({}): "
          "was the topic recreated? (bump --topic-epoch on the gateways if so)",
          cursor.next_offset, config_.topic, plan.partition, plan.high));
      plan.start = plan.high;
    } else {
      plan.start = cursor.next_offset;
    }
  }

  // The first offset of each partition whose timestamp may be at or after `since` minus the
  // slack: offsetsForTimes when the cluster answers it, a binary search otherwise.
  void ApplySince(TimePoint since) {
    const int64_t target_ms = ToMillis(since) - config_.time_slack.count();
    std::vector<KafkaPartitionPlan*> unresolved;
    kafka::TopicPartitionListPtr query(
        rd_kafka_topic_partition_list_new(static_cast<int>(plans_.size())));
    for (auto& plan : plans_) {
      if (plan.start >= plan.high) continue;
      rd_kafka_topic_partition_list_add(query.get(), config_.topic.c_str(), plan.partition)
          ->offset = target_ms;
    }
    if (query->cnt == 0) return;
    const auto err = rd_kafka_offsets_for_times(
        client_.get(), query.get(),
        static_cast<int>(std::chrono::milliseconds(kMetadataTimeout).count()));
    for (auto& plan : plans_) {
      if (plan.start >= plan.high) continue;
      const auto* answer =
          rd_kafka_topic_partition_list_find(query.get(), config_.topic.c_str(), plan.partition);
      // -1 is both "no message that late" (real Kafka) and "I don't know" (the embedded
      // Kafka): only the binary search tells them apart.
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR && answer != nullptr &&
          answer->err == RD_KAFKA_RESP_ERR_NO_ERROR && answer->offset >= 0) {
        plan.start = std::clamp(answer->offset, plan.start, plan.high);
      } else {
        unresolved.push_back(&plan);
      }
    }
    if (!unresolved.empty()) SearchByTimestamp(unresolved, target_ms);
  }

  // Binary search over offsets, reading one message's timestamp per probe, all partitions
  // probed in parallel. Assumes a partition's timestamps do not decrease with the offset (one
  // producer per user, CreateTime from one clock, or LogAppendTime); the slack absorbs
  // producers whose clocks disagree by less than it. Every uncertain probe (error, timeout)
  // moves the answer earlier, never later: the search may start early, and the filter drops
  // what is before --since.
  void SearchByTimestamp(const std::vector<KafkaPartitionPlan*>& plans, int64_t target_ms) {
    auto probe_client =
        kafka::MakeClient(RD_KAFKA_CONSUMER, kafka::MakeConf(ReaderProperties(config_, 1, true)));
    TopicPtr topic(rd_kafka_topic_new(probe_client.get(), config_.topic.c_str(), nullptr));
    struct Search {
      KafkaPartitionPlan* plan;
      int64_t lo;  // every message before lo is older than the target
      int64_t hi;  // the answer is at or before hi
      int64_t mid = 0;
    };
    std::vector<Search> searches;
    searches.reserve(plans.size());
    for (auto* plan : plans) searches.push_back({plan, plan->start, plan->high});
    int rounds = 0;
    while (true) {
      std::vector<Search*> active;
      for (auto& s : searches) {
        if (s.lo < s.hi) active.push_back(&s);
      }
      if (active.empty()) break;
      ++rounds;
      for (auto* s : active) {
        s->mid = s->lo + (s->hi - s->lo) / 2;
        if (rd_kafka_consume_start(topic.get(), s->plan->partition, s->mid) == -1) s->mid = -1;
      }
      for (auto* s : active) {
        if (s->mid < 0) {
          s->hi = s->lo;  // cannot probe: settle for the earliest candidate
          continue;
        }
        const auto [offset, timestamp] = ProbeFirstMessage(topic.get(), s->plan->partition);
        if (offset >= 0 && offset < s->hi && timestamp >= 0 && timestamp < target_ms) {
          s->lo = offset + 1;
        } else {
          // At or after the target, no message in [mid, hi), or unknown: earlier is safe.
          s->hi = s->mid;
        }
        (void)rd_kafka_consume_stop(topic.get(), s->plan->partition);
      }
    }
    for (auto& s : searches) s.plan->start = std::max(s.plan->start, s.lo);
    log::Debug("replay: start offsets found by timestamp search",
               {{"topic", config_.topic},
                {"count", static_cast<uint64_t>(searches.size())},
                {"rounds", rounds}});
  }

  // The first message at or after the started offset: (offset, timestamp), or (-1, -1) at the
  // end of the partition or on error.
  static std::pair<int64_t, int64_t> ProbeFirstMessage(rd_kafka_topic_t* topic, int32_t partition) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      kafka::MessagePtr message(rd_kafka_consume(topic, partition, 100));
      if (!message) continue;
      if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return {-1, -1};
      if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) return {-1, -1};
      rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
      return {message->offset, rd_kafka_message_timestamp(message.get(), &type)};
    }
    return {-1, -1};
  }

  const ReplayConfig& config_;
  Progress& progress_;
  Console& console_;
  EventFilter filter_;
  bool archive_below_low_;
  std::optional<int64_t> stop_at_ms_;  // --until plus the slack, as a Kafka timestamp
  kafka::HandlePtr client_;
  TopicPtr topic_;
  int32_t partition_count_ = 0;
  std::vector<KafkaPartitionPlan> plans_;
};

class KafkaSource final : public Source {
 public:
  KafkaSource(const ReplayConfig& config, Progress& progress, Console& console)
      : config_(config), progress_(progress), console_(console) {}

  void Open() override { log_ = OpenKafkaLog(config_, progress_, console_, false); }

  int32_t PartitionCount() const override { return log_->PartitionCount(); }

  bool Run(const RecordSink& sink, std::stop_token stop) override {
    std::vector<std::unique_ptr<PartitionReader>> readers;
    for (const auto& plan : log_->Plans()) readers.push_back(log_->MakeReader(plan, nullptr));
    const bool finished = MergePartitions(readers, sink, stop);
    if (!finished || !config_.follow) return finished;
    std::vector<PartitionReader*> tailed;
    tailed.reserve(readers.size());
    for (const auto& reader : readers) tailed.push_back(reader.get());
    return log_->Follow(tailed, sink, stop);
  }

 private:
  const ReplayConfig& config_;
  Progress& progress_;
  Console& console_;
  std::unique_ptr<KafkaLog> log_;
};

}  // namespace

std::unique_ptr<KafkaLog> OpenKafkaLog(const ReplayConfig& config, Progress& progress,
                                       Console& console, bool archive_below_low) {
  auto log = std::make_unique<KafkaLogImpl>(config, progress, console, archive_below_low);
  log->Open();
  return log;
}

std::unique_ptr<Source> MakeKafkaSource(const ReplayConfig& config, Progress& progress,
                                        Console& console) {
  return std::make_unique<KafkaSource>(config, progress, console);
}

}  // namespace agentwire::consumers::replay
