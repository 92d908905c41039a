// PartitionHub: attach, dispatch, detach, the cache and its coverage, and the teardown race
// that used to freeze a partition.
#include "partition_hub.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <random>
#include <thread>
#include <vector>

namespace agentwire::gateway {
namespace {

LogEntryPtr Entry(int64_t offset, const std::string& user, size_t frame_bytes = 100) {
  auto entry = std::make_shared<LogEntry>();
  entry->offset = offset;
  entry->user_id = user;
  entry->SetFrame(std::make_shared<const std::string>(frame_bytes, 'x'));
  return entry;
}

/// Records what the hub hands it; detaches itself on destruction, as Session does.
class RecordingListener final : public LiveListener {
 public:
  RecordingListener(PartitionHub& hub, std::string user, int partition = 0)
      : hub_(hub), user_(std::move(user)), partition_(partition) {}
  ~RecordingListener() override { hub_.Detach(partition_, user_, this); }
  void OnLive(const LogEntryPtr& entry) override {
    std::lock_guard lock(mutex_);
    offsets_.push_back(entry->offset);
  }
  void OnTailStarted(int64_t start_offset) override {
    std::lock_guard lock(mutex_);
    tail_starts_.push_back(start_offset);
  }
  std::vector<int64_t> Offsets() {
    std::lock_guard lock(mutex_);
    return offsets_;
  }
  std::vector<int64_t> TailStarts() {
    std::lock_guard lock(mutex_);
    return tail_starts_;
  }

