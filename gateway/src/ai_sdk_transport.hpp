#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <map>
#include <string>

#include "event_stream_transport.hpp"

namespace agentwire::gateway {

/// The Vercel AI SDK's UI message stream (v1) for `GET /v1/ai-sdk/chats/{thread_id}/stream`:
/// the resume endpoint `useChat({resume: true})` calls. The session replays the thread's run in
/// progress from its `agent_started` (filters: that run) and follows it live; this transport
/// turns each agentwire event into UI message chunks (`data: {json}` SSE lines) and ends the
/// stream with `data: [DONE]` after the run's terminal event (docs/protocol.md has the mapping).
///
/// Only the chunk fields the SDK documents are written (ai 5.x/6.x validate chunks strictly).
/// Part ids are derived from the run id and the event's log offset, so a replay of the same
/// run yields the same bytes; a text part is always opened before its deltas and closed before
/// anything else.
class AiSdkTransport final : public EventStreamTransport {
 public:
  AiSdkTransport(boost::asio::ip::tcp::socket&& socket, const std::string& allow_origin);

  std::string_view Name() const override { return "ai-sdk"; }
  void Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) override;
  bool Finished() const override { return finished_; }

  /// The chunks (SSE text) for one event frame; advances the part state. Public for tests.
  std::string ChunksFor(const std::string& frame);

 private:
  /// A stream whose token expires before its run ended ends in `error{token_expired}` and
  /// [DONE]; a drain or a slow client just ends it (the SDK can resume on any replica).
  std::string ClosingText(boost::beast::websocket::close_code code,
                          const std::string& reason) override;
  /// `error{errorText}` + [DONE]; the stream is finished.
  std::string ErrorAndDone(const std::string& error_text);

  std::string open_text_;                          // id of the open text part ("" = none)
  bool started_ = false;                           // `start` and the first `start-step` sent
  bool finished_ = false;                          // `[DONE]` was written
  std::map<std::string, std::string> open_calls_;  // tool name -> call id awaiting output
};

}  // namespace agentwire::gateway
