#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace agentwire::gateway {

/// Decodes %XX escapes (and, in a query string, '+' as a space). Invalid escapes stay as they
/// are: a mangled token then simply fails verification, a mangled path is not found.
enum class UrlPart { kPath, kQuery };
std::string PercentDecode(std::string_view text, UrlPart part);

/// The segment of `path` between `prefix` and `suffix` ("/v1/runs/" r "/cancel" -> r), or
/// nullopt when the path is not of that shape. The segment may be empty.
std::optional<std::string> SegmentBetween(std::string_view path, std::string_view prefix,
                                          std::string_view suffix);

/// An identifier a client names in a URL (a thread or run id): 1-`max_bytes` bytes of valid
/// UTF-8 with no control characters. Anything else never matches an event (the producers'
/// protobuf strings are UTF-8) and PostgreSQL refuses NUL and invalid UTF-8 in text, so it is
/// refused with 400 before it reaches a lookup.
bool IsTextId(std::string_view id, size_t max_bytes = 256);

}  // namespace agentwire::gateway
