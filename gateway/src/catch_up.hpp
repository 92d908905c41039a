#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fifo.hpp"
#include "frames.hpp"
#include "hand_off.hpp"
#include "history.hpp"
#include "partition_hub.hpp"
#include "transport.hpp"

namespace agentwire::gateway {

struct GatewayContext;
struct GatewayMetrics;

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

/// One partition of the log as one user's catch-up reads it: the replica's recent-log cache,
/// what the tailer knows of the partition, and the two readers below the cache (Kafka's history
/// reader, the archive). Both readers answer asynchronously with HistoryChunks, which the owner
/// hands to CatchUp::OnChunk. GatewayPartitionLog is the replica's; tests use a fake.
class PartitionLog {
 public:
  virtual ~PartitionLog() = default;
  /// PartitionHub::ReadCached for this partition and user.
  virtual PartitionHub::CacheRead ReadCached(int64_t from, int64_t to, size_t max_bytes) const = 0;
  /// Kafka's first retained offset as the tailer last saw it; -1 while unknown.
  virtual int64_t LogStart() const = 0;
  /// The offset the tailer dispatches next (live from there on).
  virtual int64_t DispatchedEnd() const = 0;
  /// `entry` belongs to a run whose first end came before it (PartitionHub::IsLate).
  virtual bool IsLate(const LogEntry& entry) const = 0;
  virtual bool ArchiveEnabled() const = 0;
  /// Asks Kafka's history reader for [from, to) (partition, user, range and `earliest` filled).
  virtual void SubmitKafka(HistoryRequest request) = 0;
  /// Asks the archive for [from, to), below Kafka's log start.
  virtual void SubmitArchive(HistoryRequest request) = 0;
  /// Gives `bytes` charged by a reader back to the replica's CatchupBudget.
  virtual void Release(size_t bytes) = 0;
};

/// The replica's PartitionLog: the hub, the history reader, the archive and the budget of a
/// GatewayContext, for one partition and user; reads answer to `sink` (set before the first
/// Submit). Touched only on its session's strand, like the CatchUp that uses it.
class GatewayPartitionLog final : public PartitionLog {
 public:
  GatewayPartitionLog(GatewayContext& context, int partition, std::string user_id)
      : context_(context), partition_(partition), user_id_(std::move(user_id)) {}

  void SetSink(std::weak_ptr<HistorySink> sink) { sink_ = std::move(sink); }

  PartitionHub::CacheRead ReadCached(int64_t from, int64_t to, size_t max_bytes) const override;
  int64_t LogStart() const override;
  int64_t DispatchedEnd() const override;
  bool IsLate(const LogEntry& entry) const override;
  bool ArchiveEnabled() const override;
  void SubmitKafka(HistoryRequest request) override;
  void SubmitArchive(HistoryRequest request) override;
  void Release(size_t bytes) override;

 private:
  GatewayContext& context_;
  const int partition_;
  const std::string user_id_;
  std::weak_ptr<HistorySink> sink_;
};

/// Queues nothing: counts a `reset` (resets, missing offsets), logs it (rate-limited) and builds
/// its frame. The one place a session's `reset` frames are made, for the catch-up and the live
/// stream alike.
std::shared_ptr<const std::string> MakeReset(GatewayMetrics& metrics, uint64_t session,
                                             const std::string& user, std::string_view reason,
                                             const MissingRange* missing);

/// The read side of one session: from its start position up to the hand-off to live, it
/// chooses where each piece of the user's history comes from (the recent-log cache; Kafka's
/// history reader; the archive below Kafka's log start), handles what each source answers,
/// and hands out, in log order, the frames to write (the user's events and the `reset`s that
/// fall between them). It owns the HandOff that joins the catch-up to the live stream, the
/// filters and the run ends seen (late events of a run that ended are never delivered), so
/// the live stream is judged here too (AcceptLive).
///
/// Pulled: the session asks for the next piece (Pump) only when it has written everything the
/// CatchUp held, so a session holds at most one cache chunk or one history chunk however far
/// back its cursor is. No sockets, no timers, no threads: the session drives it on its strand
/// (only Charge and PendingBytes are thread-safe), and tests drive it with a fake PartitionLog
/// (tests/unit/catch_up_test.cpp).
class CatchUp final {
 public:
  using Frame = std::shared_ptr<const std::string>;
  struct Settings {
    int partition = 0;
    std::string user_id;
    uint64_t session_id = 0;  // for logs
    SessionFilters filters;
    HandOff::BufferLimits live_buffer;
    int64_t max_catchup_events = 0;  // `cursor=earliest`: at most this many records back
  };
  /// A `reset` that comes before anything the CatchUp holds: the session queues it at once.
  using SendControl = std::function<void(Frame)>;

  /// A paused read is asked for again after this (the user holds its fair share).
  static constexpr std::chrono::milliseconds kRetryAfter{250};

  CatchUp(PartitionLog& log, GatewayMetrics& metrics, Settings settings, SendControl send_control);
  ~CatchUp();
  CatchUp(const CatchUp&) = delete;
  CatchUp& operator=(const CatchUp&) = delete;

  /// The attach point is known: catch up from `start` to it. May ask Kafka (a cursor past the
  /// attach point) or queue a `reset` (`cursor=earliest` over its limit).
  void Start(int64_t attach_point, const StartPosition& start);

