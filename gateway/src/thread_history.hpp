#pragma once

#include <algorithm>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "frames.hpp"
#include "gateway_context.hpp"
#include "history.hpp"
#include "http_server.hpp"
#include "partition_hub.hpp"

namespace agentwire::gateway {

// GET /v1/threads/{thread_id}/events (docs/protocol.md, "A thread's history"): a page of one
// thread's events of the token's user, from whichever tier holds them. The user's partition
// splits into the archive (PostgreSQL, offsets below Kafka's log start) and the recent tier
// (the recent-log cache, else Kafka, from the log start to the log's end as this replica has
// read it).

/// The thread id of a /v1/threads/{thread_id}/events path (as ParseTarget decoded it), or
/// nullopt for any other path. The id is checked by ParseThreadPageQuery.
std::optional<std::string> ThreadEventsPath(std::string_view path);

/// What a page asks for, checked.
struct ThreadPageQuery {
  enum class Direction { kNewest, kBefore, kAfter };
  static constexpr size_t kDefaultLimit = 100;
  static constexpr size_t kMaxLimit = 1000;
  static constexpr size_t kMaxThreadIdBytes = 256;

  std::string thread_id;
  Direction direction = Direction::kNewest;
  int64_t cursor_next_offset = 0;  // kBefore / kAfter: the cursor's next offset
  size_t limit = kDefaultLimit;
};

/// A request answered with an error before anything is read.
struct Refusal {
  boost::beast::http::status status = boost::beast::http::status::bad_request;
  std::string code;
  std::string message;
};

/// Checks the thread id, limit, before and after of a page request of the user whose
/// partition is `partition`. Pure.
std::variant<ThreadPageQuery, Refusal> ParseThreadPageQuery(std::string thread_id,
                                                            const ParsedTarget& target,
                                                            const TopicIdentity& identity,
                                                            int partition);

/// Offsets [from, to) of the user's partition.
struct OffsetRange {
  int64_t from = 0;
  int64_t to = 0;
  friend bool operator==(const OffsetRange&, const OffsetRange&) = default;
};
/// Where the page's events lie, with `log_end` the log's end as read: newest: [0, log_end);
/// before=C: [0, C.next_offset - 1); after=C: [C.next_offset, log_end) (empty when the cursor is
/// at or past the end).
OffsetRange PageRange(const ThreadPageQuery& query, int64_t log_end);

/// The offsets of `read` that the archive cannot serve: it holds offsets below `archived_to`
/// only (-1: none at all). nullopt when it holds the whole range.
std::optional<OffsetRange> ArchiveHole(OffsetRange read, int64_t archived_to);

/// The events of one page while the tiers are read. Forward pages take events oldest first
/// (Offer, in offset order); backward pages read older and older batches (BeginOlder, then
/// Offer in offset order, then EndOlder) and keep the newest. At most `limit` events and about
/// `max_bytes` of them (LogEntry::Bytes; always at least one event) are kept: anything beyond
/// marks that more exist in the reading direction. Not thread-safe.
class PageCollector final {
 public:
  PageCollector(bool backward, size_t limit, size_t max_bytes)
      : backward_(backward), limit_(limit), max_bytes_(max_bytes) {}

  void BeginOlder();
  void Offer(LogEntryPtr entry);
  void EndOlder();
  /// Drops the batch begun with BeginOlder (its read is repeated).
  void DiscardOlder();
  /// The source has events beyond those offered (a read stopped at its row limit).
  void MarkMore() { more_ = true; }
  /// Events beyond the page exist: reading further is of no use.
  bool Full() const { return more_; }
  /// How many more events are worth reading: one past the limit tells that more exist.
  size_t Wanted() const { return limit_ + 1 - std::min(limit_, kept_.size() + batch_.size()); }

  /// The page, oldest first, without the events of a run after that run's first end (what
  /// /v1/events never delivers, docs/runs.md). Leaves the collector empty.
  std::vector<LogEntryPtr> Take();
  bool More() const { return more_; }

