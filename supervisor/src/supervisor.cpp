#include "agentwire/supervisor/supervisor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "partition_runs.hpp"

namespace agentwire::supervisor {
namespace {

using internal::Clock;
using internal::Due;
using internal::EndReason;
using internal::OpenRun;
using internal::PartitionRuns;
using std::chrono::milliseconds;

constexpr auto kPollSlice = milliseconds(100);
// How long a check may wait for the brokers to confirm that a partition has been read to its
// end before it decides anything for it.
constexpr int kConfirmTimeoutMs = 1000;
// Before leaving a partition (revoke, stop): how long to wait for ends still in flight, so the
// next owner reads them instead of deciding again.
constexpr auto kFlushTimeout = milliseconds(5000);

// The three topics of one partition number, as indexes.
enum Kind : size_t { kEvents = 0, kControl = 1, kHeartbeat = 2 };
constexpr size_t kKinds = 3;

struct ReadState {
  bool assigned = false;
  int64_t next = -1;  // the next offset to read; -1 until the first message or end of partition
  bool reached_end = false;          // read to its end once since the assignment
  std::optional<int64_t> committed;  // what we last committed
};

struct Partition {
  PartitionRuns runs;
  std::array<ReadState, kKinds> reads;
};

/// The --kafka extras minus the consumer-only ones (which librdkafka would warn about in the
/// producer that writes the ends).
kafka::Properties ProducerProperties(const kafka::Properties& client_properties) {
  static const std::array<std::string_view, 17> kConsumerOnly = {"group.id",
                                                                 "group.instance.id",
                                                                 "session.timeout.ms",
                                                                 "heartbeat.interval.ms",
                                                                 "max.poll.interval.ms",
                                                                 "partition.assignment.strategy",
                                                                 "auto.offset.reset",
                                                                 "enable.auto.commit",
                                                                 "auto.commit.interval.ms",
                                                                 "enable.auto.offset.store",
                                                                 "enable.partition.eof",
                                                                 "fetch.wait.max.ms",
                                                                 "fetch.min.bytes",
                                                                 "fetch.max.bytes",
                                                                 "max.partition.fetch.bytes",
                                                                 "isolation.level",
                                                                 "check.crcs"};
  kafka::Properties properties;
  for (const auto& [key, value] : client_properties) {
    if (std::find(kConsumerOnly.begin(), kConsumerOnly.end(), key) == kConsumerOnly.end()) {
      properties[key] = value;
    }
  }
  return properties;
}

std::string_view ReasonCode(EndReason reason) {
  return reason == EndReason::kCancelled ? "cancelled" : "worker_lost";
}

/// Delivery reports of the ends the supervisor wrote: the publisher's poll thread reports, the
/// consumer thread reads. Thread-safe.
struct DeliveryFailures {
  std::mutex mutex;
  std::vector<std::tuple<int32_t, std::string, std::string>> failed;  // (partition, user, run)
};

}  // namespace

class Supervisor::Impl {
 public:
  Impl(SupervisorConfig config, metrics::Registry& registry)
      : config_(std::move(config)),
        topics_{config_.topic, ControlTopicFor(config_.topic), HeartbeatTopicFor(config_.topic)},
        open_runs_(registry.GetGauge("agentwire_supervisor_open_runs",
                                     "Runs open in the supervisor's partitions")),
        ended_worker_lost_(
            registry.GetCounter("agentwire_supervisor_runs_ended_total",
                                "Ends the supervisor wrote (acknowledged by Kafka), by reason",
                                {{"reason", "worker_lost"}})),
        ended_cancelled_(
            registry.GetCounter("agentwire_supervisor_runs_ended_total",
                                "Ends the supervisor wrote (acknowledged by Kafka), by reason",
                                {{"reason", "cancelled"}})),
        cancel_requests_(registry.GetCounter("agentwire_supervisor_cancel_requests_total",
                                             "Stops read from the control topic")),
        cancel_to_end_(
            registry.GetHistogram("agentwire_supervisor_cancel_to_end_seconds",
                                  "From a Stop's read to the run's end read from the log",
                                  {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60})),
        late_events_(registry.GetCounter("agentwire_supervisor_late_events_total",
                                         "Events of runs that had ended (first terminal wins)")),
        forged_cancels_(registry.GetCounter("agentwire_supervisor_forged_cancels_total",
                                            "Stops whose user is not the run's user (ignored)")),
        failures_(std::make_shared<DeliveryFailures>()) {
    Validate();
    CreateConsumer();
    CheckTopics();
    producers::PublisherConfig publisher;
    publisher.client_properties = ProducerProperties(config_.client_properties);
    if (!publisher.client_properties.contains("client.id")) {
      publisher.client_properties["client.id"] = "agentwire-supervisor";
    }
    publisher.topic = config_.topic;
    publisher.close_timeout = kFlushTimeout;
    publisher_ = std::make_unique<producers::EventPublisher>(std::move(publisher));
  }