 private:
  PartitionHub& hub_;
  std::string user_;
  int partition_;
  std::mutex mutex_;
  std::vector<int64_t> offsets_;
  std::vector<int64_t> tail_starts_;
};

// --tail auto: the first listener of a partition nobody tails asks for its tail once, learns
// its attach point from OnTailStarted, and gets every entry from there on; nothing dispatched
// for a partition that is not tailed reaches anyone.
TEST(PartitionHubTest, AttachToAnUntailedPartitionRequestsItsTailOnce) {
  PartitionHub hub(4, 1 << 20);
  int wakes = 0;
  hub.SetTailRequestHook([&wakes] { ++wakes; });
  hub.StartTail(0, 5);
  auto on_tailed = std::make_shared<RecordingListener>(hub, "alice", 0);
  EXPECT_EQ(hub.Attach(0, "alice", on_tailed), 5);
  EXPECT_FALSE(hub.HasTailRequests());

  auto first = std::make_shared<RecordingListener>(hub, "bob", 2);
  auto second = std::make_shared<RecordingListener>(hub, "carol", 2);
  EXPECT_EQ(hub.Attach(2, "bob", first), PartitionHub::kNotTailed);
  EXPECT_EQ(hub.Attach(2, "carol", second), PartitionHub::kNotTailed);
  EXPECT_EQ(wakes, 1);
  EXPECT_TRUE(hub.HasTailRequests());
  EXPECT_EQ(hub.TakeTailRequests(), (std::vector<int>{2}));
  EXPECT_FALSE(hub.HasTailRequests());

  hub.Dispatch(2, Entry(40, "bob"));  // fetched before the tail started: nobody's
  EXPECT_TRUE(first->Offsets().empty());
  hub.StartTail(2, 41);
  EXPECT_EQ(first->TailStarts(), (std::vector<int64_t>{41}));
  EXPECT_EQ(second->TailStarts(), (std::vector<int64_t>{41}));
  EXPECT_EQ(on_tailed->TailStarts(), (std::vector<int64_t>{}));
  hub.Dispatch(2, Entry(41, "bob"));
  hub.Dispatch(2, Entry(41, "bob"));  // fetched again after the assignment was renewed
  hub.Dispatch(2, Entry(42, "carol"));
  EXPECT_EQ(first->Offsets(), (std::vector<int64_t>{41}));
  EXPECT_EQ(second->Offsets(), (std::vector<int64_t>{42}));
  EXPECT_EQ(hub.DispatchedEnd(2), 43);
  EXPECT_EQ(hub.TailedCount(), 2);
}

// A tail without listeners for the warm window stops and forgets its cache; one with a
// listener never stops; the next listener asks for it again.
TEST(PartitionHubTest, IdleTailsStopAfterTheirWindowAndStartAgainOnDemand) {
  PartitionHub hub(2, 1 << 20);
  hub.StartTail(0, 0);
  hub.StartTail(1, 0);
  auto listener = std::make_shared<RecordingListener>(hub, "alice", 1);
  EXPECT_EQ(hub.Attach(1, "alice", listener), 0);
  hub.Dispatch(0, Entry(0, "bob"));
  EXPECT_TRUE(hub.StopIdleTails(std::chrono::hours(1)).empty());
  EXPECT_EQ(hub.StopIdleTails(std::chrono::seconds(0)), (std::vector<int>{0}));
  EXPECT_FALSE(hub.Tailed(0));
  EXPECT_TRUE(hub.Tailed(1));
  EXPECT_EQ(hub.CachedBytes(), 0U);

  listener.reset();  // detaches: partition 1 is idle from now
  EXPECT_TRUE(hub.StopIdleTails(std::chrono::hours(1)).empty());
  EXPECT_EQ(hub.StopIdleTails(std::chrono::seconds(0)), (std::vector<int>{1}));

  auto again = std::make_shared<RecordingListener>(hub, "bob", 0);
  EXPECT_EQ(hub.Attach(0, "bob", again), PartitionHub::kNotTailed);
  EXPECT_EQ(hub.TakeTailRequests(), (std::vector<int>{0}));
  hub.StartTail(0, 7);
  const auto read = hub.ReadCached(0, "bob", 0, 7, 1 << 20);
  EXPECT_FALSE(read.covered) << "the old cache must not pretend to cover the new tail";
}

TEST(PartitionHubTest, DispatchReachesOnlyTheUsersListenersFromTheirAttachPoint) {
  PartitionHub hub(2, 1 << 20);
  hub.StartTail(0, 10);
  auto alice = std::make_shared<RecordingListener>(hub, "alice");
  auto bob = std::make_shared<RecordingListener>(hub, "bob");
  EXPECT_EQ(hub.Attach(0, "alice", alice), 10);
  hub.Dispatch(0, Entry(10, "alice"));
  EXPECT_EQ(hub.Attach(0, "bob", bob), 11);
  hub.Dispatch(0, Entry(11, "bob"));
  hub.Dispatch(0, Entry(12, "alice"));
  EXPECT_EQ(alice->Offsets(), (std::vector<int64_t>{10, 12}));
  EXPECT_EQ(bob->Offsets(), (std::vector<int64_t>{11}));
  EXPECT_EQ(hub.DispatchedEnd(0), 13);
  EXPECT_EQ(hub.DispatchedEnd(1), -1);  // never started
}

TEST(PartitionHubTest, DetachedAndDestroyedListenersGetNothingMore) {
  PartitionHub hub(1, 1 << 20);
  hub.StartTail(0, 0);
  auto kept = std::make_shared<RecordingListener>(hub, "alice");
  auto gone = std::make_shared<RecordingListener>(hub, "alice");
  hub.Attach(0, "alice", kept);
  hub.Attach(0, "alice", gone);
  hub.Dispatch(0, Entry(0, "alice"));
  gone.reset();
  hub.Dispatch(0, Entry(1, "alice"));
  EXPECT_EQ(kept->Offsets(), (std::vector<int64_t>{0, 1}));
}

TEST(PartitionHubTest, ReadCachedReturnsTheUsersEntriesInChunksWithinCoverage) {
  PartitionHub hub(1, 1 << 20);
  hub.StartTail(0, 100);
  for (int64_t o = 100; o < 200; ++o) hub.Dispatch(0, Entry(o, o % 2 ? "bob" : "alice"));
  hub.Skip(0, 200);  // an undecodable message: covered, nothing to deliver

  // Older than what the cache covers: the caller must read Kafka.
  EXPECT_FALSE(hub.ReadCached(0, "alice", 99, 201, 1 << 20).covered);

  std::vector<int64_t> got;
  int64_t from = 120;
  int reads = 0;
  while (from < 201) {
    const auto read = hub.ReadCached(0, "alice", from, 201, 350);  // ~3 entries a chunk
    ASSERT_TRUE(read.covered);
    ASSERT_GT(read.next_offset, from);
    for (const auto& e : read.entries) got.push_back(e->offset);
    from = read.next_offset;
    ++reads;
  }
  EXPECT_GT(reads, 5);
  ASSERT_EQ(got.size(), 40u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], 120 + 2 * static_cast<int64_t>(i));
  EXPECT_EQ(from, 201);
}

TEST(PartitionHubTest, EvictionMovesCoverageForward) {
  // 1 partition, budget for about 10 entries of ~260 bytes.
  PartitionHub hub(1, 2'600);
  hub.StartTail(0, 0);
  for (int64_t o = 0; o < 50; ++o) hub.Dispatch(0, Entry(o, "alice"));
  EXPECT_FALSE(hub.ReadCached(0, "alice", 0, 50, 1 << 20).covered);
  const auto read = hub.ReadCached(0, "alice", 45, 50, 1 << 20);
  ASSERT_TRUE(read.covered);
  EXPECT_EQ(read.entries.size(), 5u);
  EXPECT_LE(hub.CachedBytes(), 2'600u);
}

// One huge event (a megabyte of '<' is a 6 MB frame) used to evict the whole partition's
// cache. Now it is kept without its frame: the entries around it stay cached, listeners still
// get the whole entry live, and a reader is sent to Kafka for that one offset only.
TEST(PartitionHubTest, AnEntryTooLargeToCacheLeavesTheRestCachedAndSendsReadersToKafkaForIt) {
  // 1 partition with a 64 KiB share: an entry over 8 KiB is too large to cache.
  PartitionHub hub(1, 64 * 1024);
  hub.StartTail(0, 0);
  auto alice = std::make_shared<RecordingListener>(hub, "alice");
  hub.Attach(0, "alice", alice);
  for (int64_t o = 0; o < 20; ++o) hub.Dispatch(0, Entry(o, o % 2 == 0 ? "alice" : "bob"));
  hub.Dispatch(0, Entry(20, "bob", 60 * 1024));    // another user's: skipped by alice's reads
  hub.Dispatch(0, Entry(21, "alice", 60 * 1024));  // alice's: read from Kafka
  for (int64_t o = 22; o < 30; ++o) hub.Dispatch(0, Entry(o, "alice"));

  EXPECT_EQ(alice->Offsets().size(), 19u) << "live delivery is unchanged";
  EXPECT_LT(hub.CachedBytes(), 16u * 1024) << "the frames of the huge entries are not kept";

  // Alice's catch-up from 0: cache, then Kafka for [21, 22), then cache again.
  auto read = hub.ReadCached(0, "alice", 0, 30, 1 << 20);
  ASSERT_TRUE(read.covered) << "nothing before the huge entries was evicted";
  ASSERT_EQ(read.entries.size(), 10u);
  EXPECT_EQ(read.entries.back()->offset, 18);
  EXPECT_EQ(read.next_offset, 21);
  read = hub.ReadCached(0, "alice", 21, 30, 1 << 20);
  EXPECT_FALSE(read.covered);
  EXPECT_EQ(read.next_offset, 22) << "Kafka serves that one offset";
  read = hub.ReadCached(0, "alice", 22, 30, 1 << 20);
  ASSERT_TRUE(read.covered);
  EXPECT_EQ(read.entries.size(), 8u);
  EXPECT_EQ(read.next_offset, 30);

  // Bob's huge entry at the front of a read: Kafka for it, then the cache.
  read = hub.ReadCached(0, "bob", 19, 30, 1 << 20);
  ASSERT_TRUE(read.covered);
  EXPECT_EQ(read.entries.size(), 1u);
  EXPECT_EQ(read.next_offset, 20);
  read = hub.ReadCached(0, "bob", 20, 30, 1 << 20);
  EXPECT_FALSE(read.covered);
  EXPECT_EQ(read.next_offset, 21);
  // A read older than the cache is sent to Kafka for its whole range.
  PartitionHub small(1, 2'600);
  small.StartTail(0, 0);
  for (int64_t o = 0; o < 50; ++o) small.Dispatch(0, Entry(o, "alice"));
  read = small.ReadCached(0, "alice", 0, 50, 1 << 20);
  EXPECT_FALSE(read.covered);
  EXPECT_EQ(read.next_offset, 50);
}

TEST(PartitionHubTest, GapDropsTheCacheAndReachesEveryListenerOfThePartition) {
  PartitionHub hub(1, 1 << 20);
  hub.StartTail(0, 0);
  auto alice = std::make_shared<RecordingListener>(hub, "alice");
  auto bob = std::make_shared<RecordingListener>(hub, "bob");
  hub.Attach(0, "alice", alice);
  hub.Attach(0, "bob", bob);
  hub.Dispatch(0, Entry(0, "alice"));
  hub.Gap(0, 40);
  EXPECT_EQ(hub.DispatchedEnd(0), 40);
  EXPECT_FALSE(hub.ReadCached(0, "alice", 0, 40, 1 << 20).covered);
  EXPECT_EQ(alice->Offsets(), (std::vector<int64_t>{0, 39}));
  EXPECT_EQ(bob->Offsets(), (std::vector<int64_t>{39}));
}

// Many sessions of one user torn down at once on several threads while events flow. Detach
// used to lock() the other listeners' weak pointers under the partition mutex: when that
// temporary became the last owner, the listener's destructor ran inside Detach and called
// Detach again on the same mutex (a frozen partition in practice). Fails by hanging.
TEST(PartitionHubTest, ConcurrentTeardownOfOneUsersListenersNeverDeadlocks) {
  PartitionHub hub(1, 1 << 16);
  hub.StartTail(0, 0);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> dispatched{0};
  auto work = std::async(std::launch::async, [&] {
    std::thread dispatcher([&] {
      for (int64_t o = 0; !stop.load(); ++o) {
        hub.Dispatch(0, Entry(o, "alice", 16));
        dispatched.store(o + 1);
      }
    });
    std::vector<std::thread> threads;
    threads.reserve(6);
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&hub, t] {
        std::mt19937 random(static_cast<unsigned>(t));
        std::vector<std::shared_ptr<RecordingListener>> mine;
        for (int round = 0; round < 10'000; ++round) {
          while (mine.size() < 32) {
            mine.push_back(std::make_shared<RecordingListener>(hub, "alice"));
            hub.Attach(0, "alice", mine.back());
          }
          std::shuffle(mine.begin(), mine.end(), random);
          mine.resize(random() % 16);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    stop.store(true);
    dispatcher.join();
  });
  if (work.wait_for(std::chrono::seconds(120)) != std::future_status::ready) {
    std::fprintf(stderr, "PartitionHub deadlocked: teardown froze the partition\n");
    std::abort();  // the frozen threads cannot be joined
  }
  work.get();
  // The partition still works after the storm.
  auto late = std::make_shared<RecordingListener>(hub, "alice");
  const int64_t end = hub.Attach(0, "alice", late);
  hub.Dispatch(0, Entry(end, "alice", 16));
  EXPECT_EQ(late->Offsets(), (std::vector<int64_t>{end}));
  EXPECT_GT(dispatched.load(), 0);
}

}  // namespace
}  // namespace agentwire::gateway

namespace agentwire::gateway {
namespace {

LogEntryPtr RunEvent(int64_t offset, EventKind kind, const std::string& thread,
                     const std::string& run) {
  auto entry = std::make_shared<LogEntry>();
  entry->offset = offset;
  entry->user_id = "alice";
  entry->thread_id = thread;
  entry->run_id = run;
  entry->kind = kind;
  entry->end = RunEndOf(kind, "");
  entry->SetFrame(std::make_shared<const std::string>(16, 'x'));
  return entry;
}

// Past kMaxRunsPerPartition runs that never ended, every agent_started evicts the oldest start.
// That used to scan every indexed run under the partition lock (the tailer's, held for every
// event of the partition): 100,000 runs made each start cost a scan of all of them, here about a
// minute in all. The ordered index needs well under a second; the bound leaves room for a loaded
// machine.
TEST(PartitionHubTest, StartsPastTheRunLimitEvictTheOldestWithoutScanningEveryRun) {
  constexpr int64_t kLimit = static_cast<int64_t>(PartitionHub::kMaxRunsPerPartition);
  constexpr int64_t kWithEnded =
      kLimit + static_cast<int64_t>(PartitionHub::kMaxEndedRunsPerPartition);
  constexpr int64_t kRuns = kLimit + 60'000;
  PartitionHub hub(1, 0);  // no cache: only the run indexes grow
  hub.StartTail(0, 0);
  // A ratio in one run, not a wall-clock bound (a TSan build is 10x slower): a start that
  // evicts from both indexes (past kWithEnded) must cost about what one that evicts nothing
  // costs (below kLimit). A scan of every run per eviction made it ~100x dearer.
  using Clock = std::chrono::steady_clock;
  Clock::duration filling{};
  Clock::duration evicting{};
  for (int64_t i = 0; i < kRuns; ++i) {
    const auto started = Clock::now();
    hub.Dispatch(0, RunEvent(i, EventKind::kAgentStarted, "thread-" + std::to_string(i),
                             "run-" + std::to_string(i)));
    if (i < kLimit) filling += Clock::now() - started;
    if (i >= kWithEnded) evicting += Clock::now() - started;
  }
  const double per_filling = std::chrono::duration<double>(filling).count() / kLimit;
  const double per_evicting =
      std::chrono::duration<double>(evicting).count() / static_cast<double>(kRuns - kWithEnded);
  EXPECT_LT(per_evicting, 20 * per_filling)
      << "evicting the oldest start scans every run: " << per_evicting * 1e6 << " us vs "
      << per_filling * 1e6 << " us per start";
  // The oldest starts were dropped, the newest kept, in both indexes.
  const auto thread = [](int64_t i) { return "thread-" + std::to_string(i); };
  const auto run = [](int64_t i) { return "run-" + std::to_string(i); };
  EXPECT_FALSE(hub.RunOf(0, "alice", thread(0)).has_value());
  EXPECT_FALSE(hub.RunOf(0, "alice", thread(kRuns - kLimit - 1)).has_value());
  EXPECT_TRUE(hub.RunOf(0, "alice", thread(kRuns - kLimit)).has_value());
  EXPECT_TRUE(hub.RunOf(0, "alice", thread(kRuns - 1)).has_value());
  EXPECT_FALSE(hub.RunById(0, "alice", run(kRuns - kWithEnded - 1)).has_value());
  EXPECT_TRUE(hub.RunById(0, "alice", run(kRuns - kWithEnded)).has_value());
  EXPECT_TRUE(hub.RunById(0, "alice", run(kRuns - 1)).has_value());
}

TEST(PartitionHubTest, EvictionOfOpenRunsSkipsEndedAndRestartedOnes) {
  PartitionHub hub(1, 0);
  hub.StartTail(0, 0);
  int64_t offset = 0;
  // thread-a: a run that ended; thread-b restarted with a newer run: neither is the oldest
  // open start any more.
  hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, "thread-a", "run-a"));
  hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, "thread-b", "run-b1"));
  hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentCompleted, "thread-a", "run-a"));
  hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, "thread-c", "run-c"));
  hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, "thread-b", "run-b2"));
  for (size_t i = 0; i + 2 < PartitionHub::kMaxRunsPerPartition; ++i) {
    hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, "t-" + std::to_string(i),
                             "r-" + std::to_string(i)));
  }
  // Exactly at the limit: everything kept.
  EXPECT_TRUE(hub.RunOf(0, "alice", "thread-c").has_value());
  hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, "one-more", "r-more"));
  // One over: the oldest open start goes (thread-c), not thread-b's newer run.
  EXPECT_FALSE(hub.RunOf(0, "alice", "thread-c").has_value());
  ASSERT_TRUE(hub.RunOf(0, "alice", "thread-b").has_value());
  EXPECT_EQ(hub.RunOf(0, "alice", "thread-b")->run_id, "run-b2");
  EXPECT_TRUE(hub.RunOf(0, "alice", "one-more").has_value());
}