 private:
  const bool backward_;
  const size_t limit_;
  const size_t max_bytes_;
  std::deque<LogEntryPtr> kept_;   // oldest first
  std::deque<LogEntryPtr> batch_;  // backward: the batch being read, older than kept_
  size_t bytes_ = 0;               // of kept_ and batch_
  bool more_ = false;
  bool more_before_batch_ = false;  // more_ at BeginOlder (DiscardOlder restores it)
};

/// Which tier a page reads next, and what it makes of the answers: the page's logic, pure (the
/// reader does the I/O). The user's partition splits at the seam, Kafka's log start: the
/// archive holds what lies below it (offsets below its committed position), the recent tier
/// (cache, else Kafka) the rest up to the log's end as read.
///
/// Backward pages (newest, before) read the recent tier in windows going down from the page's
/// upper end (kFirstWindow offsets, then kWindowGrowth times more each step) until they hold the
/// limit plus one, then the archive newest first below the recent tier. Forward pages (after)
/// read the archive from the cursor up to the seam, then the recent tier in growing windows. A
/// step is answered by Offer (its events, in offset order, already filtered to the page's) and
/// then exactly one of RecentRead, RecentGone or ArchiveRead. Not thread-safe.
class PageWalk final {
 public:
  static constexpr int64_t kFirstWindow = 4096;
  static constexpr int64_t kWindowGrowth = 4;
  /// Events a page holds at most (LogEntry::Bytes): 1000 events of 900 kB would be a gigabyte.
  static constexpr size_t kMaxPageBytes = 16u << 20;

  struct Step {
    enum class Kind { kRecent, kArchive, kDone };
    Kind kind = Kind::kDone;
    OffsetRange range;  // the offsets to read
    size_t wanted = 0;  // kArchive: rows to ask for at most (newest first on backward pages)
  };

  /// `log_end`: the log's end as read; `log_start`: Kafka's log start as far as known (-1:
  /// unknown); `archive`: an archive is configured.
  PageWalk(const ThreadPageQuery& query, int partition, int64_t log_end, int64_t log_start,
           bool archive, size_t max_bytes = kMaxPageBytes);

  bool Backward() const { return backward_; }
  /// What to read next.
  Step Next();
  /// One of the current step's events.
  void Offer(LogEntryPtr entry) { collector_.Offer(std::move(entry)); }
  /// A forward page holds one event past its limit: the rest of the window is of no use.
  bool Enough() const { return !backward_ && collector_.Full(); }
  /// The recent-tier window was read (to its end, or until Enough()).
  void RecentRead();
  /// Kafka deleted what the window asked for below `log_start` (retention moved on since the
  /// tailer last looked); what was offered lies below `next_offset`. The recent tier starts at
  /// `log_start` from now on.
  void RecentGone(int64_t next_offset, int64_t log_start);
  /// The archive answered the step with `rows` rows; it holds offsets below `archived_to` only.
  void ArchiveRead(size_t rows, int64_t archived_to);

  struct Result {
    std::vector<LogEntryPtr> events;  // oldest first
    bool has_more_before = false;
    bool has_more_after = false;
    int64_t end_next_offset = 0;  // the end cursor's next offset
    std::vector<MissingRange> missing;
  };
  Result Finish();

