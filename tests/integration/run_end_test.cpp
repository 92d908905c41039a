// Every run ends in the user's window, even when its worker dies (docs/runs.md). A worker
// process publishing runs through RunEmitter + RunControl (`agentwire emit simulate`) is
// `kill -9`-ed mid-run, the way Cloud Run removes an instance; `agentwire supervisor` ends its
// open runs with agent_failed{worker_lost}. A WebSocket client, an SSE client and an AI SDK
// resume stream of the user each see exactly one end per run; analytics records the runs as
// failed with worker_lost; a supervisor killed in between and restarted does not end a run
// twice. A worker whose long tool call outlasts its lease but heartbeats is not ended.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/run_control.hpp"
#include "agentwire/producers/run_emitter.hpp"
#include "support/gateway_harness.hpp"
#include "support/postgres_fixture.hpp"
#include "support/sse_client.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Per run, as one client saw it.
struct RunView {
  std::string thread;
  int starts = 0;
  int ends = 0;
  std::string end_code;  // agent_failed's error_code ("" for agent_completed)
  Clock::time_point ended_at{};
};

void Note(std::map<std::string, RunView>& runs, const json& event) {
  const auto type = event.value("type", "");
  auto& run = runs[event.value("run_id", "")];
  run.thread = event.value("thread_id", "");
  if (type == "agent_started") ++run.starts;
  if (type == "agent_completed" || type == "agent_failed") {
    if (++run.ends == 1) run.ended_at = Clock::now();
    run.end_code = event.value("agent_failed", json::object()).value("error_code", "");
  }
}

std::set<std::string> OpenRuns(const std::map<std::string, RunView>& runs) {
  std::set<std::string> open;
  for (const auto& [id, run] : runs)
    if (run.starts > 0 && run.ends == 0) open.insert(id);
  return open;
}

class RunEnd : public ::testing::Test {
 protected:
  RunEnd() : harness_(4) { harness_.StartGateway(); }

  const std::string& Brokers() { return harness_.Kafka().BootstrapServers(); }

  std::vector<std::string> Supervisor(const std::string& group) {
    return SupervisorCommand(
        Brokers(), harness_.Topic(),
        {"--group", group, "--check-interval", "200ms", "--cancel-timeout", "3s"});
  }

  std::vector<std::string> Worker(const std::string& prefix, const std::string& lease,
                                  const std::string& heartbeat) {
    return {AgentwireBinary(),
            "emit",
            "simulate",
            "--brokers",
            Brokers(),
            "--topic",
            harness_.Topic(),
            "--users",
            "4",
            "--rate",
            "30",
            "--duration",
            "0",
            "--failure-ratio",
            "0",
            "--user-prefix",
            prefix,
            "--seed",
            "7",
            "--lease",
            lease,
            "--heartbeat-interval",
            heartbeat};
  }

  GatewayHarness harness_;
};

