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
  for (uint32_t seq : {3, 1, 2}) tracker.Add(Event("shuffled", seq, seq == 3));
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
