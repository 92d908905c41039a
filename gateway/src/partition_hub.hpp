#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/metrics.hpp"

namespace agentwire::gateway {

/// What an event is, as far as the gateway cares (the AgentEvent oneof's field numbers).
enum class EventKind : uint8_t {
  kOther = 0,
  kAgentStarted = 20,
  kAgentThinking = 21,
  kToolExecuting = 22,
  kToolCompleted = 23,
  kAgentCompleted = 24,
  kAgentFailed = 25,
  kMessageDelta = 26,
};

/// How a run ended (docs/runs.md): from its first terminal event.
enum class RunEnd : uint8_t {
  kNone = 0,    // not a terminal event
  kCompleted,   // agent_completed
  kFailed,      // agent_failed, any other error_code
  kCancelled,   // agent_failed "cancelled": the user's Stop
  kWorkerLost,  // agent_failed "worker_lost": the supervisor ended a silent run
};
RunEnd RunEndOf(EventKind kind, std::string_view error_code);
/// "agent_completed" / "agent_failed" (the terminal's type).
std::string_view RunEndType(RunEnd end);
/// "cancelled" / "worker_lost" for those ends; "" for the others.
std::string_view RunEndCode(RunEnd end);

/// The run of a thread that has started and not ended yet, as the log shows it.
struct RunInProgress {
  std::string run_id;
  int64_t started_at = 0;  // offset of its agent_started
};

/// One event as the gateway keeps it: where it is in the log, whom it is for, and its frame,
/// encoded once and shared by every session (and the cache) that sends it.
///
/// The frame is built lazily: the tailer reads every event of the topic, most of them for
/// users with no session on this replica, so it keeps the raw record and the routing fields
/// (read straight off the protobuf wire) and the first reader that needs the frame builds it,
/// once, for all later readers (Frame()). What the cache charges for an entry (Bytes()) is
/// fixed when it is made, with the frame estimated from the record's size.
struct LogEntry {
  /// Builds the frame of `raw` (the protobuf record) at `cursor` (the resume point after it);
  /// nullptr when the record turns out not to decode, or to belong to another user.
  using FrameBuilder = std::shared_ptr<const std::string> (*)(const LogEntry& entry,
                                                              std::string_view raw);

  int64_t offset = 0;
  int64_t timestamp_ms = 0;  // Kafka message time (producer CreateTime)
  // A gap marker rather than an event: the log lost everything before offset + 1 that this
  // replica had not read yet (retention overtook the tailer). No user, no frame; every
  // listener of the partition gets it and answers with `reset`.
  bool gap = false;
  // The cache's copy of an entry too large to keep (see PartitionHub::Dispatch): everything but
  // the frame, which a reader fetches from Kafka.
  bool frame_not_cached = false;
  EventKind kind = EventKind::kOther;
  RunEnd end = RunEnd::kNone;  // set on terminal events
  std::string user_id;
  std::string thread_id;
  std::string run_id;
  Cursor cursor;  // the resume point after this entry (what its frame carries)

  LogEntry() = default;
  /// The routing fields of `other`, without its frame or record (a cache stub).
  static std::shared_ptr<LogEntry> MetadataOf(const LogEntry& other);

  /// A frame built already (tests, stubs).
  void SetFrame(std::shared_ptr<const std::string> frame);
  /// A frame built from `raw` by `build` on first use.
  void SetLazyFrame(std::string raw, FrameBuilder build, size_t estimated_frame_bytes);

  /// The frame; built on the first call (thread-safe). nullptr for gap markers, cache stubs
  /// and records that did not decode.
  const std::shared_ptr<const std::string>& Frame() const;
  /// Memory charged for this entry (fixed at creation).
  size_t Bytes() const {
    return sizeof(LogEntry) + user_id.size() + thread_id.size() + run_id.size() + frame_bytes_;
  }

