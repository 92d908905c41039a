#include "session.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <chrono>
#include <nlohmann/json.hpp>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/logging.hpp"
#include "frames.hpp"

namespace agentwire::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {

int64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Closes that are the normal end of a session, not errors worth a warning.
bool IsNormalEnd(const beast::error_code& ec) {
  return ec == websocket::error::closed || ec == asio::error::operation_aborted ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == beast::error::timeout || ec == asio::error::broken_pipe;
}

}  // namespace

Session::Session(std::unique_ptr<Transport> transport, std::shared_ptr<GatewayContext> context,
                 std::string user_id, int partition, StartPosition start, SessionFilters filters,
                 uint64_t id)
    : transport_(std::move(transport)),
      context_(std::move(context)),
      user_id_(std::move(user_id)),
      partition_(partition),
      start_(start),
      id_(id),
      created_at_(std::chrono::steady_clock::now()),
      log_(*context_, partition_, user_id_),
      catch_up_(log_, context_->metrics,
                {partition_,
                 user_id_,
                 id_,
                 std::move(filters),
                 // Small on purpose: past it, catching up from the log costs less than buffering.
                 {std::min<size_t>(context_->config.send_queue_max_frames, 1024),
                  std::min<size_t>(context_->config.send_queue_max_bytes, 512 * 1024)},
                 context_->config.max_catchup_events},
                // Queued only: every caller writes next, and a write from here could start the
                // catch-up before the session is attached.
                [this](CatchUp::Frame frame) {
                  Push({std::move(frame), 0, FrameKind::kControl});
                }),
      token_timer_(transport_->GetExecutor()),
      live_inbox_(LiveInbox::For(transport_->GetExecutor())) {
  context_->metrics.connections.Add(1);
  context_->metrics.connections_total.Inc();
}

Session::~Session() {
  catch_up_.Drop();
  if (attached_) context_->hub.Detach(partition_, user_id_, this);
  context_->ReleaseConnection(user_id_);
  context_->RemoveSession(this);
  context_->metrics.connections.Add(-1);
}

void Session::Run(const beast::http::request<beast::http::string_body>& request) {
  transport_->Accept(request, beast::bind_front_handler(&Session::OnAccept, shared_from_this()));
}

void Session::OnAccept(beast::error_code ec) {
  if (ec) {
    log::Debug("accept failed", {{"session", id_},
                                 {"transport", std::string(transport_->Name())},
                                 {"error", ec.message()}});
    return;
  }
  if (close_on_accept_) {
    auto [code, reason] = std::move(*close_on_accept_);
    close_on_accept_.reset();
    phase_ = Phase::kCatchingUp;  // accepted: StartClose now sends a close frame
    ReadLoop();
    StartClose(code, std::move(reason));
    return;
  }
  ReadLoop();
  ScheduleKeepAlive();
  ArmTokenTimer();
  BeginCatchUp();
}

void Session::ArmTokenTimer() {
  if (token_expires_at_ <= 0) return;
  const double leeway = static_cast<double>(context_->config.auth.leeway.count());
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // The verifier refuses an exp past what a steady_clock deadline can hold; bounded here too,
  // so no token can overflow the timer (a negative deadline would close the session at once).
  constexpr double kMaxWaitSeconds = 100.0 * 365 * 24 * 3600;
  const auto left =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(
          std::clamp(token_expires_at_ + leeway - now, 0.0, kMaxWaitSeconds)));
  token_timer_.expires_after(left);
  token_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec) return;  // cancelled: refreshed, or the session ended
    self->context_->metrics.token_expired_closes.Inc();
    static log::RateLimited expired_log;
    expired_log.Write(log::Level::kInfo, "token expired; closing with 4001",
                      {{"session", self->id_}, {"user", self->user_id_}});
    self->StartClose(kCloseTokenExpired, "token_expired");
  });
}

void Session::HandleClientMessage(const std::string& message) {
  const auto json = nlohmann::json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return;
  const auto type = json.find("type");
  if (type == json.end() || !type->is_string()) return;
  if (*type == "cancel") {
    const auto run = json.find("run_id");
    RequestCancel(run != json.end() && run->is_string() ? run->get<std::string>() : std::string());
    return;
  }
  if (*type != "refresh") return;
  const auto* token = json.contains("token") && json["token"].is_string()
                          ? json["token"].get_ptr<const std::string*>()
                          : nullptr;
  const auto auth = context_->verifier.Verify(token ? *token : std::string());
  if (!auth.ok || auth.user_id != user_id_) {
    context_->metrics.refreshes_refused.Inc();
    static log::RateLimited refused_log;
    refused_log.Write(log::Level::kInfo, "token refresh refused; closing with 4003",
                      {{"session", id_},
                       {"user", user_id_},
                       {"error", auth.ok ? std::string("token_other_subject") : auth.error_code}});
    StartClose(kCloseRefreshRefused, "refresh_refused");
    return;
  }
  context_->metrics.refreshes_accepted.Inc();
  token_expires_at_ = auth.expires_at;
  ArmTokenTimer();  // replaces the pending wait (expires_after cancels it)
}

