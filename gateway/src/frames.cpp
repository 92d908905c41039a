#include "frames.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "agentwire/schemas/event_json.hpp"

namespace agentwire::gateway {

// Cursors are base64url and reasons are fixed identifiers: neither needs JSON escaping.
namespace {
constexpr std::string_view kEventHead = R"({"type":"event","cursor":")";
constexpr std::string_view kEventBody = R"(","event":)";
}  // namespace

std::string EventFrame(std::string_view cursor, const v1::AgentEvent& event) {
  std::string frame;
  // JSON spells out field names and escapes some bytes: about twice the record, plus the
  // envelope.
  frame.reserve(kEventHead.size() + cursor.size() + kEventBody.size() + 256 +
                event.ByteSizeLong() * 2);
  frame.append(kEventHead).append(cursor).append(kEventBody);
  schemas::AppendJson(event, frame);
  frame.push_back('}');
  return frame;
}

void AppendEventFrame(const Cursor& cursor, const v1::AgentEvent& event, std::string& out) {
  out.append(kEventHead);
  AppendCursor(cursor, out);
  out.append(kEventBody);
  schemas::AppendJson(event, out);
  out.push_back('}');
}

bool TryAppendEventFrameFromWire(const Cursor& cursor, std::string_view record, std::string& out) {
  const size_t start = out.size();
  out.append(kEventHead);
  AppendCursor(cursor, out);
  out.append(kEventBody);
  if (!schemas::TryAppendJsonFromWire(record, out)) {
    out.resize(start);
    return false;
  }
  out.push_back('}');
  return true;
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
