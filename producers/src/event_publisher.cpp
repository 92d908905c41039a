#include "agentwire/producers/event_publisher.hpp"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <ostream>
#include <string_view>
#include <thread>
#include <vector>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/schemas/event_json.hpp"

namespace agentwire::producers {

namespace {

const char* CodeName(PublishStatus::Code code) {
  switch (code) {
    case PublishStatus::kAccepted:
      return "accepted";
    case PublishStatus::kQueueFull:
      return "queue full";
    case PublishStatus::kInvalidEvent:
      return "invalid event";
    case PublishStatus::kTooLarge:
      return "too large";
    case PublishStatus::kUnknownTopic:
      return "unknown topic";
    case PublishStatus::kRejected:
      return "rejected";
    case PublishStatus::kClosed:
      return "publisher closed";
  }
  return "unknown";
}

}  // namespace

std::string ToString(const PublishStatus& status) {
  if (status.Accepted()) return "accepted";
  std::string out = CodeName(status.code);
  out += status.IsRetryable() ? " (retryable" : " (permanent";
  if (!status.kafka_error.empty()) out += ", " + status.kafka_error;
  out += ")";
  if (!status.detail.empty()) out += ": " + status.detail;
  return out;
}

std::ostream& operator<<(std::ostream& out, const PublishStatus& status) {
  return out << ToString(status);
}

kafka::Properties DefaultProducerProperties() {
  return {
      {"enable.idempotence", "true"},
      {"acks", "all"},
      // The Java client's default, so workers in any language agree on a user's partition.
      {"partitioner", "murmur2_random"},
      {"compression.type", "lz4"},
      {"linger.ms", "5"},
      {"client.id", "agentwire-publisher"},
      // Topics come from infra/ (or `agentwire broker --topic`) with the partition count every
      // cursor depends on; a mistyped --topic must fail, not create a topic with the broker's
      // default partition count.
      {"allow.auto.create.topics", "false"},
  };
}

namespace {

// What librdkafka adds to key + value when it checks message.max.bytes: the record framing
// (at most ~64 bytes in MessageSet v2) and the two headers agentwire sets.
constexpr size_t kRecordOverheadBytes = 64 + 2 * 4 + 12 + 22 + 6 + 23;

bool IsUnknownTopic(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

// Delivery failures that publishing the same event again may cure: librdkafka gave up after
// its own retries (timeouts, brokers unreachable) or the publisher closed first. Everything
// else, including errors this list does not know, is permanent.
bool IsRetryableDeliveryError(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
      return true;
    default:
      return false;
  }
}

// What to change, for the errors a user can act on.
std::string Hint(rd_kafka_resp_err_t err, const std::string& topic) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
      return " Hint: the event is over the producer's message.max.bytes (--kafka "
             "message.max.bytes=N) or the topic's max.message.bytes on the broker; RunEmitter "
             "and `agentwire emit --truncate` cut large text fields to fit";
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
      return fmt::format(
          " Hint: create topic {} (agentwire broker --topic {}:12, or infra/kafka on a real "
          "cluster) or fix --topic / AGENTWIRE_TOPIC",
          topic, topic);
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
      return fmt::format(
          " Hint: the client's principal needs Write on topic {} and IdempotentWrite on the "
          "cluster",
          topic);
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
      return " Hint: not acknowledged within message.timeout.ms; check that the brokers are "
             "reachable (--brokers / AGENTWIRE_BROKERS), then publish the event again";
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
      return " Hint: the publisher closed before Kafka acknowledged the event (close_timeout); "
             "publish it again";
    default:
      return {};
  }
}

DeliveryReport Failure(std::string event_id, std::string user_id, rd_kafka_resp_err_t err,
                       const std::string& topic, std::string_view context = {}) {
  DeliveryReport report;
  report.event_id = std::move(event_id);
  report.user_id = std::move(user_id);
  report.retryable = IsRetryableDeliveryError(err);
  report.error_name = rd_kafka_err2name(err);
  report.error = fmt::format("{}{} ({}).{}", context, kafka::ErrorText(err),
                             report.retryable ? "retryable" : "permanent", Hint(err, topic));
  return report;
}