  ~Impl() {
    if (consumer_) {
      // Run() was never called (or threw): leave the group all the same.
      rd_kafka_consumer_close(consumer_.get());
      consumer_.reset();
    }
    open_runs_.Add(-reported_open_);
  }

  void Run(const std::stop_token& stop) {
    if (!consumer_) throw std::logic_error("Supervisor::Run called twice");
    kafka::TopicPartitionListPtr topics(rd_kafka_topic_partition_list_new(kKinds));
    for (const auto& topic : topics_) {
      rd_kafka_topic_partition_list_add(topics.get(), topic.c_str(), RD_KAFKA_PARTITION_UA);
    }
    if (const auto err = rd_kafka_subscribe(consumer_.get(), topics.get()); err) {
      throw KafkaError(fmt::format("subscribe to {}, {}, {}: {}", topics_[kEvents],
                                   topics_[kControl], topics_[kHeartbeat], kafka::ErrorText(err)),
                       false);
    }
    log::Info("supervisor started", {{"topic", config_.topic},
                                     {"group", config_.group},
                                     {"cancel_timeout_ms", config_.cancel_timeout.count()},
                                     {"check_interval_ms", config_.check_interval.count()}});
    auto next_check = Clock::now() + config_.check_interval;
    while (!stop.stop_requested()) {
      const auto left = std::chrono::duration_cast<milliseconds>(next_check - Clock::now());
      const auto timeout = std::clamp(left, milliseconds(0), kPollSlice);
      kafka::MessagePtr message(
          rd_kafka_consumer_poll(consumer_.get(), static_cast<int>(timeout.count())));
      if (message) Handle(*message);
      const auto now = Clock::now();
      if (now >= next_check) {
        Check(now);
        next_check = now + config_.check_interval;
      }
    }
    log::Info("supervisor stopping", {{"topic", config_.topic}});
    ready_.store(false);
    // Ends still in flight go out before the group hands the partitions over; closing revokes
    // them, which commits (OnRebalance).
    publisher_->Flush(kFlushTimeout);
    rd_kafka_consumer_close(consumer_.get());
    consumer_.reset();
  }

  bool Ready() const { return ready_.load(std::memory_order_relaxed); }

  static void RebalanceCallback(rd_kafka_t* consumer, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    // No exception may cross into librdkafka.
    try {
      static_cast<Impl*>(opaque)->OnRebalance(consumer, err, partitions);
    } catch (const std::exception& e) {
      log::Error("rebalance handling failed", {{"error", e.what()}});
    }
  }

