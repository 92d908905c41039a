#pragma once

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fifo.hpp"
#include "gateway_context.hpp"
#include "partition_hub.hpp"

namespace agentwire::gateway {

/// Where a new connection starts reading its user's stream.
struct StartPosition {
  enum class Kind { kLive, kCursor, kEarliest };
  Kind kind = Kind::kLive;
  int64_t next_offset = 0;  // kCursor: first offset not yet delivered
  bool reset = false;       // the cursor belongs to another topic identity: send `reset` first
};

struct SessionFilters {
  std::string thread_id;
  std::string run_id;
  bool Matches(const LogEntry& entry) const {
    return (thread_id.empty() || entry.thread_id == thread_id) &&
           (run_id.empty() || entry.run_id == run_id);
  }
};

/// One WebSocket client. Lifecycle: accept -> catch-up (cache or Kafka) -> `ready` -> live.
/// Live events that arrive during catch-up wait in a buffer; every event is sent at most once
/// because the session drops anything below the next offset it expects (a user's events all
/// live in one partition, so one offset orders them).
///
/// All state is touched only on the session's strand; OnLive and Close may be called from any
/// thread (they post). One write in flight; the queue behind it is capped by frames and bytes,
/// and overflow closes with 1013 (the client resumes from its cursor; the log keeps the rest).
class Session final : public LiveListener, public std::enable_shared_from_this<Session> {
 public:
  Session(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<GatewayContext> context,
          std::string user_id, int partition, StartPosition start, SessionFilters filters,
          uint64_t id);
  ~Session() override;

  /// Completes the upgrade with the already-read HTTP request.
  void Run(boost::beast::http::request<boost::beast::http::string_body> request);

  void OnLive(const LogEntryPtr& entry) override;
  /// Closes with `code` after the write in flight. Thread-safe.
  void Close(boost::beast::websocket::close_code code, std::string reason);

 private:
  using Frame = std::shared_ptr<const std::string>;
  enum class Phase { kAccepting, kCatchingUp, kLive, kClosing, kClosed };

  void OnAccept(boost::beast::error_code ec);
  void BeginCatchUp();
  void FinishCatchUp(std::vector<LogEntryPtr> entries, int64_t covered_end);
  void SendReset();
  void HandleLive(const LogEntryPtr& entry);
  bool OverLimits() const;
  void WriteNext();
  void OnWrite(boost::beast::error_code ec, std::size_t bytes);
  void ReadLoop();
  void OnRead(boost::beast::error_code ec, std::size_t bytes);
  void StartClose(boost::beast::websocket::close_code code, std::string reason);
  std::string CursorAt(int64_t next_offset) const;

  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  std::shared_ptr<GatewayContext> context_;
  const std::string user_id_;
  const int partition_;
  StartPosition start_;
  const SessionFilters filters_;
  const uint64_t id_;

  Phase phase_ = Phase::kAccepting;
  bool attached_ = false;
  int64_t next_offset_ = 0;  // everything below it was delivered (or filtered out)
  uint64_t replayed_ = 0;

  // Catch-up entries are pulled into the write path one by one, so a long resume never
  // trips the live queue limits.
  std::vector<LogEntryPtr> catchup_;
  size_t catchup_index_ = 0;
  bool ready_pending_ = false;
  int64_t catchup_end_ = 0;               // the `ready` cursor's offset
  std::vector<LogEntryPtr> live_buffer_;  // live events that arrived during catch-up
  size_t live_buffer_bytes_ = 0;

  struct Queued {
    Frame frame;
    int64_t timestamp_ms = 0;  // Kafka time of a live event (latency metric); 0 otherwise
    bool is_event = false;     // counts as a delivered event
  };
  void Enqueue(Queued item);
  void StartWrite(Queued item);
  Fifo<Queued> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  Queued in_flight_;
  bool close_after_write_ = false;
  // A close requested while the WebSocket handshake was still under way (see StartClose).
  std::optional<std::pair<boost::beast::websocket::close_code, std::string>> close_on_accept_;
  boost::beast::websocket::close_reason pending_close_;
  boost::asio::steady_timer close_timer_;
  boost::beast::flat_buffer read_buffer_;
};

}  // namespace agentwire::gateway
