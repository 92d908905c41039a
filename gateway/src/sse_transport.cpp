#include "sse_transport.hpp"

#include <string_view>
#include <utility>

namespace agentwire::gateway {

namespace asio = boost::asio;

namespace {

// Frames are built by frames.hpp as {"type":"<t>",<fields>}: an event frame's fields are
// "cursor":"<c>","event":{…}. Cursors are base64url and types fixed identifiers, so neither
// needs unescaping.
struct SseParts {
  std::string prefix;     // id:/event: lines and "data: "
  size_t data_begin = 0;  // the data is frame[data_begin, data_begin + data_size) ...
  size_t data_size = 0;
  bool open_brace = false;  // ... after a "{" (control frames lose their "type" field)
};

constexpr std::string_view kTypeHead = R"({"type":")";
constexpr std::string_view kCursorField = R"("cursor":")";
constexpr std::string_view kEventField = R"(,"event":)";
constexpr std::string_view kEnd = "\n\n";

std::string_view CursorIn(std::string_view frame) {
  const auto at = frame.find(kCursorField);
  if (at == std::string_view::npos) return {};
  const auto begin = at + kCursorField.size();
  const auto end = frame.find('"', begin);
  return end == std::string_view::npos ? std::string_view{} : frame.substr(begin, end - begin);
}

SseParts Split(std::string_view frame, FrameKind kind) {
  SseParts parts;
  std::string_view type = "message";
  size_t fields = frame.size();  // where the fields after "type" start
  if (frame.substr(0, kTypeHead.size()) == kTypeHead) {
    const auto end = frame.find('"', kTypeHead.size());
    if (end != std::string_view::npos) {
      type = frame.substr(kTypeHead.size(), end - kTypeHead.size());
      fields = end + 1;
      if (fields < frame.size() && frame[fields] == ',') ++fields;
    }
  }
  const auto cursor = CursorIn(frame.substr(0, std::min(frame.size(), fields + 64)));
  if (!cursor.empty() && (kind == FrameKind::kEvent || type == "ready")) {
    parts.prefix.append("id: ").append(cursor).append("\n");
  }
  parts.prefix.append("event: ").append(type).append("\ndata: ");
  if (kind == FrameKind::kEvent) {
    const auto at = frame.find(kEventField, fields);
    if (at != std::string_view::npos && frame.size() > at + kEventField.size()) {
      parts.data_begin = at + kEventField.size();
      parts.data_size = frame.size() - 1 - parts.data_begin;  // without the envelope's '}'
      return parts;
    }
  }
  // {"type":"ready","cursor":"…","replayed":N} -> {"cursor":"…","replayed":N}
  parts.open_brace = true;
  parts.data_begin = fields;
  parts.data_size = fields < frame.size() ? frame.size() - fields : 0;
  if (parts.data_size == 0) {
    parts.prefix.push_back('}');  // {"type":"x"} -> {}
  }
  return parts;
}

}  // namespace

std::string SseEventText(const std::string& frame, FrameKind kind) {
  if (kind == FrameKind::kKeepAlive) return std::string(EventStreamTransport::kKeepAlive);
  const auto parts = Split(frame, kind);
  std::string text = parts.prefix;
  if (parts.open_brace && parts.data_size > 0) text.push_back('{');
  text.append(frame, parts.data_begin, parts.data_size);
  text.append(kEnd);
  return text;
}

SseTransport::SseTransport(asio::ip::tcp::socket&& socket, const std::string& allow_origin)
    : EventStreamTransport(std::move(socket), allow_origin, "",
                           "retry: " + std::to_string(kRetryMs) + "\n\n") {}

void SseTransport::Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) {
  if (kind == FrameKind::kKeepAlive) {
    stream_.Send({kKeepAlive}, more_follows, std::move(done));
    return;
  }
  auto parts = Split(*frame, kind);
  if (parts.open_brace && parts.data_size > 0) parts.prefix.push_back('{');
  stream_.Send(
      {parts.prefix, std::string_view(*frame).substr(parts.data_begin, parts.data_size), kEnd},
      more_follows, std::move(done));
}

std::string SseTransport::ClosingText(boost::beast::websocket::close_code code,
                                      const std::string& reason) {
  if (code != kCloseTokenExpired && code != kCloseRefreshRefused) return {};
  // Reasons are fixed identifiers (token_expired, refresh_refused): no JSON escaping needed.
  // Named after the reason, not `error`: EventSource fires its own `error` event when the
  // response ends, and a listener could not tell the two apart.
  return "event: " + reason + "\ndata: {\"error\":\"" + reason + "\"}\n\n";
}

}  // namespace agentwire::gateway
