#include "agentwire/producers/run_emitter.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agentwire/producers/event_sink.hpp"
#include "agentwire/producers/simulator.hpp"
#include "agentwire/producers/size_policy.hpp"
#include "agentwire/schemas/event_json.hpp"

namespace agentwire::producers {
namespace {

/// Records every accepted event in publish order. `reject_next` makes the next calls
/// answer kQueueFull without recording, like a full EventPublisher.
class RecordingSink final : public EventSink {
 public:
  PublishStatus Publish(const v1::AgentEvent& event, DeliveryCallback on_delivery,
                        std::chrono::milliseconds /*wait_for_space*/) override {
    std::lock_guard lock(mutex_);
    if (reject_next_ > 0) {
      --reject_next_;
      ++rejected_;
      return PublishStatus::kQueueFull;
    }
    events_.push_back(event);
    if (on_delivery) {
      DeliveryReport report;
      report.event_id = event.event_id();
      report.user_id = event.user_id();
      report.ok = true;
      report.partition = 0;
      report.offset = static_cast<int64_t>(events_.size() - 1);
      on_delivery(report);
    }
    return PublishStatus::kAccepted;
  }

  void RejectNext(int n) {
    std::lock_guard lock(mutex_);
    reject_next_ = n;
  }
  std::vector<v1::AgentEvent> Events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  int Rejected() const {
    std::lock_guard lock(mutex_);
    return rejected_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<v1::AgentEvent> events_;
  int reject_next_ = 0;
  int rejected_ = 0;
};

RunIdentity Alice() {
  RunIdentity identity;
  identity.user_id = "alice";
  identity.thread_id = "t-9";
  identity.run_id = "r-42";
  identity.agent_name = "researcher";
  identity.trace_id = "trace-1";
  identity.attributes = {{"tenant", "acme"}, {"env", "test"}};
  return identity;
}

constexpr auto kNoWait = std::chrono::milliseconds(0);

TEST(RunEmitter, AssignsRunSeqInCallOrderAndCopiesIdentity) {
  RecordingSink sink;
  {
    RunEmitter run(sink, Alice(), kNoWait);
    EXPECT_EQ(run.NextSeq(), 1U);
    ASSERT_EQ(run.Started("question", "model-x"), PublishStatus::kAccepted);
    ASSERT_EQ(run.Thinking("hmm"), PublishStatus::kAccepted);
    ASSERT_EQ(run.ToolExecuting("web_search", "{}", "call-1"), PublishStatus::kAccepted);
    ASSERT_EQ(run.ToolCompleted("web_search", "3 results", 812, "", "call-1"),
              PublishStatus::kAccepted);
    ASSERT_EQ(run.MessageDelta("part 1"), PublishStatus::kAccepted);
    EXPECT_EQ(run.NextSeq(), 6U);
    EXPECT_FALSE(run.Finished());
    ASSERT_EQ(run.Completed("answer", 1234), PublishStatus::kAccepted);
    EXPECT_TRUE(run.Finished());
  }
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), 6U) << "no abandoned-run event after a completed run";
  const std::vector<std::string> types = {"agent_started",  "agent_thinking", "tool_executing",
                                          "tool_completed", "message_delta",  "agent_completed"};
  std::set<std::string> ids;
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    SCOPED_TRACE(schemas::ToJson(e));
    EXPECT_EQ(e.run_seq(), i + 1);
    EXPECT_EQ(schemas::EventType(e), types[i]);
    EXPECT_EQ(e.user_id(), "alice");
    EXPECT_EQ(e.thread_id(), "t-9");
    EXPECT_EQ(e.run_id(), "r-42");
    EXPECT_EQ(e.agent_name(), "researcher");
    EXPECT_EQ(e.trace_id(), "trace-1");
    ASSERT_EQ(e.attributes().size(), 2U);
    EXPECT_EQ(e.attributes().at("tenant"), "acme");
    EXPECT_EQ(e.event_id().size(), 26U);
    EXPECT_TRUE(e.has_emitted_at());
    EXPECT_GT(e.emitted_at().seconds(), 0);
    EXPECT_FALSE(schemas::Validate(e));
    ids.insert(e.event_id());
  }
  EXPECT_EQ(ids.size(), events.size()) << "event ids are unique";
  EXPECT_EQ(events[0].agent_started().input(), "question");
  EXPECT_EQ(events[0].agent_started().model(), "model-x");
  EXPECT_EQ(events[3].tool_completed().duration_ms(), 812U);
  EXPECT_EQ(events[3].tool_completed().tool_call_id(), "call-1");
  EXPECT_EQ(events[5].agent_completed().duration_ms(), 1234U);
}