TEST_F(RunEnd, AKilledWorkersRunsEndOnceForEveryClientAndInAnalytics) {
  auto& postgres = SharedPostgres();
  const std::string dsn = postgres.CreateDatabase("run_end");
  Subprocess analytics(
      ConsumerCommand("analytics", Brokers(), dsn, {"--batch-size", "100", "--batch-ms", "20"}));
  Subprocess supervisor(Supervisor("sup-kill"));
  const std::string user = "kill-0001";

  WsClient ws;
  ASSERT_EQ(ws.Connect(harness_.ClientOptions(user)).status, 101);
  SseClient sse;
  SseClient::Options sse_options;
  sse_options.port = harness_.Port();
  sse_options.bearer = harness_.Token(user);
  ASSERT_EQ(sse.Connect(sse_options).status, 200);

  Subprocess worker(Worker("kill-", "2s", "400ms"));
  std::map<std::string, RunView> ws_runs;
  std::map<std::string, RunView> sse_runs;
  // Until a run of this user is open mid-way, and at least one has completed before it.
  const auto deadline = Clock::now() + 30s;
  while (Clock::now() < deadline) {
    for (const auto& frame : ReadUntil(
             ws, [](const auto& f) { return !f.empty(); }, 200ms)) {
      if (frame.type == "event") Note(ws_runs, frame.json["event"]);
    }
    const bool some_ended = std::any_of(ws_runs.begin(), ws_runs.end(),
                                        [](const auto& kv) { return kv.second.ends > 0; });
    if (some_ended && !OpenRuns(ws_runs).empty()) break;
  }
  ASSERT_FALSE(OpenRuns(ws_runs).empty()) << worker.Describe();
  worker.Kill();  // kill -9: no destructor, no terminal event, no more heartbeats
  const auto killed_at = Clock::now();
  ASSERT_TRUE(worker.Wait(5s).has_value());
  const auto open_at_kill = OpenRuns(ws_runs);

  // The supervisor dies too, before the lease ran out, and comes back.
  supervisor.Kill();
  ASSERT_TRUE(supervisor.Wait(5s).has_value());
  Subprocess restarted(Supervisor("sup-kill"));

  // The AI SDK stream of the open run's thread: replayed from its start, ended with `error`.
  const auto open_run = *open_at_kill.begin();
  SseClient ai_sdk;
  SseClient::Options ai_options;
  ai_options.port = harness_.Port();
  ai_options.bearer = harness_.Token(user);
  ai_options.target = "/v1/ai-sdk/chats/" + ws_runs[open_run].thread + "/stream";
  ASSERT_EQ(ai_sdk.Connect(ai_options).status, 200);

  // Every run the WebSocket saw start ends, once.
  const auto end_deadline = Clock::now() + 45s;
  while (Clock::now() < end_deadline && !OpenRuns(ws_runs).empty()) {
    for (const auto& frame : ReadUntil(
             ws, [](const auto& f) { return !f.empty(); }, 200ms)) {
      if (frame.type == "event") Note(ws_runs, frame.json["event"]);
    }
  }
  // A moment more: nothing may follow (no second end from the restarted supervisor).
  for (const auto& frame : ReadUntil(
           ws, [](const auto&) { return false; }, 3s)) {
    if (frame.type == "event") Note(ws_runs, frame.json["event"]);
  }
  EXPECT_TRUE(OpenRuns(ws_runs).empty()) << restarted.Describe();
  for (const auto& [id, run] : ws_runs) {
    EXPECT_EQ(run.starts, 1) << id;
    EXPECT_EQ(run.ends, 1) << id;
  }
  for (const auto& id : open_at_kill) {
    EXPECT_EQ(ws_runs[id].end_code, "worker_lost") << id;
    const auto took = std::chrono::duration<double>(ws_runs[id].ended_at - killed_at).count();
    std::printf(
        "kill -9 -> worker_lost at the WebSocket client: %.1f s (lease 2 s, supervisor "
        "killed and restarted in between)\n",
        took);
  }

  // SSE: the same runs, the same single ends.
  while (auto event = sse.Next(2s)) {
    // SSE data is the event object itself.
    if (event->event == "event") Note(sse_runs, json::parse(event->data));
  }
  for (const auto& [id, run] : ws_runs) {
    EXPECT_EQ(sse_runs[id].ends, 1) << id;
    EXPECT_EQ(sse_runs[id].end_code, run.end_code) << id;
  }

  // AI SDK: one `error`, then [DONE].
  std::vector<std::string> chunks;
  while (auto chunk = ai_sdk.Next(20s)) {
    chunks.push_back(chunk->data);
    if (chunk->data == "[DONE]") break;
  }
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks.back(), "[DONE]");
  const auto last = json::parse(chunks[chunks.size() - 2]);
  EXPECT_EQ(last.value("type", ""), "error");
  EXPECT_NE(last.value("errorText", "").find("stopped responding"), std::string::npos)
      << last.dump();

  // Analytics: those runs failed with worker_lost.
  const auto analytics_deadline = Clock::now() + 30s;
  for (const auto& id : open_at_kill) {
    std::string row;
    while (Clock::now() < analytics_deadline) {
      row = postgres.Query(dsn,
                           "SELECT status || ' ' || coalesce(error_code, '-') FROM agent_runs "
                           "WHERE run_id = '" +
                               id + "'");
      if (row == "failed worker_lost") break;
      std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(row, "failed worker_lost") << id << "\n" << analytics.Describe();
  }
}

