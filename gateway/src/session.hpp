#pragma once

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "catch_up.hpp"
#include "fifo.hpp"
#include "frames.hpp"
#include "gateway_context.hpp"
#include "history.hpp"
#include "lazy_timer.hpp"
#include "live_inbox.hpp"
#include "partition_hub.hpp"
#include "transport.hpp"

namespace agentwire::gateway {

/// One client of a user's stream, over WebSocket or SSE (the Transport frames and moves the
/// bytes; everything else is here, once). Lifecycle: accept -> catch-up -> `ready` -> live.
///
/// Catch-up is pulled as the client reads: the session asks its CatchUp (the read side: the
/// recent-log cache, the replica's HistoryService, the archive) for the next piece of its
/// user's history only when it has written what it holds, so its memory stays bounded however
/// far back the cursor is. Live events that arrive meanwhile wait in a small buffer; when that
/// overflows, the buffer is dropped and the catch-up is extended to the log's current end
/// instead (the client is never closed for being in catch-up). Every event is sent at most once
/// because the session drops anything below the next offset it expects (a user's events all
/// live in one partition, so one offset orders them).
///
/// All state is touched only on the session's executor (one I/O thread's io_context: the
/// connection's handlers never run concurrently); OnLive, OnHistory and Close may be called
/// from any thread (they post). One write in flight; frames that follow each other at once
/// share write syscalls (CoalescingStream). The live queue is capped by frames and bytes, and
/// overflow closes with 1013 (the client resumes from its cursor; the log keeps the rest).
class Session final : public LiveListener,
                      public HistorySink,
                      public std::enable_shared_from_this<Session> {
 public:
  Session(std::unique_ptr<Transport> transport, std::shared_ptr<GatewayContext> context,
          std::string user_id, int partition, StartPosition start, SessionFilters filters,
          uint64_t id);
  ~Session() override;

  /// The token's exp (seconds since the epoch): the session ends at exp + leeway (close 4001)
  /// unless the client refreshes it. Call before Run.
  void SetTokenExpiry(double expires_at) { token_expires_at_ = expires_at; }
  /// Completes the handshake (upgrade, or SSE response head) for the already-read request.
  void Run(const boost::beast::http::request<boost::beast::http::string_body>& request);

  void OnLive(const LogEntryPtr& entry) override;
  void OnTailStarted(int64_t start_offset) override;
  void OnHistory(HistoryChunk chunk) override;
  size_t PendingCatchupBytes() const override { return catch_up_.PendingBytes(); }
  /// Closes with `code` after the write in flight. Thread-safe.
  void Close(boost::beast::websocket::close_code code, std::string reason);

 private:
  using Frame = std::shared_ptr<const std::string>;
  enum class Phase { kAccepting, kCatchingUp, kLive, kClosing, kClosed };

  struct Queued {
    Frame frame;
    int64_t timestamp_ms = 0;  // Kafka time of a live event (latency metric); 0 otherwise
    FrameKind kind = FrameKind::kControl;
  };

  void OnAccept(boost::beast::error_code ec);
  void BeginCatchUp();
  /// Catches up from the start position to `attach_point` (the hub's), then goes live.
  void CatchUpFrom(int64_t attach_point);
  /// Asks the CatchUp for the next piece of history when the session holds none; sends
  /// `ready` when the catch-up reached its target.
  void PumpCatchUp();
  void HandleHistory(HistoryChunk chunk);
  void GoLive();
  /// Queues `reset` (the start position's, or a gap in the live stream).
  void SendReset(std::string_view reason);
  // On the session's executor, from its LiveInbox (what OnLive / OnTailStarted delivered).
  friend class LiveInbox;
  void HandleLive(const LogEntryPtr& entry);
  void HandleTailStarted(int64_t start_offset);
  /// Live phase: applies the offset rule, gap markers and filters; queues without writing.
  void AcceptLive(const LogEntryPtr& entry);
  bool OverLimits() const;
  void Push(Queued item);
  void WriteNext();
  void StartWrite(Queued item, bool more_follows);
  void OnWrite(boost::beast::error_code ec);
  void ReadLoop();
  void OnRead(boost::beast::error_code ec);
  /// Transports without their own keep-alive (SSE): a comment when nothing else was written.
  void ScheduleKeepAlive();
  /// Closes with 4001 at the token's exp + leeway.
  void ArmTokenTimer();
  /// Catch-up: closes with 1013 a session that holds catch-up budget while its client has
  /// taken no write for --catchup-stall-timeout (checked twice per timeout).
  void WatchCatchupProgress();
  /// A message from the client: `{"type":"refresh","token":…}` replaces the token (same sub,
  /// else 4003); `{"type":"cancel",…}` (RequestCancel); anything else is ignored.
  void HandleClientMessage(const std::string& message);
  /// `{"type":"cancel","run_id":…}`: Stop (docs/runs.md); answered with a `cancel_result`
  /// frame, whatever the result (an empty run_id is bad_run_id).
  void RequestCancel(const std::string& run_id);
  void CancelTimers();
  void StartClose(boost::beast::websocket::close_code code, std::string reason);
  std::string CursorAt(int64_t next_offset) const;

  std::unique_ptr<Transport> transport_;
  std::shared_ptr<GatewayContext> context_;
  const std::string user_id_;
  const int partition_;
  StartPosition start_;
  const uint64_t id_;
  const std::chrono::steady_clock::time_point created_at_;

  Phase phase_ = Phase::kAccepting;
  bool attached_ = false;
  bool waiting_for_tail_ = false;  // attached to a partition the tailer has not started yet
  uint64_t replayed_ = 0;

  // The read side: what is fetched, from where, and its hand-off to the live stream.
  GatewayPartitionLog log_;
  CatchUp catch_up_;

  Fifo<Queued> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  Queued in_flight_;
  bool close_after_write_ = false;
  // A close requested while the WebSocket handshake was still under way (see StartClose).
  std::optional<std::pair<boost::beast::websocket::close_code, std::string>> close_on_accept_;
  boost::beast::websocket::close_code pending_close_code_{};
  std::string pending_close_reason_;
  // Made when first armed: an idle session arms at most the token timer.
  LazyTimer close_timer_;
  LazyTimer keep_alive_timer_;
  boost::asio::steady_timer token_timer_;
  LazyTimer progress_timer_;
  LazyTimer retry_timer_;  // a history read paused for the user's fair share
  std::chrono::steady_clock::time_point write_started_at_;
  double token_expires_at_ = 0;
  bool wrote_since_keep_alive_ = false;
  LiveInbox& live_inbox_;  // its I/O thread's: OnLive and OnTailStarted go through it
};

}  // namespace agentwire::gateway
