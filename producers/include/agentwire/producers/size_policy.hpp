#pragma once

#include <agentwire/v1/events.pb.h>

#include <cstddef>

namespace agentwire::producers {

/// What RunEmitter fits every event under when neither it nor its sink says otherwise: safely
/// under librdkafka's default message.max.bytes (1,000,000), which also counts the key and the
/// headers.
inline constexpr size_t kDefaultMaxEventBytes = 900'000;

/// Cuts the body's text fields (input, text, output, error, result, message) so that the
/// serialized event is at most `max_bytes`, the largest fields first, each on a UTF-8 character
/// boundary, and records what was cut in `event.truncated` (fields, original size, limit).
/// Returns true when the event fits (untouched if it already did); false when even empty text
/// fields would not fit: the envelope (ids, attributes, names) alone is over the limit; the
/// event is then left as it was. Ids, run_seq and the envelope are never changed.
bool FitToSize(v1::AgentEvent& event, size_t max_bytes);

}  // namespace agentwire::producers
