#include "session.hpp"

#include <algorithm>
#include <boost/asio/dispatch.hpp>
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
      filters_(std::move(filters)),
      id_(id),
      created_at_(std::chrono::steady_clock::now()),
      // Small on purpose: past it, catching up from the log costs less than buffering.
      hand_off_({std::min<size_t>(context_->config.send_queue_max_frames, 1024),
                 std::min<size_t>(context_->config.send_queue_max_bytes, 512 * 1024)}),
      close_timer_(transport_->GetExecutor()),
      keep_alive_timer_(transport_->GetExecutor()),
      token_timer_(transport_->GetExecutor()),
      progress_timer_(transport_->GetExecutor()),
      retry_timer_(transport_->GetExecutor()) {
  context_->metrics.connections.Add(1);
  context_->metrics.connections_total.Inc();
}

Session::~Session() {
  DropCatchup();
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
        asio::dispatch(self->transport_->GetExecutor(), [self, run_id, outcome] {
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
  progress_timer_.expires_after(timeout / 2);
  progress_timer_.async_wait([self = shared_from_this(), timeout](beast::error_code ec) {
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
  keep_alive_timer_.expires_after(*interval);
  keep_alive_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
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

void Session::SendReset(std::string_view reason, const MissingRange* missing) {
  context_->metrics.resets.Inc();
  if (missing != nullptr) {
    context_->metrics.missing_offsets.Inc(
        static_cast<uint64_t>(missing->to_offset - missing->from_offset));
  }
  // A retention gap resets every session of a partition at once: one line a second.
  static log::RateLimited reset_log;
  reset_log.Write(log::Level::kInfo, "sent reset",
                  {{"session", id_},
                   {"user", user_id_},
                   {"reason", std::string(reason)},
                   {"missing_from", missing != nullptr ? missing->from_offset : -1},
                   {"missing_to", missing != nullptr ? missing->to_offset : -1}});
  // Queued only: every caller writes next, and a write from here could start the catch-up
  // before the session is attached.
  auto frame = std::make_shared<const std::string>(ResetFrame(reason, missing));
  if (phase_ == Phase::kCatchingUp && !catchup_.empty()) {
    catchup_.push_back({nullptr, 0, std::move(frame)});
    return;
  }
  Push({std::move(frame), 0, FrameKind::kControl});
}

void Session::StartFromEarliest() {
  earliest_ = true;
  hand_off_.SetPosition(0);
  // A client without a cursor would otherwise make this replica scan its whole partition
  // (up to the log's retention) on every page load: it gets the newest records only, and is
  // told with `reset` when the log holds older ones it will not see.
  const int64_t limit = context_->config.max_catchup_events;
  if (limit <= 0 || attach_end_ <= limit) return;
  const int64_t bound = attach_end_ - limit;
  const int64_t log_start = context_->hub.LogStart(partition_);  // -1 while unknown
  if (log_start >= bound) return;  // retention already keeps less than the limit
  hand_off_.SetPosition(bound);
  context_->metrics.catchup_limited.Inc();
  SendReset(kResetCatchupLimit);
}

void Session::BeginCatchUp() {
  phase_ = Phase::kCatchingUp;
  if (start_.reset) {
    SendReset(kResetHistoryUnavailable);
    start_.kind = StartPosition::Kind::kLive;
  }
  attached_ = true;
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
  asio::dispatch(transport_->GetExecutor(), [self = shared_from_this(), start_offset] {
    if (!self->waiting_for_tail_ || self->phase_ != Phase::kCatchingUp) return;
    self->waiting_for_tail_ = false;
    self->CatchUpFrom(start_offset);
  });
}

void Session::CatchUpFrom(int64_t attach_point) {
  attach_end_ = attach_point;
  hand_off_.Start(attach_end_, attach_end_);
  switch (start_.kind) {
    case StartPosition::Kind::kLive:
      break;
    case StartPosition::Kind::kEarliest:
      StartFromEarliest();
      break;
    case StartPosition::Kind::kCursor:
      if (start_.next_offset <= attach_end_) {
        hand_off_.SetPosition(start_.next_offset);
      } else {
        // The cursor is ahead of this replica's tail: another replica is further along (or
        // this one is still warming up), or the topic was recreated. Only Kafka's high
        // watermark can tell which; the history reader asks it once for every such session.
        probing_ahead_ = true;
        hand_off_.SkipTo(start_.next_offset);
        SubmitHistory(start_.next_offset, start_.next_offset);
      }
      break;
  }
  WriteNext();
}

void Session::SubmitHistory(int64_t from, int64_t to) {
  history_in_flight_ = true;
  HistoryRequest request;
  request.partition = partition_;
  request.user_id = user_id_;
  request.from = from;
  request.to = to;
  request.earliest = earliest_;
  request.sink = std::static_pointer_cast<HistorySink>(shared_from_this());
  context_->history.Submit(std::move(request));
}

void Session::SubmitArchive(int64_t from, int64_t to) {
  if (!counted_archive_) {
    counted_archive_ = true;
    context_->metrics.resumes_archive.Inc();
  }
  history_in_flight_ = true;
  archive_request_to_ = to;
  HistoryRequest request;
  request.partition = partition_;
  request.user_id = user_id_;
  request.from = from;
  request.to = to;
  request.sink = std::static_pointer_cast<HistorySink>(shared_from_this());
  context_->archive.Submit(std::move(request));
}

void Session::PumpCatchUp() {
  // Entries are fetched only when the session has written what it held: its memory stays
  // bounded by one cache chunk or one history chunk.
  constexpr size_t kCacheChunkBytes = 64 * 1024;
  if (waiting_for_tail_) return;  // nothing to fetch before the attach point is known
  while (phase_ == Phase::kCatchingUp && !history_in_flight_ && catchup_.empty()) {
    if (hand_off_.Fetched()) {
      if (!hand_off_.LiveOverflowed()) {
        GoLive();
        return;
      }
      // Live events overflowed the buffer while catching up: they were dropped, and the
      // catch-up goes on to where the log is now (everything after it arrives live).
      hand_off_.ExtendTo(context_->hub.DispatchedEnd(partition_));
      continue;
    }
    auto read = context_->hub.ReadCached(partition_, user_id_, hand_off_.Position(),
                                         hand_off_.Target(), kCacheChunkBytes);
    if (!read.covered) {
      // Below Kafka's log start (as the tailer last saw it, or as a Kafka read answered): the
      // archive holds what retention deleted, up to its committed position.
      const int64_t log_start = std::max(archive_until_, context_->hub.LogStart(partition_));
      if (context_->archive.Enabled() && hand_off_.Position() < log_start) {
        SubmitArchive(hand_off_.Position(), std::min(log_start, hand_off_.Target()));
        return;
      }
      if (!counted_kafka_) {
        counted_kafka_ = true;
        context_->metrics.resumes_kafka.Inc();
      }
      SubmitHistory(hand_off_.Position(), std::min(read.next_offset, hand_off_.Target()));
      return;
    }
    if (!counted_cache_ && !counted_kafka_) {
      counted_cache_ = true;
      context_->metrics.resumes_cache.Inc();
    }
    for (auto& entry : read.entries) AddCatchup(std::move(entry), 0, false);
    hand_off_.Advance(read.next_offset);
  }
}

void Session::OnHistory(HistoryChunk chunk) {
  pending_catchup_bytes_.fetch_add(chunk.charged_bytes);
  asio::post(transport_->GetExecutor(),
             [self = shared_from_this(), chunk = std::move(chunk)]() mutable {
               self->HandleHistory(std::move(chunk));
             });
}

void Session::HandleHistory(HistoryChunk chunk) {
  if (phase_ != Phase::kCatchingUp) {
    ReleaseCatchup(chunk.charged_bytes);
    return;
  }
  for (auto& entry : chunk.entries) {
    const size_t bytes = entry->Bytes();  // what the history reader charged for it
    AddCatchup(std::move(entry), bytes, true);
  }
  using Status = HistoryChunk::Status;
  if (chunk.source == HistoryChunk::Source::kArchive) {
    HandleArchiveChunk(chunk);
    return;
  }
  switch (chunk.status) {
    case Status::kMore:
      hand_off_.Advance(chunk.next_offset);
      break;
    case Status::kDone:
      history_in_flight_ = false;
      hand_off_.Advance(chunk.next_offset);
      probing_ahead_ = false;
      break;
    case Status::kPaused:  // asked again from next_offset once the session has written
      hand_off_.Advance(chunk.next_offset);
      probing_ahead_ = false;
      if (!catchup_.empty()) {
        history_in_flight_ = false;
        break;
      }
      // Paused while holding nothing: the user's other sessions hold its fair share of the
      // catch-up budget. Asking again at once would come straight back; ask after a while
      // (history_in_flight_ stays set, so nothing else asks meanwhile).
      context_->metrics.catchup_share_waits.Inc();
      retry_timer_.expires_after(std::chrono::milliseconds(250));
      retry_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (ec || self->phase_ != Phase::kCatchingUp) return;
        self->history_in_flight_ = false;
        self->WriteNext();
      });
      break;
    case Status::kOutOfRange:
      history_in_flight_ = false;
      if (!probing_ahead_ && chunk.log_start > hand_off_.Position()) {
        if (context_->archive.Enabled()) {
          archive_until_ = chunk.log_start;  // the next piece comes from the archive
          break;
        }
        // Retention deleted [position, log start) and there is no archive: name the hole, then
        // everything the log still holds.
        const MissingRange missing{partition_, hand_off_.Position(), chunk.log_start};
        SendReset(kResetHistoryUnavailable, &missing);
        hand_off_.Advance(chunk.log_start);
        break;
      }
      SendReset(kResetHistoryUnavailable);
      // History is gone (or the cursor came from a topic that was recreated): go on live from
      // this replica's tail.
      hand_off_.SkipTo(probing_ahead_ ? attach_end_ : hand_off_.Target());
      probing_ahead_ = false;
      break;
    case Status::kError:
      history_in_flight_ = false;
      // Kafka unreachable: let the client retry later with the same cursor.
      static log::RateLimited failed_log;  // a Kafka outage fails every resume at once
      failed_log.Warn("resume from kafka failed",
                      {{"session", id_}, {"user", user_id_}, {"error", chunk.error}});
      StartClose(websocket::close_code::try_again_later, "history temporarily unavailable");
      return;
  }
  WriteNext();
}

void Session::HandleArchiveChunk(const HistoryChunk& chunk) {
  using Status = HistoryChunk::Status;
  switch (chunk.status) {
    case Status::kMore:  // pulled: the next chunk is asked for once this one is written
    case Status::kDone:
      history_in_flight_ = false;
      hand_off_.Advance(chunk.next_offset);
      break;
    case Status::kOutOfRange: {
      // The archive fell behind retention: [next_offset, the log's start) exists nowhere.
      history_in_flight_ = false;
      const MissingRange missing{partition_, chunk.next_offset, archive_request_to_};
      SendReset(kResetHistoryUnavailable, &missing);
      hand_off_.Advance(archive_request_to_);
      break;
    }
    case Status::kPaused:
      // The catch-up budget is full, or this user's other sessions hold its fair share.
      context_->metrics.catchup_share_waits.Inc();
      retry_timer_.expires_after(std::chrono::milliseconds(250));
      retry_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (ec || self->phase_ != Phase::kCatchingUp) return;
        self->history_in_flight_ = false;
        self->WriteNext();
      });
      return;
    case Status::kError: {
      history_in_flight_ = false;
      // PostgreSQL down or slow: never a silent hole. The client comes back with the same
      // cursor (1013 means "try again later"); sessions served by Kafka are not affected.
      static log::RateLimited failed_log;
      failed_log.Warn("resume from the archive failed",
                      {{"session", id_}, {"user", user_id_}, {"error", chunk.error}});
      StartClose(websocket::close_code::try_again_later, "history temporarily unavailable");
      return;
    }
  }
  WriteNext();
}

void Session::GoLive() {
  phase_ = Phase::kLive;
  // Live events that arrived meanwhile, minus what the catch-up already covered.
  const auto buffered = hand_off_.GoLive();
  context_->metrics.time_to_ready.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - created_at_).count());
  Push(
      {std::make_shared<const std::string>(ReadyFrame(CursorAt(hand_off_.NextOffset()), replayed_)),
       0, FrameKind::kControl});
  for (const auto& entry : buffered) AcceptLive(entry);
}