  enum class Pumped {
    kBusy,   // holding frames, or a read is on its way: nothing to do until they arrive
    kReady,  // fetched and written up to the target: send `ready` and go live (GoLive)
  };
  /// Fetches the next piece when nothing is held and no read is in flight: from the cache at
  /// once, or by asking a reader (its answer comes to OnChunk).
  Pumped Pump();

  enum class Next {
    kWrite,       // frames to write (or a read was asked for): write, then Pump
    kRetryLater,  // paused holding nothing: call Retry after kRetryAfter, nothing asks before
    kFailed,      // the reader failed: close with 1013, the client comes back later
  };
  /// A reader's answer (the session is still catching up).
  Next OnChunk(HistoryChunk chunk);
  /// After kRetryLater: the next Pump asks again.
  void Retry() { history_in_flight_ = false; }

  /// Something to write: true when Take returns a frame, or skips to the end of what is held.
  bool Holding() const { return !catchup_.empty(); }
  struct Piece {
    Frame frame;  // null: nothing held
    FrameKind kind = FrameKind::kControl;
  };
  /// The next frame to write, in log order; its budget is released (entries whose record did
  /// not decode are skipped).
  Piece Take();

  /// Bytes read from Kafka or the archive held or on their way (Charge) and not written yet.
  /// Thread-safe.
  size_t PendingBytes() const { return pending_bytes_.load(); }
  /// A reader handed over a chunk charged `bytes` (before it reaches OnChunk). Thread-safe.
  void Charge(size_t bytes) { pending_bytes_.fetch_add(bytes); }
  /// Gives back bytes of a chunk that will not be used (the session ended its catch-up).
  void Release(size_t bytes);
  /// The session ends: releases what is held and the live events buffered.
  void Drop();

  /// A live event while catching up (buffered, or dropped: the catch-up is then extended).
  void BufferLive(LogEntryPtr entry);
  /// After Pump returned kReady: live from the target on. Returns the live events buffered
  /// meanwhile, each to pass through AcceptLive.
  std::vector<LogEntryPtr> GoLive() { return hand_off_.GoLive(); }
  enum class Live { kSkip, kGap, kDeliver };
  /// Live: kDeliver for an event to send; kGap for a gap marker not delivered past (send
  /// `reset`); kSkip for what was delivered already, is filtered out, or came after its run's end.
  Live AcceptLive(const LogEntry& entry);
  /// Live: everything below it was delivered (or filtered out).
  int64_t NextOffset() const { return hand_off_.NextOffset(); }

 private:
  struct CatchupItem {
    LogEntryPtr entry;
    size_t charged_bytes = 0;  // charged to the replica's CatchupBudget (Kafka reads only)
    Frame control;  // instead of an entry: a `reset` that must follow the entries before it
  };

  /// `held_little`: before this chunk the CatchUp held at most as many entries as it brings.
  Next HandleArchiveChunk(const HistoryChunk& chunk, bool held_little);
  void SubmitKafka(int64_t from, int64_t to);
  /// Reads [from, to) of the user's events from the archive (below Kafka's log start).
  void SubmitArchive(int64_t from, int64_t to);
  /// `cursor=earliest`: from the log's start, or from the newest --max-catchup-events records.
  void StartFromEarliest();
  /// Keeps a fetched entry unless it was written already, the filters exclude it, or its run
  /// had ended (`from_kafka`: read past the hub, which judged everything it dispatched).
  void AddCatchup(LogEntryPtr entry, size_t charged_bytes, bool from_kafka);
  /// First terminal wins (docs/runs.md): true for an event of a run whose end this session
  /// delivered, or (`ask_hub`) whose end the replica has read before it. Call once per entry
  /// about to be delivered, in offset order: it notes the ends it lets through.
  bool EndedAlready(const LogEntry& entry, bool ask_hub);
  /// Sends `reset`. During catch-up it follows the fetched entries not written yet (they
  /// come before it in the log), so it is queued behind them.
  void SendReset(std::string_view reason, const MissingRange* missing = nullptr);

  PartitionLog& log_;
  GatewayMetrics& metrics_;
  const Settings settings_;
  const SendControl send_control_;

  // The runs whose end this session delivered, newest last (a few: a bounded ring).
  std::vector<std::string> ended_runs_;
  static constexpr size_t kEndedRunsKept = 32;

  // hand_off_ says what is still to be fetched and joins it to the live stream by offset;
  // catchup_ holds what was fetched and not yet written.
  HandOff hand_off_;
  int64_t attach_end_ = 0;
  bool earliest_ = false;
  bool probing_ahead_ = false;  // the cursor is past this replica's tail: does Kafka have it?
  bool history_in_flight_ = false;
  bool counted_cache_ = false;
  bool counted_kafka_ = false;
  bool counted_archive_ = false;
  // Offsets below it are read from the archive: Kafka's log start as a Kafka read reported it.
  int64_t archive_until_ = -1;
  int64_t archive_request_to_ = 0;  // the end of the archive read in flight
  Fifo<CatchupItem> catchup_;
  std::atomic<size_t> pending_bytes_{0};  // charged bytes held or posted to this session
};

}  // namespace agentwire::gateway
