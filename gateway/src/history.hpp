#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/metrics.hpp"
#include "kafka_tail.hpp"
#include "partition_hub.hpp"

namespace agentwire::gateway {

/// Bytes of catch-up frames read from Kafka and not yet written to their clients, across every
/// session of the replica. The history reader stops reading while the total is over the bound;
/// sessions release bytes as they write. (Entries served from the recent-log cache are not
/// counted: the cache holds them anyway.) Thread-safe.
class CatchupBudget final {
 public:
  CatchupBudget(size_t max_bytes, metrics::Gauge& buffered, metrics::Gauge& peak)
      : max_bytes_(max_bytes), buffered_gauge_(buffered), peak_gauge_(peak) {}

  void Charge(size_t bytes) noexcept;
  void Release(size_t bytes) noexcept;
  bool Exhausted() const noexcept { return buffered_.load() >= max_bytes_; }
  size_t Buffered() const noexcept { return buffered_.load(); }
  size_t MaxBytes() const noexcept { return max_bytes_; }

 private:
  const size_t max_bytes_;
  std::atomic<size_t> buffered_{0};
  std::atomic<size_t> peak_{0};
  metrics::Gauge& buffered_gauge_;
  metrics::Gauge& peak_gauge_;
};

/// One piece of a history read, handed to the session that asked for it.
struct HistoryChunk {
  enum class Status {
    kMore,        // more chunks follow
    kDone,        // the range is complete: next_offset == the request's `to`
    kPaused,      // the session holds too much unwritten catch-up: ask again from next_offset
    kOutOfRange,  // retention deleted the range (or the cursor is past the log's end)
    kError,       // Kafka did not answer in time
  };
  Status status = Status::kMore;
  std::vector<LogEntryPtr> entries;  // the user's entries below next_offset, offset order
  size_t charged_bytes = 0;          // charged to the CatchupBudget for these entries
  int64_t next_offset = 0;           // everything below it was delivered in this or earlier chunks
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
  struct Active;
  void Run();
  void ScanPartition(int partition, std::vector<HistoryRequest> batch);
  std::vector<HistoryRequest> TakeQueued(int partition);
  bool TakeNext(int& partition, std::vector<HistoryRequest>& batch);
  void UpdateDepth();

  kafka::Properties properties_;
  TopicIdentity identity_;
  Limits limits_;
  CatchupBudget& budget_;
  metrics::Gauge& queue_depth_;
  metrics::Counter& scans_;
  metrics::Counter& messages_read_;

  kafka::HandlePtr consumer_;
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
