#pragma once

#include <string>
#include <string_view>

namespace agentwire::gateway {

/// Decodes %XX escapes (and, in a query string, '+' as a space). Invalid escapes stay as they
/// are: a mangled token then simply fails verification, a mangled path is not found.
enum class UrlPart { kPath, kQuery };
std::string PercentDecode(std::string_view text, UrlPart part);

}  // namespace agentwire::gateway
