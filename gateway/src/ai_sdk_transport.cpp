#include "ai_sdk_transport.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <nlohmann/json.hpp>
#include <utility>

#include "agentwire/core/cursor.hpp"

namespace agentwire::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
using nlohmann::json;

namespace {

void AppendChunk(std::string& out, const json& chunk) {
  out.append("data: ");
  out.append(chunk.dump(-1, ' ', false, json::error_handler_t::replace));
  out.append("\n\n");
}

std::string StringAt(const json& object, const char* body, const char* field) {
  const auto b = object.find(body);
  if (b == object.end() || !b->is_object()) return {};
  const auto f = b->find(field);
  return f != b->end() && f->is_string() ? f->get<std::string>() : std::string();
}

}  // namespace

AiSdkTransport::AiSdkTransport(asio::ip::tcp::socket&& socket, const std::string& allow_origin)
    : EventStreamTransport(std::move(socket), allow_origin, "x-vercel-ai-ui-message-stream: v1\r\n",
                           "") {}

std::string AiSdkTransport::ErrorAndDone(const std::string& error_text) {
  std::string out;
  AppendChunk(out, {{"type", "error"}, {"errorText", error_text}});
  out.append("data: [DONE]\n\n");
  finished_ = true;
  return out;
}

std::string AiSdkTransport::ChunksFor(const std::string& frame) {
  std::string out;
  const auto parsed = json::parse(frame, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object() || !parsed.contains("event") || !parsed["event"].is_object()) return out;
  const json& event = parsed["event"];
  const std::string type = event.value("type", "");
  const std::string run_id = event.value("run_id", "");
  // The event's log offset (from its cursor): with the run id, a part id that is the same in
  // every replay of this run.
  int64_t offset = 0;
  if (const auto cursor = DecodeCursor(parsed.value("cursor", "")))
    offset = cursor->next_offset - 1;
  const std::string suffix = run_id + "-" + std::to_string(offset);

  auto close_text = [&] {
    if (open_text_.empty()) return;
    AppendChunk(out, {{"type", "text-end"}, {"id", open_text_}});
    open_text_.clear();
  };
  if (!started_) {
    started_ = true;
    AppendChunk(out, {{"type", "start"}, {"messageId", run_id}});
    AppendChunk(out, {{"type", "start-step"}});
  }
  if (type == "agent_started") {
    // Nothing more: `start` and the first step were written above.
  } else if (type == "agent_thinking") {
    close_text();
    const std::string id = "reasoning-" + suffix;
    AppendChunk(out, {{"type", "reasoning-start"}, {"id", id}});
    AppendChunk(out, {{"type", "reasoning-delta"},
                      {"id", id},
                      {"delta", StringAt(event, "agent_thinking", "text")}});
    AppendChunk(out, {{"type", "reasoning-end"}, {"id", id}});
  } else if (type == "tool_executing") {
    close_text();
    const std::string name = StringAt(event, "tool_executing", "tool_name");
    std::string call = StringAt(event, "tool_executing", "tool_call_id");
    if (call.empty()) call = "call-" + suffix;
    open_calls_[name] = call;
    const std::string input_text = StringAt(event, "tool_executing", "input");
    json input = json::parse(input_text, nullptr, /*allow_exceptions=*/false);
    if (input.is_discarded()) input = input_text;
    AppendChunk(out, {{"type", "tool-input-available"},
                      {"toolCallId", call},
                      {"toolName", name},
                      {"input", std::move(input)},
                      {"dynamic", true}});
  } else if (type == "tool_completed") {
    close_text();
    const std::string name = StringAt(event, "tool_completed", "tool_name");
    std::string call = StringAt(event, "tool_completed", "tool_call_id");
    if (call.empty()) {
      const auto it = open_calls_.find(name);
      call = it != open_calls_.end() ? it->second : "call-" + suffix;
    }
    open_calls_.erase(name);
    const std::string error = StringAt(event, "tool_completed", "error");
    if (!error.empty()) {
      AppendChunk(out, {{"type", "tool-output-error"}, {"toolCallId", call}, {"errorText", error}});
    } else {
      AppendChunk(out, {{"type", "tool-output-available"},
                        {"toolCallId", call},
                        {"output", StringAt(event, "tool_completed", "output")}});
    }
    AppendChunk(out, {{"type", "finish-step"}});
    AppendChunk(out, {{"type", "start-step"}});
  } else if (type == "message_delta") {
    if (open_text_.empty()) {
      open_text_ = "text-" + suffix;
      AppendChunk(out, {{"type", "text-start"}, {"id", open_text_}});
    }
    AppendChunk(out, {{"type", "text-delta"},
                      {"id", open_text_},
                      {"delta", StringAt(event, "message_delta", "text")}});
  } else if (type == "agent_completed") {
    close_text();
    AppendChunk(out, {{"type", "finish-step"}});
    AppendChunk(out, {{"type", "finish"}});
    out.append("data: [DONE]\n\n");
    finished_ = true;
  } else if (type == "agent_failed") {
    close_text();
    if (StringAt(event, "agent_failed", "error_code") == "cancelled") {
      // The user's Stop (docs/runs.md): the SDK's own end for a stopped answer, not an error.
      AppendChunk(out, {{"type", "abort"}, {"reason", StringAt(event, "agent_failed", "message")}});
      out.append("data: [DONE]\n\n");
      finished_ = true;
      return out;
    }
    std::string message = StringAt(event, "agent_failed", "message");
    if (message.empty()) message = StringAt(event, "agent_failed", "error_code");
    out += ErrorAndDone(message);
  }
  return out;
}

void AiSdkTransport::Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) {
  std::string text;
  if (finished_) {
    // After [DONE] nothing more belongs to this stream.
  } else if (kind == FrameKind::kEvent) {
    text = ChunksFor(*frame);
  } else if (kind == FrameKind::kKeepAlive) {
    text = kKeepAlive;
  } else if (frame->find(R"("type":"reset")") != std::string::npos) {
    // The run's history is gone from the log: the SDK gets an error, not a partial message.
    text = ErrorAndDone("history_unavailable");
  }
  if (text.empty()) {  // `ready`: nothing to say in this protocol
    if (!more_follows) {
      // But what earlier frames held back (more_follows) must not wait behind it for a frame
      // that may not come for a long time: a Send without hold writes it now.
      stream_.Send({}, /*hold=*/false, std::move(done));
      return;
    }
    asio::post(stream_.get_executor(), [done = std::move(done)] { done({}); });
    return;
  }
  stream_.Send({text}, more_follows && !finished_, std::move(done));
}

std::string AiSdkTransport::ClosingText(beast::websocket::close_code code,
                                        const std::string& reason) {
  if (finished_) return {};  // the normal end, after [DONE]
  // A drain or a slow client just ends the response: the SDK resumes again, from the start of
  // the run, on any replica. An expired token cannot be resumed with: say so.
  if (code != kCloseTokenExpired && code != kCloseRefreshRefused) return {};
  return ErrorAndDone(reason);
}

}  // namespace agentwire::gateway