  void OnRebalance(rd_kafka_t* consumer, rd_kafka_resp_err_t err,
                   rd_kafka_topic_partition_list_t* list) {
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      partitions_.clear();
      for (int i = 0; i < list->cnt; ++i) {
        auto& element = list->elems[i];
        const auto kind = KindOf(element.topic);
        if (!kind) continue;
        partitions_[element.partition].reads[*kind].assigned = true;
        // Heartbeats are not replayed: every run rebuilt from the event partition gets a fresh
        // lease from now, so older heartbeats say nothing new.
        if (*kind == kHeartbeat) element.offset = RD_KAFKA_OFFSET_END;
      }
      std::vector<int32_t> incomplete;
      for (const auto& [p, partition] : partitions_) {
        if (!std::all_of(partition.reads.begin(), partition.reads.end(),
                         [](const ReadState& r) { return r.assigned; })) {
          incomplete.push_back(p);
        }
      }
      if (!incomplete.empty()) {
        log::Error(
            "assignment is not co-partitioned: some partition numbers lack one of the event, "
            "control and heartbeat topics; the supervisor decides nothing for them. Hint: give "
            "the three topics the same partition count and keep partition.assignment.strategy "
            "range for every member of the group",
            {{"topic", config_.topic},
             {"partition", incomplete.front()},
             {"count", static_cast<uint64_t>(incomplete.size())}});
      }
      assigned_ = true;
      rd_kafka_assign(consumer, list);
      log::Info("partitions assigned",
                {{"topic", config_.topic}, {"count", static_cast<uint64_t>(partitions_.size())}});
    } else {
      const bool lost = rd_kafka_assignment_lost(consumer) != 0;
      if (!lost) {
        bool ending = false;
        for (const auto& [p, partition] : partitions_) ending |= partition.runs.AnyEnding();
        if (ending) publisher_->Flush(kFlushTimeout);
        Commit(/*async=*/false);
      }
      const auto count = partitions_.size();
      partitions_.clear();
      assigned_ = false;
      rd_kafka_assign(consumer, nullptr);
      log::Info(lost ? "partitions lost" : "partitions revoked",
                {{"topic", config_.topic}, {"count", static_cast<uint64_t>(count)}});
    }
    UpdateReady();
    ReportOpenRuns();
  }

 private:
  void Validate() const {
    kafka::ValidateTopicName(config_.topic, "--topic");
    if (config_.group.empty())
      throw ConfigError("--group: the consumer group id must not be empty");
    if (config_.cancel_timeout.count() < 1) {
      throw ConfigError("--cancel-timeout: must be at least 1 ms (e.g. 10s)");
    }
    if (config_.check_interval.count() < 1) {
      throw ConfigError("--check-interval: must be at least 1 ms (e.g. 1s)");
    }
    if (!config_.client_properties.contains("bootstrap.servers")) {
      throw ConfigError("bootstrap.servers is not set (--brokers / AGENTWIRE_BROKERS)");
    }
  }

  void CreateConsumer() {
    kafka::Properties properties = {
        {"group.id", config_.group},
        {"client.id", "agentwire-supervisor"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "true"},
        {"enable.auto.offset.store", "false"},
        {"fetch.wait.max.ms", "20"},
        // A killed supervisor's partitions move to another member within seconds, not the
        // 45 s default: until they do, nothing ends their silent runs.
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1000"},
    };
    for (const auto& [key, value] : config_.client_properties) properties[key] = value;
    // Not negotiable: partition N of the three topics must go to one member (range), and the
    // offsets to commit are the supervisor's own (the oldest open run, not the read position).
    if (const auto found = properties.find("partition.assignment.strategy");
        found != properties.end() && found->second != "range") {
      log::Warn("ignoring partition.assignment.strategy: the supervisor needs range",
                {{"value", found->second}});
    }
    properties["partition.assignment.strategy"] = "range";
    properties["enable.auto.commit"] = "false";
    auto conf = kafka::MakeConf(properties);
    rd_kafka_conf_set_rebalance_cb(conf.get(), RebalanceCallback);
    rd_kafka_conf_set_opaque(conf.get(), this);
    consumer_ = kafka::MakeClient(RD_KAFKA_CONSUMER, std::move(conf));
    rd_kafka_poll_set_consumer(consumer_.get());
  }

  void CheckTopics() {
    // A typo in --topic fails now with one line; an unreachable cluster is waited for.
    std::array<std::optional<int>, kKinds> counts;
    try {
      for (size_t k = 0; k < kKinds; ++k) {
        counts[k] =
            kafka::FindPartitionCount(consumer_.get(), topics_[k], std::chrono::seconds(10));
        if (!counts[k]) {
          throw ConfigError(fmt::format("--topic {}: {}: {}", config_.topic, topics_[k],
                                        kafka::MissingTopicText(topics_[k])));
        }
      }
    } catch (const KafkaError& e) {
      log::Warn("cannot check the topics yet", {{"topic", config_.topic}, {"error", e.what()}});
      return;
    }
    if (counts[kControl] != counts[kEvents] || counts[kHeartbeat] != counts[kEvents]) {
      log::Error(
          "the run-control topics do not have the event topic's partition count: a user's Stops "
          "and heartbeats are not in the partition of the same number as the user's events. "
          "Hint: create .control and .heartbeat with the event topic's partition count",
          {{"topic", config_.topic},
           {"partitions", static_cast<int64_t>(*counts[kEvents])},
           {"control_partitions", static_cast<int64_t>(*counts[kControl])},
           {"heartbeat_partitions", static_cast<int64_t>(*counts[kHeartbeat])}});
    }
  }

