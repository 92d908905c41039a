#pragma once

// Private pieces of `agentwire replay`, shared by its source files (replay*.cpp).

#include <agentwire/v1/events.pb.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agentwire/consumers/replay.hpp"
#include "agentwire/core/kafka_handles.hpp"

namespace agentwire::consumers::replay {

/// One event as a source delivers it, decoded.
struct Record {
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t timestamp_ms = -1;  // Kafka message timestamp; -1 when unknown (the archive)
  /// The event's time for --since/--until and the merge: emitted_at, or the Kafka timestamp
  /// when emitted_at is more than 24 h away from it (event_time.hpp); 0 when unset.
  int64_t time_ns = 0;
  bool time_replaced = false;
  std::string key;
  /// The message value and headers, kept only when the selection is re-driven.
  std::string value;
  std::vector<std::pair<std::string, std::string>> headers;
  v1::AgentEvent event;
};

/// The selection as a predicate. `MatchesKey` is the cheap pre-check on the Kafka key that
/// lets a user's replay skip other users' messages without decoding them.
class EventFilter final {
 public:
  explicit EventFilter(const ReplaySelection& selection);
  bool MatchesKey(std::string_view key) const {
    return selection_.user_id.empty() || key == selection_.user_id;
  }
  /// Everything but time.
  bool Matches(const v1::AgentEvent& event) const;
  /// --since <= time_ns < --until.
  bool MatchesTime(int64_t time_ns) const {
    return !(since_ns_ && time_ns < *since_ns_) && !(until_ns_ && time_ns >= *until_ns_);
  }

 private:
  const ReplaySelection& selection_;
  std::optional<int64_t> since_ns_;
  std::optional<int64_t> until_ns_;
};

/// emitted_at in nanoseconds since the epoch, saturated to the int64 range (0 when unset).
int64_t EmittedAtNanos(const v1::AgentEvent& event);
int64_t ToNanos(TimePoint time);
int64_t ToMillis(TimePoint time);

/// Counters the progress reporter reads while a source runs. Thread-safe.
struct Progress {
  std::atomic<uint64_t> scanned{0};
  std::atomic<uint64_t> matched{0};
  std::atomic<uint64_t> undecodable{0};
  /// Events whose emitted_at was more than 24 h from their Kafka timestamp.
  std::atomic<uint64_t> times_replaced{0};
  /// Messages the source expects to read (0 = unknown): drives the percentage of the bar.
  std::atomic<uint64_t> expected{0};
};

/// Writes warnings and the progress bar to stderr (or any stream) from several threads.
/// A warning first clears a bar that is on screen. Thread-safe.
class Console final {
 public:
  Console(std::ostream& out, bool bar) : out_(out), bar_(bar) {}
  void Line(std::string_view text);
  /// Redraws the bar (bar mode only).
  void Bar(std::string_view text);
  void ClearBar();
  bool BarMode() const { return bar_; }

 private:
  std::mutex mutex_;
  std::ostream& out_;
  bool bar_;
  bool bar_shown_ = false;
};

/// Called for each selected event in output order; returns false to stop the replay.
using RecordSink = std::function<bool(Record&)>;

/// A partition's buffered records, oldest first. The Record objects are reused from batch to
/// batch (Append hands back a used one once the buffer has been drained), so decoding into
/// them reuses the strings protobuf already allocated: no allocation per event.
class RecordBuffer final {
 public:
  Record& Append() {
    if (size_ == items_.size()) items_.emplace_back();
    return items_[size_++];
  }
  /// Forgets the last Append (a record the filter rejected).
  void DropLast() { --size_; }
  bool Empty() const { return head_ == size_; }
  Record& Front() { return items_[head_]; }
  void PopFront() {
    if (++head_ == size_) head_ = size_ = 0;
  }

 private:
  std::vector<Record> items_;
  size_t head_ = 0;
  size_t size_ = 0;
};

/// Runs `output` on its own thread, fed in batches: the reading thread decodes and merges
/// while this one formats and writes. Records are swapped in and out, never copied. Push and
/// Finish are called from one thread; `output` runs on the sink's thread, in order.
class PipelinedSink final {
 public:
  explicit PipelinedSink(RecordSink output);
  ~PipelinedSink();
  PipelinedSink(const PipelinedSink&) = delete;
  PipelinedSink& operator=(const PipelinedSink&) = delete;

  /// Takes the record (leaving a used one in its place). False once `output` refused one.
  bool Push(Record& record);
  /// Hands over what is left and waits until `output` has seen it.
  void Finish();

 private:
  static constexpr size_t kBatch = 512;
  void HandOver();
  void Loop();

