#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace agentwire::testing {

/// One Server-Sent Event as an EventSource would dispatch it.
struct SseEvent {
  std::string id;     // the `id:` field of this event ("" when it had none)
  std::string event;  // the `event:` field ("message" when absent)
  std::string data;
};

/// A plain SSE client for tests: one HTTP/1.1 GET on a blocking socket, the response head,
/// then the event stream parsed as the HTML standard says (fields, comments, `retry:`). Like
/// EventSource it remembers the last `id:` seen, for a reconnect with Last-Event-ID.
class SseClient final {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;
    std::string method = "GET";
    std::string target = "/v1/events";
    std::string bearer;         // Authorization: Bearer <bearer> when non-empty
    std::string last_event_id;  // Last-Event-ID header when non-empty
    std::string origin;         // Origin header when non-empty
    std::string accept = "text/event-stream";
  };
  struct Head {
    int status = 0;       // 0: no HTTP answer
    std::string headers;  // the raw header lines
    std::string body;     // for a refusal: the JSON error body
  };

  SseClient() = default;
  ~SseClient();
  SseClient(const SseClient&) = delete;
  SseClient& operator=(const SseClient&) = delete;

  Head Connect(const Options& options);
  /// The next event, or nullopt when `timeout` passes or the response ended.
  std::optional<SseEvent> Next(std::chrono::milliseconds timeout);
  /// The server ended the response (closed the connection).
  bool Ended() const { return ended_; }
  /// The last `id:` received (EventSource's lastEventId).
  const std::string& LastEventId() const { return last_event_id_; }
  int RetryMs() const { return retry_ms_; }
  size_t Comments() const { return comments_; }
  /// Drops the connection (a browser tab closed).
  void Close();

 private:
  bool Fill(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::string buffer_;
  bool ended_ = false;
  std::string last_event_id_;
  int retry_ms_ = -1;
  size_t comments_ = 0;
};

}  // namespace agentwire::testing