  std::optional<Kind> KindOf(const char* topic) const {
    for (size_t k = 0; k < kKinds; ++k) {
      if (topics_[k] == topic) return static_cast<Kind>(k);
    }
    return std::nullopt;
  }

  void Handle(const rd_kafka_message_t& message) {
    if (message.err && message.err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      consumer_error_log_.Warn("consumer error", {{"topic", config_.topic},
                                                  {"partition", message.partition},
                                                  {"error", kafka::ErrorText(message.err)}});
      return;
    }
    if (message.rkt == nullptr) return;
    const auto kind = KindOf(rd_kafka_topic_name(message.rkt));
    const auto found = partitions_.find(message.partition);
    if (!kind || found == partitions_.end()) return;
    Partition& partition = found->second;
    ReadState& read = partition.reads[*kind];
    if (message.err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      read.next = message.offset;
      if (!read.reached_end) {
        read.reached_end = true;
        UpdateReady();
      }
      return;
    }
    read.next = message.offset + 1;
    const auto now = Clock::now();
    switch (*kind) {
      case kEvents:
        HandleEvent(message, partition, now);
        break;
      case kControl:
      case kHeartbeat:
        HandleControl(message, partition, *kind, now);
        break;
    }
  }

  void HandleEvent(const rd_kafka_message_t& message, Partition& partition, Clock::time_point now) {
    v1::AgentEvent event;
    if (!event.ParseFromArray(message.payload, static_cast<int>(message.len)) ||
        event.run_id().empty()) {
      return;  // the archive dead-letters it; nothing a supervisor can end
    }
    const auto outcome = partition.runs.OnEvent(event, message.offset, now);
    if (outcome.late) {
      late_events_.Inc();
      late_log_.Write(log::Level::kInfo, "late event of a run that has ended: ignored",
                      {{"user", event.user_id()},
                       {"run", event.run_id()},
                       {"partition", message.partition},
                       {"offset", message.offset},
                       {"type", schemas::EventType(event)}});
    }
    if (outcome.forged) ForgedCancel(event.user_id(), event.run_id(), message.partition);
    if (outcome.ended) {
      if (outcome.cancel_to_end) cancel_to_end_.Observe(outcome.cancel_to_end->count());
      log::Debug("run ended", {{"user", event.user_id()},
                               {"run", event.run_id()},
                               {"partition", message.partition},
                               {"offset", message.offset}});
    }
    ReportOpenRuns();
  }

  void HandleControl(const rd_kafka_message_t& message, Partition& partition, Kind kind,
                     Clock::time_point now) {
    v1::ControlRecord record;
    if (!record.ParseFromArray(message.payload, static_cast<int>(message.len)) ||
        record.run_id().empty()) {
      bad_control_log_.Warn(
          "undecodable control record: ignored",
          {{"topic", topics_[kind]}, {"partition", message.partition}, {"offset", message.offset}});
      return;
    }
    if (kind == kHeartbeat) {
      if (record.has_heartbeat()) partition.runs.OnHeartbeat(record, now);
      return;
    }
    if (!record.has_cancel()) return;
    cancel_requests_.Inc();
    const std::string& run = record.run_id();
    if (partition.runs.Find(record.user_id(), run) == nullptr &&
        !partition.runs.RecentlyEnded(record.user_id(), run)) {
      // Keyed by the sender's user, another user's Stop sits in the sender's partition: look
      // for the run in the others this member holds.
      for (const auto& [p, other] : partitions_) {
        if (other.runs.OpenForAnotherUser(run, record.user_id())) {
          ForgedCancel(record.user_id(), run, message.partition);
          return;
        }
      }
    }
    const auto outcome = partition.runs.OnCancel(record, message.offset, now);
    if (outcome.forged) {
      ForgedCancel(record.user_id(), run, message.partition);
      return;
    }
    cancel_log_.Write(log::Level::kInfo, "stop requested",
                      {{"user", record.user_id()},
                       {"run", run},
                       {"partition", message.partition},
                       {"offset", message.offset},
                       {"request_id", record.cancel().request_id()}});
  }