 private:
  mutable std::once_flag built_;
  mutable std::shared_ptr<const std::string> frame_;
  mutable std::string raw_;  // released once the frame is built
  FrameBuilder build_ = nullptr;
  size_t frame_bytes_ = 0;
};
using LogEntryPtr = std::shared_ptr<const LogEntry>;

/// What the hub calls for a registered session. Called on the tailer thread: must only
/// hand the entry over (e.g. queue it for the session's I/O thread) and return.
class LiveListener {
 public:
  virtual ~LiveListener() = default;
  virtual void OnLive(const LogEntryPtr& entry) = 0;
  /// The listener attached to a partition that was not tailed yet (Attach returned
  /// kNotTailed): the tailer now reads it from `start_offset`, which is the attach point
  /// (offsets below it come from Kafka, offsets from it on through OnLive). Comes before any
  /// OnLive of the partition, from the tailer thread.
  virtual void OnTailStarted(int64_t start_offset) = 0;
};

/// Per-partition state shared by the Kafka tailer (writer) and sessions (readers): the
/// recent-log cache, the next offset the tailer will dispatch, and which sessions of which
/// users listen. Registration and the cache snapshot happen under the same lock as
/// dispatch, which is what makes the catch-up -> live hand-off gapless. Thread-safe.
///
/// Which partitions are tailed: with --tail all, every one from the start. With --tail auto,
/// a partition is tailed while it has listeners, and for a warm window after the last one
/// left: a listener of a partition nobody tails asks the tailer to start it (TakeTailRequests)
/// and waits for OnTailStarted; a partition idle for the window is stopped (StopIdleTails)
/// and forgets its cache.
class PartitionHub final {
 public:
  PartitionHub(int partition_count, size_t cache_bytes_total);

  int PartitionCount() const { return static_cast<int>(partitions_.size()); }

  /// Tailer thread: the tailer reads the partition from `offset` on (before any Dispatch of
  /// it). Listeners that attached while it was not tailed get OnTailStarted(offset).
  /// `high_watermark`: the log's end when the tail started (-1: unknown); see CaughtUp.
  void StartTail(int partition, int64_t offset, int64_t high_watermark = -1);
  bool Tailed(int partition) const;
  /// Tailed, and dispatched up to the log's end as it was when the tail started: what the
  /// partition's runs in progress (RunOf) are known from.
  bool CaughtUp(int partition) const;
  /// Partitions tailed now.
  int TailedCount() const;
  /// Tailer thread: partitions that listeners asked for since the last call (not tailed yet).
  std::vector<int> TakeTailRequests();
  bool HasTailRequests() const { return tail_requests_pending_.load(std::memory_order_acquire); }
  /// Called (from the attaching thread) when a tail request is made, so the tailer does not
  /// wait for its next poll to end. Cleared with an empty function before what it wakes goes.
  void SetTailRequestHook(std::function<void()> hook);
  /// Tailer thread (--tail auto): stops tailing every partition without listeners since
  /// `idle_for` or longer (its cache, runs and dispatch point are forgotten: a later tail
  /// starts afresh) and returns them, for the tailer to unassign.
  std::vector<int> StopIdleTails(std::chrono::steady_clock::duration idle_for);
  /// Tailer thread: the partition's first retained offset (Kafka's low watermark), as last seen.
  void SetLogStart(int partition, int64_t offset);
  /// The last SetLogStart value; -1 while unknown.
  int64_t LogStart(int partition) const;

  /// Tailer thread: appends to the cache and hands the entry to the user's listeners. An entry
  /// larger than an eighth of the partition's cache share is cached without its frame, so one
  /// huge event cannot evict everything before it; readers fetch that one frame from Kafka.
  void Dispatch(int partition, const LogEntryPtr& entry);
  /// Tailer thread: an offset with nothing to deliver (undecodable message, control record).
  void Skip(int partition, int64_t offset);
  /// Tailer thread: the log now starts at `resume_offset`, past what was dispatched (retention
  /// deleted unread messages). Drops the cache and hands a gap marker to every listener of
  /// the partition, in order with the events around it.
  void Gap(int partition, int64_t resume_offset);

