// The supervisor's per-partition run state (supervisor/src/partition_runs.hpp), with a manual
// clock: leases, Stops, the first terminal winning, and runs of two users that share a run id
// (workers choose run ids; one user's run must never shadow, end or be stopped by another's).
#include "partition_runs.hpp"

#include <gtest/gtest.h>

namespace agentwire::supervisor::internal {
namespace {

using namespace std::chrono_literals;

v1::AgentEvent Event(const std::string& user, const std::string& run, uint32_t seq) {
  v1::AgentEvent event;
  event.set_user_id(user);
  event.set_run_id(run);
  event.set_thread_id("t");
  event.set_run_seq(seq);
  return event;
}

v1::AgentEvent Started(const std::string& user, const std::string& run, uint32_t lease_ms) {
  auto event = Event(user, run, 1);
  event.mutable_agent_started()->set_lease_ms(lease_ms);
  return event;
}

v1::ControlRecord Cancel(const std::string& user, const std::string& run) {
  v1::ControlRecord record;
  record.set_user_id(user);
  record.set_run_id(run);
  record.mutable_cancel()->set_request_id("req");
  return record;
}

TEST(PartitionRuns, TwoUsersRunsWithOneIdAreTwoRuns) {
  PartitionRuns runs;
  const Clock::time_point t0{};
  runs.OnEvent(Started("alice", "r-1", 1000), 10, t0);
  auto end = Event("alice", "r-1", 2);
  end.mutable_agent_completed();
  EXPECT_TRUE(runs.OnEvent(end, 11, t0).ended);
  // Bob's run of the same id starts after alice's ended: it is a run, not a late event.
  const auto bob = runs.OnEvent(Started("bob", "r-1", 1000), 12, t0);
  EXPECT_FALSE(bob.late);
  ASSERT_NE(runs.Find("bob", "r-1"), nullptr);
  EXPECT_EQ(runs.Find("alice", "r-1"), nullptr);
  // Alice's zombie event is late; it does not refresh bob's lease.
  EXPECT_TRUE(runs.OnEvent(Event("alice", "r-1", 3), 13, t0 + 900ms).late);
  const auto due = runs.DueRuns(t0 + 1500ms, 10s);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].user, "bob");
  EXPECT_EQ(due[0].reason, EndReason::kWorkerLost);
}

TEST(PartitionRuns, AStopNamingAnotherUsersRunIsForgedAndStopsNothing) {
  PartitionRuns runs;
  const Clock::time_point t0{};
  runs.OnEvent(Started("alice", "r-1", 0), 1, t0);
  EXPECT_TRUE(runs.OnCancel(Cancel("mallory", "r-1"), 5, t0).forged);
  EXPECT_TRUE(runs.DueRuns(t0 + 1h, 10s).empty());
  EXPECT_FALSE(runs.OnCancel(Cancel("alice", "r-1"), 6, t0).forged);
  EXPECT_TRUE(runs.DueRuns(t0 + 9s, 10s).empty());
  const auto due = runs.DueRuns(t0 + 10s, 10s);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].reason, EndReason::kCancelled);
  EXPECT_EQ(runs.OldestPendingCancel(), 6);
}

TEST(PartitionRuns, HeartbeatsOfTheRunsUserOnlyKeepItAlive) {
  PartitionRuns runs;
  const Clock::time_point t0{};
  runs.OnEvent(Started("alice", "r-1", 1000), 1, t0);
  v1::ControlRecord beat;
  beat.set_user_id("mallory");
  beat.set_run_id("r-1");
  beat.mutable_heartbeat();
  runs.OnHeartbeat(beat, t0 + 900ms);
  EXPECT_EQ(runs.DueRuns(t0 + 1100ms, 10s).size(), 1u);
  beat.set_user_id("alice");
  runs.OnHeartbeat(beat, t0 + 1000ms);
  EXPECT_TRUE(runs.DueRuns(t0 + 1900ms, 10s).empty());
  runs.MarkEnding("alice", "r-1", true);
  EXPECT_TRUE(runs.DueRuns(t0 + 1h, 10s).empty());  // never twice while its end is on the way
}

}  // namespace
}  // namespace agentwire::supervisor::internal
