#pragma once

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <map>
#include <string>

#include "coalescing_stream.hpp"
#include "transport.hpp"

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
class AiSdkTransport final : public Transport {
 public:
  AiSdkTransport(boost::asio::ip::tcp::socket&& socket, std::string allow_origin);

  boost::asio::any_io_executor GetExecutor() override { return stream_.get_executor(); }
  std::string_view Name() const override { return "ai-sdk"; }
  void Accept(const Request& request, Done done) override;
  void Write(const Frame& frame, FrameKind kind, bool more_follows, Done done) override;
  void Read(Done done) override;
  void Close(boost::beast::websocket::close_code code, const std::string& reason,
             Done done) override;
  void Abort() override;
  bool Finished() const override { return finished_; }
  std::optional<std::chrono::milliseconds> KeepAliveInterval() const override {
    return std::chrono::milliseconds(10'000);
  }

  /// The chunks (SSE text) for one event frame; advances the part state. Public for tests.
  std::string ChunksFor(const std::string& frame);

 private:
  void Send(std::string text, Done done);

  CoalescingStream<boost::beast::tcp_stream> stream_;
  std::string allow_origin_;
  std::string out_;
  std::string open_text_;  // id of the text part open now ("" when none)
  bool started_ = false;   // `start` and the first `start-step` were written
  bool finished_ = false;  // `[DONE]` was written
  std::map<std::string, std::string> open_calls_;  // tool name -> call id awaiting output
  std::array<char, 512> discard_{};
};

}  // namespace agentwire::gateway