 private:
  const ThreadPageQuery::Direction direction_;
  const bool backward_;
  const int partition_;
  const bool archive_;
  const OffsetRange range_;
  PageCollector collector_;
  int64_t seam_;      // the recent tier's start: Kafka's log start as far as known
  int64_t position_;  // backward: read down to here; forward: up to here
  int64_t window_size_ = kFirstWindow;
  Step step_;  // the step in progress
  std::vector<MissingRange> missing_;
};

/// One page as the client gets it.
struct ThreadPage {
  std::string thread_id;
  std::vector<std::shared_ptr<const std::string>> frames;  // event frames, oldest first
  bool has_more_before = false;
  bool has_more_after = false;
  std::string end_cursor;
  std::vector<MissingRange> missing;
};
/// The response body; the frames are spliced in as they are (the bytes /v1/events sends).
std::string ThreadPageJson(const ThreadPage& page);

/// The answer to a page request: status and JSON body.
struct ThreadPageAnswer {
  boost::beast::http::status status = boost::beast::http::status::ok;
  std::string body;
  int retry_after_seconds = 0;  // a Retry-After header when positive
};

/// Reads one page of a thread's history (PageWalk's steps) without blocking the I/O thread:
/// cache reads run in steps on the connection's executor, Kafka reads on the HistoryService's
/// thread, archive reads on the ArchiveReader's pool; every result comes back to the executor.
/// The archive is asked only when the page reaches below Kafka's log start, so a page Kafka
/// holds does not depend on PostgreSQL. A sparse thread costs a scan of up to the partition's
/// retained log; a page not answered within 30 s gets 503.
///
/// Kafka reads are charged to the replica's catch-up budget like a session's; the bytes are
/// released as soon as each chunk is filtered (what is kept is bounded by the page's limits).
/// Lives, kept by its own pending handlers, until it has answered.
class ThreadHistoryReader final : public HistorySink,
                                  public std::enable_shared_from_this<ThreadHistoryReader> {
 public:
  using Done = std::function<void(ThreadPageAnswer)>;

  /// Admission (method, Origin, token, query), then the read; `done` is called exactly once,
  /// on `executor` (inline for refusals).
  static void Serve(const std::shared_ptr<GatewayContext>& context,
                    const boost::asio::any_io_executor& executor,
                    const boost::beast::http::request<boost::beast::http::string_body>& request,
                    const ParsedTarget& target, std::string thread_id, bool origin_allowed,
                    Done done);

  ThreadHistoryReader(std::shared_ptr<GatewayContext> context,
                      boost::asio::any_io_executor executor, std::string user_id, int partition,
                      ThreadPageQuery query, Done done);
  ~ThreadHistoryReader() override;
  ThreadHistoryReader(const ThreadHistoryReader&) = delete;
  ThreadHistoryReader& operator=(const ThreadHistoryReader&) = delete;

  void OnHistory(HistoryChunk chunk) override;
  size_t PendingCatchupBytes() const override { return pending_bytes_.load(); }

 private:
  void Start();
  /// Waits (up to 2 s) for the partition's tail to reach the log's end (--tail auto, start-up).
  void WaitForTail(std::chrono::steady_clock::time_point deadline);
  void BeginRead();
  /// Starts the walk's next step.
  void NextStep();
  /// Reads [read_position_, window_.to) of the recent tier: the cache where it covers, else
  /// Kafka (the HistoryService).
  void ContinueRecent();
  void SubmitKafka();
  void HandleHistory(HistoryChunk chunk);
  void ReadArchive(OffsetRange range, size_t wanted);
  void HandleArchive(std::vector<LogEntryPtr> entries, int64_t archived_to);
  void Finish();
  /// Answers with an error body (503s with Retry-After).
  void Fail(boost::beast::http::status status, std::string_view code, std::string_view message);
  void Answer(ThreadPageAnswer answer);
  /// An event of the page: the user's, the thread's, and not after its run's end.
  bool Wanted(const LogEntry& entry, bool ask_hub) const;

  const std::shared_ptr<GatewayContext> context_;
  const boost::asio::any_io_executor executor_;
  const std::string user_id_;
  const int partition_;
  const ThreadPageQuery query_;
  Done done_;
  boost::asio::steady_timer deadline_;
  boost::asio::steady_timer wait_timer_;       // tail polls, paused history reads
  std::shared_ptr<LiveListener> tail_keeper_;  // attached to the partition while reading
  std::atomic<size_t> pending_bytes_{0};       // charged bytes posted and not yet released
  bool finished_ = false;

  std::optional<PageWalk> walk_;
  int64_t log_end_ = 0;        // the log's end as read
  OffsetRange window_;         // the recent-tier step in progress
  int64_t read_position_ = 0;  // read up to here
};

}  // namespace agentwire::gateway