  /// Registers `listener` for `user_id`: every entry dispatched from now on reaches it.
  /// Returns the partition's dispatched end at registration: offsets below it were dispatched
  /// before and must come from the cache (ReadCached) or Kafka; offsets at or above it arrive
  /// through OnLive. Taken under the dispatch lock, which makes the hand-off gapless.
  /// kNotTailed when nobody tails the partition yet: the tailer is asked to, and the attach
  /// point comes with the listener's OnTailStarted.
  static constexpr int64_t kNotTailed = -1;
  int64_t Attach(int partition, const std::string& user_id,
                 const std::shared_ptr<LiveListener>& listener);
  /// Never takes a strong reference to any listener (a temporary that became the last owner
  /// would run ~Session, which detaches, inside this lock).
  void Detach(int partition, const std::string& user_id, const LiveListener* listener);

  struct CacheRead {
    // false: read [from, next_offset) from Kafka instead, then ask again. next_offset is `to`
    // when `from` is older than the cache, or just past the user's next entry that was too
    // large to cache.
    bool covered = false;
    std::vector<LogEntryPtr> entries;  // covered: the user's entries in [from, next_offset)
    int64_t next_offset = 0;           // where the next read continues
  };
  /// The user's cached entries in [from, to), at most about `max_bytes` of frames (and a bounded
  /// number of entries scanned, so the lock is held briefly): call again from next_offset
  /// until it reaches `to`. `to` must not exceed DispatchedEnd.
  CacheRead ReadCached(int partition, const std::string& user_id, int64_t from, int64_t to,
                       size_t max_bytes) const;

  int64_t DispatchedEnd(int partition) const;
  /// The run of `thread_id` (of `user_id`) in progress: started, not completed or failed, as
  /// far as this replica has read the log (since its warm start). Kept for at most
  /// kMaxRunsPerPartition threads per partition (the oldest starts are dropped first).
  std::optional<RunInProgress> RunOf(int partition, const std::string& user_id,
                                     const std::string& thread_id) const;
  static constexpr size_t kMaxRunsPerPartition = 100'000;

  /// A run as this replica knows it from the log (its start and its first end), for Stop.
  struct RunState {
    int64_t started_at = -1;  // offset of its agent_started (-1: seen only without its start)
    int64_t ended_at = -1;    // offset of its first terminal event; -1 while open
    RunEnd end = RunEnd::kNone;
    Cursor end_cursor;  // the resume point after its end
  };
  /// The run `run_id` of `user_id`, as far as this replica has read the partition (since its
  /// warm start); nullopt when unknown, or when the run is another user's. The ended runs are
  /// kept for kMaxEndedRunsPerPartition runs per partition.
  std::optional<RunState> RunById(int partition, const std::string& user_id,
                                  const std::string& run_id) const;
  static constexpr size_t kMaxEndedRunsPerPartition = 20'000;
  /// True when `entry` belongs to a run whose first end came before it (a "late event" of a
  /// zombie worker, docs/runs.md). Dispatch never hands such an entry on; sessions ask for the
  /// entries they read from Kafka.
  bool IsLate(int partition, const LogEntry& entry) const;
  /// Counts the late events Dispatch skips (once per event, not per session).
  void SetLateEventCounter(metrics::Counter* counter) { late_events_ = counter; }

  size_t CachedBytes() const;

