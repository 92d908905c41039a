#include "catch_up.hpp"

#include <algorithm>
#include <utility>

#include "agentwire/core/logging.hpp"
#include "gateway_context.hpp"

namespace agentwire::gateway {

PartitionHub::CacheRead GatewayPartitionLog::ReadCached(int64_t from, int64_t to,
                                                        size_t max_bytes) const {
  return context_.hub.ReadCached(partition_, user_id_, from, to, max_bytes);
}

int64_t GatewayPartitionLog::LogStart() const { return context_.hub.LogStart(partition_); }

int64_t GatewayPartitionLog::DispatchedEnd() const {
  return context_.hub.DispatchedEnd(partition_);
}

bool GatewayPartitionLog::IsLate(const LogEntry& entry) const {
  return context_.hub.IsLate(partition_, entry);
}

bool GatewayPartitionLog::ArchiveEnabled() const { return context_.archive.Enabled(); }

void GatewayPartitionLog::SubmitKafka(HistoryRequest request) {
  request.sink = sink_;
  context_.history.Submit(std::move(request));
}

void GatewayPartitionLog::SubmitArchive(HistoryRequest request) {
  request.sink = sink_;
  context_.archive.Submit(std::move(request));
}

void GatewayPartitionLog::Release(size_t bytes) {
  context_.catchup_budget.Release(user_id_, bytes);
}

std::shared_ptr<const std::string> MakeReset(GatewayMetrics& metrics, uint64_t session,
                                             const std::string& user, std::string_view reason,
                                             const MissingRange* missing) {
  metrics.resets.Inc();
  if (missing != nullptr) {
    metrics.missing_offsets.Inc(static_cast<uint64_t>(missing->to_offset - missing->from_offset));
  }
  // A retention gap resets every session of a partition at once: one line a second.
  static log::RateLimited reset_log;
  reset_log.Write(log::Level::kInfo, "sent reset",
                  {{"session", session},
                   {"user", user},
                   {"reason", std::string(reason)},
                   {"missing_from", missing != nullptr ? missing->from_offset : -1},
                   {"missing_to", missing != nullptr ? missing->to_offset : -1}});
  return std::make_shared<const std::string>(ResetFrame(reason, missing));
}

CatchUp::CatchUp(PartitionLog& log, GatewayMetrics& metrics, Settings settings,
                 SendControl send_control)
    : log_(log),
      metrics_(metrics),
      settings_(std::move(settings)),
      send_control_(std::move(send_control)),
      hand_off_(settings_.live_buffer) {}

CatchUp::~CatchUp() { Drop(); }

void CatchUp::Start(int64_t attach_point, const StartPosition& start) {
  attach_end_ = attach_point;
  hand_off_.Start(attach_end_, attach_end_);
  switch (start.kind) {
    case StartPosition::Kind::kLive:
      break;
    case StartPosition::Kind::kEarliest:
      StartFromEarliest();
      break;
    case StartPosition::Kind::kCursor:
      if (start.next_offset <= attach_end_) {
        hand_off_.SetPosition(start.next_offset);
      } else {
        // The cursor is ahead of this replica's tail: another replica is further along (or
        // this one is still warming up), or the topic was recreated. Only Kafka's high
        // watermark can tell which; the history reader asks it once for every such session.
        probing_ahead_ = true;
        hand_off_.SkipTo(start.next_offset);
        SubmitKafka(start.next_offset, start.next_offset);
      }
      break;
  }
}

void CatchUp::StartFromEarliest() {
  earliest_ = true;
  hand_off_.SetPosition(0);
  // A client without a cursor would otherwise make this replica scan its whole partition
  // (up to the log's retention) on every page load: it gets the newest records only, and is
  // told with `reset` when the log holds older ones it will not see.
  const int64_t limit = settings_.max_catchup_events;
  if (limit <= 0 || attach_end_ <= limit) return;
  const int64_t bound = attach_end_ - limit;
  const int64_t log_start = log_.LogStart();  // -1 while unknown
  if (log_start >= bound) return;             // retention already keeps less than the limit
  hand_off_.SetPosition(bound);
  metrics_.catchup_limited.Inc();
  SendReset(kResetCatchupLimit);
}

void CatchUp::SubmitKafka(int64_t from, int64_t to) {
  history_in_flight_ = true;
  HistoryRequest request;
  request.partition = settings_.partition;
  request.user_id = settings_.user_id;
  request.from = from;
  request.to = to;
  request.earliest = earliest_;
  log_.SubmitKafka(std::move(request));
}

void CatchUp::SubmitArchive(int64_t from, int64_t to) {
  if (!counted_archive_) {
    counted_archive_ = true;
    metrics_.resumes_archive.Inc();
  }
  history_in_flight_ = true;
  archive_request_to_ = to;
  HistoryRequest request;
  request.partition = settings_.partition;
  request.user_id = settings_.user_id;
  request.from = from;
  request.to = to;
  log_.SubmitArchive(std::move(request));
}

CatchUp::Pumped CatchUp::Pump() {
  // Entries are fetched only when the session has written what it held: its memory stays
  // bounded by one cache chunk or one history chunk.
  constexpr size_t kCacheChunkBytes = 64 * 1024;
  while (!history_in_flight_ && catchup_.empty()) {
    if (hand_off_.Fetched()) {
      if (!hand_off_.LiveOverflowed()) return Pumped::kReady;
      // Live events overflowed the buffer while catching up: they were dropped, and the
      // catch-up goes on to where the log is now (everything after it arrives live).
      hand_off_.ExtendTo(log_.DispatchedEnd());
      continue;
    }
    auto read = log_.ReadCached(hand_off_.Position(), hand_off_.Target(), kCacheChunkBytes);
    if (!read.covered) {
      // Below Kafka's log start (as the tailer last saw it, or as a Kafka read answered): the
      // archive holds what retention deleted, up to its committed position.
      const int64_t log_start = std::max(archive_until_, log_.LogStart());
      if (log_.ArchiveEnabled() && hand_off_.Position() < log_start) {
        SubmitArchive(hand_off_.Position(), std::min(log_start, hand_off_.Target()));
        return Pumped::kBusy;
      }
      if (!counted_kafka_) {
        counted_kafka_ = true;
        metrics_.resumes_kafka.Inc();
      }
      SubmitKafka(hand_off_.Position(), std::min(read.next_offset, hand_off_.Target()));
      return Pumped::kBusy;
    }
    if (!counted_cache_ && !counted_kafka_) {
      counted_cache_ = true;
      metrics_.resumes_cache.Inc();
    }
    for (auto& entry : read.entries) AddCatchup(std::move(entry), 0, false);
    hand_off_.Advance(read.next_offset);
  }
  return Pumped::kBusy;
}

CatchUp::Next CatchUp::OnChunk(HistoryChunk chunk) {
  const size_t held_before = catchup_.size();
  for (auto& entry : chunk.entries) {
    const size_t bytes = entry->Bytes();  // what the history reader charged for it
    AddCatchup(std::move(entry), bytes, true);
  }
  using Status = HistoryChunk::Status;
  if (chunk.source == HistoryChunk::Source::kArchive) {
    return HandleArchiveChunk(chunk, held_before <= chunk.entries.size());
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
      metrics_.catchup_share_waits.Inc();
      return Next::kRetryLater;
    case Status::kOutOfRange:
      history_in_flight_ = false;
      if (!probing_ahead_ && chunk.log_start > hand_off_.Position()) {
        if (log_.ArchiveEnabled()) {
          archive_until_ = chunk.log_start;  // the next piece comes from the archive
          break;
        }
        // Retention deleted [position, log start) and there is no archive: name the hole, then
        // everything the log still holds.
        const MissingRange missing{settings_.partition, hand_off_.Position(), chunk.log_start};
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
    case Status::kError: {
      history_in_flight_ = false;
      // Kafka unreachable: let the client retry later with the same cursor.
      static log::RateLimited failed_log;  // a Kafka outage fails every resume at once
      failed_log.Warn(
          "resume from kafka failed",
          {{"session", settings_.session_id}, {"user", settings_.user_id}, {"error", chunk.error}});
      return Next::kFailed;
    }
  }
  return Next::kWrite;
}

CatchUp::Next CatchUp::HandleArchiveChunk(const HistoryChunk& chunk, bool held_little) {
  using Status = HistoryChunk::Status;
  switch (chunk.status) {
    case Status::kMore:
      hand_off_.Advance(chunk.next_offset);
      // Read one chunk ahead, so the next read overlaps the writing of this one (a read and a
      // write of 500 rows take about as long): only while what was held before this chunk is
      // at most one chunk's worth, so a session holds about two chunks and one on its way,
      // however slow its client. Otherwise the next is asked for once all is written.
      if (held_little && chunk.next_offset < archive_request_to_) {
        SubmitArchive(chunk.next_offset, archive_request_to_);
      } else {
        history_in_flight_ = false;
      }
      break;
    case Status::kDone:
      history_in_flight_ = false;
      hand_off_.Advance(chunk.next_offset);
      break;
    case Status::kOutOfRange: {
      // The archive fell behind retention: [next_offset, the log's start) exists nowhere.
      history_in_flight_ = false;
      const MissingRange missing{settings_.partition, chunk.next_offset, archive_request_to_};
      SendReset(kResetHistoryUnavailable, &missing);
      hand_off_.Advance(archive_request_to_);
      break;
    }
    case Status::kPaused:
      // The catch-up budget is full, or this user's other sessions hold its fair share.
      metrics_.catchup_share_waits.Inc();
      return Next::kRetryLater;
    case Status::kError: {
      history_in_flight_ = false;
      // PostgreSQL down or slow: never a silent hole. The client comes back with the same
      // cursor (1013 means "try again later"); sessions served by Kafka are not affected.
      static log::RateLimited failed_log;
      failed_log.Warn(
          "resume from the archive failed",
          {{"session", settings_.session_id}, {"user", settings_.user_id}, {"error", chunk.error}});
      return Next::kFailed;
    }
  }
  return Next::kWrite;
}

CatchUp::Piece CatchUp::Take() {
  Piece next;
  while (!catchup_.empty() && !next.frame) {
    auto item = std::move(catchup_.front());
    catchup_.pop_front();
    Release(item.charged_bytes);
    if (item.control) {
      next = {std::move(item.control), FrameKind::kControl};
    } else {
      next = {item.entry->Frame(), FrameKind::kEvent};  // null: did not decode, skipped
    }
  }
  return next;
}

void CatchUp::AddCatchup(LogEntryPtr entry, size_t charged_bytes, bool from_kafka) {
  // Only what will be written is kept, so "catchup_ is not empty" means "a frame follows".
  if (!settings_.filters.Matches(*entry) || !hand_off_.TakeCatchup(entry->offset) ||
      EndedAlready(*entry, from_kafka)) {
    Release(charged_bytes);
    return;
  }
  catchup_.push_back({std::move(entry), charged_bytes, nullptr});
}

bool CatchUp::EndedAlready(const LogEntry& entry, bool ask_hub) {
  if (entry.run_id.empty()) return false;
  if (std::find(ended_runs_.begin(), ended_runs_.end(), entry.run_id) != ended_runs_.end() ||
      (ask_hub && log_.IsLate(entry))) {
    return true;
  }
  if (entry.end != RunEnd::kNone) {
    if (ended_runs_.size() == kEndedRunsKept) ended_runs_.erase(ended_runs_.begin());
    ended_runs_.push_back(entry.run_id);
  }
  return false;
}

void CatchUp::SendReset(std::string_view reason, const MissingRange* missing) {
  auto frame = MakeReset(metrics_, settings_.session_id, settings_.user_id, reason, missing);
  if (!catchup_.empty()) {
    catchup_.push_back({nullptr, 0, std::move(frame)});
    return;
  }
  send_control_(std::move(frame));
}

void CatchUp::Release(size_t bytes) {
  if (bytes == 0) return;
  pending_bytes_.fetch_sub(bytes);
  log_.Release(bytes);
}

void CatchUp::Drop() {
  while (!catchup_.empty()) {
    Release(catchup_.front().charged_bytes);
    catchup_.pop_front();
  }
  hand_off_.DropBuffered();
}

void CatchUp::BufferLive(LogEntryPtr entry) {
  if (hand_off_.BufferLive(std::move(entry)) == HandOff::Buffered::kOverflowedNow) {
    metrics_.catchup_extended.Inc();
  }
}

CatchUp::Live CatchUp::AcceptLive(const LogEntry& entry) {
  if (!hand_off_.AcceptLive(entry.offset)) return Live::kSkip;  // delivered (or before our start)
  if (entry.gap) return Live::kGap;
  if (!settings_.filters.Matches(entry) || EndedAlready(entry, false)) return Live::kSkip;
  return Live::kDeliver;
}

}  // namespace agentwire::gateway
