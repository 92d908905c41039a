#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/gateway/gateway.hpp"
#include "history.hpp"

namespace pqxx {
class connection_base;
}

namespace agentwire::gateway {

/// A user's events of one partition in offset order, as the archive holds them.
struct ArchivedEvents {
  std::vector<LogEntryPtr> entries;
  /// The archive's committed position for the partition: every offset below it that held an
  /// event is a row (written in the same transaction as the position), none at or above it.
  /// -1: the archive has never written this partition.
  int64_t archived_to = -1;
};

/// The gateway's side of PostgreSQL (docs/architecture.md, "History past retention"): reads
/// the archive (`agentwire archive`'s agent_events) as the log's cold tier, for cursors older
/// than Kafka's log start. A few threads, each with its own connection (a small pool), serve a
/// queue of reads; a read is one chunk, so many sessions' catch-ups take turns and a session
/// asks for the next chunk only once it has written the last (its memory stays one chunk).
///
/// PostgreSQL down or slow (past --archive-statement-timeout): the read fails with an error,
/// the session tells its client (close 1013, it comes back with the same cursor) and nothing
/// else waits: sessions served by Kafka or the cache never touch this class. Reconnects are
/// spaced (one attempt a second per connection) so an outage costs no connect storm.
class ArchiveReader final {
 public:
  ArchiveReader(ArchiveSettings settings, TopicIdentity identity, CatchupBudget& budget,
                metrics::Registry& metrics);
  ~ArchiveReader();
  ArchiveReader(const ArchiveReader&) = delete;
  ArchiveReader& operator=(const ArchiveReader&) = delete;

  /// An archive DSN was configured.
  bool Enabled() const noexcept { return !settings_.dsn.empty(); }
  /// Starts the pool's threads (they connect on first use). No-op without a DSN.
  void Start();
  /// Stops the threads; reads not served are dropped (their sessions are closing).
  void Stop();

  /// Reads the next chunk of `request.user_id`'s events in [from, to) and hands it to the
  /// sink as a HistoryChunk from the archive: kMore (a chunk; ask again from next_offset),
  /// kDone (the range is complete), kOutOfRange (the archive holds the range only up to
  /// next_offset: [next_offset, to) is a hole), kPaused (the catch-up budget is full: ask again
  /// later) or kError (PostgreSQL failed; `error` says how). Thread-safe.
  void Submit(HistoryRequest request);

  /// Runs `job` on a pooled connection, on a pool thread; `on_error` gets the failure when
  /// PostgreSQL cannot be reached or the job throws. For reads other than catch-ups (a thread's
  /// history page). Thread-safe.
  using Job = std::function<void(pqxx::connection_base&)>;
  void Execute(Job job, std::function<void(const std::string& error)> on_error);

  /// On a pooled connection: the events of `user_id` in `partition` with offsets in
  /// [from, to), ascending (or the newest first when `newest_first`), at most `limit`, only
  /// `thread_id`'s when it is not empty; with the archive's committed position. Throws
  /// pqxx exceptions.
  ArchivedEvents Query(pqxx::connection_base& connection, int partition, const std::string& user_id,
                       const std::string& thread_id, int64_t from, int64_t to, size_t limit,
                       bool newest_first) const;

  /// On a pooled connection: the newest run of `thread_id` (of `user_id`) that started and has
  /// no terminal event in the archive (the AI SDK stream of a run whose start retention
  /// deleted). Throws pqxx exceptions.
  std::optional<RunInProgress> OpenRunOfThread(pqxx::connection_base& connection, int partition,
                                               const std::string& user_id,
                                               const std::string& thread_id) const;

  const TopicIdentity& Identity() const noexcept { return identity_; }

 private:
  struct Task {
    Job job;
    std::function<void(const std::string&)> on_error;
  };
  void Worker();
  void Serve(pqxx::connection_base& connection, const HistoryRequest& request);
  void UpdateDepth();

  const ArchiveSettings settings_;
  const TopicIdentity identity_;
  CatchupBudget& budget_;
  metrics::Gauge& queue_depth_;
  metrics::Counter& reads_;
  metrics::Counter& rows_;
  metrics::Counter& errors_;
  metrics::Histogram& read_seconds_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace agentwire::gateway
