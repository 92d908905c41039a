// GapTracker: `agentwire replay --gaps`, the SRE's check for runs that lost events or never
// ended (the bug class agentwire exists to remove).
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "replay_internal.hpp"

namespace agentwire::consumers::replay {
namespace {

v1::AgentEvent Event(const std::string& run, uint32_t seq, bool terminal = false) {
  v1::AgentEvent event;
  event.set_user_id("u-" + run);
  event.set_thread_id("t-" + run);
  event.set_run_id(run);
  event.set_run_seq(seq);
  if (terminal) {
    event.mutable_agent_completed()->set_result("ok");
  } else {
    event.mutable_agent_thinking()->set_text("...");
  }
  return event;
}

TEST(GapTracker, FindsHolesMissingTerminalsAndDuplicates) {
  GapTracker tracker;
  for (uint32_t seq : {1, 2, 3}) tracker.Add(Event("clean", seq, seq == 3));
  for (uint32_t seq : {1, 2, 5, 6}) tracker.Add(Event("holes", seq, seq == 6));
  for (uint32_t seq : {1, 2}) tracker.Add(Event("unfinished", seq));
  for (uint32_t seq : {1, 2, 2, 3}) tracker.Add(Event("twice", seq, seq == 3));
  // run_seq out of order before the end (the end is the last in the log).
  for (uint32_t seq : {2, 1, 3}) tracker.Add(Event("shuffled", seq, seq == 3));
  std::ostringstream out;
  tracker.Report(out, /*selection_is_partial=*/false);
  const std::string report = out.str();
  EXPECT_EQ(tracker.Runs(), 5u);
  EXPECT_EQ(tracker.RunsWithHoles(), 1u) << report;
  EXPECT_EQ(tracker.RunsWithoutTerminal(), 1u) << report;
  EXPECT_NE(report.find("run holes"), std::string::npos) << report;
  EXPECT_NE(report.find("missing run_seq 3-4"), std::string::npos) << report;
  EXPECT_NE(report.find("run unfinished"), std::string::npos) << report;
  EXPECT_NE(report.find("no terminal event (last: run_seq 2 agent_thinking"), std::string::npos)
      << report;
  EXPECT_NE(report.find("duplicated run_seq 2"), std::string::npos) << report;
  EXPECT_EQ(report.find("run clean"), std::string::npos) << "a clean run is not reported";
  EXPECT_EQ(report.find("run shuffled"), std::string::npos) << "order of arrival does not matter";
  EXPECT_EQ(tracker.RunsWithLateEvents(), 0u) << report;
  EXPECT_EQ(tracker.LateEvents(), 0u) << report;
  EXPECT_EQ(tracker.RunsWithSeveralTerminals(), 0u) << report;
}

v1::AgentEvent Failed(const std::string& run, uint32_t seq, const std::string& code) {
  v1::AgentEvent event = Event(run, seq);
  event.mutable_agent_failed()->set_error_code(code);
  event.mutable_agent_failed()->set_message("...");
  return event;
}

// docs/runs.md: the first terminal event ends the run; what follows it in the log is late.
TEST(GapTracker, EventsAfterTheFirstEndAreLateAndNamedPerRun) {
  GapTracker tracker;
  // The supervisor ended a silent run (worker_lost at run_seq 3, one past the last it saw);
  // the zombie worker wakes up and goes on with its own run_seq 3 and 4.
  tracker.Add(Event("zombie", 1));
  tracker.Add(Event("zombie", 2));
  tracker.Add(Failed("zombie", 3, "worker_lost"));
  tracker.Add(Event("zombie", 3));
  tracker.Add(Event("zombie", 4, /*terminal=*/true));
  // Stopped by the user; the worker still had a thought in flight.
  tracker.Add(Event("stopped", 1));
  tracker.Add(Failed("stopped", 2, "cancelled"));
  tracker.Add(Event("stopped", 3));
  // Two ends racing: the second is late, and the run is not "without a terminal event".
  tracker.Add(Event("raced", 1));
  tracker.Add(Failed("raced", 2, "cancelled"));
  tracker.Add(Event("raced", 3, /*terminal=*/true));
  // A clean run for contrast.
  for (uint32_t seq : {1, 2}) tracker.Add(Event("clean", seq, seq == 2));
  std::ostringstream out;
  tracker.Report(out, /*selection_is_partial=*/false);
  const std::string report = out.str();

  EXPECT_EQ(tracker.Runs(), 4u);
  EXPECT_EQ(tracker.RunsWithoutTerminal(), 0u) << report;
  EXPECT_EQ(tracker.RunsWithHoles(), 0u) << report;
  EXPECT_EQ(tracker.RunsWithLateEvents(), 3u) << report;
  EXPECT_EQ(tracker.LateEvents(), 4u) << report;
  EXPECT_EQ(tracker.RunsWithSeveralTerminals(), 2u) << report;
  EXPECT_NE(report.find("run zombie (user u-zombie, thread t-zombie): 2 late events after its "
                        "end at run_seq 3 (agent_failed worker_lost), 1 of them terminal\n"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("run stopped (user u-stopped, thread t-stopped): 1 late event after its "
                        "end at run_seq 2 (agent_failed cancelled)\n"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("run raced (user u-raced, thread t-raced): 1 late event after its end at "
                        "run_seq 2 (agent_failed cancelled), 1 of them terminal\n"),
            std::string::npos)
      << report;
  // The zombie's run_seq 3 repeats the supervisor's: late, not a duplicate of the run.
  EXPECT_EQ(report.find("duplicated"), std::string::npos) << report;
  EXPECT_EQ(report.find("run clean"), std::string::npos) << report;
  EXPECT_NE(report.find("gap report: 4 runs; 0 with run_seq holes, 0 without a terminal event "
                        "(agent_completed/agent_failed), 3 with late events after their end (4 "
                        "events), 2 with more than one terminal event\n"),
            std::string::npos)
      << report;
}

TEST(GapTracker, TheEndDeliveredTwiceIsADuplicateNotALateEnd) {
  GapTracker tracker;
  v1::AgentEvent end = Event("retried", 2, /*terminal=*/true);
  end.set_event_id("ev-end");
  tracker.Add(Event("retried", 1));
  tracker.Add(end);
  tracker.Add(end);  // a producer retry without idempotence
  std::ostringstream out;
  tracker.Report(out, false);
  EXPECT_EQ(tracker.RunsWithLateEvents(), 0u) << out.str();
  EXPECT_EQ(tracker.RunsWithSeveralTerminals(), 0u) << out.str();
  EXPECT_NE(out.str().find("duplicated run_seq 2"), std::string::npos) << out.str();
}

TEST(GapTracker, HolesAreLookedForOnlyUpToTheEnd) {
  GapTracker tracker;
  // run_seq 3 arrives after the end: the user's window never showed it (a hole), and it is late.
  for (uint32_t seq : {1, 2, 4}) tracker.Add(Event("reordered", seq, seq == 4));
  tracker.Add(Event("reordered", 3));
  std::ostringstream out;
  tracker.Report(out, false);
  EXPECT_EQ(tracker.RunsWithHoles(), 1u) << out.str();
  EXPECT_EQ(tracker.LateEvents(), 1u) << out.str();
  EXPECT_NE(out.str().find("missing run_seq 3; 1 late event after its end at run_seq 4 "
                           "(agent_completed)"),
            std::string::npos)
      << out.str();
}

TEST(GapTracker, AMissingStartIsAHoleUnlessTheSelectionIsPartial) {
  GapTracker whole;
  for (uint32_t seq : {3, 4}) whole.Add(Event("late", seq, seq == 4));
  std::ostringstream out;
  whole.Report(out, false);
  EXPECT_EQ(whole.RunsWithHoles(), 1u);
  EXPECT_NE(out.str().find("missing run_seq 1-2"), std::string::npos) << out.str();

  GapTracker partial;
  for (uint32_t seq : {3, 4}) partial.Add(Event("late", seq, seq == 4));
  std::ostringstream partial_out;
  partial.Report(partial_out, true);
  EXPECT_EQ(partial.RunsWithHoles(), 0u) << partial_out.str();
}

TEST(GapTracker, NothingSelected) {
  GapTracker tracker;
  std::ostringstream out;
  tracker.Report(out, false);
  EXPECT_EQ(tracker.Runs(), 0u);
  EXPECT_NE(out.str().find("gap report: 0 runs"), std::string::npos);
}

}  // namespace
}  // namespace agentwire::consumers::replay
