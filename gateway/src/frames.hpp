#pragma once

#include <agentwire/v1/events.pb.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "agentwire/core/cursor.hpp"

namespace agentwire::gateway {

/// {"type":"event","cursor":"…","event":{…}} — built once per event, shared by sessions.
std::string EventFrame(std::string_view cursor, const v1::AgentEvent& event);
/// The same frame appended to `out`, the cursor written in place: the per-event path builds
/// into a reused buffer and copies the result out at its exact size.
void AppendEventFrame(const Cursor& cursor, const v1::AgentEvent& event, std::string& out);
/// The same frame for the event whose serialized bytes are `record`, without decoding it
/// (schemas::TryAppendJsonFromWire); false, and `out` as it was, when the record needs the
/// decoding path.
bool TryAppendEventFrameFromWire(const Cursor& cursor, std::string_view record, std::string& out);
/// {"type":"ready","cursor":"…","replayed":N}
std::string ReadyFrame(std::string_view cursor, uint64_t replayed);
/// Why a `reset` is sent (docs/protocol.md): the history the client asked for is gone (or
/// from another topic identity) ...
inline constexpr std::string_view kResetHistoryUnavailable = "history_unavailable";
/// ... or the client came without a cursor and the log holds more than --max-catchup-events
/// records: the catch-up starts at that bound, on this connection.
inline constexpr std::string_view kResetCatchupLimit = "catchup_limit";
/// Offsets of a partition that exist nowhere the replica can read (neither Kafka nor the
/// archive): the hole a `reset` history_unavailable names. [from_offset, to_offset).
struct MissingRange {
  int partition = 0;
  int64_t from_offset = 0;
  int64_t to_offset = 0;
};
/// {"type":"reset","reason":"history_unavailable"}, with
/// "missing":{"partition":P,"from_offset":A,"to_offset":B} when the hole is known.
std::string ResetFrame(std::string_view reason, const MissingRange* missing = nullptr);
/// The JSON body of an HTTP error before the upgrade: {"error":code,"message":text}.
std::string ErrorBody(std::string_view code, std::string_view message);

}  // namespace agentwire::gateway
