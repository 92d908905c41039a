#include "session.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <chrono>

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

Session::Session(asio::ip::tcp::socket&& socket, std::shared_ptr<GatewayContext> context,
                 std::string user_id, int partition, StartPosition start, SessionFilters filters,
                 uint64_t id)
    : ws_(std::move(socket)),
      context_(std::move(context)),
      user_id_(std::move(user_id)),
      partition_(partition),
      start_(start),
      filters_(std::move(filters)),
      id_(id),
      close_timer_(ws_.get_executor()) {
  context_->metrics.connections.Add(1);
  context_->metrics.connections_total.Inc();
}

Session::~Session() {
  if (attached_) context_->hub.Detach(partition_, user_id_, this);
  context_->ReleaseConnection(user_id_);
  context_->RemoveSession(this);
  context_->metrics.connections.Add(-1);
}

void Session::Run(beast::http::request<beast::http::string_body> request) {
  auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::server);
  timeouts.handshake_timeout = std::chrono::seconds(10);
  timeouts.idle_timeout = context_->config.idle_timeout;
  timeouts.keep_alive_pings = true;
  ws_.set_option(timeouts);
  ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
    response.set(beast::http::field::server, "agentwire-gateway");
  }));
  ws_.read_message_max(context_->config.max_inbound_frame_bytes);
  ws_.auto_fragment(false);
  // The stream's own timeouts now govern; the HTTP phase's deadline must not fire.
  beast::get_lowest_layer(ws_).expires_never();
  ws_.async_accept(request, beast::bind_front_handler(&Session::OnAccept, shared_from_this()));
}

void Session::OnAccept(beast::error_code ec) {
  if (ec) {
    log::Debug("websocket accept failed", {{"session", id_}, {"error", ec.message()}});
    return;
  }
  ws_.text(true);
  if (close_on_accept_) {
    auto [code, reason] = std::move(*close_on_accept_);
    close_on_accept_.reset();
    phase_ = Phase::kCatchingUp;  // accepted: StartClose now sends a close frame
    ReadLoop();
    StartClose(code, std::move(reason));
    return;
  }
  ReadLoop();
  BeginCatchUp();
}

std::string Session::CursorAt(int64_t next_offset) const {
  const auto& identity = context_->identity;
  return EncodeCursor({identity.epoch, identity.topic_hash,
                       static_cast<uint32_t>(identity.partition_count),
                       static_cast<uint32_t>(partition_), next_offset});
}

void Session::SendReset() {
  context_->metrics.resets.Inc();
  log::Info("cursor not resumable; sent reset", {{"session", id_}, {"user", user_id_}});
  Enqueue({std::make_shared<const std::string>(ResetFrame("history_unavailable")), 0, false});
}

