#include "agentwire/core/cursor.hpp"

#include <array>

namespace agentwire {
namespace {

constexpr uint8_t kCursorVersion = 1;
constexpr size_t kCursorBytes = 25;
constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void PutU32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xFF));
}
void PutU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xFF));
}
uint64_t GetBE(std::string_view bytes, size_t at, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  return v;
}

}  // namespace

uint32_t TopicHash(std::string_view topic) noexcept {
  uint32_t hash = 2166136261U;
  for (const char c : topic) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 16777619U;
  }
  return hash;
}

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
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
  return out;
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

std::string EncodeCursor(const Cursor& cursor) {
  std::string bytes;
  bytes.reserve(kCursorBytes);
  bytes.push_back(static_cast<char>(kCursorVersion));
  PutU32(bytes, cursor.epoch);
  PutU32(bytes, cursor.topic_hash);
  PutU32(bytes, cursor.partition_count);
  PutU32(bytes, cursor.partition);
  PutU64(bytes, static_cast<uint64_t>(cursor.next_offset));
  return Base64UrlEncode(bytes);
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