  RecordSink output_;
  std::vector<Record> filling_;  // the reading thread's
  size_t filled_ = 0;
  std::vector<Record> draining_;  // the output thread's while busy_
  size_t draining_count_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool busy_ = false;
  bool closing_ = false;
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

/// One partition's selected events, in offset order.
class PartitionReader {
 public:
  virtual ~PartitionReader() = default;
  virtual int32_t Partition() const = 0;
  /// Appends the next selected records to `out` (possibly none, e.g. when a whole batch was
  /// filtered out). Returns false once the partition has nothing more to give.
  virtual bool Fill(RecordBuffer& out, std::stop_token stop) = 0;
};

/// The k-way merge both sources use: repeatedly emits the partition head with the smallest
/// (emitted_at, partition). A partition's head is only compared once it is known, so nothing
/// is skipped and each partition stays in offset order. Returns false when the sink or `stop`
/// ended it early.
bool MergePartitions(std::vector<std::unique_ptr<PartitionReader>>& readers, const RecordSink& sink,
                     std::stop_token stop);

/// Offsets [from, to) of a partition that the replay could not read from anywhere: deleted by
/// Kafka's retention before the archive had stored them.
struct OffsetHole {
  int32_t partition = 0;
  int64_t from = 0;
  int64_t to = 0;
};

/// A replay source: streams the selection into `sink` in output order.
class Source {
 public:
  virtual ~Source() = default;
  /// Connects, resolves where to read and validates the cursor against the topic. Throws
  /// ConfigError (bad cursor, missing topic) or std::runtime_error (unreachable).
  virtual void Open() = 0;
  /// Partition count for output cursors (0 = unknown: no cursor is printed).
  virtual int32_t PartitionCount() const = 0;
  /// Streams until exhausted (or forever with --follow); false when stopped early.
  virtual bool Run(const RecordSink& sink, std::stop_token stop) = 0;
  /// The holes found so far (warned about when found), in the order found. Only a source that
  /// reads across the seam between the archive and Kafka can tell a hole from old history.
  virtual std::vector<OffsetHole> Holes() const { return {}; }
};

std::unique_ptr<Source> MakeKafkaSource(const ReplayConfig& config, Progress& progress,
                                        Console& console);
std::unique_ptr<Source> MakePostgresSource(const ReplayConfig& config, Progress& progress,
                                           Console& console);
/// The archive below Kafka's log start, then Kafka (replay_auto.cpp).
std::unique_ptr<Source> MakeAutoSource(const ReplayConfig& config, Progress& progress,
                                       Console& console);

/// Where a replay reads one partition of Kafka.
struct KafkaPartitionPlan {
  int32_t partition = 0;
  int64_t low = 0;    // the log start at open: retention deleted everything before it
  int64_t high = 0;   // the high watermark at open: the end of a replay without --follow
  int64_t start = 0;  // the first offset to read (from the cursor and --since), low..high
};

/// Called by a Kafka partition reader that finds retention deleted [from, to) just before it got
/// there (librdkafka then continues from the log start without a word). The reader has stopped
/// short of `to`, so the caller can put what it has of [from, to) in between; the reader's next
/// Fill resumes at `to`.
using RetentionSkipHandler = std::function<void(int32_t partition, int64_t from, int64_t to)>;

/// Kafka's side of a replay, shared by the kafka and auto sources: one client, the partitions the
/// selection needs with their watermarks and start offsets, a reader per partition and the tail
/// of --follow. Reads with manual assignment only: no group, nothing committed. Not thread-safe.
class KafkaLog {
 public:
  virtual ~KafkaLog() = default;
  virtual int32_t PartitionCount() const = 0;
  virtual const std::vector<KafkaPartitionPlan>& Plans() const = 0;
  /// Reads plan.partition from plan.start up to plan.high (or --until's end), fetching from now
  /// on. Without `on_skip`, offsets that retention deletes ahead of the reader are a warning.
  virtual std::unique_ptr<PartitionReader> MakeReader(const KafkaPartitionPlan& plan,
                                                      RetentionSkipHandler on_skip) = 0;
  /// --follow, after the catch-up: tails the partitions of `readers` (all made by MakeReader)
  /// from where each stopped, handing events to `sink` as they arrive, until `stop`.
  virtual bool Follow(const std::vector<PartitionReader*>& readers, const RecordSink& sink,
                      const std::stop_token& stop) = 0;
};

/// Connects, checks the topic and the cursor, and plans every partition the selection needs.
/// `archive_below_low`: what retention deleted is read from the archive (--source auto), so a
/// cursor older than the log start needs no warning here. Throws ConfigError (missing topic,
/// foreign cursor) or KafkaError.
std::unique_ptr<KafkaLog> OpenKafkaLog(const ReplayConfig& config, Progress& progress,
                                       Console& console, bool archive_below_low);

/// The archive's side of a replay (`agentwire archive`'s agent_events), shared by the postgres
/// and auto sources: one repeatable-read snapshot, so the rows and the archive's committed
/// positions read by one replay agree with each other while the archive keeps writing. Not
/// thread-safe.
class ArchiveTable {
 public:
  virtual ~ArchiveTable() = default;
  /// The highest partition of the topic with rows; -1 when there are none.
  virtual int32_t MaxPartition() = 0;
  /// The topic's partition count as the archive last saw it (archive_topics); 0 when unknown.
  virtual int32_t RecordedPartitionCount() = 0;
  /// The archive group's committed position per partition of the topic (consumer_offsets): the
  /// archive holds every offset below it that held a valid event (the others are in
  /// dead_letters), written in the same transaction as the position.
  virtual std::unordered_map<int32_t, int64_t> CommittedOffsets(const std::string& group) = 0;
  /// The selection's rows of `partition` with `from` <= offset (< `to` when given), in offset
  /// order.
  virtual std::unique_ptr<PartitionReader> MakeReader(int32_t partition, int64_t from,
                                                      std::optional<int64_t> to) = 0;
};

/// Connects and checks that the database is an archive. Throws ConfigError (a DSN that does not
/// parse, a database without agent_events) or std::runtime_error (PostgreSQL unreachable).
std::unique_ptr<ArchiveTable> OpenArchiveTable(const ReplayConfig& config, Progress& progress);

/// The partition count of `topic` (kafka::FindPartitionCount: never creates the topic). Throws
/// ConfigError naming `flag` when the topic does not exist, KafkaError when the cluster does not
/// answer.
int32_t ExistingTopicPartitions(rd_kafka_t* client, const std::string& topic, std::string_view flag,
                                std::chrono::milliseconds timeout);

/// Checks a --from-cursor against what the source knows about the topic: throws ConfigError
/// when it was issued for another partition layout or belongs to another user's partition.
void CheckCursorAgainstTopic(const ReplayConfig& config, int32_t partition_count);

/// Writes the selection to stdout in the chosen format. Not thread-safe.
class EventWriter {
 public:
  virtual ~EventWriter() = default;
  virtual void Write(const Record& record) = 0;
  /// Writes what is buffered (the table's run groups) and flushes.
  virtual void Finish() = 0;
};

/// One JSON object per line: topic, partition, offset, timestamp, cursor (resuming after the
/// event; null when the partition count is unknown) and the event.
std::unique_ptr<EventWriter> MakeJsonlWriter(std::ostream& out, const ReplayConfig& config,
                                             int32_t partition_count);
/// One line per event, grouped by run under a header line per run (printed at the end; with
/// --follow a header is printed whenever the run changes instead).
std::unique_ptr<EventWriter> MakeTableWriter(std::ostream& out, const ReplayConfig& config);

/// Finds runs whose run_seq has holes or that lack a terminal event, and runs with events after
/// their end, within the selection. A run ends with its first terminal event in log order
/// (docs/runs.md); its later events are "late" (a zombie worker's after the supervisor's
/// worker_lost, a second end): they are counted and named, and holes and duplicates are looked
/// for only up to the end. Add must see each run's events in log order: replay calls it in
/// output order, which keeps each partition's offset order, and a run lives in its user's
/// partition.
class GapTracker final {
 public:
  void Add(const v1::AgentEvent& event);
  /// Writes the report; returns the counts for the summary.
  void Report(std::ostream& out, bool selection_is_partial);
  uint64_t Runs() const { return order_.size(); }
  uint64_t RunsWithHoles() const { return runs_with_holes_; }
  uint64_t RunsWithoutTerminal() const { return runs_without_terminal_; }
  /// Runs with at least one event after their first terminal event, and those events.
  uint64_t RunsWithLateEvents() const { return runs_with_late_events_; }
  uint64_t LateEvents() const { return late_events_; }
  /// Runs with a second terminal event (e.g. the supervisor's end and the worker's).
  uint64_t RunsWithSeveralTerminals() const { return runs_with_several_terminals_; }

