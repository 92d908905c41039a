#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>

#include "agentwire/producers/event_publisher.hpp"

namespace agentwire::producers {

struct JsonLinesResult {
  uint64_t lines = 0;            // non-blank lines read
  uint64_t published = 0;        // delivered to Kafka (acknowledged)
  uint64_t bad_lines = 0;        // rejected before publishing (reported as `line N: ...`)
  uint64_t delivery_failed = 0;  // accepted but not acknowledged by Kafka
  uint64_t undelivered = 0;      // still outstanding when the flush timeout ran out

  bool AllOk() const { return bad_lines == 0 && delivery_failed == 0 && undelivered == 0; }
};

/// `agentwire emit`: reads one JSON event per line from `in`, fills event_id/emitted_at
/// when absent, validates and publishes each. A bad line is reported on `errors` as
/// `line N: <reason>` and skipped; the rest are still published. Blank lines are ignored.
/// Waits for every delivery report (up to `flush_timeout`) before returning. `errors`
/// must outlive `publisher` (late delivery failures are written to it).
JsonLinesResult PublishJsonLines(
    std::istream& in, EventPublisher& publisher, std::ostream& errors,
    std::chrono::milliseconds flush_timeout = std::chrono::seconds(60));

}  // namespace agentwire::producers