 private:
  struct ListenerRef {
    const LiveListener* raw;  // identity for Detach; never dereferenced
    std::weak_ptr<LiveListener> weak;
  };
  /// The ended runs of a partition's runs_by_id as one bit per key hash: a superset (bits are
  /// only ever set, until a rebuild from ended_order), so a clear bit proves a run not ended
  /// without a lookup in runs_by_id. Every dispatched event asks (IsLateLocked), and that lookup
  /// is a few cache misses; most events belong to runs still open.
  struct EndedFilter {
    static constexpr size_t kBits = size_t{1} << 18;  // 32 KiB, once a run of the partition ended
    std::vector<uint64_t> words;                      // empty: no run ended
    size_t dropped = 0;  // ended runs forgotten (evicted) since the bits were last rebuilt
    bool MayContain(size_t hash) const {
      if (words.empty()) return false;
      const size_t bit = hash & (kBits - 1);
      return (words[bit / 64] >> (bit % 64) & 1) != 0;
    }
    void Add(size_t hash) {
      if (words.empty()) words.assign(kBits / 64, 0);
      const size_t bit = hash & (kBits - 1);
      words[bit / 64] |= uint64_t{1} << (bit % 64);
    }
  };
  /// Run keys by the offset of their start, oldest first: what the eviction of the oldest start
  /// needs. Starts arrive in offset order (dispatch order), so this is an array appended to at
  /// the back, and an erased start is only marked, then dropped from the front or compacted
  /// away; a std::map cost an allocation and a rebalance per agent_started on the dispatch path.
  /// The keys point into the run maps' nodes: a start is erased before its node.
  class StartIndex {
   public:
    void Add(int64_t offset, const std::string* key);
    /// No-op when `offset` is not a live start.
    void Erase(int64_t offset);
    bool Empty() const { return live_ == 0; }
    /// The oldest live start's key; only when !Empty().
    const std::string* Oldest() const { return starts_.front().second; }
    void PopOldest();
    void Clear() {
      starts_.clear();
      live_ = 0;
    }

   private:
    void TrimFront();
    std::deque<std::pair<int64_t, const std::string*>> starts_;  // by offset; nullptr: erased
    size_t live_ = 0;
  };
  struct Partition {
    mutable std::mutex mutex;
    bool tailed = false;
    bool tail_requested = false;
    // When the last listener left (or the tail started without one): --tail auto stops the
    // tail after its warm window.
    std::chrono::steady_clock::time_point idle_since;
    int64_t dispatched_end = -1;  // -1 while not tailed
    int64_t start_high_watermark = -1;
    int64_t covered_from = -1;  // the cache holds every entry in [covered_from, dispatched_end)
    int64_t log_start = -1;     // Kafka's low watermark as the tailer last saw it
    std::deque<LogEntryPtr> cache;
    size_t cache_bytes = 0;
    std::unordered_map<std::string, std::vector<ListenerRef>> listeners;  // by user_id
    std::unordered_map<std::string, RunInProgress> runs;   // key: user_id '\0' thread_id
    std::unordered_map<std::string, RunState> runs_by_id;  // key: user_id '\0' run_id
    std::deque<std::string> ended_order;                   // runs_by_id keys, by end
    EndedFilter ended;                                     // of the keys in ended_order
    // The open runs of runs_by_id and the entries of runs by the offset of their start, so the
    // eviction of the oldest is O(1) (keys point into the maps: their nodes are stable).
    StartIndex open_by_start;
    StartIndex runs_by_start;
    mutable std::string key_scratch;  // run keys of lookups (RunKeyIn), under the mutex
  };
  static bool IsLateLocked(const Partition& p, const LogEntry& entry);

  /// Keeps `runs` current with a started or ended run (under the partition's lock).
  static void TrackRun(Partition& p, const LogEntry& entry);

  std::vector<std::unique_ptr<Partition>> partitions_;
  size_t cache_bytes_per_partition_;
  std::function<void()> tail_request_hook_;
  std::mutex tail_requests_mutex_;
  std::vector<int> tail_requests_;
  std::atomic<bool> tail_requests_pending_{false};
  metrics::Counter* late_events_ = nullptr;
};

}  // namespace agentwire::gateway
