#pragma once

#include <agentwire/v1/events.pb.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace agentwire::producers {

/// What Publish() says right away, before Kafka has seen the event.
enum class PublishStatus {
  kAccepted,      // queued; the delivery callback will report the outcome
  kQueueFull,     // retryable: too many events await delivery; retry later or wait longer
  kInvalidEvent,  // fatal for this event: missing user_id / run_id / body
  kClosed,        // the publisher is shutting down
};

const char* ToString(PublishStatus status) noexcept;
inline bool IsRetryable(PublishStatus status) noexcept {
  return status == PublishStatus::kQueueFull;
}

/// The outcome of one accepted event, reported exactly once.
struct DeliveryReport {
  std::string event_id;
  std::string user_id;
  bool ok = false;
  int32_t partition = -1;
  int64_t offset = -1;
  std::string error;  // empty when ok
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
};

}  // namespace agentwire::producers