void Session::AddCatchup(LogEntryPtr entry, size_t charged_bytes, bool from_kafka) {
  // Only what will be written is kept, so "catchup_ is not empty" means "a frame follows".
  if (!filters_.Matches(*entry) || !hand_off_.TakeCatchup(entry->offset) ||
      EndedAlready(*entry, from_kafka)) {
    ReleaseCatchup(charged_bytes);
    return;
  }
  catchup_.push_back({std::move(entry), charged_bytes, nullptr});
}

bool Session::EndedAlready(const LogEntry& entry, bool ask_hub) {
  if (entry.run_id.empty()) return false;
  if (std::find(ended_runs_.begin(), ended_runs_.end(), entry.run_id) != ended_runs_.end() ||
      (ask_hub && context_->hub.IsLate(partition_, entry))) {
    return true;
  }
  if (entry.end != RunEnd::kNone) {
    if (ended_runs_.size() == kEndedRunsKept) ended_runs_.erase(ended_runs_.begin());
    ended_runs_.push_back(entry.run_id);
  }
  return false;
}

void Session::ReleaseCatchup(size_t bytes) {
  if (bytes == 0) return;
  pending_catchup_bytes_.fetch_sub(bytes);
  context_->catchup_budget.Release(user_id_, bytes);
}

void Session::DropCatchup() {
  while (!catchup_.empty()) {
    ReleaseCatchup(catchup_.front().charged_bytes);
    catchup_.pop_front();
  }
}

