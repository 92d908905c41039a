#include "thread_history.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <charconv>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "agentwire/core/hashing.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/gateway/auth.hpp"
#include "url.hpp"

namespace agentwire::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

/// A page not read by then is answered 503 (a sparse thread in a huge partition, Kafka or
/// PostgreSQL stuck): the client retries later, and the reads in flight are abandoned.
constexpr auto kPageDeadline = std::chrono::seconds(30);
/// How long a page waits for the partition's tail to reach the log's end (--tail auto).
constexpr auto kTailWait = std::chrono::seconds(2);
/// A Kafka read paused because the user's sessions hold their share of the catch-up budget.
constexpr auto kPausedRetry = std::chrono::milliseconds(250);
/// Cache reads are done in steps of about this much, with other handlers in between.
constexpr size_t kCacheStepBytes = 256u << 10;
constexpr int kRetryAfterSeconds = 1;

// Boost 1.74's beast::string_view is boost::string_view.
std::string_view Sv(beast::string_view text) { return {text.data(), text.size()}; }

std::optional<size_t> ParseLimit(const std::string& text) {
  size_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || stop != end || value < 1 ||
      value > ThreadPageQuery::kMaxLimit) {
    return std::nullopt;
  }
  return value;
}

/// A cursor's next offset, or why it is refused (the rules and words of /v1/events).
std::variant<int64_t, Refusal> ParsePageCursor(const std::string& text,
                                               const TopicIdentity& identity, int partition) {
  const auto cursor = DecodeCursor(text);
  if (!cursor) {
    return Refusal{http::status::bad_request, "bad_cursor",
                   "cursor is not a cursor this service issued; open the thread without one"};
  }
  if (!identity.Issued(*cursor)) {
    return Refusal{http::status::bad_request, "bad_cursor",
                   "cursor was issued for another topic, topic epoch or partition layout; open "
                   "the thread without one"};
  }
  if (cursor->partition != static_cast<uint32_t>(partition)) {
    return Refusal{http::status::bad_request, "bad_cursor",
                   "cursor belongs to another user's stream"};
  }
  return cursor->next_offset;
}

/// Keeps the user's partition tailed while a page is read (--tail auto): the page's end is the
/// tail's, and the client's subscription from end_cursor that follows finds the tail warm.
class NoOpListener final : public LiveListener {
 public:
  void OnLive(const LogEntryPtr& /*entry*/) override {}
  void OnTailStarted(int64_t /*start_offset*/) override {}
};

}  // namespace

std::optional<std::string> ThreadEventsPath(std::string_view path) {
  return SegmentBetween(path, "/v1/threads/", "/events");
}

std::variant<ThreadPageQuery, Refusal> ParseThreadPageQuery(std::string thread_id,
                                                            const ParsedTarget& target,
                                                            const TopicIdentity& identity,
                                                            int partition) {
  ThreadPageQuery query;
  if (!IsTextId(thread_id, ThreadPageQuery::kMaxThreadIdBytes)) {
    return Refusal{http::status::bad_request, "bad_thread_id",
                   "thread_id must be 1-256 bytes of UTF-8 without control characters"};
  }
  query.thread_id = std::move(thread_id);
  const bool before = target.Has("before");
  const bool after = target.Has("after");
  if (before && after) {
    return Refusal{http::status::bad_request, "bad_request",
                   "give before or after, not both: a page goes one way"};
  }
  if (target.Has("limit")) {
    const auto limit = ParseLimit(target.Param("limit"));
    if (!limit) {
      return Refusal{
          http::status::bad_request, "bad_limit",
          fmt::format("limit must be an integer from 1 to {}", ThreadPageQuery::kMaxLimit)};
    }
    query.limit = *limit;
  }
  if (before || after) {
    auto cursor = ParsePageCursor(target.Param(before ? "before" : "after"), identity, partition);
    if (auto* refusal = std::get_if<Refusal>(&cursor)) return std::move(*refusal);
    query.direction =
        before ? ThreadPageQuery::Direction::kBefore : ThreadPageQuery::Direction::kAfter;
    query.cursor_next_offset = std::get<int64_t>(cursor);
  }
  return query;
}