TEST(RunEmitter, GeneratesRunIdWhenEmpty) {
  RecordingSink sink;
  RunIdentity identity = Alice();
  identity.run_id.clear();
  RunEmitter a(sink, identity, kNoWait);
  RunEmitter b(sink, identity, kNoWait);
  EXPECT_EQ(a.Identity().run_id.size(), 26U);
  EXPECT_NE(a.Identity().run_id, b.Identity().run_id);
  a.Completed("done");
  b.Completed("done");
}

TEST(RunEmitter, TerminalEventClosesTheEmitter) {
  for (const bool complete : {true, false}) {
    RecordingSink sink;
    {
      RunEmitter run(sink, Alice(), kNoWait);
      ASSERT_EQ(run.Started("q"), PublishStatus::kAccepted);
      ASSERT_EQ(complete ? run.Completed("done") : run.Failed("tool_error", "boom"),
                PublishStatus::kAccepted);
      EXPECT_TRUE(run.Finished());
      EXPECT_EQ(run.Thinking("late"), PublishStatus::kClosed);
      EXPECT_EQ(run.Completed("again"), PublishStatus::kClosed);
      EXPECT_EQ(run.Failed("x", "y"), PublishStatus::kClosed);
      EXPECT_EQ(run.NextSeq(), 3U);
    }
    const auto events = sink.Events();
    ASSERT_EQ(events.size(), 2U);
    EXPECT_TRUE(schemas::IsTerminal(events[1]));
  }
}

TEST(RunEmitter, AbandonedRunEmitsExactlyOneAgentFailed) {
  RecordingSink sink;
  {
    RunEmitter run(sink, Alice(), kNoWait);
    ASSERT_EQ(run.Started("q"), PublishStatus::kAccepted);
    ASSERT_EQ(run.Thinking("working"), PublishStatus::kAccepted);
    // The worker crashes / returns early: no Completed() or Failed().
  }
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), 3U);
  const auto& last = events.back();
  ASSERT_TRUE(last.has_agent_failed()) << schemas::ToJson(last);
  EXPECT_EQ(last.agent_failed().error_code(), "run_abandoned");
  EXPECT_FALSE(last.agent_failed().message().empty());
  EXPECT_EQ(last.run_seq(), 3U);
  EXPECT_EQ(last.user_id(), "alice");
  EXPECT_EQ(last.run_id(), "r-42");
  EXPECT_EQ(last.event_id().size(), 26U);
  EXPECT_FALSE(schemas::Validate(last));
}

TEST(RunEmitter, AbandonedBeforeAnyEventStillEnds) {
  RecordingSink sink;
  { RunEmitter run(sink, Alice(), kNoWait); }
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].agent_failed().error_code(), "run_abandoned");
  EXPECT_EQ(events[0].run_seq(), 1U);
}

TEST(RunEmitter, RejectedEventDoesNotConsumeASequenceNumber) {
  RecordingSink sink;
  {
    RunEmitter run(sink, Alice(), kNoWait);
    ASSERT_EQ(run.Started("q"), PublishStatus::kAccepted);
    sink.RejectNext(2);
    EXPECT_EQ(run.Thinking("lost 1"), PublishStatus::kQueueFull);
    EXPECT_EQ(run.Completed("not yet"), PublishStatus::kQueueFull);
    EXPECT_FALSE(run.Finished()) << "a rejected terminal event does not close the run";
    EXPECT_EQ(run.NextSeq(), 2U);
    ASSERT_EQ(run.Thinking("retry"), PublishStatus::kAccepted);
    ASSERT_EQ(run.Completed("done"), PublishStatus::kAccepted);
  }
  EXPECT_EQ(sink.Rejected(), 2);
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), 3U);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].run_seq(), i + 1) << "no holes";
  EXPECT_EQ(events[1].agent_thinking().text(), "retry");
}

