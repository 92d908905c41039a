#include "agentwire/core/cursor.hpp"

#include <array>
#include <utility>

#include "agentwire/core/hashing.hpp"

namespace agentwire {
namespace {

constexpr uint8_t kCursorVersion = 1;
constexpr size_t kCursorBytes = 25;
constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Big-endian into a fixed buffer: cursors are encoded once per delivered or replayed event,
// so the encoder allocates nothing but the output's growth.
template <typename T>
size_t PutBE(std::array<char, kCursorBytes>& bytes, size_t at, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    bytes[at + i] = static_cast<char>((v >> (8 * (sizeof(T) - 1 - i))) & 0xFF);
  return at + sizeof(T);
}
uint64_t GetBE(std::string_view bytes, size_t at, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  return v;
}

}  // namespace

uint32_t TopicHash(std::string_view topic) noexcept { return Fnv1a32(topic); }

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  AppendBase64Url(bytes, out);
  return out;
}

void AppendBase64Url(std::string_view bytes, std::string& out) {
  out.reserve(out.size() + (bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t n = (static_cast<uint8_t>(bytes[i]) << 16) |
                       (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(kAlphabet[(n >> 6) & 63]);
    out.push_back(kAlphabet[n & 63]);
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) n |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    if (rest == 2) out.push_back(kAlphabet[(n >> 6) & 63]);
  }
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  static const std::array<int8_t, 256> kValues = [] {
    std::array<int8_t, 256> values{};
    values.fill(-1);
    for (size_t i = 0; i < kAlphabet.size(); ++i)
      values[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
    return values;
  }();
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const int8_t v = kValues[static_cast<uint8_t>(c)];
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  // Leftover bits must be zero, or two different texts would decode to the same cursor.
  if ((buffer & ((1U << bits) - 1)) != 0) return std::nullopt;
  return out;
}

void AppendCursor(const Cursor& cursor, std::string& out) {
  std::array<char, kCursorBytes> bytes{};
  bytes[0] = static_cast<char>(kCursorVersion);
  size_t at = PutBE(bytes, 1, cursor.epoch);
  at = PutBE(bytes, at, cursor.topic_hash);
  at = PutBE(bytes, at, cursor.partition_count);
  at = PutBE(bytes, at, cursor.partition);
  PutBE(bytes, at, static_cast<uint64_t>(cursor.next_offset));
  AppendBase64Url({bytes.data(), bytes.size()}, out);
}

std::string EncodeCursor(const Cursor& cursor) {
  std::string out;
  AppendCursor(cursor, out);
  return out;
}

TopicIdentity TopicIdentity::Of(std::string topic, uint32_t epoch, int partition_count) {
  TopicIdentity identity;
  identity.topic_hash = TopicHash(topic);
  identity.topic = std::move(topic);
  identity.epoch = epoch;
  identity.partition_count = partition_count;
  return identity;
}

Cursor TopicIdentity::CursorAt(int partition, int64_t next_offset) const {
  return {epoch, topic_hash, static_cast<uint32_t>(partition_count),
          static_cast<uint32_t>(partition), next_offset};
}

bool TopicIdentity::Issued(const Cursor& cursor) const {
  return cursor.topic_hash == topic_hash && cursor.epoch == epoch &&
         cursor.partition_count == static_cast<uint32_t>(partition_count);
}

std::optional<Cursor> DecodeCursor(std::string_view text) {
  const auto bytes = Base64UrlDecode(text);
  if (!bytes || bytes->size() != kCursorBytes) return std::nullopt;
  if (static_cast<uint8_t>((*bytes)[0]) != kCursorVersion) return std::nullopt;
  Cursor cursor;
  cursor.epoch = static_cast<uint32_t>(GetBE(*bytes, 1, 4));
  cursor.topic_hash = static_cast<uint32_t>(GetBE(*bytes, 5, 4));
  cursor.partition_count = static_cast<uint32_t>(GetBE(*bytes, 9, 4));
  cursor.partition = static_cast<uint32_t>(GetBE(*bytes, 13, 4));
  cursor.next_offset = static_cast<int64_t>(GetBE(*bytes, 17, 8));
  if (cursor.next_offset < 0 || cursor.partition_count == 0 ||
      cursor.partition >= cursor.partition_count) {
    return std::nullopt;
  }
  return cursor;
}

}  // namespace agentwire