OffsetRange PageRange(const ThreadPageQuery& query, int64_t log_end) {
  const int64_t end = std::max<int64_t>(0, log_end);
  const int64_t cursor = query.cursor_next_offset;
  switch (query.direction) {
    case ThreadPageQuery::Direction::kNewest:
      return {0, end};
    case ThreadPageQuery::Direction::kBefore:
      // Strictly older than the event the cursor follows (at next_offset - 1).
      return {0, std::max<int64_t>(0, cursor - 1)};
    case ThreadPageQuery::Direction::kAfter:
      return {cursor, std::max(cursor, end)};
  }
  return {0, end};
}

std::optional<OffsetRange> ArchiveHole(OffsetRange read, int64_t archived_to) {
  const int64_t from = std::max({read.from, archived_to, int64_t{0}});
  if (from >= read.to) return std::nullopt;
  return OffsetRange{from, read.to};
}

void PageCollector::BeginOlder() {
  batch_.clear();
  more_before_batch_ = more_;
}

void PageCollector::Offer(LogEntryPtr entry) {
  const size_t bytes = entry->Bytes();
  if (!backward_) {
    if (kept_.size() >= limit_ || (!kept_.empty() && bytes_ + bytes > max_bytes_)) {
      more_ = true;
      return;
    }
    bytes_ += bytes;
    kept_.push_back(std::move(entry));
    return;
  }
  bytes_ += bytes;
  batch_.push_back(std::move(entry));
  // The oldest go first: a backward page keeps the newest.
  while (!batch_.empty() && (kept_.size() + batch_.size() > limit_ ||
                             (bytes_ > max_bytes_ && kept_.size() + batch_.size() > 1))) {
    bytes_ -= batch_.front()->Bytes();
    batch_.pop_front();
    more_ = true;
  }
}

void PageCollector::EndOlder() {
  kept_.insert(kept_.begin(), std::make_move_iterator(batch_.begin()),
               std::make_move_iterator(batch_.end()));
  batch_.clear();
}

void PageCollector::DiscardOlder() {
  for (const auto& entry : batch_) bytes_ -= entry->Bytes();
  batch_.clear();
  more_ = more_before_batch_;
}

std::vector<LogEntryPtr> PageCollector::Take() {
  EndOlder();
  std::vector<LogEntryPtr> page;
  page.reserve(kept_.size());
  std::unordered_set<std::string> ended;
  for (auto& entry : kept_) {
    if (!entry->run_id.empty()) {
      if (ended.contains(entry->run_id)) continue;
      if (entry->end != RunEnd::kNone) ended.insert(entry->run_id);
    }
    page.push_back(std::move(entry));
  }
  kept_.clear();
  bytes_ = 0;
  return page;
}

std::string ThreadPageJson(const ThreadPage& page) {
  size_t size = 256 + page.end_cursor.size() + page.thread_id.size() * 6;
  for (const auto& frame : page.frames) size += frame->size() + 1;
  std::string body;
  body.reserve(size);
  body += R"({"thread_id":)";
  body +=
      nlohmann::json(page.thread_id).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  body += R"(,"events":[)";
  for (size_t i = 0; i < page.frames.size(); ++i) {
    if (i > 0) body.push_back(',');
    body += *page.frames[i];
  }
  // Cursors are base64url: no escaping needed.
  body += fmt::format(R"(],"has_more_before":{},"has_more_after":{},"end_cursor":"{}","missing":[)",
                      page.has_more_before, page.has_more_after, page.end_cursor);
  for (size_t i = 0; i < page.missing.size(); ++i) {
    const auto& hole = page.missing[i];
    body += fmt::format(R"({}{{"partition":{},"from_offset":{},"to_offset":{}}})", i > 0 ? "," : "",
                        hole.partition, hole.from_offset, hole.to_offset);
  }
  body += "]}";
  return body;
}

