#pragma once

// emitted_at comes from the worker's clock, and one worker with a broken clock (year 9999,
// 1970) must not rewrite history: archive, analytics and replay trust emitted_at only within
// kMaxClockSkew of the record's Kafka timestamp, and use the Kafka timestamp instead otherwise
// (counted by the caller). Private to agentwire_consumers.

#include <agentwire/v1/events.pb.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

namespace agentwire::consumers::internal {

inline constexpr std::chrono::hours kMaxClockSkew{24};

/// emitted_at in nanoseconds since the epoch, saturated to the int64 range (which ends in
/// 2262): protobuf Timestamps reach year 9999. nullopt when unset.
inline std::optional<int64_t> EmittedAtNanos(const v1::AgentEvent& event) {
  if (!event.has_emitted_at()) return std::nullopt;
  constexpr int64_t kMaxSeconds = std::numeric_limits<int64_t>::max() / 1'000'000'000 - 1;
  const int64_t seconds = event.emitted_at().seconds();
  if (seconds > kMaxSeconds) return std::numeric_limits<int64_t>::max();
  if (seconds < -kMaxSeconds) return std::numeric_limits<int64_t>::min();
  return seconds * 1'000'000'000 + event.emitted_at().nanos();
}

/// The time archive, analytics and replay use for an event: emitted_at when it is within
/// kMaxClockSkew of `kafka_timestamp_ms` (or that is unknown, < 0), else the Kafka timestamp, and
/// then `*replaced` is set. nullopt when emitted_at is unset.
inline std::optional<int64_t> EventTimeNanos(const v1::AgentEvent& event,
                                             int64_t kafka_timestamp_ms, bool* replaced) {
  const auto emitted = EmittedAtNanos(event);
  if (!emitted || kafka_timestamp_ms < 0) return emitted;
  constexpr int64_t kSkewNanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(kMaxClockSkew).count();
  const int64_t kafka = kafka_timestamp_ms * 1'000'000;
  // kafka is well inside the range, so neither difference overflows for a saturated emitted.
  if (*emitted > kafka + kSkewNanos || *emitted < kafka - kSkewNanos) {
    if (replaced != nullptr) *replaced = true;
    return kafka;
  }
  return emitted;
}

}  // namespace agentwire::consumers::internal