TEST(RunEmitter, ForwardsDeliveryReports) {
  RecordingSink sink;
  std::vector<std::string> delivered;
  {
    RunEmitter run(sink, Alice(), kNoWait, [&delivered](const DeliveryReport& report) {
      delivered.push_back(report.event_id);
    });
    run.Started("q");
    run.Completed("done");
  }
  const auto events = sink.Events();
  ASSERT_EQ(delivered.size(), 2U);
  EXPECT_EQ(delivered[0], events[0].event_id());
  EXPECT_EQ(delivered[1], events[1].event_id());
}

TEST(RunEmitter, ConcurrentCallsGiveAGaplessSequenceInPublishOrder) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2'500;
  RecordingSink sink;
  {
    RunEmitter run(sink, Alice(), kNoWait);
    ASSERT_EQ(run.Started("q"), PublishStatus::kAccepted);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&run, &ready, t] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) {
        }
        for (int i = 0; i < kPerThread; ++i) {
          run.Thinking(std::to_string(t) + ":" + std::to_string(i));
        }
      });
    }
    for (auto& thread : threads) thread.join();
    ASSERT_EQ(run.Completed("done"), PublishStatus::kAccepted);
  }
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), static_cast<size_t>(kThreads * kPerThread + 2));
  // The sink's order is publish order: run_seq must be 1, 2, 3, ... in that order.
  std::map<int, int> last_index_per_thread;
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_EQ(events[i].run_seq(), i + 1) << "hole or reordering at publish position " << i;
    if (!events[i].has_agent_thinking()) continue;
    // And each thread's own calls keep their order.
    const auto& text = events[i].agent_thinking().text();
    const int thread = std::stoi(text.substr(0, text.find(':')));
    const int index = std::stoi(text.substr(text.find(':') + 1));
    auto [it, inserted] = last_index_per_thread.try_emplace(thread, -1);
    EXPECT_EQ(index, it->second + 1) << text;
    it->second = index;
  }
  EXPECT_TRUE(events.back().has_agent_completed());
}

TEST(RunEmitter, StampsMicrosecondsThatNeverGoBackWithinTheRun) {
  RecordingSink sink;
  {
    RunEmitter run(sink, Alice(), kNoWait);
    ASSERT_EQ(run.Started("q"), PublishStatus::kAccepted);
    for (int i = 0; i < 500; ++i) ASSERT_EQ(run.Thinking("t"), PublishStatus::kAccepted);
    ASSERT_EQ(run.Completed("done", 5), PublishStatus::kAccepted);
  }
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), 502U);
  std::set<int32_t> distinct;
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& at = events[i].emitted_at();
    EXPECT_NE(at.nanos(), 0) << "sub-second resolution";
    EXPECT_EQ(at.nanos() % 1000, 0) << "whole microseconds";
    distinct.insert(at.nanos());
    if (i > 0) {
      const auto& before = events[i - 1].emitted_at();
      EXPECT_GE(std::pair(at.seconds(), at.nanos()), std::pair(before.seconds(), before.nanos()))
          << "emitted_at went back at run_seq " << events[i].run_seq();
    }
  }
  EXPECT_GT(distinct.size(), 10U) << "the clock moves between events (not whole seconds)";
}

/// A sink that takes at most `max` bytes per event, like an EventPublisher with a smaller
/// message.max.bytes.
class SmallSink final : public EventSink {
 public:
  explicit SmallSink(size_t max) : max_(max) {}
  PublishStatus Publish(const v1::AgentEvent& event, DeliveryCallback /*on_delivery*/,
                        std::chrono::milliseconds /*wait_for_space*/) override {
    if (event.ByteSizeLong() > max_) return {PublishStatus::kTooLarge, {}, "too large"};
    events.push_back(event);
    return PublishStatus::kAccepted;
  }
  size_t MaxEventBytes() const override { return max_; }
  std::vector<v1::AgentEvent> events;

 private:
  size_t max_;
};