// Runs that end in any order leave holes in the index of starts; the oldest open start is still
// the one evicted once the limit is passed.
TEST(PartitionHubTest, EvictionFindsTheOldestOpenStartAfterManyRunsEndedOutOfOrder) {
  constexpr size_t kLimit = PartitionHub::kMaxRunsPerPartition;
  PartitionHub hub(1, 0);
  hub.StartTail(0, 0);
  int64_t offset = 0;
  const auto thread = [](size_t i) { return "t-" + std::to_string(i); };
  const auto run = [](size_t i) { return "r-" + std::to_string(i); };
  for (size_t i = 0; i < kLimit; ++i) {
    hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, thread(i), run(i)));
  }
  // Every even run ends, newest first: holes all over the index, none at its front at first.
  for (size_t i = kLimit; i-- > 0;) {
    if (i % 2 == 0) {
      hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentCompleted, thread(i), run(i)));
    }
  }
  EXPECT_FALSE(hub.RunOf(0, "alice", thread(0)).has_value());
  ASSERT_TRUE(hub.RunOf(0, "alice", thread(1)).has_value());
  // Up to the limit again, then two more: the two oldest open starts (1 and 3) go.
  for (size_t i = kLimit; i < kLimit + kLimit / 2 + 2; ++i) {
    hub.Dispatch(0, RunEvent(offset++, EventKind::kAgentStarted, thread(i), run(i)));
  }
  EXPECT_FALSE(hub.RunOf(0, "alice", thread(1)).has_value());
  EXPECT_FALSE(hub.RunOf(0, "alice", thread(3)).has_value());
  ASSERT_TRUE(hub.RunOf(0, "alice", thread(5)).has_value());
  EXPECT_EQ(hub.RunOf(0, "alice", thread(5))->run_id, run(5));
  EXPECT_TRUE(hub.RunOf(0, "alice", thread(kLimit + kLimit / 2 + 1)).has_value());
  EXPECT_TRUE(hub.RunById(0, "alice", run(kLimit - 1)).has_value());
}