void Session::BeginCatchUp() {
  phase_ = Phase::kCatchingUp;
  if (start_.reset) {
    SendReset();
    start_.kind = StartPosition::Kind::kLive;
  }
  const int64_t from = start_.kind == StartPosition::Kind::kLive       ? -1
                       : start_.kind == StartPosition::Kind::kEarliest ? 0
                                                                       : start_.next_offset;
  auto attachment = context_->hub.Attach(partition_, user_id_, shared_from_this(), from);
  attached_ = true;
  const int64_t end = attachment.dispatched_end;

  if (start_.kind == StartPosition::Kind::kLive) {
    FinishCatchUp({}, end);
    return;
  }
  if (from >= end && start_.kind == StartPosition::Kind::kCursor) {
    if (from == end) {
      FinishCatchUp({}, end);
      return;
    }
    // The cursor is ahead of this replica's tail: another replica is further along, or the
    // topic was recreated. Only Kafka's high watermark can tell which.
    asio::post(context_->history_pool, [self = shared_from_this(), from, end] {
      const auto marks = self->context_->history.QueryWatermarks(self->partition_);
      asio::dispatch(self->ws_.get_executor(), [self, marks, from, end] {
        if (marks.high >= 0 && from > marks.high) {
          self->SendReset();
          self->FinishCatchUp({}, end);
        } else {
          self->FinishCatchUp({}, from);
        }
      });
    });
    return;
  }
  if (attachment.from_cache) {
    context_->metrics.resumes_cache.Inc();
    FinishCatchUp(std::move(attachment.cached), end);
    return;
  }
  context_->metrics.resumes_kafka.Inc();
  const bool earliest = start_.kind == StartPosition::Kind::kEarliest;
  asio::post(context_->history_pool, [self = shared_from_this(), from, end, earliest] {
    auto& history = self->context_->history;
    int64_t read_from = from;
    if (earliest) read_from = std::max<int64_t>(history.QueryWatermarks(self->partition_).low, 0);
    auto result = history.Read(self->partition_, read_from, end, self->user_id_);
    asio::dispatch(self->ws_.get_executor(), [self, result = std::move(result), read_from,
                                              end]() mutable {
      if (self->phase_ != Phase::kCatchingUp) return;
      if (result.outcome == HistoryReader::Outcome::kOk) {
        self->FinishCatchUp(std::move(result.entries), end);
        return;
      }
      if (result.outcome == HistoryReader::Outcome::kOutOfRange) {
        self->SendReset();
        self->FinishCatchUp({}, end);
        return;
      }
      // Kafka unreachable: let the client retry later with the same cursor.
      log::Warn("resume from kafka failed",
                {{"session", self->id_}, {"user", self->user_id_}, {"error", result.error}});
      self->StartClose(websocket::close_code::try_again_later, "history temporarily unavailable");
    });
  });
}

void Session::FinishCatchUp(std::vector<LogEntryPtr> entries, int64_t covered_end) {
  if (phase_ != Phase::kCatchingUp) return;
  // `entries` are the user's events in [start, covered_end), in offset order: each is sent
  // once (filters permitting), then `ready` with covered_end as the resume point.
  catchup_ = std::move(entries);
  catchup_index_ = 0;
  catchup_end_ = covered_end;
  ready_pending_ = true;
  WriteNext();
}

void Session::OnLive(const LogEntryPtr& entry) {
  asio::dispatch(ws_.get_executor(),
                 [self = shared_from_this(), entry] { self->HandleLive(entry); });
}

void Session::HandleLive(const LogEntryPtr& entry) {
  if (phase_ == Phase::kCatchingUp || phase_ == Phase::kAccepting) {
    live_buffer_.push_back(entry);
    live_buffer_bytes_ += entry->frame ? entry->frame->size() : 0;
    if (live_buffer_.size() > context_->config.send_queue_max_frames ||
        live_buffer_bytes_ > context_->config.send_queue_max_bytes) {
      StartClose(websocket::close_code::try_again_later, "client too slow");
      context_->metrics.slow_closes.Inc();
    }
    return;
  }
  if (phase_ != Phase::kLive) return;
  if (entry->offset < next_offset_) return;  // already delivered (or before our start)
  next_offset_ = entry->offset + 1;
  if (entry->gap) {
    // Events this session had not received are gone from the log (the tailer logged which):
    // say so, then go on live from where the log now starts.
    SendReset();
    return;
  }
  if (!filters_.Matches(*entry)) return;
  Enqueue({entry->frame, entry->timestamp_ms, true});
  if (OverLimits()) {
    context_->metrics.slow_closes.Inc();
    log::Info("client too slow; closing with 1013", {{"session", id_}, {"user", user_id_}});
    StartClose(websocket::close_code::try_again_later, "client too slow");
  }
}

bool Session::OverLimits() const {
  return queue_.size() > context_->config.send_queue_max_frames ||
         queued_bytes_ > context_->config.send_queue_max_bytes;
}

void Session::Enqueue(Queued item) {
  queued_bytes_ += item.frame->size();
  queue_.push_back(std::move(item));
  WriteNext();
}

