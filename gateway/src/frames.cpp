#include "frames.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "agentwire/schemas/event_json.hpp"

namespace agentwire::gateway {

// Cursors are base64url and reasons are fixed identifiers: neither needs JSON escaping.
std::string EventFrame(std::string_view cursor, const v1::AgentEvent& event) {
  constexpr std::string_view kHead = R"({"type":"event","cursor":")";
  constexpr std::string_view kEvent = R"(","event":)";
  std::string frame;
  frame.reserve(kHead.size() + cursor.size() + kEvent.size() + 256 + event.ByteSizeLong() * 2);
  frame.append(kHead).append(cursor).append(kEvent);
  schemas::AppendJson(event, frame);
  frame.push_back('}');
  return frame;
}

std::string ReadyFrame(std::string_view cursor, uint64_t replayed) {
  return fmt::format(R"({{"type":"ready","cursor":"{}","replayed":{}}})", cursor, replayed);
}

std::string ResetFrame(std::string_view reason, const MissingRange* missing) {
  if (missing == nullptr) return fmt::format(R"({{"type":"reset","reason":"{}"}})", reason);
  return fmt::format(
      R"({{"type":"reset","reason":"{}","missing":{{"partition":{},"from_offset":{},"to_offset":{}}}}})",
      reason, missing->partition, missing->from_offset, missing->to_offset);
}

std::string ErrorBody(std::string_view code, std::string_view message) {
  return nlohmann::json{{"error", std::string(code)}, {"message", std::string(message)}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace agentwire::gateway
