#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace agentwire {

/// A resume point in a user's stream, shared by the gateway (frames), the browser client
/// (opaque) and `agentwire replay --from-cursor`.
///
/// A user's events all live in one partition (key = user_id, murmur2), so a position is one
/// (partition, next offset) pair: "every event of this user at or after `next_offset` in
/// `partition` has not been delivered yet". The topic identity (a hash of the topic name, the
/// operator-set epoch, and the partition count) lets a replica recognise a cursor from another
/// topic or from before the topic was recreated or expanded, and answer `reset` instead of
/// silently skipping or repeating events.
///
/// Wire form: base64url without padding of
/// [version=1 u8][epoch u32][topic hash u32][partition count u32][partition u32][next offset i64],
/// all big-endian: 25 bytes, 34 characters. Any replica encodes and decodes it the same way.
struct Cursor {
  uint32_t epoch = 1;
  uint32_t topic_hash = 0;
  uint32_t partition_count = 0;
  uint32_t partition = 0;
  int64_t next_offset = 0;

  friend bool operator==(const Cursor&, const Cursor&) = default;
};

/// FNV-1a of the topic name: the `topic_hash` a cursor carries.
uint32_t TopicHash(std::string_view topic) noexcept;

std::string EncodeCursor(const Cursor& cursor);
/// EncodeCursor's text appended to `out` (no temporary string: replay's per-event path).
void AppendCursor(const Cursor& cursor, std::string& out);

/// nullopt for anything that is not a cursor this version wrote (wrong length, alphabet,
/// version, negative offset, partition >= partition count). "earliest" is not a cursor:
/// callers handle it before decoding.
std::optional<Cursor> DecodeCursor(std::string_view text);

/// What every cursor minted against one topic shares. A replica (and `agentwire replay`) builds
/// it once at start from the topic's name, the operator-set epoch and the partition count it
/// finds on the cluster.
struct TopicIdentity {
  std::string topic;
  uint32_t epoch = 1;
  uint32_t topic_hash = 0;  // TopicHash(topic)
  int partition_count = 0;

  static TopicIdentity Of(std::string topic, uint32_t epoch, int partition_count);
  /// The cursor that resumes `partition` at `next_offset`.
  Cursor CursorAt(int partition, int64_t next_offset) const;
  /// The cursor was minted against this topic, epoch and partition layout, so its offset means
  /// the same here. A cursor that fails this must get a reset, never a guess.
  bool Issued(const Cursor& cursor) const;
};

/// base64url without padding (RFC 4648 section 5), exposed for tests.
std::string Base64UrlEncode(std::string_view bytes);
void AppendBase64Url(std::string_view bytes, std::string& out);
std::optional<std::string> Base64UrlDecode(std::string_view text);

}  // namespace agentwire