  void ForgedCancel(const std::string& sender, const std::string& run, int32_t partition) {
    forged_cancels_.Inc();
    forged_log_.Warn("stop request from a user who is not the run's user: ignored",
                     {{"user", sender}, {"run", run}, {"partition", partition}});
  }

  /// Read to its end as of the last fetch: every topic of the partition number assigned, read
  /// to the end once since the assignment, and read up to the high watermark last fetched.
  bool CaughtUp(int32_t p, const Partition& partition) const {
    for (size_t k = 0; k < kKinds; ++k) {
      const ReadState& read = partition.reads[k];
      if (!read.assigned || !read.reached_end || read.next < 0) return false;
      int64_t low = 0;
      int64_t high = -1;
      if (rd_kafka_get_watermark_offsets(consumer_.get(), topics_[k].c_str(), p, &low, &high) !=
              RD_KAFKA_RESP_ERR_NO_ERROR ||
          high < 0 || read.next < high) {
        return false;
      }
    }
    return true;
  }

  /// Before a decision: the brokers confirm, now, that nothing is left to read (a stale cache
  /// while Kafka is unreachable must not end runs whose heartbeats we could not read).
  bool ConfirmCaughtUp(int32_t p, const Partition& partition) {
    for (size_t k = 0; k < kKinds; ++k) {
      int64_t low = 0;
      int64_t high = -1;
      const auto err = rd_kafka_query_watermark_offsets(consumer_.get(), topics_[k].c_str(), p,
                                                        &low, &high, kConfirmTimeoutMs);
      if (err) {
        confirm_log_.Warn(
            "cannot confirm with the brokers that the partition was read to its end: deciding "
            "nothing for it until they answer",
            {{"topic", topics_[k]}, {"partition", p}, {"error", kafka::ErrorText(err)}});
        return false;
      }
      if (partition.reads[k].next < high) return false;  // more to read first
    }
    return true;
  }

  void Check(Clock::time_point now) {
    std::vector<std::tuple<int32_t, std::string, std::string>> failed;
    {
      std::lock_guard lock(failures_->mutex);
      failed.swap(failures_->failed);
    }
    for (const auto& [p, user, run] : failed) {
      // Retried on this or a later check (if the run is still open once read to the end).
      if (const auto found = partitions_.find(p); found != partitions_.end()) {
        found->second.runs.MarkEnding(user, run, false);
      }
    }
    const auto grace = std::max(config_.check_interval, milliseconds(1000));
    for (auto& [p, partition] : partitions_) {
      if (!CaughtUp(p, partition)) continue;
      partition.runs.DropStaleOrphans(now, grace);
      const auto due = partition.runs.DueRuns(now, config_.cancel_timeout);
      if (due.empty() || !ConfirmCaughtUp(p, partition)) continue;
      for (const Due& d : due) {
        if (const OpenRun* run = partition.runs.Find(d.user, d.run)) End(p, partition, d, *run);
      }
    }
    Commit(/*async=*/true);
  }

  void End(int32_t p, Partition& partition, const Due& due, const OpenRun& run) {
    v1::AgentEvent event;
    event.set_user_id(run.user);
    event.set_thread_id(run.thread);
    event.set_run_id(due.run);
    event.set_run_seq(run.last_seq + 1);
    event.set_agent_name(run.agent_name);
    event.set_trace_id(run.trace_id);
    (*event.mutable_attributes())["ended_by"] = "supervisor";
    auto* failed = event.mutable_agent_failed();
    failed->set_error_code(std::string(ReasonCode(due.reason)));
    if (due.reason == EndReason::kCancelled) {
      failed->set_message("stopped by the user");
    } else {
      failed->set_message(fmt::format("the agent stopped responding (no sign of life for {} s)",
                                      (due.silent.count() + 500) / 1000));
    }
    schemas::FillDefaults(event);

    auto failures = failures_;
    auto& ended = due.reason == EndReason::kCancelled ? ended_cancelled_ : ended_worker_lost_;
    const auto status =
        publisher_->Publish(event, [failures, &ended, p, user = due.user,
                                    run_id = due.run](const producers::DeliveryReport& report) {
          if (report.ok) {
            ended.Inc();
            return;
          }
          log::Error("an end the supervisor wrote was not delivered; retrying on a later check",
                     {{"run", run_id}, {"partition", p}, {"error", report.error}});
          std::lock_guard lock(failures->mutex);
          failures->failed.emplace_back(p, user, run_id);
        });
    if (!status.Accepted()) {
      publish_log_.Error("cannot publish a run's end; retrying on a later check",
                         {{"user", run.user},
                          {"run", due.run},
                          {"partition", p},
                          {"error", producers::ToString(status)}});
      return;
    }
    log::Info(due.reason == EndReason::kCancelled
                  ? "ending a run whose Stop no worker confirmed in time"
                  : "ending a run whose worker went silent past its lease",
              {{"user", run.user},
               {"run", due.run},
               {"partition", p},
               {"reason", ReasonCode(due.reason)},
               {"silent_ms", static_cast<int64_t>(due.silent.count())},
               {"event_id", event.event_id()}});
    partition.runs.MarkEnding(due.user, due.run, true);
  }

