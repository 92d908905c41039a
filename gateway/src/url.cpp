#include "url.hpp"

#include <cstdint>

namespace agentwire::gateway {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string PercentDecode(std::string_view text, UrlPart part) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      const int high = HexValue(text[i + 1]);
      const int low = HexValue(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out.push_back(static_cast<char>(high * 16 + low));
        i += 2;
        continue;
      }
    }
    out.push_back(part == UrlPart::kQuery && text[i] == '+' ? ' ' : text[i]);
  }
  return out;
}

std::optional<std::string> SegmentBetween(std::string_view path, std::string_view prefix,
                                          std::string_view suffix) {
  if (!path.starts_with(prefix) || !path.ends_with(suffix) ||
      path.size() < prefix.size() + suffix.size()) {
    return std::nullopt;
  }
  return std::string(path.substr(prefix.size(), path.size() - prefix.size() - suffix.size()));
}

bool IsTextId(std::string_view id, size_t max_bytes) {
  if (id.empty() || id.size() > max_bytes) return false;
  for (size_t i = 0; i < id.size();) {
    const auto byte = static_cast<unsigned char>(id[i]);
    if (byte < 0x20 || byte == 0x7F) return false;  // control characters, NUL
    if (byte < 0x80) {
      ++i;
      continue;
    }
    // A multi-byte sequence: its length from the lead byte, continuation bytes 10xxxxxx, no
    // overlong forms, no surrogates, nothing past U+10FFFF.
    size_t length = 0;
    uint32_t code = 0;
    if (byte >= 0xC2 && byte <= 0xDF) {
      length = 2;
      code = byte & 0x1F;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      length = 3;
      code = byte & 0x0F;
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      length = 4;
      code = byte & 0x07;
    } else {
      return false;
    }
    if (i + length > id.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(id[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    if ((length == 3 && (code < 0x800 || (code >= 0xD800 && code <= 0xDFFF))) ||
        (length == 4 && (code < 0x10000 || code > 0x10FFFF))) {
      return false;
    }
    if (code >= 0x80 && code <= 0x9F) return false;  // C1 control characters
    i += length;
  }
  return true;
}

}  // namespace agentwire::gateway