void Session::OnLive(const LogEntryPtr& entry) {
  asio::dispatch(transport_->GetExecutor(),
                 [self = shared_from_this(), entry] { self->HandleLive(entry); });
}

void Session::HandleLive(const LogEntryPtr& entry) {
  if (phase_ == Phase::kCatchingUp || phase_ == Phase::kAccepting) {
    if (hand_off_.BufferLive(entry) == HandOff::Buffered::kOverflowedNow) {
      context_->metrics.catchup_extended.Inc();
    }
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
  if (!hand_off_.AcceptLive(entry->offset)) return;  // already delivered (or before our start)
  if (entry->gap) {
    // Events this session had not received are gone from the log (the tailer logged which):
    // say so, then go on live from where the log now starts.
    SendReset(kResetHistoryUnavailable);
    return;
  }
  if (!filters_.Matches(*entry) || EndedAlready(*entry, false)) return;
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
  if (phase_ == Phase::kCatchingUp && queue_.empty() && catchup_.empty()) PumpCatchUp();
  Queued next;
  if (!queue_.empty()) {
    next = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= next.frame->size();
  } else {
    while (!catchup_.empty() && !next.frame) {
      auto item = std::move(catchup_.front());
      catchup_.pop_front();
      ReleaseCatchup(item.charged_bytes);
      if (item.control) {
        next = {std::move(item.control), 0, FrameKind::kControl};
      } else {
        next = {item.entry->Frame(), 0, FrameKind::kEvent};  // null: did not decode, skipped
      }
    }
    if (!next.frame) {
      if (phase_ == Phase::kCatchingUp && catchup_.empty()) PumpCatchUp();
      if (!catchup_.empty() || !queue_.empty()) return WriteNext();
      return;  // history on its way, or live and idle
    }
    if (next.kind == FrameKind::kEvent) ++replayed_;
  }
  StartWrite(std::move(next), !queue_.empty() || !catchup_.empty());
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
    DropCatchup();
    hand_off_.DropBuffered();
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
  asio::dispatch(transport_->GetExecutor(),
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
    hand_off_.DropBuffered();
    if (!close_on_accept_) close_on_accept_.emplace(code, std::move(reason));
    return;
  }
  phase_ = Phase::kClosing;
  queue_.clear();
  queued_bytes_ = 0;
  DropCatchup();
  hand_off_.DropBuffered();
  pending_close_code_ = code;
  pending_close_reason_ = std::move(reason);
  close_after_write_ = true;
  // A client that stopped reading never lets the write in flight finish: give up on the
  // close handshake after a while and drop the TCP connection.
  close_timer_.expires_after(std::chrono::seconds(5));
  close_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec && self->phase_ != Phase::kClosed) self->transport_->Abort();
  });
  WriteNext();
}

}  // namespace agentwire::gateway