  /// Event partitions: the oldest open run's agent_started; control: the oldest pending Stop;
  /// heartbeats: the read position. A successor rebuilds from there.
  void Commit(bool async) {
    kafka::TopicPartitionListPtr list(
        rd_kafka_topic_partition_list_new(static_cast<int>(partitions_.size() * kKinds)));
    std::vector<std::pair<ReadState*, int64_t>> updates;
    for (auto& [p, partition] : partitions_) {
      for (size_t k = 0; k < kKinds; ++k) {
        ReadState& read = partition.reads[k];
        if (!read.assigned || read.next < 0) continue;
        int64_t offset = read.next;
        if (k == kEvents) offset = partition.runs.OldestOpenStart().value_or(read.next);
        if (k == kControl) offset = partition.runs.OldestPendingCancel().value_or(read.next);
        if (read.committed == offset) continue;
        rd_kafka_topic_partition_list_add(list.get(), topics_[k].c_str(), p)->offset = offset;
        updates.emplace_back(&read, offset);
      }
    }
    if (list->cnt == 0) return;
    const auto err = rd_kafka_commit(consumer_.get(), list.get(), async ? 1 : 0);
    if (err) {
      commit_log_.Warn("offset commit failed; retrying on the next check",
                       {{"topic", config_.topic}, {"error", kafka::ErrorText(err)}});
      return;
    }
    for (auto& [read, offset] : updates) read->committed = offset;
  }

  void UpdateReady() {
    bool ready = assigned_;
    for (const auto& [p, partition] : partitions_) {
      for (const auto& read : partition.reads)
        ready = ready && (!read.assigned || read.reached_end);
    }
    ready_.store(ready, std::memory_order_relaxed);
  }

  void ReportOpenRuns() {
    double open = 0;
    for (const auto& [p, partition] : partitions_) {
      open += static_cast<double>(partition.runs.OpenCount());
    }
    open_runs_.Add(open - reported_open_);
    reported_open_ = open;
  }

  SupervisorConfig config_;
  std::array<std::string, kKinds> topics_;
  metrics::Gauge& open_runs_;
  metrics::Counter& ended_worker_lost_;
  metrics::Counter& ended_cancelled_;
  metrics::Counter& cancel_requests_;
  metrics::Histogram& cancel_to_end_;
  metrics::Counter& late_events_;
  metrics::Counter& forged_cancels_;
  std::shared_ptr<DeliveryFailures> failures_;

  kafka::HandlePtr consumer_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  std::map<int32_t, Partition> partitions_;  // by partition number; consumer thread only
  bool assigned_ = false;                    // between an assignment and its revocation
  std::atomic<bool> ready_{false};
  double reported_open_ = 0;  // this supervisor's part of open_runs_

  log::RateLimited consumer_error_log_;
  log::RateLimited late_log_;
  log::RateLimited bad_control_log_;
  log::RateLimited forged_log_;
  log::RateLimited cancel_log_{milliseconds(100)};
  log::RateLimited confirm_log_;
  log::RateLimited publish_log_;
  log::RateLimited commit_log_;
};

Supervisor::Supervisor(SupervisorConfig config, metrics::Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(config), registry)) {}

Supervisor::~Supervisor() = default;

void Supervisor::Run(const std::stop_token& stop) { impl_->Run(stop); }

bool Supervisor::Ready() const { return impl_->Ready(); }

}  // namespace agentwire::supervisor