PageWalk::PageWalk(const ThreadPageQuery& query, int partition, int64_t log_end, int64_t log_start,
                   bool archive, size_t max_bytes)
    : direction_(query.direction),
      backward_(query.direction != ThreadPageQuery::Direction::kAfter),
      partition_(partition),
      archive_(archive),
      range_(PageRange(query, log_end)),
      collector_(backward_, query.limit, max_bytes),
      seam_(std::max<int64_t>(0, log_start)),
      position_(backward_ ? range_.to : range_.from) {}

PageWalk::Step PageWalk::Next() {
  using Kind = Step::Kind;
  step_ = {};
  if (collector_.Full()) return step_;
  if (backward_) {
    const int64_t floor = std::max(range_.from, seam_);
    if (position_ > floor) {
      collector_.BeginOlder();
      step_ = {Kind::kRecent, {std::max(floor, position_ - window_size_), position_}, 0};
      return step_;
    }
    // The recent tier is read down to its start: what is older is in the archive, or nowhere.
    const OffsetRange older{range_.from, position_};
    if (older.from >= older.to) return step_;
    if (archive_) {
      collector_.BeginOlder();
      step_ = {Kind::kArchive, older, collector_.Wanted()};
      return step_;
    }
    missing_.push_back({partition_, older.from, older.to});
    position_ = older.from;
    return step_;
  }
  if (position_ < seam_ && position_ < range_.to) {
    const OffsetRange older{position_, std::min(seam_, range_.to)};
    if (archive_) {
      step_ = {Kind::kArchive, older, collector_.Wanted()};
      return step_;
    }
    missing_.push_back({partition_, older.from, older.to});
    position_ = older.to;
  }
  if (position_ >= range_.to) return step_;
  step_ = {Kind::kRecent, {position_, std::min(range_.to, position_ + window_size_)}, 0};
  return step_;
}

void PageWalk::RecentRead() {
  if (backward_) {
    collector_.EndOlder();
    position_ = step_.range.from;
  } else {
    position_ = step_.range.to;
  }
  window_size_ *= kWindowGrowth;
}

void PageWalk::RecentGone(int64_t next_offset, int64_t log_start) {
  seam_ = std::max(seam_, log_start);
  if (backward_) {
    collector_.DiscardOlder();  // the window is read again, from the new start
  } else {
    position_ = next_offset;  // everything below was offered
  }
}

void PageWalk::ArchiveRead(size_t rows, int64_t archived_to) {
  if (backward_) collector_.EndOlder();
  if (rows >= step_.wanted) collector_.MarkMore();  // the archive holds more than was asked for
  // Offsets the archive never wrote and Kafka no longer has. A forward page that filled up
  // before them has not met them; a backward page has (they lie above what the archive gave).
  if (backward_ || !collector_.Full()) {
    if (const auto hole = ArchiveHole(step_.range, archived_to)) {
      missing_.push_back({partition_, hole->from, hole->to});
    }
  }
  position_ = backward_ ? step_.range.from : step_.range.to;
}

PageWalk::Result PageWalk::Finish() {
  Result result;
  const bool more = collector_.More();
  result.events = collector_.Take();
  switch (direction_) {
    case ThreadPageQuery::Direction::kNewest:
      result.has_more_before = more;
      result.has_more_after = false;
      break;
    case ThreadPageQuery::Direction::kBefore:
      result.has_more_before = more;
      result.has_more_after = true;  // the event the cursor names is newer
      break;
    case ThreadPageQuery::Direction::kAfter:
      // Older events may exist wherever they can still be read.
      result.has_more_before = range_.from > (archive_ ? 0 : seam_);
      result.has_more_after = more;
      break;
  }
  // After the last event returned when newer ones exist; else where the page's range ends (the
  // log's end as read, never before an `after` cursor).
  result.end_next_offset = result.has_more_after && !result.events.empty()
                               ? result.events.back()->offset + 1
                               : range_.to;
  result.missing = std::move(missing_);
  return result;
}