 private:
  struct Run {
    std::string user_id;
    std::string thread_id;
    std::vector<uint32_t> seqs;  // up to and including the end
    bool terminal = false;
    std::string last_type;
    uint32_t last_seq = 0;
    int64_t last_emitted_ns = 0;
    // The end: the first terminal event.
    uint32_t end_seq = 0;
    std::string end_event_id;
    std::string end_text;  // "agent_failed worker_lost"
    uint64_t late = 0;
    uint64_t late_terminals = 0;
  };
  std::unordered_map<std::string, Run> runs_;
  std::vector<std::string> order_;  // run ids in order of first appearance
  uint64_t runs_with_holes_ = 0;
  uint64_t runs_without_terminal_ = 0;
  uint64_t runs_with_late_events_ = 0;
  uint64_t late_events_ = 0;
  uint64_t runs_with_several_terminals_ = 0;
};

/// The gap report's part on offset holes: one line per hole, nothing when there are none.
void ReportOffsetHoles(std::ostream& out, const std::vector<OffsetHole>& holes);

/// Re-drives records to another topic with an idempotent producer. Not thread-safe.
class Republisher final {
 public:
  /// Throws ConfigError when the target topic does not exist.
  explicit Republisher(const ReplayConfig& config);
  ~Republisher();
  Republisher(const Republisher&) = delete;
  Republisher& operator=(const Republisher&) = delete;

  /// Queues one record (waits for room, and for the rate limit). False when stopped.
  bool Send(const Record& record, const std::stop_token& stop);
  /// Waits for every delivery report (up to `timeout`); what is still outstanding then
  /// counts as failed.
  void Finish(std::chrono::milliseconds timeout);
  uint64_t Delivered() const;
  uint64_t Failed() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentwire::consumers::replay
