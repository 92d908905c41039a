#pragma once

#include <agentwire/v1/events.pb.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

#include "agentwire/producers/size_policy.hpp"

namespace agentwire::producers {

/// What Publish() says right away, before Kafka has seen the event. Only kQueueFull is
/// retryable (the same event may succeed later); every other refusal is permanent for this
/// event and this publisher, and retrying it unchanged can never succeed.
struct PublishStatus {
  enum Code : uint8_t {
    kAccepted,      // queued; the delivery callback will report the outcome
    kQueueFull,     // retryable: too many events await delivery; retry later or wait longer
    kInvalidEvent,  // permanent: missing user_id / run_id / body
    kTooLarge,      // permanent: over message.max.bytes (FitToSize / RunEmitter cut to fit)
    kUnknownTopic,  // permanent: the topic does not exist on the cluster
    kRejected,      // permanent: another librdkafka refusal (see kafka_error)
    kClosed,        // permanent: the publisher is shutting down
  };

  PublishStatus(Code code = kAccepted) : code(code) {}  // NOLINT(google-explicit-constructor)
  PublishStatus(Code code, std::string kafka_error, std::string detail)
      : code(code), kafka_error(std::move(kafka_error)), detail(std::move(detail)) {}

  bool Accepted() const noexcept { return code == kAccepted; }
  bool IsRetryable() const noexcept { return code == kQueueFull; }
  bool IsPermanent() const noexcept { return code != kAccepted && code != kQueueFull; }

  friend bool operator==(const PublishStatus& status, Code other) noexcept {
    return status.code == other;
  }

  Code code = kAccepted;
  /// librdkafka's error name ("MSG_SIZE_TOO_LARGE", "_UNKNOWN_TOPIC", ...) when librdkafka
  /// refused the event; empty when the publisher decided by itself.
  std::string kafka_error;
  /// What happened to this event and what to change (sizes, limits, the flag or setting).
  /// Empty for kAccepted.
  std::string detail;
};

/// One line: the class, librdkafka's error name and the detail, e.g. "too large (permanent,
/// MSG_SIZE_TOO_LARGE): event is 3000123 bytes, over ... Hint: ...".
std::string ToString(const PublishStatus& status);
std::ostream& operator<<(std::ostream& out, const PublishStatus& status);
inline bool IsRetryable(const PublishStatus& status) noexcept { return status.IsRetryable(); }

/// The outcome of one accepted event, reported exactly once. A failure is final for this
/// delivery: librdkafka has already retried what it retries by itself.
struct DeliveryReport {
  std::string event_id;
  std::string user_id;
  bool ok = false;
  int32_t partition = -1;
  int64_t offset = -1;
  /// When !ok: whether publishing the event again may succeed (timeouts, brokers down) or
  /// never can (too large for the broker, unknown topic, not authorized, ...). Unknown
  /// errors count as permanent.
  bool retryable = false;
  std::string error_name;  // librdkafka's error name when !ok ("MSG_TIMED_OUT", ...)
  std::string error;       // empty when ok; the reason and a hint saying what to change
};

/// Called on the publisher's poll thread: keep it short and never throw.
using DeliveryCallback = std::function<void(const DeliveryReport&)>;

/// Where agent code publishes events. EventPublisher is the Kafka implementation; tests
/// and embedders may provide their own.
class EventSink {
 public:
  virtual ~EventSink() = default;
  /// Queues `event` (key = user_id). Waits up to `wait_for_space` when the queue is full.
  /// Thread-safe.
  virtual PublishStatus Publish(const v1::AgentEvent& event, DeliveryCallback on_delivery = {},
                                std::chrono::milliseconds wait_for_space = {}) = 0;
  /// The largest serialized event this sink takes (RunEmitter cuts events to fit).
  virtual size_t MaxEventBytes() const { return kDefaultMaxEventBytes; }
};

}  // namespace agentwire::producers