void ThreadHistoryReader::Serve(const std::shared_ptr<GatewayContext>& context,
                                const asio::any_io_executor& executor,
                                const http::request<http::string_body>& request,
                                const ParsedTarget& target, std::string thread_id,
                                bool origin_allowed, Done done) {
  auto refuse = [&done](http::status status, std::string_view code, std::string_view message) {
    done(ThreadPageAnswer{status, ErrorBody(code, message), 0});
  };
  if (request.method() != http::verb::get && request.method() != http::verb::head) {
    refuse(http::status::method_not_allowed, "method_not_allowed",
           "GET /v1/threads/{thread_id}/events reads a thread's events");
    return;
  }
  if (!origin_allowed) {
    context->metrics.rejected_forbidden.Inc();
    refuse(http::status::forbidden, "origin_not_allowed",
           "this Origin is not in AGENTWIRE_ALLOWED_ORIGINS");
    return;
  }
  const auto auth = context->verifier.Verify(
      ExtractToken(Sv(request[http::field::authorization]), Sv(request.target()), {}));
  if (!auth.ok) {
    context->metrics.rejected_unauthorized.Inc();
    refuse(http::status::unauthorized, auth.error_code, auth.message);
    return;
  }
  const int partition = PartitionForKey(auth.user_id, context->identity.partition_count);
  auto query = ParseThreadPageQuery(std::move(thread_id), target, context->identity, partition);
  if (const auto* refusal = std::get_if<Refusal>(&query)) {
    context->metrics.rejected_bad_request.Inc();
    refuse(refusal->status, refusal->code, refusal->message);
    return;
  }
  auto reader = std::make_shared<ThreadHistoryReader>(context, executor, auth.user_id, partition,
                                                      std::get<ThreadPageQuery>(std::move(query)),
                                                      std::move(done));
  reader->Start();
}

ThreadHistoryReader::ThreadHistoryReader(std::shared_ptr<GatewayContext> context,
                                         asio::any_io_executor executor, std::string user_id,
                                         int partition, ThreadPageQuery query, Done done)
    : context_(std::move(context)),
      executor_(std::move(executor)),
      user_id_(std::move(user_id)),
      partition_(partition),
      query_(std::move(query)),
      done_(std::move(done)),
      deadline_(executor_),
      wait_timer_(executor_) {}

ThreadHistoryReader::~ThreadHistoryReader() {
  if (tail_keeper_) context_->hub.Detach(partition_, user_id_, tail_keeper_.get());
}

void ThreadHistoryReader::Start() {
  // The pending wait keeps this reader alive until it answers (Answer cancels it); when the
  // io_context goes away first, the handler and the reader go with it.
  deadline_.expires_after(kPageDeadline);
  deadline_.async_wait([self = shared_from_this()](const beast::error_code& ec) {
    if (ec) return;
    self->Fail(http::status::service_unavailable, "history_unavailable",
               "the thread's history took too long to read; retry");
  });
  tail_keeper_ = std::make_shared<NoOpListener>();
  context_->hub.Attach(partition_, user_id_, tail_keeper_);  // asks for a tail if none
  WaitForTail(std::chrono::steady_clock::now() + kTailWait);
}

void ThreadHistoryReader::WaitForTail(std::chrono::steady_clock::time_point deadline) {
  if (finished_) return;
  if (!context_->hub.CaughtUp(partition_) && std::chrono::steady_clock::now() < deadline) {
    wait_timer_.expires_after(std::chrono::milliseconds(10));
    wait_timer_.async_wait([self = shared_from_this(), deadline](const beast::error_code& ec) {
      if (!ec) self->WaitForTail(deadline);
    });
    return;
  }
  BeginRead();
}

