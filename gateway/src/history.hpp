#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/core/topic_reader.hpp"
#include "kafka_tail.hpp"
#include "partition_hub.hpp"

namespace agentwire::gateway {

/// Bytes of catch-up frames read from Kafka and not yet written to their clients, across every
/// session of the replica. The history reader stops reading while the total is over the bound;
/// sessions release bytes as they write. (Entries served from the recent-log cache are not
/// counted: the cache holds them anyway.)
///
/// Bytes are also counted per user, so that one user's sessions (many tabs, or a client that
/// opens sessions and never reads them) cannot hold the whole budget: a user at its fair share
/// (UserOverShare) is served no more until its clients have read. Thread-safe.
class CatchupBudget final {
 public:
  /// `min_share`: what one user may always hold (one session's worth: --catchup-session-bytes).
  CatchupBudget(size_t max_bytes, size_t min_share, metrics::Gauge& buffered, metrics::Gauge& peak)
      : max_bytes_(max_bytes),
        min_share_(min_share),
        buffered_gauge_(buffered),
        peak_gauge_(peak) {}

  void Charge(const std::string& user, size_t bytes);
  void Release(const std::string& user, size_t bytes);
  bool Exhausted() const noexcept { return buffered_.load() >= max_bytes_; }
  size_t Buffered() const noexcept { return buffered_.load(); }
  size_t MaxBytes() const noexcept { return max_bytes_; }
  /// What `user`'s sessions hold now.
  size_t UserBytes(const std::string& user) const;
  /// A user's fair share: the budget divided among the users holding any of it and one more
  /// (so a newcomer always finds room), never less than `min_share`.
  size_t FairShare() const;
  /// `user` holds its fair share or more.
  bool UserOverShare(const std::string& user) const;

 private:
  const size_t max_bytes_;
  const size_t min_share_;
  std::atomic<size_t> buffered_{0};
  std::atomic<size_t> peak_{0};
  metrics::Gauge& buffered_gauge_;
  metrics::Gauge& peak_gauge_;
  mutable std::mutex users_mutex_;
  std::unordered_map<std::string, size_t> by_user_;  // users holding bytes now (> 0)
};

/// One piece of a history read, handed to the session that asked for it.
struct HistoryChunk {
  enum class Source { kKafka, kArchive };
  enum class Status {
    kMore,        // more chunks follow
    kDone,        // the range is complete: next_offset == the request's `to`
    kPaused,      // the session holds too much unwritten catch-up: ask again from next_offset
    kOutOfRange,  // retention deleted the range (or the cursor is past the log's end)
    kError,       // Kafka did not answer in time
  };
  Status status = Status::kMore;
  Source source = Source::kKafka;
  std::vector<LogEntryPtr> entries;  // the user's entries below next_offset, offset order
  size_t charged_bytes = 0;          // charged to the CatchupBudget for these entries
  int64_t next_offset = 0;           // everything below it was delivered in this or earlier chunks
  int64_t log_start = -1;            // kOutOfRange from Kafka: the log's first offset (-1: unknown)
  std::string error;
};

/// Where a history read delivers. Called on the history thread: implementations post to their
/// own executor and return.
class HistorySink {
 public:
  virtual ~HistorySink() = default;
  virtual void OnHistory(HistoryChunk chunk) = 0;
  /// Catch-up bytes this sink holds and has not written yet (read by the history thread to
  /// stop feeding a session that is not keeping up).
  virtual size_t PendingCatchupBytes() const = 0;
};

struct HistoryRequest {
  int partition = 0;
  std::string user_id;
  int64_t from = 0;       // first offset wanted
  int64_t to = 0;         // end (exclusive); from == to asks only whether `from` exists
  bool earliest = false;  // `from` below the log start is fine: start at the log start
  std::weak_ptr<HistorySink> sink;
};

/// Reads users' past events from Kafka for cursors older than the recent-log cache, with one
/// long-lived consumer on one thread per replica (no client per resume). Requests for one
/// partition are served by one sequential scan that hands each waiting session its own user's
/// events (fan-in), so a storm of N resumes costs one read of each partition, not N. Memory
/// stays bounded: a chunk is handed over as soon as it is full, a session that holds more than
/// `per_session_bytes` unwritten is paused (it asks again from where it stopped once it has
/// written), and the scan waits while the replica-wide CatchupBudget is exhausted.
class HistoryService final {
 public:
  struct Limits {
    size_t per_session_bytes = 1u << 20;
    size_t chunk_bytes = 64u << 10;
    std::chrono::milliseconds stall_timeout{30'000};  // no progress from Kafka: kError
  };

  HistoryService(kafka::Properties properties, TopicIdentity identity, Limits limits,
                 CatchupBudget& budget, metrics::Registry& metrics);
  ~HistoryService();

  /// Creates the consumer and starts the thread. Throws KafkaError.
  void Start();
  /// Stops promptly (within one poll) and drops the requests not served: their sessions are
  /// being closed by the caller. Idempotent.
  void Stop();
  /// Thread-safe.
  void Submit(HistoryRequest request);

 private:
  class PartitionScan;
  void Run();
  std::vector<HistoryRequest> TakeQueued(int partition);
  /// Requests of other partitions are queued.
  bool OthersWaiting(int partition);
  /// Puts requests back at the end of their partition's queue.
  void Requeue(int partition, std::vector<HistoryRequest> requests);
  /// Requests the current scan serves (for the queue-depth gauge).
  void SetActive(size_t count);
  void SetStalled(bool stalled);
  bool TakeNext(int& partition, std::vector<HistoryRequest>& batch);
  void UpdateDepth();

  kafka::Properties properties_;
  TopicIdentity identity_;
  Limits limits_;
  CatchupBudget& budget_;
  metrics::Gauge& queue_depth_;
  metrics::Counter& scans_;
  metrics::Counter& messages_read_;
  metrics::Gauge& stalled_gauge_;
  metrics::Counter& yields_;
  metrics::Counter& stalled_micros_;
  bool stalled_ = false;  // history thread only

  std::unique_ptr<kafka::TopicReader> reader_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<int, std::vector<HistoryRequest>> queued_;  // by partition
  size_t queued_count_ = 0;
  size_t active_count_ = 0;  // history thread only
  int next_partition_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace agentwire::gateway
