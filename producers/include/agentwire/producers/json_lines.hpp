#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>

#include "agentwire/producers/event_publisher.hpp"

namespace agentwire::producers {

struct JsonLinesOptions {
  /// How long to wait for the last delivery reports; also how long the local queue may stay
  /// full without a single delivery before emit gives up on the rest of the input.
  std::chrono::milliseconds flush_timeout = std::chrono::seconds(60);
  /// Cut the large text fields of an event over the publisher's MaxEventBytes() to fit (and
  /// mark it truncated) instead of reporting the line.
  bool truncate = false;
  /// Longer lines are reported and skipped without being held in memory.
  size_t max_line_bytes = 64 * 1024 * 1024;
};

struct JsonLinesResult {
  uint64_t lines = 0;            // non-blank lines read
  uint64_t published = 0;        // delivered to Kafka (acknowledged)
  uint64_t bad_lines = 0;        // refused before publishing (reported as `line N: ...`)
  uint64_t delivery_failed = 0;  // accepted but not acknowledged by Kafka
  uint64_t undelivered = 0;      // still outstanding when the flush timeout ran out
  uint64_t truncated = 0;        // published with text fields cut to fit (JsonLinesOptions)
  bool stalled = false;          // gave up: the queue stayed full with no delivery at all

  bool AllOk() const {
    return bad_lines == 0 && delivery_failed == 0 && undelivered == 0 && !stalled;
  }
};

/// `agentwire emit`: reads one JSON event per line from `in`, fills event_id/emitted_at
/// when absent (emitted_at never decreasing over the input), validates and publishes each.
/// A bad line, or one Kafka can never take (too large, unknown topic), is reported on `errors`
/// as `line N: <reason>` and skipped; the rest are still published. Blank lines are ignored.
/// Never loops forever: a full queue is waited on only while deliveries progress. Waits for
/// every delivery report (up to `flush_timeout`) before returning; reports arriving later are
/// counted by the publisher but no longer written to `errors`. Never throws for a line.
JsonLinesResult PublishJsonLines(std::istream& in, EventPublisher& publisher, std::ostream& errors,
                                 const JsonLinesOptions& options = {});

}  // namespace agentwire::producers