void ThreadHistoryReader::BeginRead() {
  // The log's end as this replica has read it: everything below is in the cache or in Kafka,
  // and a subscription from there gets everything after, live.
  log_end_ = context_->hub.DispatchedEnd(partition_);
  if (log_end_ < 0) {
    Fail(http::status::service_unavailable, "history_unavailable",
         "this replica is not reading the user's partition yet; retry");
    return;
  }
  // Kafka's log start as the tailer last saw it (a Kafka read below it answers with the new one).
  walk_.emplace(query_, partition_, log_end_, context_->hub.LogStart(partition_),
                context_->archive.Enabled());
  NextStep();
}

void ThreadHistoryReader::NextStep() {
  if (finished_) return;
  const auto step = walk_->Next();
  switch (step.kind) {
    case PageWalk::Step::Kind::kRecent:
      window_ = step.range;
      read_position_ = step.range.from;
      ContinueRecent();
      return;
    case PageWalk::Step::Kind::kArchive:
      ReadArchive(step.range, step.wanted);
      return;
    case PageWalk::Step::Kind::kDone:
      Finish();
      return;
  }
}

bool ThreadHistoryReader::Wanted(const LogEntry& entry, bool ask_hub) const {
  // A run's events after its first end are never delivered (docs/runs.md): the hub judged what
  // it cached; reads past it ask.
  return entry.user_id == user_id_ && entry.thread_id == query_.thread_id &&
         !(ask_hub && context_->hub.IsLate(partition_, entry));
}

void ThreadHistoryReader::ContinueRecent() {
  if (finished_) return;
  if (read_position_ >= window_.to || walk_->Enough()) {
    walk_->RecentRead();
    NextStep();
    return;
  }
  const int64_t cache_end = std::min(window_.to, context_->hub.DispatchedEnd(partition_));
  if (cache_end > read_position_) {
    auto read =
        context_->hub.ReadCached(partition_, user_id_, read_position_, cache_end, kCacheStepBytes);
    if (read.covered) {
      for (auto& entry : read.entries) {
        if (Wanted(*entry, false)) walk_->Offer(std::move(entry));
      }
      read_position_ = read.next_offset;
      // One step at a time: the connection's thread serves others in between.
      asio::post(executor_, [self = shared_from_this()] { self->ContinueRecent(); });
      return;
    }
  }
  SubmitKafka();
}

void ThreadHistoryReader::SubmitKafka() {
  HistoryRequest request;
  request.partition = partition_;
  request.user_id = user_id_;
  request.from = read_position_;
  request.to = window_.to;
  request.sink = std::static_pointer_cast<HistorySink>(shared_from_this());
  context_->history.Submit(std::move(request));
}

void ThreadHistoryReader::OnHistory(HistoryChunk chunk) {
  pending_bytes_.fetch_add(chunk.charged_bytes);
  asio::post(executor_, [self = shared_from_this(), chunk = std::move(chunk)]() mutable {
    self->HandleHistory(std::move(chunk));
  });
}

void ThreadHistoryReader::HandleHistory(HistoryChunk chunk) {
  // What is kept is bounded by the page's own limits: the budget gets its bytes back at once.
  pending_bytes_.fetch_sub(chunk.charged_bytes);
  context_->catchup_budget.Release(user_id_, chunk.charged_bytes);
  if (finished_) return;
  for (auto& entry : chunk.entries) {
    if (Wanted(*entry, true)) walk_->Offer(std::move(entry));
  }
  using Status = HistoryChunk::Status;
  switch (chunk.status) {
    case Status::kMore:
      read_position_ = chunk.next_offset;
      // The read goes on; a forward page that is full moves on (later chunks are dropped).
      if (walk_->Enough()) ContinueRecent();
      return;
    case Status::kDone:
      read_position_ = window_.to;
      ContinueRecent();
      return;
    case Status::kPaused:
      read_position_ = chunk.next_offset;
      wait_timer_.expires_after(kPausedRetry);
      wait_timer_.async_wait([self = shared_from_this()](const beast::error_code& ec) {
        if (!ec) self->ContinueRecent();
      });
      return;
    case Status::kOutOfRange:
      if (chunk.log_start > chunk.next_offset) {
        walk_->RecentGone(chunk.next_offset, chunk.log_start);
        NextStep();
        return;
      }
      if (window_.to > log_end_) {
        // Only a `before` cursor reaches past this replica's end, and Kafka has no such offset.
        Fail(http::status::bad_request, "bad_cursor",
             "cursor is past the end of the log (was the topic recreated?); open the thread "
             "without one");
        return;
      }
      Fail(http::status::service_unavailable, "history_unavailable",
           "Kafka did not say where the log starts; retry");
      return;
    case Status::kError: {
      static log::RateLimited failed_log;
      failed_log.Warn("thread history from kafka failed",
                      {{"user", user_id_}, {"partition", partition_}, {"error", chunk.error}});
      Fail(http::status::service_unavailable, "history_unavailable",
           "the log could not be read from Kafka; retry");
      return;
    }
  }
}

