#pragma once

#include <agentwire/v1/events.pb.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentwire::schemas {

/// The body's field name, which is the event's JSON "type" ("agent_thinking", ...);
/// empty when no body is set. No reflection: a table lookup.
std::string_view EventType(const v1::AgentEvent& event);

/// Every known type, in schema order.
const std::vector<std::string_view>& KnownEventTypes();

/// agent_completed or agent_failed: the run is over.
bool IsTerminal(const v1::AgentEvent& event);

/// The JSON form: snake_case field names, every scalar present (stable shape for
/// clients), `"type"` first, timestamps RFC 3339 UTC, 32-bit numbers as JSON numbers,
/// attributes sorted by key. Written directly (about 20x faster than protobuf's printer, whose
/// bytes it reproduces); events it does not recognise go through the printer.
std::string ToJson(const v1::AgentEvent& event);

/// ToJson appended to `out` (no allocation when `out` has room).
void AppendJson(const v1::AgentEvent& event, std::string& out);

/// AppendJson of the event whose serialized bytes are `record`, read straight off the wire
/// without decoding it into a message. false (and `out` as it was) for anything but the plain
/// shape serializers write: a field repeated, an unknown field, bytes that would not parse or
/// not print. The caller then decodes the record and calls AppendJson, which prints the same
/// bytes for every record this accepts.
bool TryAppendJsonFromWire(std::string_view record, std::string& out);

/// The same JSON through protobuf's reflection-based printer (attributes in the map's order).
/// The reference the fast writer is tested against, and its fallback.
std::string ToJsonViaProtobuf(const v1::AgentEvent& event);

/// Appends "YYYY-MM-DDTHH:MM:SS" (UTC, proleptic Gregorian) for `seconds` since the epoch: the
/// date and time part every RFC 3339 text agentwire prints shares.
void AppendDateTime(int64_t seconds, std::string& out);

/// Appends `text` as a JSON string body (no quotes) with protobuf's JSON escaping; false
/// (and `out` partially written) when `text` is not valid UTF-8.
bool AppendJsonEscaped(std::string_view text, std::string& out);

struct JsonError {
  std::string message;
};

/// Deeper JSON nesting is refused before parsing (an event is at most 3 levels deep).
inline constexpr int kMaxJsonDepth = 32;

/// Parses the JSON form. `"type"` selects the body; a body object without `"type"` is
/// accepted too; `"type"` without a body means an empty body. Unknown fields, duplicate keys,
/// numbers out of range and nesting deeper than kMaxJsonDepth are errors. Never throws (any
/// failure, whatever its cause, is a JsonError). On error `out` is unspecified. Returns
/// nullopt on success.
[[nodiscard]] std::optional<JsonError> FromJson(std::string_view json, v1::AgentEvent& out);

/// What every published event must carry: user_id (the Kafka key), run_id and a body.
[[nodiscard]] std::optional<JsonError> Validate(const v1::AgentEvent& event);

/// A new event id: a 26-character ULID (48-bit millisecond time + 80 random bits,
/// Crockford base32), so ids sort by creation time. Thread-safe.
std::string NewEventId();

/// The system clock as a Timestamp, to the microsecond: the resolution PostgreSQL's
/// timestamptz keeps, so the archive stores exactly what was published. (protobuf 3.21's
/// TimeUtil::GetCurrentTime() reads time(): whole seconds.)
google::protobuf::Timestamp TimestampNow();

/// Sets event_id and emitted_at (TimestampNow()) when they are absent.
void FillDefaults(v1::AgentEvent& event);

/// The same, except that a filled emitted_at is never earlier than `not_before`, which is then
/// set to it: callers keep one per run (RunEmitter) or per input (emit), so a wall clock stepped
/// back (NTP) cannot make a run's emitted_at decrease. An emitted_at already set is kept as is.
void FillDefaults(v1::AgentEvent& event, google::protobuf::Timestamp& not_before);

}  // namespace agentwire::schemas