void Session::RequestCancel(const std::string& run_id) {
  context_->canceller.Cancel(
      transport_->GetExecutor(), user_id_, partition_, run_id,
      [self = shared_from_this(), run_id](const RunCanceller::Outcome& outcome) {
        asio::post(self->transport_->GetExecutor(), [self, run_id, outcome] {
          if (self->phase_ == Phase::kClosing || self->phase_ == Phase::kClosed) return;
          nlohmann::json frame = {{"type", "cancel_result"},
                                  {"run_id", run_id},
                                  {"result", RunCanceller::ResultName(outcome.result)}};
          if (outcome.result == RunCanceller::Result::kRunEnded) {
            frame["end"] = nlohmann::json::parse(RunCanceller::EndJson(outcome.run));
          }
          self->Push({std::make_shared<const std::string>(
                          frame.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)),
                      0, FrameKind::kControl});
          self->WriteNext();
        });
      });
}

void Session::CancelTimers() {
  close_timer_.cancel();
  keep_alive_timer_.cancel();
  token_timer_.cancel();
  progress_timer_.cancel();
  retry_timer_.cancel();
}

void Session::WatchCatchupProgress() {
  const auto timeout = context_->config.catchup_stall_timeout;
  if (timeout.count() <= 0) return;
  auto& timer = progress_timer_.Get(transport_->GetExecutor());
  timer.expires_after(timeout / 2);
  timer.async_wait([self = shared_from_this(), timeout](beast::error_code ec) {
    if (ec || self->phase_ != Phase::kCatchingUp) return;
    // Only a session that holds budget and whose client takes nothing: one that waits for
    // history, or catches up from the cache, keeps nobody else waiting.
    if (self->writing_ && self->PendingCatchupBytes() > 0 &&
        std::chrono::steady_clock::now() - self->write_started_at_ >= timeout) {
      self->context_->metrics.catchup_stalled_closes.Inc();
      static log::RateLimited stalled_log;
      stalled_log.Write(log::Level::kInfo,
                        "client took no catch-up for --catchup-stall-timeout; closing with 1013",
                        {{"session", self->id_},
                         {"user", self->user_id_},
                         {"bytes", static_cast<uint64_t>(self->PendingCatchupBytes())}});
      self->StartClose(websocket::close_code::try_again_later, "client not reading");
      return;
    }
    self->WatchCatchupProgress();
  });
}

void Session::ScheduleKeepAlive() {
  const auto interval = transport_->KeepAliveInterval();
  if (!interval) return;
  auto& timer = keep_alive_timer_.Get(transport_->GetExecutor());
  timer.expires_after(*interval);
  timer.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->phase_ == Phase::kClosing || self->phase_ == Phase::kClosed) return;
    if (!std::exchange(self->wrote_since_keep_alive_, false) && !self->writing_) {
      static const auto kNothing = std::make_shared<const std::string>();
      self->Push({kNothing, 0, FrameKind::kKeepAlive});
      self->WriteNext();
    }
    self->ScheduleKeepAlive();
  });
}

std::string Session::CursorAt(int64_t next_offset) const {
  return EncodeCursor(context_->identity.CursorAt(partition_, next_offset));
}

void Session::SendReset(std::string_view reason) {
  // Queued only: every caller writes next, and a write from here could start the catch-up
  // before the session is attached.
  Push({MakeReset(context_->metrics, id_, user_id_, reason, nullptr), 0, FrameKind::kControl});
}

void Session::BeginCatchUp() {
  phase_ = Phase::kCatchingUp;
  if (start_.reset) {
    SendReset(kResetHistoryUnavailable);
    start_.kind = StartPosition::Kind::kLive;
  }
  attached_ = true;
  log_.SetSink(std::static_pointer_cast<HistorySink>(shared_from_this()));
  WatchCatchupProgress();
  const int64_t attach_point = context_->hub.Attach(partition_, user_id_, shared_from_this());
  if (attach_point == PartitionHub::kNotTailed) {
    // --tail auto, and the first session of this partition here: the tailer starts reading it
    // and tells us where (OnTailStarted); the catch-up up to there then reads Kafka.
    waiting_for_tail_ = true;
    WriteNext();  // a `reset` queued above
    return;
  }
  CatchUpFrom(attach_point);
}

void Session::OnTailStarted(int64_t start_offset) {
  live_inbox_.DeliverTailStarted(shared_from_this(), start_offset);
}