// A late event (after its run's end) is never handed on, however many runs ended before: the
// dispatch path asks a filter of the ended runs first, which is rebuilt as ended runs are
// forgotten; it may answer "maybe" for an open run (then the run index decides) but never "no"
// for one that ended.
TEST(PartitionHubTest, LateEventsAreCaughtAcrossRebuildsOfTheEndedRunsFilter) {
  PartitionHub hub(1, 0);
  hub.StartTail(0, 0);
  auto listener = std::make_shared<RecordingListener>(hub, "alice");
  ASSERT_EQ(hub.Attach(0, "alice", listener), 0);
  constexpr size_t kEnded = PartitionHub::kMaxEndedRunsPerPartition * 3 + 10;  // two rebuilds
  int64_t offset = 0;
  std::vector<int64_t> delivered;
  for (size_t i = 0; i < kEnded; ++i) {
    const std::string run = "r-" + std::to_string(i);
    hub.Dispatch(0, RunEvent(offset, EventKind::kAgentStarted, "t", run));
    delivered.push_back(offset++);
    hub.Dispatch(0, RunEvent(offset, EventKind::kAgentCompleted, "t", run));
    delivered.push_back(offset++);
  }
  const std::string open_run = "open";
  hub.Dispatch(0, RunEvent(offset, EventKind::kAgentStarted, "t2", open_run));
  delivered.push_back(offset++);
  // Late events of the runs ended last (still remembered), before and after the last rebuild.
  for (const size_t i :
       {kEnded - 1, kEnded - 5, kEnded - PartitionHub::kMaxEndedRunsPerPartition}) {
    const auto late = RunEvent(offset++, EventKind::kMessageDelta, "t", "r-" + std::to_string(i));
    EXPECT_TRUE(hub.IsLate(0, *late)) << i;
    hub.Dispatch(0, late);
  }
  // The open run's events and those of a run forgotten long ago pass.
  hub.Dispatch(0, RunEvent(offset, EventKind::kMessageDelta, "t2", open_run));
  delivered.push_back(offset++);
  const auto forgotten = RunEvent(offset, EventKind::kMessageDelta, "t", "r-0");
  EXPECT_FALSE(hub.IsLate(0, *forgotten));
  hub.Dispatch(0, forgotten);
  delivered.push_back(offset++);
  EXPECT_EQ(listener->Offsets(), delivered);
  EXPECT_EQ(hub.DispatchedEnd(0), offset);
}

}  // namespace
}  // namespace agentwire::gateway