TEST(RunEmitter, CutsOversizedTextToFitAndMarksTheEventNeverDroppingIt) {
  std::string page = std::string(5'000'000, 'a');
  for (size_t i = 0; i < page.size(); i += 7) page[i] = 'z';
  RecordingSink sink;  // default limit
  {
    RunEmitter run(sink, Alice(), kNoWait);
    ASSERT_EQ(run.Started("fetch"), PublishStatus::kAccepted);
    ASSERT_EQ(run.ToolCompleted("fetch", page, 10, std::string(3'000'000, 'e'), "c1"),
              PublishStatus::kAccepted);
    ASSERT_EQ(run.MessageDelta("small"), PublishStatus::kAccepted);
    ASSERT_EQ(run.Completed(page, 20), PublishStatus::kAccepted);
  }
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), 4U);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].run_seq(), i + 1);
    EXPECT_LE(events[i].ByteSizeLong(), kDefaultMaxEventBytes);
  }
  EXPECT_FALSE(events[0].has_truncated());
  EXPECT_FALSE(events[2].has_truncated());
  const auto& tool = events[1];
  ASSERT_TRUE(tool.has_truncated());
  EXPECT_EQ(
      std::vector<std::string>(tool.truncated().fields().begin(), tool.truncated().fields().end()),
      (std::vector<std::string>{"output", "error"}));
  EXPECT_GT(tool.truncated().original_bytes(), 8'000'000U);
  EXPECT_EQ(tool.truncated().limit_bytes(), kDefaultMaxEventBytes);
  // Both cut to about half of the room each, keeping their first bytes.
  EXPECT_GT(tool.tool_completed().output().size(), 400'000U);
  EXPECT_GT(tool.tool_completed().error().size(), 400'000U);
  EXPECT_EQ(page.compare(0, tool.tool_completed().output().size(), tool.tool_completed().output()),
            0);
  EXPECT_EQ(tool.tool_completed().tool_call_id(), "c1");
  EXPECT_EQ(tool.tool_completed().duration_ms(), 10U);
  ASSERT_TRUE(events[3].has_agent_completed()) << "the terminal event arrives, cut";
  EXPECT_TRUE(events[3].has_truncated());

  // The limit comes from the sink, or from the caller.
  SmallSink small(10'000);
  {
    RunEmitter run(small, Alice(), kNoWait);
    ASSERT_EQ(run.Thinking(page), PublishStatus::kAccepted);
  }
  ASSERT_EQ(small.events.size(), 2U);
  EXPECT_LE(small.events[0].ByteSizeLong(), 10'000U);
  EXPECT_GT(small.events[0].ByteSizeLong(), 9'000U);
  EXPECT_EQ(small.events[0].truncated().limit_bytes(), 10'000U);
  SmallSink large(2'000'000);
  {
    RunEmitter run(large, Alice(), kNoWait, {}, 5'000);
    ASSERT_EQ(run.Thinking(page), PublishStatus::kAccepted);
  }
  EXPECT_LE(large.events.at(0).ByteSizeLong(), 5'000U);
}

TEST(RunEmitter, AnEnvelopeOverTheLimitIsRefusedWithoutAHole) {
  SmallSink sink(1'000);
  RunIdentity identity = Alice();
  {
    RunEmitter run(sink, identity, kNoWait);
    ASSERT_EQ(run.Started("q"), PublishStatus::kAccepted);
  }
  identity.attributes["blob"] = std::string(5'000, 'b');
  RunEmitter run(sink, identity, kNoWait);
  const auto status = run.Thinking("t");
  EXPECT_EQ(status, PublishStatus::kTooLarge);
  EXPECT_TRUE(status.IsPermanent());
  EXPECT_EQ(run.NextSeq(), 1U) << "a refused event consumes no run_seq";
}

TEST(FitToSize, CutsOnCharacterBoundariesLargestFieldFirst) {
  v1::AgentEvent event;
  event.set_user_id("u");
  event.set_run_id("r");
  std::string text;
  while (text.size() < 100'000) text += "ü€😀";  // 2-, 3- and 4-byte characters
  event.mutable_tool_completed()->set_output(text);
  event.mutable_tool_completed()->set_error("short error");
  const auto whole = event;
  EXPECT_TRUE(FitToSize(event, 200'000));
  EXPECT_FALSE(event.has_truncated()) << "already fits: untouched";

  for (const size_t limit : {50'000UL, 1'001UL, 999UL, 500UL}) {
    event = whole;
    ASSERT_TRUE(FitToSize(event, limit)) << limit;
    EXPECT_LE(event.ByteSizeLong(), limit);
    EXPECT_GT(event.ByteSizeLong(), limit - 64) << "uses the room it has";
    const auto& output = event.tool_completed().output();
    EXPECT_EQ(text.compare(0, output.size(), output), 0);
    // Still valid UTF-8: protobuf parses it back (it rejects broken strings).
    v1::AgentEvent parsed;
    EXPECT_TRUE(parsed.ParseFromString(event.SerializeAsString())) << limit;
    EXPECT_EQ(event.tool_completed().error(), "short error") << "the short field stays whole";
    ASSERT_EQ(event.truncated().fields_size(), 1);
    EXPECT_EQ(event.truncated().fields(0), "output");
    EXPECT_EQ(event.truncated().original_bytes(), whole.ByteSizeLong());
  }

  // Cut again later (e.g. re-published under a smaller limit): the first size is kept.
  event = whole;
  ASSERT_TRUE(FitToSize(event, 50'000));
  ASSERT_TRUE(FitToSize(event, 10'000));
  EXPECT_LE(event.ByteSizeLong(), 10'000U);
  EXPECT_EQ(event.truncated().original_bytes(), whole.ByteSizeLong());
  EXPECT_EQ(event.truncated().limit_bytes(), 10'000U);

  // Nothing to cut in the envelope: refused, untouched.
  event = whole;
  event.set_trace_id(std::string(2'000, 't'));
  EXPECT_FALSE(FitToSize(event, 1'500));
  EXPECT_EQ(event.tool_completed().output(), text);
  EXPECT_FALSE(event.has_truncated());
}

// Checks the simulator's output per run: starts with agent_started at run_seq 1, run_seq
// gapless, exactly one terminal event and it is the last, every event valid.
void ExpectWellFormedRuns(const std::vector<v1::AgentEvent>& events) {
  struct Run {
    std::vector<uint32_t> seqs;
    std::string first_type;
    int terminals = 0;
    bool terminal_last = true;
    std::string user;
    std::pair<int64_t, int32_t> last_emitted_at{0, 0};
  };
  std::map<std::string, Run> runs;
  size_t sub_second = 0;
  for (const auto& e : events) {
    ASSERT_FALSE(schemas::Validate(e)) << schemas::ToJson(e);
    ASSERT_EQ(e.event_id().size(), 26U);
    auto& run = runs[e.run_id()];
    // emitted_at: the wall clock with sub-second resolution (checked below over all events:
    // one reading may fall on a whole second), never going back within a run.
    if (e.emitted_at().nanos() != 0) ++sub_second;
    const std::pair at(e.emitted_at().seconds(), e.emitted_at().nanos());
    EXPECT_GE(at, run.last_emitted_at) << schemas::ToJson(e);
    run.last_emitted_at = at;
    if (run.seqs.empty()) {
      run.first_type = std::string(schemas::EventType(e));
      run.user = e.user_id();
    }
    EXPECT_EQ(run.user, e.user_id()) << "a run belongs to one user";
    if (run.terminals > 0) run.terminal_last = false;
    run.seqs.push_back(e.run_seq());
    if (schemas::IsTerminal(e)) ++run.terminals;
  }
  // A clock with whole seconds only would leave every nanos at 0.
  EXPECT_GT(sub_second * 2, events.size()) << "emitted_at lacks sub-second resolution";
  ASSERT_FALSE(runs.empty());
  for (const auto& [run_id, run] : runs) {
    SCOPED_TRACE(run_id);
    EXPECT_EQ(run.first_type, "agent_started");
    for (size_t i = 0; i < run.seqs.size(); ++i) ASSERT_EQ(run.seqs[i], i + 1);
    EXPECT_EQ(run.terminals, 1);
    EXPECT_TRUE(run.terminal_last);
  }
}

TEST(Simulator, EveryRunIsWellFormed) {
  RecordingSink sink;
  SimulatorOptions options;
  options.users = 20;
  options.events_per_second = 0;
  options.duration = std::chrono::milliseconds(0);
  options.max_events = 3'000;
  options.failure_ratio = 0.2;
  options.seed = 42;
  const auto stats = RunSimulation(sink, options);
  const auto events = sink.Events();
  EXPECT_EQ(stats.events, events.size());
  EXPECT_GE(events.size(), 3'000U);
  EXPECT_EQ(stats.rejected, 0U);
  EXPECT_EQ(stats.runs_started, stats.runs_completed + stats.runs_failed + stats.runs_abandoned);
  EXPECT_GT(stats.runs_completed, 0U);
  EXPECT_GT(stats.runs_failed, 0U);
  ExpectWellFormedRuns(events);

  std::set<std::string> users;
  for (const auto& e : events) users.insert(e.user_id());
  EXPECT_EQ(users.size(), 20U);
  EXPECT_TRUE(users.count("user-0001"));
  EXPECT_TRUE(users.count("user-0020"));
  std::set<std::string> types;
  for (const auto& e : events) types.insert(std::string(schemas::EventType(e)));
  EXPECT_EQ(types.size(), schemas::KnownEventTypes().size()) << "plays every event type";
}

TEST(Simulator, SameSeedSameRuns) {
  SimulatorOptions options;
  options.users = 5;
  options.events_per_second = 0;
  options.duration = std::chrono::milliseconds(0);
  options.max_events = 500;
  options.seed = 7;
  RecordingSink a;
  RecordingSink b;
  RunSimulation(a, options);
  RunSimulation(b, options);
  const auto ea = a.Events();
  const auto eb = b.Events();
  ASSERT_EQ(ea.size(), eb.size());
  // r-<tag>-<user>-<n>: the same runs, but never the same ids in two simulations (every reader
  // keys runs by (user, run id) and would take the second's runs for the first's late events).
  const auto without_tag = [](const std::string& id) { return id.substr(id.find('-', 2)); };
  ASSERT_FALSE(ea.empty());
  EXPECT_NE(ea[0].run_id(), eb[0].run_id());
  for (size_t i = 0; i < ea.size(); ++i) {
    EXPECT_EQ(without_tag(ea[i].run_id()), without_tag(eb[i].run_id()));
    EXPECT_EQ(ea[i].run_seq(), eb[i].run_seq());
    EXPECT_EQ(schemas::EventType(ea[i]), schemas::EventType(eb[i]));
  }
}

TEST(Simulator, StopsOnStopToken) {
  RecordingSink sink;
  SimulatorOptions options;
  options.users = 3;
  options.events_per_second = 1'000;
  options.duration = std::chrono::milliseconds(0);  // until stopped
  std::stop_source stop;
  std::thread stopper([&stop] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop.request_stop();
  });
  const auto stats = RunSimulation(sink, options, stop.get_token());
  stopper.join();
  EXPECT_GT(stats.events, 0U);
  ExpectWellFormedRuns(sink.Events());
}

TEST(RunEmitter, CancelledIsTheStopEndAndClosesTheRun) {
  RecordingSink sink;
  {
    RunEmitter run(sink, Alice());
    ASSERT_EQ(run.Started("question"), PublishStatus::kAccepted);
    EXPECT_FALSE(run.CancelRequested());  // no RunControl: nobody can stop it
    ASSERT_EQ(run.Cancelled(), PublishStatus::kAccepted);
    EXPECT_TRUE(run.Finished());
    EXPECT_EQ(run.Thinking("after the end"), PublishStatus::kClosed);
  }  // no abandoned end on top of it
  const auto events = sink.Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].agent_started().lease_ms(), 0u);  // unsupervised without RunControl
  ASSERT_TRUE(events[1].has_agent_failed());
  EXPECT_EQ(events[1].agent_failed().error_code(), "cancelled");
  EXPECT_EQ(events[1].agent_failed().message(), "stopped by the user");
  EXPECT_EQ(events[1].run_seq(), 2u);
}

TEST(RunEmitter, AnOnCancelHandlerRegisteredWithoutAStopNeverRuns) {
  RecordingSink sink;
  int called = 0;
  {
    RunEmitter run(sink, Alice());
    run.OnCancel([&called] { ++called; });
    ASSERT_EQ(run.Started("question"), PublishStatus::kAccepted);
    ASSERT_EQ(run.Completed("done"), PublishStatus::kAccepted);
  }
  EXPECT_EQ(called, 0);
  EXPECT_EQ(sink.Events().size(), 2u);
}

}  // namespace
}  // namespace agentwire::producers