void Session::HandleTailStarted(int64_t start_offset) {
  if (!waiting_for_tail_ || phase_ != Phase::kCatchingUp) return;
  waiting_for_tail_ = false;
  CatchUpFrom(start_offset);
}

void Session::CatchUpFrom(int64_t attach_point) {
  catch_up_.Start(attach_point, start_);
  WriteNext();
}

void Session::PumpCatchUp() {
  if (waiting_for_tail_) return;  // nothing to fetch before the attach point is known
  if (phase_ == Phase::kCatchingUp && catch_up_.Pump() == CatchUp::Pumped::kReady) GoLive();
}

void Session::OnHistory(HistoryChunk chunk) {
  catch_up_.Charge(chunk.charged_bytes);
  asio::post(transport_->GetExecutor(),
             [self = shared_from_this(), chunk = std::move(chunk)]() mutable {
               self->HandleHistory(std::move(chunk));
             });
}

void Session::HandleHistory(HistoryChunk chunk) {
  if (phase_ != Phase::kCatchingUp) {
    catch_up_.Release(chunk.charged_bytes);
    return;
  }
  switch (catch_up_.OnChunk(std::move(chunk))) {
    case CatchUp::Next::kWrite:
      WriteNext();
      return;
    case CatchUp::Next::kRetryLater: {
      auto& timer = retry_timer_.Get(transport_->GetExecutor());
      timer.expires_after(CatchUp::kRetryAfter);
      timer.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (ec || self->phase_ != Phase::kCatchingUp) return;
        self->catch_up_.Retry();
        self->WriteNext();
      });
      return;
    }
    case CatchUp::Next::kFailed:
      StartClose(websocket::close_code::try_again_later, "history temporarily unavailable");
      return;
  }
}

void Session::GoLive() {
  phase_ = Phase::kLive;
  // The catch-up's timers have no more work: a live session keeps only what it uses.
  progress_timer_.Release();
  retry_timer_.Release();
  // Live events that arrived meanwhile, minus what the catch-up already covered.
  const auto buffered = catch_up_.GoLive();
  context_->metrics.time_to_ready.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - created_at_).count());
  Push(
      {std::make_shared<const std::string>(ReadyFrame(CursorAt(catch_up_.NextOffset()), replayed_)),
       0, FrameKind::kControl});
  for (const auto& entry : buffered) AcceptLive(entry);
}

void Session::OnLive(const LogEntryPtr& entry) {
  live_inbox_.DeliverLive(shared_from_this(), entry);
}

void Session::HandleLive(const LogEntryPtr& entry) {
  if (phase_ == Phase::kCatchingUp || phase_ == Phase::kAccepting) {
    catch_up_.BufferLive(entry);
    return;
  }
  if (phase_ != Phase::kLive) return;
  AcceptLive(entry);
  if (OverLimits()) {
    context_->metrics.slow_closes.Inc();
    static log::RateLimited slow_log;
    slow_log.Write(log::Level::kInfo, "client too slow; closing with 1013",
                   {{"session", id_}, {"user", user_id_}});
    StartClose(websocket::close_code::try_again_later, "client too slow");
    return;
  }
  WriteNext();
}

void Session::AcceptLive(const LogEntryPtr& entry) {
  switch (catch_up_.AcceptLive(*entry)) {
    case CatchUp::Live::kSkip:  // delivered already, filtered out, or after its run's end
      return;
    case CatchUp::Live::kGap:
      // Events this session had not received are gone from the log (the tailer logged which):
      // say so, then go on live from where the log now starts.
      SendReset(kResetHistoryUnavailable);
      return;
    case CatchUp::Live::kDeliver:
      break;
  }
  const auto& frame = entry->Frame();  // built here, on the first session that sends it
  if (!frame) return;                  // a record that did not decode: nobody gets it
  Push({frame, entry->timestamp_ms, FrameKind::kEvent});
}

bool Session::OverLimits() const {
  return queue_.size() > context_->config.send_queue_max_frames ||
         queued_bytes_ > context_->config.send_queue_max_bytes;
}

void Session::Push(Queued item) {
  queued_bytes_ += item.frame->size();
  queue_.push_back(std::move(item));
}

void Session::WriteNext() {
  if (writing_ || phase_ == Phase::kClosed) return;
  if (phase_ == Phase::kClosing) {
    if (close_after_write_) {
      close_after_write_ = false;
      transport_->Close(pending_close_code_, pending_close_reason_,
                        [self = shared_from_this()](beast::error_code) {
                          self->phase_ = Phase::kClosed;
                          self->CancelTimers();
                        });
    }
    return;
  }
  if (phase_ == Phase::kCatchingUp && queue_.empty() && !catch_up_.Holding()) PumpCatchUp();
  Queued next;
  if (!queue_.empty()) {
    next = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= next.frame->size();
  } else {
    auto piece = catch_up_.Take();
    next = {std::move(piece.frame), 0, piece.kind};
    if (!next.frame) {
      if (phase_ == Phase::kCatchingUp && !catch_up_.Holding()) PumpCatchUp();
      if (catch_up_.Holding() || !queue_.empty()) return WriteNext();
      return;  // history on its way, or live and idle
    }
    if (next.kind == FrameKind::kEvent) ++replayed_;
  }
  StartWrite(std::move(next), !queue_.empty() || catch_up_.Holding());
}

