#pragma once

#include <cstdint>
#include <string_view>

namespace agentwire::schemas {

/// Reads protobuf's wire format field by field, without a schema and without copying: the
/// gateway's routing scan and the JSON writer's wire path both read records with it. Every
/// read checks its bounds and says false on malformed input (the reader is then unusable).
class WireReader {
 public:
  static constexpr uint32_t kVarint = 0;
  static constexpr uint32_t kFixed64 = 1;
  static constexpr uint32_t kLength = 2;
  static constexpr uint32_t kFixed32 = 5;

  explicit WireReader(std::string_view bytes)
      : at_(reinterpret_cast<const uint8_t*>(bytes.data())), end_(at_ + bytes.size()) {}

  bool Done() const { return at_ == end_; }

  /// The next field's number and wire type; false at malformed input or field number 0. A
  /// number past 32 bits (protobuf skips such a field as unknown) reads as UINT32_MAX, which
  /// no schema uses, never as a smaller number it would alias.
  bool Next(uint32_t& number, uint32_t& type) {
    uint64_t tag = 0;
    if (!Varint(tag) || (tag >> 3) == 0) return false;
    number = (tag >> 3) > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(tag >> 3);
    type = static_cast<uint32_t>(tag & 7);
    return true;
  }

  bool Varint(uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64 && at_ < end_; shift += 7) {
      const uint8_t byte = *at_++;
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }

  /// A length-delimited field's bytes (a view into the record).
  bool Bytes(std::string_view& value) {
    uint64_t length = 0;
    if (!Varint(length) || length > static_cast<uint64_t>(end_ - at_)) return false;
    value = {reinterpret_cast<const char*>(at_), static_cast<size_t>(length)};
    at_ += length;
    return true;
  }

  /// A varint that must fit 32 bits unsigned.
  bool Uint32(uint32_t& value) {
    uint64_t wide = 0;
    if (!Varint(wide) || wide > UINT32_MAX) return false;
    value = static_cast<uint32_t>(wide);
    return true;
  }

  /// Steps over a field's value of wire type `type`; false for groups (3, 4), which no
  /// agentwire message uses, and for types 6 and 7, which do not exist.
  bool Skip(uint32_t type) {
    uint64_t ignored = 0;
    std::string_view bytes;
    switch (type) {
      case kVarint:
        return Varint(ignored);
      case kFixed64:
        return Advance(8);
      case kLength:
        return Bytes(bytes);
      case kFixed32:
        return Advance(4);
      default:
        return false;
    }
  }

 private:
  bool Advance(size_t bytes) {
    if (static_cast<size_t>(end_ - at_) < bytes) return false;
    at_ += bytes;
    return true;
  }

  const uint8_t* at_;
  const uint8_t* end_;
};

}  // namespace agentwire::schemas