constexpr const char* kContentType = "application/x-protobuf";
constexpr const char* kSchemaName = "agentwire.v1.AgentEvent";

// One accepted event: owns the bytes librdkafka points at until its delivery report. The
// message and its bytes (key, then event_id, then the serialized event) are one allocation,
// made on the publishing thread and freed there too (see Impl::Collect): a block freed on
// another thread than the one that allocated it takes glibc's slow, locked path.
class OutgoingMessage {
 public:
  struct Deleter {
    void operator()(OutgoingMessage* message) const {
      message->~OutgoingMessage();
      ::operator delete(message);
    }
  };
  using Ptr = std::unique_ptr<OutgoingMessage, Deleter>;

  /// Key, event id and the serialized event, written in place.
  /// `value_size` is event.ByteSizeLong(), called just before (it caches the sizes the
  /// serialization uses).
  static Ptr Create(const v1::AgentEvent& event, size_t value_size) {
    const std::string& key = event.user_id();
    const std::string& id = event.event_id();
    void* memory = ::operator new(sizeof(OutgoingMessage) + key.size() + id.size() + value_size);
    Ptr message(new (memory) OutgoingMessage(key.size(), id.size(), value_size));
    char* out = message->Bytes();
    // Not strings: the record's key and header bytes, back to back without terminators.
    std::copy(key.begin(), key.end(), out);
    std::copy(id.begin(), id.end(), out + key.size());
    event.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out + key.size() + id.size()));
    return message;
  }

  uint64_t seq = 0;  // publish order; re-sends after a fatal error keep it
  DeliveryCallback callback;

  std::string_view Key() const { return {Bytes(), key_size_}; }
  std::string_view EventId() const { return {Bytes() + key_size_, id_size_}; }
  std::string_view Value() const { return {Bytes() + key_size_ + id_size_, value_size_}; }
  DeliveryReport FailedReport(rd_kafka_resp_err_t err, const std::string& topic,
                              std::string_view context) const {
    return Failure(std::string(EventId()), std::string(Key()), err, topic, context);
  }

 private:
  OutgoingMessage(size_t key_size, size_t id_size, size_t value_size)
      : key_size_(key_size), id_size_(id_size), value_size_(value_size) {}
  char* Bytes() { return reinterpret_cast<char*>(this + 1); }
  const char* Bytes() const { return reinterpret_cast<const char*>(this + 1); }

  size_t key_size_;
  size_t id_size_;
  size_t value_size_;
};

}  // namespace

class EventPublisher::Impl {
 public:
  explicit Impl(PublisherConfig config) : config_(std::move(config)) {
    kafka::ValidateTopicName(config_.topic, "topic");
    if (config_.max_pending == 0) throw ConfigError("max_pending must be at least 1");
    properties_ = DefaultProducerProperties();
    properties_["queue.buffering.max.messages"] = std::to_string(config_.max_pending + 1024);
    for (const auto& [key, value] : config_.client_properties) properties_[key] = value;
    if (!properties_.contains("bootstrap.servers")) {
      throw ConfigError("publisher: bootstrap.servers is not set (--brokers / AGENTWIRE_BROKERS)");
    }
    producer_ = MakeProducer();
    reports_.reset(rd_kafka_queue_get_main(producer_.get()));
    max_message_bytes_ = ConfiguredMaxMessageBytes();
    if (!config_.serve_reports_in_caller) poll_thread_ = std::thread([this] { PollLoop(); });
  }

  ~Impl() { Close(); }