void ThreadHistoryReader::ReadArchive(OffsetRange range, size_t wanted) {
  auto self = shared_from_this();
  // On a pool thread: only copies and the context (whose archive is thread-safe) are touched.
  context_->archive.Execute(
      [self, context = context_, range, wanted, partition = partition_, user = user_id_,
       thread = query_.thread_id,
       newest_first = walk_->Backward()](pqxx::connection_base& connection) {
        auto archived = context->archive.Query(connection, partition, user, thread, range.from,
                                               range.to, wanted, newest_first);
        asio::post(self->executor_, [self, archived = std::move(archived)]() mutable {
          self->HandleArchive(std::move(archived.entries), archived.archived_to);
        });
      },
      [self](const std::string& error) {
        asio::post(self->executor_, [self, error] {
          static log::RateLimited failed_log;
          failed_log.Warn(
              "thread history from the archive failed",
              {{"user", self->user_id_}, {"partition", self->partition_}, {"error", error}});
          self->Fail(http::status::service_unavailable, "history_unavailable",
                     "the archive (PostgreSQL) cannot be read now; retry");
        });
      });
}

void ThreadHistoryReader::HandleArchive(std::vector<LogEntryPtr> entries, int64_t archived_to) {
  if (finished_) return;
  const size_t rows = entries.size();
  if (walk_->Backward()) std::reverse(entries.begin(), entries.end());  // came newest first
  for (auto& entry : entries) {
    if (Wanted(*entry, true)) walk_->Offer(std::move(entry));
  }
  walk_->ArchiveRead(rows, archived_to);
  NextStep();
}

void ThreadHistoryReader::Finish() {
  if (finished_) return;
  auto result = walk_->Finish();
  ThreadPage page;
  page.thread_id = query_.thread_id;
  page.frames.reserve(result.events.size());
  for (const auto& entry : result.events) {
    if (const auto& frame = entry->Frame()) page.frames.push_back(frame);  // null: undecodable
  }
  page.has_more_before = result.has_more_before;
  page.has_more_after = result.has_more_after;
  page.end_cursor = EncodeCursor(context_->identity.CursorAt(partition_, result.end_next_offset));
  page.missing = std::move(result.missing);
  Answer({http::status::ok, ThreadPageJson(page), 0});
}

void ThreadHistoryReader::Fail(http::status status, std::string_view code,
                               std::string_view message) {
  if (finished_) return;
  Answer({status, ErrorBody(code, message),
          status == http::status::service_unavailable ? kRetryAfterSeconds : 0});
}

void ThreadHistoryReader::Answer(ThreadPageAnswer answer) {
  finished_ = true;
  deadline_.cancel();
  wait_timer_.cancel();
  if (tail_keeper_) {
    context_->hub.Detach(partition_, user_id_, tail_keeper_.get());
    tail_keeper_.reset();
  }
  context_->registry
      .GetCounter("agentwire_gateway_thread_pages_total",
                  "Thread history pages (GET /v1/threads/{thread_id}/events) by HTTP status",
                  {{"status", std::to_string(static_cast<unsigned>(answer.status))}})
      .Inc();
  auto done = std::move(done_);
  done_ = nullptr;
  done(std::move(answer));
}

}  // namespace agentwire::gateway