void Session::StartWrite(Queued item, bool more_follows) {
  writing_ = true;
  in_flight_ = std::move(item);
  // A keep-alive is not output that makes the next one unnecessary: counting it would send
  // one every other interval.
  if (in_flight_.kind != FrameKind::kKeepAlive) wrote_since_keep_alive_ = true;
  if (phase_ == Phase::kCatchingUp) write_started_at_ = std::chrono::steady_clock::now();
  transport_->Write(in_flight_.frame, in_flight_.kind, more_follows,
                    beast::bind_front_handler(&Session::OnWrite, shared_from_this()));
}

void Session::OnWrite(beast::error_code ec) {
  writing_ = false;
  if (ec) {
    if (!IsNormalEnd(ec)) log::Debug("write failed", {{"session", id_}, {"error", ec.message()}});
    phase_ = Phase::kClosed;
    CancelTimers();
    return;
  }
  if (in_flight_.kind == FrameKind::kEvent) context_->metrics.events_delivered.Inc();
  if (transport_->Finished()) {
    in_flight_ = {};
    StartClose(websocket::close_code::normal, "stream complete");
    return;
  }
  if (in_flight_.timestamp_ms > 0) {
    context_->metrics.delivery_latency.Observe(
        static_cast<double>(NowMillis() - in_flight_.timestamp_ms) / 1000.0);
  }
  in_flight_ = {};
  WriteNext();
}

void Session::ReadLoop() {
  transport_->Read(beast::bind_front_handler(&Session::OnRead, shared_from_this()));
}

void Session::OnRead(beast::error_code ec) {
  if (ec) {
    // message_too_big: Beast already answered with close 1009.
    if (!IsNormalEnd(ec) && ec != websocket::error::message_too_big) {
      log::Debug("websocket read ended", {{"session", id_}, {"error", ec.message()}});
    }
    if (ec == websocket::error::message_too_big) {
      log::Info("inbound frame over the limit; closed with 1009",
                {{"session", id_}, {"user", user_id_}});
    }
    // The client left, or half-closed: it reads nothing more. A write in flight (or a close
    // frame) would wait for it forever and keep the session, its connection slot and its
    // catch-up bytes: no timer ends it once they are cancelled. Drop the connection.
    const bool pending_write = writing_ || phase_ == Phase::kClosing;
    phase_ = Phase::kClosed;
    CancelTimers();
    queue_.clear();
    queued_bytes_ = 0;
    catch_up_.Drop();
    if (pending_write) transport_->Abort();
    return;
  }
  // Inbound frames are read for pings, close and the size limit; the one message clients
  // send is a token refresh.
  HandleClientMessage(transport_->TakeMessage());
  if (phase_ == Phase::kClosed) return;
  ReadLoop();
}

void Session::Close(websocket::close_code code, std::string reason) {
  asio::post(transport_->GetExecutor(),
             [self = shared_from_this(), code, reason = std::move(reason)]() mutable {
               self->StartClose(code, std::move(reason));
             });
}

void Session::StartClose(websocket::close_code code, std::string reason) {
  if (phase_ == Phase::kClosing || phase_ == Phase::kClosed) return;
  if (phase_ == Phase::kAccepting) {
    // The handshake is under way: finish it, then close with this code, so a client that
    // connected just as the replica began draining still gets 1012 (reconnect elsewhere)
    // rather than a dropped TCP connection.
    catch_up_.Drop();  // holds nothing yet but the live events buffered
    if (!close_on_accept_) close_on_accept_.emplace(code, std::move(reason));
    return;
  }
  phase_ = Phase::kClosing;
  queue_.clear();
  queued_bytes_ = 0;
  catch_up_.Drop();
  pending_close_code_ = code;
  pending_close_reason_ = std::move(reason);
  close_after_write_ = true;
  // A client that stopped reading never lets the write in flight finish: give up on the
  // close handshake after a while and drop the TCP connection.
  auto& timer = close_timer_.Get(transport_->GetExecutor());
  timer.expires_after(std::chrono::seconds(5));
  timer.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec && self->phase_ != Phase::kClosed) self->transport_->Abort();
  });
  WriteNext();
}

}  // namespace agentwire::gateway