  PublishStatus Publish(const v1::AgentEvent& event, DeliveryCallback callback,
                        std::chrono::milliseconds wait_for_space) {
    if (closing_.load()) return {PublishStatus::kClosed, {}, "the publisher is shutting down"};
    // Reports of earlier events first, like kcat's rd_kafka_poll(0) per message: their
    // memory is freed on the thread that allocated it. With the poll thread, the memory of the
    // events it reported (ours and librdkafka's) waits for us to free it.
    if (config_.serve_reports_in_caller) {
      Serve(std::chrono::milliseconds(0));
    } else if (has_garbage_.load(std::memory_order_acquire)) {
      Collect(CollectMode::kIfFree);
    }
    if (auto invalid = schemas::Validate(event)) {
      return {PublishStatus::kInvalidEvent, {}, std::move(invalid->message)};
    }
    const size_t value_size = event.ByteSizeLong();
    if (event.user_id().size() + value_size + kRecordOverheadBytes > max_message_bytes_) {
      return TooLarge(event.user_id().size() + value_size, {});
    }
    if (!ReserveSlot(wait_for_space)) {
      if (closing_.load()) return {PublishStatus::kClosed, {}, "the publisher is shutting down"};
      return {PublishStatus::kQueueFull,
              {},
              fmt::format("{} events await delivery (max_pending); wait for deliveries",
                          pending_.load())};
    }
    auto message = OutgoingMessage::Create(event, value_size);
    message->callback = std::move(callback);

    std::lock_guard lock(mutex_);
    message->seq = next_seq_++;
    if (recovering_) {
      backlog_.push_back(message.release());
    } else {
      auto err = Produce(producer_.get(), message.get());
      // librdkafka counts a message until it is freed, so reported events awaiting Collect
      // count against queue.buffering.max.messages: free them and try again.
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && Collect(CollectMode::kWait) > 0) {
        err = Produce(producer_.get(), message.get());
      }
      if (err == RD_KAFKA_RESP_ERR__FATAL) {
        // The producer just died; this event waits for its successor.
        fatal_.store(true);
        backlog_.push_back(message.release());
      } else if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ReleaseSlot();
        return RefusedByLibrdkafka(err, message->Key().size() + message->Value().size());
      } else {
        (void)message.release();  // owned by librdkafka's opaque until the report
      }
    }
    accepted_.fetch_add(1, std::memory_order_relaxed);
    return PublishStatus::kAccepted;
  }

  size_t Flush(std::chrono::milliseconds timeout) {
    if (config_.serve_reports_in_caller) {
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      while (pending_.load() > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        Serve(std::min(left, std::chrono::milliseconds(10)));
      }
      return pending_.load();
    }
    // Wakes every 10 ms to free what the poll thread reported meanwhile, here on the thread
    // that published (mostly), rather than leaving it to the poll thread.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock lock(space_mutex_);
    ++waiters_;
    while (pending_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      space_cv_.wait_until(
          lock,
          std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(10)),
          [this] { return pending_.load() == 0; });
      lock.unlock();
      Collect(CollectMode::kIfFree);
      lock.lock();
    }
    --waiters_;
    lock.unlock();
    Collect(CollectMode::kWait);
    return pending_.load();
  }

  size_t Pending() const { return pending_.load(); }

  PublisherStats Stats() const {
    return {accepted_.load(), delivered_.load(), failed_.load(), recreations_.load()};
  }

  const std::string& Topic() const { return config_.topic; }

  size_t MaxEventBytes() const { return max_message_bytes_ / 10 * 9; }

  void CheckTopic(std::chrono::milliseconds timeout) {
    // All topics, not a request naming this one: a request naming a missing topic makes
    // brokers with auto.create.topics.enable (and the embedded Kafka) create it.
    const rd_kafka_metadata_t* raw = nullptr;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    {
      std::lock_guard lock(mutex_);
      err = rd_kafka_metadata(producer_.get(), /*all_topics=*/1, nullptr, &raw,
                              static_cast<int>(timeout.count()));
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw KafkaError(fmt::format("cluster metadata: {}. Hint: check --brokers / "
                                   "AGENTWIRE_BROKERS and that the cluster is up",
                                   kafka::ErrorText(err)),
                       /*retryable=*/true);
    }
    kafka::MetadataPtr metadata(raw);
    for (int i = 0; i < metadata->topic_cnt; ++i) {
      if (config_.topic == metadata->topics[i].topic && metadata->topics[i].partition_cnt > 0) {
        return;
      }
    }
    throw KafkaError(fmt::format("topic {} does not exist on the cluster.{}", config_.topic,
                                 Hint(RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, config_.topic)),
                     /*retryable=*/false);
  }

  void InjectFatalError() {
    std::lock_guard lock(mutex_);
    if (producer_) {
      rd_kafka_test_fatal_error(producer_.get(), RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                "injected for testing");
    }
  }

 private:
  kafka::HandlePtr MakeProducer() {
    auto conf = kafka::MakeConf(properties_);
    // Delivery reports and errors as events on the main queue (reports_), not callbacks.
    rd_kafka_conf_set_events(conf.get(), RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR);
    return kafka::MakeClient(RD_KAFKA_PRODUCER, std::move(conf));
  }

  size_t ConfiguredMaxMessageBytes() const {
    std::array<char, 32> value{};
    size_t size = value.size();
    if (rd_kafka_conf_get(rd_kafka_conf(producer_.get()), "message.max.bytes", value.data(),
                          &size) != RD_KAFKA_CONF_OK) {
      return 1'000'000;  // librdkafka's default
    }
    return std::strtoull(value.data(), nullptr, 10);
  }

  PublishStatus TooLarge(size_t bytes, std::string kafka_error) const {
    return {PublishStatus::kTooLarge, std::move(kafka_error),
            fmt::format("event is {} bytes (key and value), over the limit of {} bytes "
                        "(message.max.bytes, with {} bytes of record overhead). Hint: raise it "
                        "with --kafka message.max.bytes=N (the topic's max.message.bytes must "
                        "allow it too), or cut large text fields to fit (RunEmitter does; "
                        "`agentwire emit --truncate`)",
                        bytes, max_message_bytes_, kRecordOverheadBytes)};
  }

  // producev refused the event. Only a full local queue is worth retrying.
  PublishStatus RefusedByLibrdkafka(rd_kafka_resp_err_t err, size_t bytes) const {
    std::string name = rd_kafka_err2name(err);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      return {PublishStatus::kQueueFull, std::move(name),
              "librdkafka's queue is full (queue.buffering.max.messages / .kbytes); wait for "
              "deliveries"};
    }
    if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) return TooLarge(bytes, std::move(name));
    if (IsUnknownTopic(err)) {
      return {PublishStatus::kUnknownTopic, std::move(name),
              kafka::ErrorText(err) + "." + Hint(err, config_.topic)};
    }
    return {PublishStatus::kRejected, std::move(name),
            kafka::ErrorText(err) + "." + Hint(err, config_.topic)};
  }

  rd_kafka_resp_err_t Produce(rd_kafka_t* producer, OutgoingMessage* message) {
    // No copy flag: the bytes live in `message` until its delivery report.
    return rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(config_.topic.c_str()),
        RD_KAFKA_V_KEY(message->Key().data(), message->Key().size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(message->Value().data()), message->Value().size()),
        RD_KAFKA_V_HEADER("content-type", kContentType, -1),
        RD_KAFKA_V_HEADER("schema", kSchemaName, -1), RD_KAFKA_V_OPAQUE(message), RD_KAFKA_V_END);
  }

  bool ReserveSlot(std::chrono::milliseconds wait) {
    if (pending_.fetch_add(1) < config_.max_pending) return true;
    pending_.fetch_sub(1);
    if (wait.count() <= 0) return false;
    if (config_.serve_reports_in_caller) {
      // Nobody else serves reports: make room by serving them while waiting.
      const auto deadline = std::chrono::steady_clock::now() + wait;
      for (;;) {
        if (closing_.load()) return false;
        if (pending_.fetch_add(1) < config_.max_pending) return true;
        pending_.fetch_sub(1);
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        Serve(std::min(left, std::chrono::milliseconds(10)));
      }
    }
    bool reserved = false;
    std::unique_lock lock(space_mutex_);
    ++waiters_;
    space_cv_.wait_for(lock, wait, [this, &reserved] {
      if (closing_.load()) return true;
      if (pending_.fetch_add(1) < config_.max_pending) {
        reserved = true;
        return true;
      }
      pending_.fetch_sub(1);
      return false;
    });
    --waiters_;
    return reserved;
  }

  void ReleaseSlot() {
    const size_t before = pending_.fetch_sub(1);
    // Wake waiters only when what they wait for may have become true: Flush waits for 0,
    // a full Publish for pending < max_pending. Waking them on every report cost a context
    // switch per event while a Flush waited (half the publisher's throughput on 2 cores).
    if ((before == 1 || before >= config_.max_pending) && waiters_.load() > 0) {
      std::lock_guard lock(space_mutex_);
      space_cv_.notify_all();
    }
  }

  // Counts the report and runs the callback; the caller frees `message` (the callback and
  // what it captured are destroyed here, on the thread that ran it).
  void Report(OutgoingMessage* message, const DeliveryReport& report) {
    (report.ok ? delivered_ : failed_).fetch_add(1, std::memory_order_relaxed);
    if (message->callback) {
      try {
        message->callback(report);
      } catch (...) {
        // A callback must not throw; an exception here would cross librdkafka's C frames.
        log::Error("delivery callback threw; ignored", {{"event_id", report.event_id}});
      }
      message->callback = nullptr;
    }
    ReleaseSlot();
  }

  void ReportAndFree(OutgoingMessage* message, const DeliveryReport& report) {
    OutgoingMessage::Ptr owned(message);
    Report(message, report);
  }

  // Serving thread only. Leaves `message` in reported_ to be freed (unless retained).
  void OnDelivery(const rd_kafka_message_t* kafka_message) {
    auto* message = static_cast<OutgoingMessage*>(kafka_message->_private);
    const auto err = kafka_message->err;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && fatal_.load() && !closing_.load()) {
      // The producer failed as a whole; keep the event for the next producer.
      retained_.push_back(message);
      return;
    }
    DeliveryReport report;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      // The message is deleted right after the report: hand its strings over.
      report.event_id = message->EventId();
      report.user_id = message->Key();
      report.ok = true;
    } else {
      report = message->FailedReport(err, config_.topic, {});
    }
    report.partition = kafka_message->partition;
    report.offset = kafka_message->offset;
    Report(message, report);
    reported_.push_back(message);
  }

  void OnError(rd_kafka_event_t* event) {
    const auto err = rd_kafka_event_error(event);
    const char* reason = rd_kafka_event_error_string(event);
    if (rd_kafka_event_error_is_fatal(event) != 0) {
      // librdkafka has already replaced ERR__FATAL with the original error.
      log::Error("kafka producer fatal error; recreating the producer",
                 {{"topic", config_.topic},
                  {"error", fmt::format("{}: {}", rd_kafka_err2name(err), reason)}});
      fatal_.store(true);
      return;
    }
    // Everything else is transient (broker down, timeouts): librdkafka retries by itself.
    log::Warn("kafka producer error",
              {{"topic", config_.topic},
               {"error", fmt::format("{}: {}", rd_kafka_err2name(err), reason)}});
  }

  void PollLoop() {
    while (!stop_poll_.load()) {
      Serve(std::chrono::milliseconds(50));
      // Publishers free what they allocated (Publish, Flush); when they stay quiet, the
      // memory of the events reported in the meantime is freed here.
      if (has_garbage_.load(std::memory_order_acquire)) Collect(CollectMode::kIfStale);
    }
  }

  // Serves delivery reports: on the poll thread, or on the caller's with
  // serve_reports_in_caller. Either way only one thread at a time, which Recover relies on.
  void Serve(std::chrono::milliseconds timeout) {
    ServeQueue(reports_.get(), timeout);
    if (fatal_.load() && !closing_.load()) Recover();
  }

  // Like rd_kafka_poll: waits up to `timeout` for the first event, then serves all that are
  // ready. Delivery reports come as events (not rd_kafka_poll's callback) so the messages,
  // which librdkafka frees when the event is destroyed, can be freed on the publishing thread.
  void ServeQueue(rd_kafka_queue_t* queue, std::chrono::milliseconds timeout) {
    int wait_ms = static_cast<int>(timeout.count());
    while (rd_kafka_event_t* event = rd_kafka_queue_poll(queue, wait_ms)) {
      wait_ms = 0;
      switch (rd_kafka_event_type(event)) {
        case RD_KAFKA_EVENT_DR:
          while (const rd_kafka_message_t* message = rd_kafka_event_message_next(event)) {
            OnDelivery(message);
          }
          Dispose(event);
          continue;
        case RD_KAFKA_EVENT_ERROR:
          OnError(event);
          break;
        default:
          break;
      }
      rd_kafka_event_destroy(event);
    }
  }

  // Frees a served delivery-report event and the messages reported from it: now, when the
  // reports were served on the publishing thread; otherwise hands them to Collect.
  void Dispose(rd_kafka_event_t* event) {
    if (config_.serve_reports_in_caller) {
      rd_kafka_event_destroy(event);
      for (auto* message : reported_) OutgoingMessage::Deleter{}(message);
      reported_.clear();
      return;
    }
    std::lock_guard lock(garbage_mutex_);
    if (garbage_events_.empty()) garbage_since_ = std::chrono::steady_clock::now();
    garbage_events_.push_back(event);
    garbage_messages_.insert(garbage_messages_.end(), reported_.begin(), reported_.end());
    reported_.clear();
    has_garbage_.store(true, std::memory_order_release);
  }

  enum class CollectMode {
    kIfFree,   // Publish: skip if another thread holds the garbage
    kWait,     // Flush, Close, Recover, a full librdkafka queue
    kIfStale,  // the poll thread: only what publishers left alone for kStaleAfter
  };
  static constexpr std::chrono::milliseconds kStaleAfter{100};

  // Frees the reported events handed over by Dispose; returns how many messages it freed.
  // Holds garbage_mutex_ while freeing so that Recover and Close, which take it, know that no
  // event of the producer they are about to destroy is still being freed.
  size_t Collect(CollectMode mode) {
    std::unique_lock lock(garbage_mutex_, std::defer_lock);
    if (mode == CollectMode::kIfFree) {
      if (!lock.try_lock()) return 0;
    } else {
      lock.lock();
    }
    if (garbage_events_.empty()) return 0;
    if (mode == CollectMode::kIfStale &&
        std::chrono::steady_clock::now() - garbage_since_ < kStaleAfter) {
      return 0;
    }
    for (auto* event : garbage_events_) rd_kafka_event_destroy(event);
    for (auto* message : garbage_messages_) OutgoingMessage::Deleter{}(message);
    const size_t freed = garbage_messages_.size();
    garbage_events_.clear();
    garbage_messages_.clear();
    has_garbage_.store(false, std::memory_order_release);
    return freed;
  }

 public:
  void Poll(std::chrono::milliseconds timeout) {
    if (config_.serve_reports_in_caller) {
      Serve(timeout);
    } else if (has_garbage_.load(std::memory_order_acquire)) {
      Collect(CollectMode::kIfFree);
    }
  }

 private:
  // Runs on the poll thread, which alone swaps producer_ (under mutex_ for Publish).
  void Recover() {
    {
      std::lock_guard lock(mutex_);
      recovering_ = true;
    }
    rd_kafka_t* old_producer = producer_.get();
    rd_kafka_purge(old_producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    // Serve the failed reports: OnDelivery moves every failed event into retained_. A message
    // counts in outq_len until it is freed, so free the reported ones as we go.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    Collect(CollectMode::kWait);
    while (rd_kafka_outq_len(old_producer) > 0 && std::chrono::steady_clock::now() < deadline) {
      ServeQueue(reports_.get(), std::chrono::milliseconds(50));
      Collect(CollectMode::kWait);
    }
    kafka::HandlePtr fresh;
    kafka::QueuePtr fresh_reports;
    try {
      fresh = MakeProducer();
      fresh_reports.reset(rd_kafka_queue_get_main(fresh.get()));
    } catch (const std::exception& e) {
      log::Error("cannot recreate the producer; retrying", {{"error", e.what()}});
      std::this_thread::sleep_for(std::chrono::seconds(1));
      return;  // fatal_ is still set: the poll loop calls Recover again
    }

    std::lock_guard lock(mutex_);
    std::vector<OutgoingMessage*> resend = std::move(retained_);
    retained_.clear();
    resend.insert(resend.end(), backlog_.begin(), backlog_.end());
    backlog_.clear();
    std::sort(resend.begin(), resend.end(),
              [](const OutgoingMessage* a, const OutgoingMessage* b) { return a->seq < b->seq; });
    fatal_.store(false);
    // Destroying the old handle outside librdkafka's callbacks; its queue is empty and every
    // event it reported has been freed.
    reports_ = std::move(fresh_reports);
    producer_ = std::move(fresh);
    for (auto* message : resend) {
      const auto err = Produce(producer_.get(), message);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ReportAndFree(message, message->FailedReport(err, config_.topic,
                                                     "re-send after producer recreation: "));
      }
    }
    recovering_ = false;
    recreations_.fetch_add(1);
    log::Warn("kafka producer recreated; unacknowledged events re-sent",
              {{"topic", config_.topic}, {"count", static_cast<uint64_t>(resend.size())}});
  }

  void Close() {
    if (closing_.exchange(true)) return;
    {
      std::lock_guard lock(space_mutex_);
      space_cv_.notify_all();
    }
    const size_t left = Flush(config_.close_timeout);
    if (left > 0) {
      log::Error("publisher closing with undelivered events; they are reported as failed",
                 {{"topic", config_.topic}, {"count", static_cast<uint64_t>(left)}});
      std::lock_guard lock(mutex_);
      rd_kafka_purge(producer_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    }
    // Let the poll thread (or Flush itself) serve the purge reports, then stop it.
    (void)Flush(std::chrono::seconds(5));
    stop_poll_.store(true);
    if (poll_thread_.joinable()) poll_thread_.join();
    Collect(CollectMode::kWait);
    // Events parked during a recovery that never finished.
    std::vector<OutgoingMessage*> orphans = std::move(retained_);
    orphans.insert(orphans.end(), backlog_.begin(), backlog_.end());
    backlog_.clear();
    for (auto* message : orphans) {
      ReportAndFree(message, message->FailedReport(RD_KAFKA_RESP_ERR__PURGE_QUEUE, config_.topic,
                                                   "publisher closed: "));
    }
    reports_.reset();
    producer_.reset();
  }

  PublisherConfig config_;
  kafka::Properties properties_;
  size_t max_message_bytes_ = 1'000'000;  // the producer's message.max.bytes

  std::mutex mutex_;  // guards producer_ (for Publish), recovering_, backlog_, next_seq_
  kafka::HandlePtr producer_;
  kafka::QueuePtr reports_;  // producer_'s main queue: delivery reports and errors
  bool recovering_ = false;
  uint64_t next_seq_ = 0;
  std::deque<OutgoingMessage*> backlog_;    // accepted while the producer is being replaced
  std::vector<OutgoingMessage*> retained_;  // serving thread only: failed by a fatal error
  std::vector<OutgoingMessage*> reported_;  // serving thread only: of the event being served

  // Reported events whose memory a publishing thread frees (Collect).
  std::mutex garbage_mutex_;
  std::vector<rd_kafka_event_t*> garbage_events_;
  std::vector<OutgoingMessage*> garbage_messages_;
  std::chrono::steady_clock::time_point garbage_since_;
  std::atomic<bool> has_garbage_{false};

  std::atomic<bool> fatal_{false};
  std::atomic<bool> closing_{false};
  std::atomic<bool> stop_poll_{false};
  std::atomic<size_t> pending_{0};
  std::atomic<int> waiters_{0};
  std::mutex space_mutex_;
  std::condition_variable space_cv_;

  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> recreations_{0};

  std::thread poll_thread_;
};

EventPublisher::EventPublisher(PublisherConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}
EventPublisher::~EventPublisher() = default;

PublishStatus EventPublisher::Publish(const v1::AgentEvent& event, DeliveryCallback on_delivery,
                                      std::chrono::milliseconds wait_for_space) {
  return impl_->Publish(event, std::move(on_delivery), wait_for_space);
}
size_t EventPublisher::Flush(std::chrono::milliseconds timeout) { return impl_->Flush(timeout); }
void EventPublisher::Poll(std::chrono::milliseconds timeout) { impl_->Poll(timeout); }
size_t EventPublisher::Pending() const { return impl_->Pending(); }
PublisherStats EventPublisher::Stats() const { return impl_->Stats(); }
const std::string& EventPublisher::Topic() const { return impl_->Topic(); }
size_t EventPublisher::MaxEventBytes() const { return impl_->MaxEventBytes(); }
void EventPublisher::CheckTopic(std::chrono::milliseconds timeout) { impl_->CheckTopic(timeout); }
void EventPublisher::InjectFatalErrorForTesting() { impl_->InjectFatalError(); }

}  // namespace agentwire::producers