void Session::WriteNext() {
  if (writing_ || phase_ == Phase::kClosed) return;
  if (phase_ == Phase::kClosing) {
    if (close_after_write_) {
      close_after_write_ = false;
      ws_.async_close(pending_close_, [self = shared_from_this()](beast::error_code) {
        self->phase_ = Phase::kClosed;
        self->close_timer_.cancel();
      });
    }
    return;
  }
  Queued next;
  if (!queue_.empty()) {
    next = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= next.frame->size();
  } else if (phase_ == Phase::kCatchingUp) {
    while (catchup_index_ < catchup_.size()) {
      const auto& entry = catchup_[catchup_index_++];
      if (!filters_.Matches(*entry)) continue;
      next = {entry->frame, 0, true};
      ++replayed_;
      break;
    }
    if (!next.frame && ready_pending_) {
      ready_pending_ = false;
      catchup_.clear();
      next_offset_ = catchup_end_;
      phase_ = Phase::kLive;
      StartWrite(
          {std::make_shared<const std::string>(ReadyFrame(CursorAt(next_offset_), replayed_)), 0,
           false});
      // Live events that arrived meanwhile, minus what the catch-up already covered. They
      // queue behind the ready frame (the write in flight).
      auto buffered = std::move(live_buffer_);
      live_buffer_.clear();
      live_buffer_bytes_ = 0;
      for (const auto& entry : buffered) HandleLive(entry);
      return;
    }
  }
  if (next.frame) StartWrite(std::move(next));
}

void Session::StartWrite(Queued item) {
  writing_ = true;
  in_flight_ = std::move(item);
  ws_.async_write(asio::buffer(*in_flight_.frame),
                  beast::bind_front_handler(&Session::OnWrite, shared_from_this()));
}

void Session::OnWrite(beast::error_code ec, std::size_t /*bytes*/) {
  writing_ = false;
  if (ec) {
    if (!IsNormalEnd(ec))
      log::Debug("websocket write failed", {{"session", id_}, {"error", ec.message()}});
    phase_ = Phase::kClosed;
    return;
  }
  if (in_flight_.is_event) context_->metrics.events_delivered.Inc();
  if (in_flight_.timestamp_ms > 0) {
    context_->metrics.delivery_latency.Observe(
        static_cast<double>(NowMillis() - in_flight_.timestamp_ms) / 1000.0);
  }
  in_flight_ = {};
  WriteNext();
}

void Session::ReadLoop() {
  ws_.async_read(read_buffer_, beast::bind_front_handler(&Session::OnRead, shared_from_this()));
}

void Session::OnRead(beast::error_code ec, std::size_t /*bytes*/) {
  if (ec) {
    // message_too_big: Beast already answered with close 1009.
    if (!IsNormalEnd(ec) && ec != websocket::error::message_too_big) {
      log::Debug("websocket read ended", {{"session", id_}, {"error", ec.message()}});
    }
    if (ec == websocket::error::message_too_big) {
      log::Info("inbound frame over the limit; closed with 1009",
                {{"session", id_}, {"user", user_id_}});
    }
    phase_ = Phase::kClosed;
    close_timer_.cancel();
    return;
  }
  // Clients have nothing to say on this stream yet; inbound frames are read (for pings,
  // close and the size limit) and dropped.
  read_buffer_.consume(read_buffer_.size());
  ReadLoop();
}

void Session::Close(websocket::close_code code, std::string reason) {
  asio::dispatch(ws_.get_executor(),
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
    live_buffer_.clear();
    live_buffer_bytes_ = 0;
    if (!close_on_accept_) close_on_accept_.emplace(code, std::move(reason));
    return;
  }
  phase_ = Phase::kClosing;
  queue_.clear();
  queued_bytes_ = 0;
  catchup_.clear();
  live_buffer_.clear();
  pending_close_ = websocket::close_reason(code, reason);
  close_after_write_ = true;
  // A client that stopped reading never lets the write in flight finish: give up on the
  // close handshake after a while and drop the TCP connection.
  close_timer_.expires_after(std::chrono::seconds(5));
  close_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec && self->phase_ != Phase::kClosed) {
      beast::error_code ignored;
      beast::get_lowest_layer(self->ws_).socket().shutdown(asio::ip::tcp::socket::shutdown_both,
                                                           ignored);
      beast::get_lowest_layer(self->ws_).close();
    }
  });
  WriteNext();
}

}  // namespace agentwire::gateway
