#include "frames.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "agentwire/schemas/event_json.hpp"

namespace agentwire::gateway {

// Cursors are base64url and reasons are fixed identifiers: neither needs JSON escaping.
std::string EventFrame(std::string_view cursor, const v1::AgentEvent& event) {
  return fmt::format(R"({{"type":"event","cursor":"{}","event":{}}})", cursor,
                     schemas::ToJson(event));
}

std::string ReadyFrame(std::string_view cursor, uint64_t replayed) {
  return fmt::format(R"({{"type":"ready","cursor":"{}","replayed":{}}})", cursor, replayed);
}

std::string ResetFrame(std::string_view reason) {
  return fmt::format(R"({{"type":"reset","reason":"{}"}})", reason);
}

std::string ErrorBody(std::string_view code, std::string_view message) {
  return nlohmann::json{{"error", std::string(code)}, {"message", std::string(message)}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace agentwire::gateway
