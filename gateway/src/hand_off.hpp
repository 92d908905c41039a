#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "partition_hub.hpp"

namespace agentwire::gateway {

/// The offset bookkeeping that joins a session's catch-up to its live stream, so that the
/// client gets every event of its partition after its cursor exactly once and in order. No
/// sockets, no hub, no threads: the CatchUp drives it (tests/unit/hand_off_test.cpp drives it
/// through random interleavings).
///
/// The catch-up covers [Position(), Target()) of the partition; the CatchUp fetches that range
/// from the cache or Kafka in pieces and reports each fetched entry (TakeCatchup) and how far
/// each piece reached (Advance). Live events that arrive meanwhile are buffered, up to a small
/// bound; past it they are dropped and the catch-up is extended to where the log is then
/// (ExtendTo), because reading the log is cheaper than buffering for a client that is behind.
/// When the catch-up has reached its target with nothing dropped, GoLive hands back the
/// buffered live events; from then on AcceptLive admits each offset at most once, in order.
class HandOff final {
 public:
  struct BufferLimits {
    size_t max_frames = 1024;
    size_t max_bytes = 512 * 1024;
  };
  enum class Buffered { kKept, kOverflowedNow, kDropped };

  explicit HandOff(BufferLimits limits) : limits_(limits) {}

  /// The catch-up range: from `position` up to `target` (the `ready` cursor's offset).
  void Start(int64_t position, int64_t target) {
    position_ = position;
    target_ = target;
  }
  /// Where the catch-up continues (the start of a bounded catch-up, a cursor's offset).
  void SetPosition(int64_t position) { position_ = position; }
  /// Give up on [Position(), `offset`) (history gone): the catch-up ends at `offset`.
  void SkipTo(int64_t offset) { position_ = target_ = offset; }

  int64_t Position() const { return position_; }
  int64_t Target() const { return target_; }
  /// Everything up to the target was fetched (not necessarily written yet).
  bool Fetched() const { return position_ >= target_; }
  /// Live events were dropped during the catch-up: the target must move (ExtendTo) first.
  bool LiveOverflowed() const { return live_overflowed_; }

  /// A fetched piece reached `next_offset`.
  void Advance(int64_t next_offset) { position_ = next_offset; }
  /// After an overflow: catch up to `log_end`, where the dropped live events lie before.
  void ExtendTo(int64_t log_end) {
    live_overflowed_ = false;
    target_ = std::max(target_, log_end);
  }

  /// A fetched entry at `offset`: true when it is to be written, false when an earlier piece
  /// already produced it (a piece re-read after a pause, a Kafka read overlapping the cache).
  bool TakeCatchup(int64_t offset) {
    if (offset <= last_catchup_offset_) return false;
    last_catchup_offset_ = offset;
    return true;
  }

  /// A live event while catching up.
  Buffered BufferLive(LogEntryPtr entry) {
    if (live_overflowed_) return Buffered::kDropped;  // the extended catch-up will cover it
    live_bytes_ += entry->Bytes();
    live_.push_back(std::move(entry));
    if (live_.size() <= limits_.max_frames && live_bytes_ <= limits_.max_bytes) {
      return Buffered::kKept;
    }
    live_overflowed_ = true;
    DropBuffered();
    return Buffered::kOverflowedNow;
  }

  /// The catch-up is done: live from the target on. Returns the live events buffered meanwhile,
  /// each to pass through AcceptLive (which drops what the catch-up already covered).
  std::vector<LogEntryPtr> GoLive() {
    next_offset_ = target_;
    auto buffered = std::move(live_);
    DropBuffered();
    return buffered;
  }

  /// Live: true when the event at `offset` has not been delivered, and everything before it
  /// now counts as delivered.
  bool AcceptLive(int64_t offset) {
    if (offset < next_offset_) return false;
    next_offset_ = offset + 1;
    return true;
  }
  /// Live: everything below it was delivered (or filtered out).
  int64_t NextOffset() const { return next_offset_; }

  void DropBuffered() {
    live_.clear();
    live_bytes_ = 0;
  }

 private:
  BufferLimits limits_;
  int64_t position_ = 0;
  int64_t target_ = 0;
  int64_t last_catchup_offset_ = -1;
  int64_t next_offset_ = 0;
  bool live_overflowed_ = false;
  std::vector<LogEntryPtr> live_;
  size_t live_bytes_ = 0;
};

}  // namespace agentwire::gateway
