#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution_context.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "partition_hub.hpp"

namespace agentwire::gateway {

class Session;

/// Hands what the tailer thread has for the sessions of one io_context (one I/O thread) over
/// in batches: the first item posts one drain, and what arrives before that drain runs joins
/// it. One post per session per event meant a heap-allocated handler made on the tailer thread
/// and freed on the I/O thread (glibc's slow path) and, at agent rates where the I/O thread
/// sleeps between events, a wake-up each; a fetch's worth of events now costs one of each.
/// Order is kept: a session's items are drained in the order they were delivered, and the
/// tailer's calls for a session (OnTailStarted, then OnLive) all come through here.
///
/// One per io_context (an Asio service: For() finds or makes it), which one thread runs (the
/// gateway's I/O threads each run their own): a session's items are then handled in order.
/// Thread-safe.
class LiveInbox final : public boost::asio::execution_context::service {
 public:
  // NOLINTNEXTLINE(readability-identifier-naming): the name Asio looks up
  static inline boost::asio::execution_context::id id;

  explicit LiveInbox(boost::asio::execution_context& context)
      : boost::asio::execution_context::service(context) {}

  /// The inbox of the io_context `executor` runs on. Its drains are posted to the first
  /// executor it was asked for with (any executor of that io_context runs them on its thread).
  static LiveInbox& For(const boost::asio::any_io_executor& executor);

  /// Queues a live entry for `session`, which runs on this inbox's io_context. Any thread.
  void DeliverLive(std::shared_ptr<Session> session, LogEntryPtr entry);
  /// Queues the tailer's start offset for `session` (LiveListener::OnTailStarted).
  void DeliverTailStarted(std::shared_ptr<Session> session, int64_t start_offset);

 private:
  struct Item {
    std::shared_ptr<Session> session;
    LogEntryPtr entry;  // null: the tail started at `tail_start`
    int64_t tail_start = 0;
  };

  void Deliver(Item item);
  /// On the I/O thread: hands every queued item to its session, in order.
  void Drain();
  /// The io_context is going away: drop the sessions still queued.
  void shutdown() override;

  std::mutex mutex_;
  // Set once, by For(), before any session of this io_context can be delivered to. Kept
  // here because a copy of a session's any_io_executor per delivered event was ~1.5 % of the
  // gateway's CPU.
  boost::asio::any_io_executor executor_;  // guarded by mutex_
  std::vector<Item> pending_;              // guarded by mutex_
  bool drain_posted_ = false;              // guarded by mutex_
  // The batch being drained (I/O thread only). Swapped with pending_, so the two vectors'
  // storage is reused instead of regrown for every batch.
  std::vector<Item> draining_;
};

}  // namespace agentwire::gateway
