// The catch-up -> live hand-off, driven the way a Session drives it but without sockets: the
// product's guarantee (every event after the cursor exactly once, in order) reduced to offsets.
#include "hand_off.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

namespace agentwire::gateway {
namespace {

LogEntryPtr Entry(int64_t offset, size_t bytes = 100) {
  auto entry = std::make_shared<LogEntry>();
  entry->offset = offset;
  entry->SetFrame(std::make_shared<const std::string>(bytes, 'x'));
  return entry;
}

TEST(HandOff, CatchUpThenLiveDeliversEachOffsetOnce) {
  HandOff hand_off({8, 1 << 20});
  hand_off.Start(10, 20);  // cursor at 10, attached when the log ended at 20
  std::vector<int64_t> delivered;
  // Live events 20..22 arrive before the catch-up is fetched; 18..19 arrive too (the tailer
  // dispatched them between the attach and now: they are below the target).
  for (const int64_t offset : {18, 19, 20, 21, 22}) {
    EXPECT_EQ(hand_off.BufferLive(Entry(offset)), HandOff::Buffered::kKept);
  }
  for (int64_t offset = 10; offset < 20; ++offset) {
    if (hand_off.TakeCatchup(offset)) delivered.push_back(offset);
  }
  hand_off.Advance(20);
  ASSERT_TRUE(hand_off.Fetched());
  ASSERT_FALSE(hand_off.LiveOverflowed());
  for (const auto& entry : hand_off.GoLive()) {
    if (hand_off.AcceptLive(entry->offset)) delivered.push_back(entry->offset);
  }
  EXPECT_EQ(hand_off.NextOffset(), 23);
  EXPECT_FALSE(hand_off.AcceptLive(21)) << "a live event dispatched twice is delivered once";
  EXPECT_TRUE(hand_off.AcceptLive(23));
  delivered.push_back(23);
  std::vector<int64_t> expected(14);
  std::iota(expected.begin(), expected.end(), 10);
  EXPECT_EQ(delivered, expected);
}

TEST(HandOff, ACatchUpPieceReadTwiceIsWrittenOnce) {
  HandOff hand_off({8, 1 << 20});
  hand_off.Start(0, 10);
  EXPECT_TRUE(hand_off.TakeCatchup(3));
  EXPECT_TRUE(hand_off.TakeCatchup(4));
  EXPECT_FALSE(hand_off.TakeCatchup(4));
  EXPECT_FALSE(hand_off.TakeCatchup(2)) << "a Kafka read overlapping the cache";
  EXPECT_TRUE(hand_off.TakeCatchup(9));
}

TEST(HandOff, OverflowDropsTheBufferAndTheCatchUpIsExtended) {
  HandOff hand_off({3, 1 << 20});
  hand_off.Start(0, 5);
  EXPECT_EQ(hand_off.BufferLive(Entry(5)), HandOff::Buffered::kKept);
  EXPECT_EQ(hand_off.BufferLive(Entry(6)), HandOff::Buffered::kKept);
  EXPECT_EQ(hand_off.BufferLive(Entry(7)), HandOff::Buffered::kKept);
  EXPECT_EQ(hand_off.BufferLive(Entry(8)), HandOff::Buffered::kOverflowedNow);
  EXPECT_EQ(hand_off.BufferLive(Entry(9)), HandOff::Buffered::kDropped);
  hand_off.Advance(5);
  ASSERT_TRUE(hand_off.Fetched());
  ASSERT_TRUE(hand_off.LiveOverflowed());
  hand_off.ExtendTo(10);
  EXPECT_FALSE(hand_off.Fetched());
  EXPECT_EQ(hand_off.Target(), 10);
  hand_off.Advance(10);
  EXPECT_TRUE(hand_off.GoLive().empty());
  EXPECT_EQ(hand_off.NextOffset(), 10);
}

TEST(HandOff, OverflowCountsBytesToo) {
  const size_t one = Entry(0, 100)->Bytes();
  HandOff hand_off({100, 2 * one + one / 2});
  hand_off.Start(0, 0);
  EXPECT_EQ(hand_off.BufferLive(Entry(0, 100)), HandOff::Buffered::kKept);
  EXPECT_EQ(hand_off.BufferLive(Entry(1, 100)), HandOff::Buffered::kKept);
  EXPECT_EQ(hand_off.BufferLive(Entry(2, 100)), HandOff::Buffered::kOverflowedNow);
}

TEST(HandOff, HistoryGoneSkipsToTheTargetAndGoesLive) {
  HandOff hand_off({8, 1 << 20});
  hand_off.Start(3, 50);
  hand_off.SkipTo(hand_off.Target());
  EXPECT_TRUE(hand_off.Fetched());
  hand_off.BufferLive(Entry(49));
  hand_off.BufferLive(Entry(50));
  const auto buffered = hand_off.GoLive();
  std::vector<int64_t> delivered;
  for (const auto& entry : buffered) {
    if (hand_off.AcceptLive(entry->offset)) delivered.push_back(entry->offset);
  }
  EXPECT_EQ(delivered, std::vector<int64_t>{50});
}

// A partition's log grows while the session catches up in random pieces; live events reach
// it with random delays, sometimes twice, and the buffer sometimes overflows. Whatever the
// interleaving, the client receives exactly the offsets from its cursor to the end, in order.
TEST(HandOff, RandomInterleavingsLoseDuplicateAndReorderNothing) {
  std::mt19937 random(20261203);
  int overflows = 0;
  for (int round = 0; round < 2'000; ++round) {
    const int64_t cursor = std::uniform_int_distribution<int64_t>(0, 40)(random);
    int64_t log_end = cursor + std::uniform_int_distribution<int64_t>(0, 60)(random);
    const size_t max_frames = std::uniform_int_distribution<size_t>(1, 20)(random);
    HandOff hand_off({max_frames, 1 << 20});
    hand_off.Start(cursor, log_end);  // attached when the log ended at log_end
    std::vector<int64_t> delivered;
    std::vector<int64_t> live_pending;  // dispatched by the tailer, not yet seen by the session
    int64_t dispatched = log_end;
    bool live = false;
    for (int step = 0; step < 400 && (!live || dispatched < log_end + 30); ++step) {
      switch (std::uniform_int_distribution<int>(0, 2)(random)) {
        case 0:  // the topic grows; the tailer dispatches (some events twice, as on a re-seek)
          live_pending.push_back(dispatched);
          if (random() % 7 == 0) live_pending.push_back(dispatched);
          ++dispatched;
          break;
        case 1:  // the session handles one dispatched event
          if (!live_pending.empty()) {
            auto entry = Entry(live_pending.front());
            live_pending.erase(live_pending.begin());
            if (!live) {
              overflows += hand_off.BufferLive(entry) == HandOff::Buffered::kOverflowedNow;
            } else if (hand_off.AcceptLive(entry->offset)) {
              delivered.push_back(entry->offset);
            }
          }
          break;
        case 2:  // the session fetches a piece of the catch-up, up to its target
          if (live) break;
          if (!hand_off.Fetched()) {
            const int64_t end = std::min(
                hand_off.Target(),
                hand_off.Position() + std::uniform_int_distribution<int64_t>(1, 8)(random));
            // A piece may start a little before the position (a Kafka read re-reading).
            const int64_t from = std::max<int64_t>(cursor, hand_off.Position() - random() % 3);
            for (int64_t offset = from; offset < end; ++offset) {
              if (hand_off.TakeCatchup(offset)) delivered.push_back(offset);
            }
            hand_off.Advance(end);
          } else if (hand_off.LiveOverflowed()) {
            hand_off.ExtendTo(dispatched);  // the hub's DispatchedEnd
          } else {
            live = true;
            for (const auto& entry : hand_off.GoLive()) {
              if (hand_off.AcceptLive(entry->offset)) delivered.push_back(entry->offset);
            }
          }
          break;
      }
    }
    // Drain what is left: finish the catch-up, go live, handle every dispatched event.
    while (!live) {
      if (!hand_off.Fetched()) {
        for (int64_t offset = hand_off.Position(); offset < hand_off.Target(); ++offset) {
          if (hand_off.TakeCatchup(offset)) delivered.push_back(offset);
        }
        hand_off.Advance(hand_off.Target());
      } else if (hand_off.LiveOverflowed()) {
        hand_off.ExtendTo(dispatched);
      } else {
        live = true;
        for (const auto& entry : hand_off.GoLive()) {
          if (hand_off.AcceptLive(entry->offset)) delivered.push_back(entry->offset);
        }
      }
    }
    for (const int64_t offset : live_pending) {
      if (hand_off.AcceptLive(offset)) delivered.push_back(offset);
    }
    std::vector<int64_t> expected(static_cast<size_t>(dispatched - cursor));
    std::iota(expected.begin(), expected.end(), cursor);
    ASSERT_EQ(delivered, expected) << "round " << round << " cursor " << cursor;
  }
  EXPECT_GT(overflows, 50) << "the rounds must exercise the overflow path";
}

}  // namespace
}  // namespace agentwire::gateway