TEST_F(RunEnd, ALongToolCallThatHeartbeatsIsNotEnded) {
  Subprocess supervisor(Supervisor("sup-long"));
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", Brokers()}, {"linger.ms", "0"}};
  config.topic = harness_.Topic();
  producers::EventPublisher publisher(config);
  producers::RunControlConfig control_config;
  control_config.client_properties = config.client_properties;
  control_config.topic = harness_.Topic();
  control_config.lease = 1500ms;
  control_config.heartbeat_interval = 300ms;
  producers::RunControl control(control_config);

  WsClient ws;
  ASSERT_EQ(ws.Connect(harness_.ClientOptions("tool-user")).status, 101);
  {
    producers::RunEmitter run(publisher,
                              {"tool-user", "t-long", "run-long", "researcher", "", {}, {}}, 5s, {},
                              0, &control);
    ASSERT_EQ(run.Started("crawl the site", "m"), producers::PublishStatus::kAccepted);
    ASSERT_EQ(run.ToolExecuting("crawler", "{}", "c1"), producers::PublishStatus::kAccepted);
    std::this_thread::sleep_for(6s);  // four leases without an event: only heartbeats
    ASSERT_EQ(run.ToolCompleted("crawler", "12 pages", 6000, "", "c1"),
              producers::PublishStatus::kAccepted);
    ASSERT_EQ(run.Completed("done"), producers::PublishStatus::kAccepted);
  }
  std::map<std::string, RunView> runs;
  for (const auto& frame : ReadUntil(
           ws,
           [](const std::vector<Frame>& f) {
             return std::any_of(f.begin(), f.end(), [](const Frame& frame) {
               return frame.json.value("event", json::object()).value("type", "") ==
                      "agent_completed";
             });
           },
           15s)) {
    if (frame.type == "event") Note(runs, frame.json["event"]);
  }
  for (const auto& frame : ReadUntil(
           ws, [](const auto&) { return false; }, 2s)) {
    if (frame.type == "event") Note(runs, frame.json["event"]);
  }
  EXPECT_EQ(runs["run-long"].ends, 1);
  EXPECT_EQ(runs["run-long"].end_code, "");  // its own agent_completed, not worker_lost
  EXPECT_GT(control.Stats().heartbeats_sent, 10u);
}

TEST_F(RunEnd, AStopForADeadWorkerIsEndedByTheSupervisorWithinTheBound) {
  Subprocess supervisor(Supervisor("sup-cancel"));
  WsClient ws;
  ASSERT_EQ(ws.Connect(harness_.ClientOptions("stop-user")).status, 101);
  ASSERT_EQ(ReadUntil(
                ws, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1u);
  // A run published without run control (lease 0: never ended for silence), whose worker is
  // gone: only the Stop bound can end it.
  v1::AgentEvent started;
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", Brokers()}};
  config.topic = harness_.Topic();
  producers::EventPublisher publisher(config);
  started.set_user_id("stop-user");
  started.set_run_id("run-dead2");
  started.set_thread_id("t-dead");
  started.set_run_seq(1);
  started.mutable_agent_started()->set_input("q");
  ASSERT_EQ(publisher.Publish(started), producers::PublishStatus::kAccepted);
  publisher.Flush(10s);
  ASSERT_GE(ReadUntil(
                ws, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1u);

  SseClient post;
  SseClient::Options options;
  options.port = harness_.Port();
  options.method = "POST";
  options.target = "/v1/runs/run-dead2/cancel";
  options.bearer = harness_.Token("stop-user");
  options.accept = "application/json";
  const auto stopped_at = Clock::now();
  EXPECT_EQ(post.Connect(options).status, 202);

  std::map<std::string, RunView> runs;
  for (const auto& frame : ReadUntil(
           ws,
           [](const std::vector<Frame>& f) {
             return std::any_of(f.begin(), f.end(),
                                [](const Frame& frame) { return frame.run_id == "run-dead2"; });
           },
           20s)) {
    if (frame.type == "event") Note(runs, frame.json["event"]);
  }
  for (const auto& frame : ReadUntil(
           ws, [](const auto&) { return false; }, 2s)) {
    if (frame.type == "event") Note(runs, frame.json["event"]);
  }
  ASSERT_EQ(runs["run-dead2"].ends, 1) << supervisor.Describe();
  EXPECT_EQ(runs["run-dead2"].end_code, "cancelled");
  const double took =
      std::chrono::duration<double>(runs["run-dead2"].ended_at - stopped_at).count();
  EXPECT_LT(took, 20.0);  // the bound is 3 s here; the rest is slack for a loaded machine
  std::printf("Stop of a dead worker's run -> cancelled by the supervisor: %.1f s (bound 3 s)\n",
              took);
}

}  // namespace
}  // namespace agentwire::testing
