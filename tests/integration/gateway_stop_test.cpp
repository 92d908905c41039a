// Stop from the chat window (docs/runs.md): `POST /v1/runs/{run_id}/cancel` and the WebSocket
// frame `{"type":"cancel","run_id":…}` reach the worker's RunEmitter through the control topic;
// the worker ends the run `cancelled`, and every subscriber of the user (WebSocket, SSE, the AI
// SDK stream) sees exactly one end. Another user cannot stop it, an ended run answers 409, a
// flood of Stops is one Stop, forged control records are ignored, and a zombie worker's late
// events never reach a client.
#include <agentwire/v1/control.pb.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/options.hpp"
#include "agentwire/producers/control_channel.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/run_control.hpp"
#include "agentwire/producers/run_emitter.hpp"
#include "support/gateway_harness.hpp"
#include "support/sse_client.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// What an agent does between its steps: a bounded busy run that checks for Stop like one that
// streams tokens would, and ends `cancelled` when its user stops it.
struct Agent {
  std::atomic<bool> cancel_seen{false};
  std::atomic<bool> ended{false};
  std::atomic<int> steps{0};
  std::jthread thread;
};

class GatewayStop : public ::testing::Test {
 protected:
  GatewayStop() : harness_(4) {
    harness_.StartGateway();
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness_.Kafka().BootstrapServers()},
                                {"linger.ms", "0"}};
    config.topic = harness_.Topic();
    publisher_ = std::make_unique<producers::EventPublisher>(config);
    producers::RunControlConfig control;
    control.client_properties = config.client_properties;
    control.topic = harness_.Topic();
    control.heartbeat_interval = 200ms;
    control.lease = 2s;
    control_ = std::make_unique<producers::RunControl>(control);
  }

  ~GatewayStop() override {
    for (auto& agent : agents_) agent->thread = {};  // joins: every agent ends its run
  }

  // Starts a run of `user` in `thread` that thinks every 30 ms for up to 60 s, honouring Stop.
  Agent& StartAgent(const std::string& user, const std::string& run,
                    const std::string& thread = "t-1") {
    auto& agent = *agents_.emplace_back(std::make_unique<Agent>());
    producers::RunIdentity identity{user, thread, run, "researcher", "", {}, {}};
    auto started = std::make_shared<std::promise<void>>();
    auto ready = started->get_future();
    agent.thread = std::jthread([this, identity, &agent, started](const std::stop_token& stop) {
      producers::RunEmitter emitter(*publisher_, identity, 5s, {}, 0, control_.get());
      emitter.OnCancel([&agent] { agent.cancel_seen = true; });
      EXPECT_EQ(emitter.Started("question", "model"), producers::PublishStatus::kAccepted);
      started->set_value();
      const auto until = std::chrono::steady_clock::now() + 60s;
      while (!stop.stop_requested() && std::chrono::steady_clock::now() < until) {
        if (emitter.CancelRequested()) {
          EXPECT_EQ(emitter.Cancelled(), producers::PublishStatus::kAccepted);
          agent.ended = true;
          return;
        }
        emitter.Thinking("step " + std::to_string(++agent.steps));
        std::this_thread::sleep_for(30ms);
      }
      emitter.Completed("done");
      agent.ended = true;
    });
    ready.wait();
    return agent;
  }

  // A live WebSocket of `user` past its `ready`.
  void Connect(WsClient& client, const std::string& user) {
    ASSERT_EQ(client.Connect(harness_.ClientOptions(user)).status, 101);
    ASSERT_EQ(ReadUntil(
                  client, [](const auto& f) { return !f.empty(); }, 10s)
                  .front()
                  .type,
              "ready");
  }

  SseClient::Head Post(const std::string& target, const std::string& bearer,
                       const std::string& origin = {}) {
    SseClient client;
    SseClient::Options options;
    options.port = harness_.Port();
    options.method = "POST";
    options.target = target;
    options.bearer = bearer;
    options.origin = origin;
    options.accept = "application/json";
    return client.Connect(options);
  }

  SseClient::Head CancelOverHttp(const std::string& user, const std::string& run) {
    return Post("/v1/runs/" + run + "/cancel", harness_.Token(user));
  }

  // Reads frames until `run`'s end arrived (plus a moment for anything after it).
  static std::vector<Frame> ReadRun(WsClient& client, const std::string& run) {
    auto frames = ReadUntil(
        client,
        [&](const std::vector<Frame>& f) {
          return std::any_of(f.begin(), f.end(), [&](const Frame& frame) {
            return frame.run_id == run && IsEnd(frame);
          });
        },
        20s);
    auto more = ReadUntil(
        client, [](const auto&) { return false; }, 300ms);
    frames.insert(frames.end(), more.begin(), more.end());
    return frames;
  }

  static bool IsEnd(const Frame& frame) {
    const auto type = frame.json.value("event", json::object()).value("type", "");
    return type == "agent_completed" || type == "agent_failed";
  }

  static std::vector<Frame> EndsOf(const std::vector<Frame>& frames, const std::string& run) {
    std::vector<Frame> ends;
    for (const auto& frame : frames)
      if (frame.type == "event" && frame.run_id == run && IsEnd(frame)) ends.push_back(frame);
    return ends;
  }

  static std::string ErrorCode(const Frame& frame) {
    return frame.json["event"].value("agent_failed", json::object()).value("error_code", "");
  }

  static std::optional<json> CancelResult(WsClient& client, const std::string& run) {
    std::optional<json> result;
    ReadUntil(
        client,
        [&](const std::vector<Frame>& f) {
          for (const auto& frame : f) {
            if (frame.type == "cancel_result" && frame.json.value("run_id", "") == run) {
              result = frame.json;
              return true;
            }
          }
          return false;
        },
        10s);
    return result;
  }

  GatewayHarness harness_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  std::unique_ptr<producers::RunControl> control_;
  std::vector<std::unique_ptr<Agent>> agents_;
};

TEST_F(GatewayStop, AStopFrameAndAPostEachEndTheirRunOnceForEverySubscriber) {
  WsClient stopper;
  WsClient watcher;
  Connect(stopper, "alice");
  Connect(watcher, "alice");
  SseClient sse;
  SseClient::Options sse_options;
  sse_options.port = harness_.Port();
  sse_options.bearer = harness_.Token("alice");
  ASSERT_EQ(sse.Connect(sse_options).status, 200);

  auto& first = StartAgent("alice", "run-ws", "t-ws");
  // The AI SDK stream of the thread: the run in progress, to its end.
  ASSERT_GT(WaitForMetric(harness_.Port(), "agentwire_gateway_kafka_messages_total", 2, 10s), 0);
  SseClient ai_sdk;
  SseClient::Options ai_options;
  ai_options.port = harness_.Port();
  ai_options.bearer = harness_.Token("alice");
  ai_options.target = "/v1/ai-sdk/chats/t-ws/stream";
  ASSERT_EQ(ai_sdk.Connect(ai_options).status, 200);

  stopper.Send(R"({"type":"cancel","run_id":"run-ws"})");
  const auto answer = CancelResult(stopper, "run-ws");
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->value("result", ""), "requested");

  const auto watched = ReadRun(watcher, "run-ws");
  const auto ends = EndsOf(watched, "run-ws");
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ErrorCode(ends[0]), "cancelled");
  EXPECT_TRUE(first.cancel_seen);
  EXPECT_EQ(EndsOf(ReadRun(stopper, "run-ws"), "run-ws").size(), 1u);

  // SSE: one end, too.
  int sse_ends = 0;
  while (auto event = sse.Next(3s)) {
    if (event->event != "event") continue;
    const auto sse_event = json::parse(event->data);  // SSE data is the event object itself
    const auto type = sse_event.value("type", "");
    if (sse_event.value("run_id", "") == "run-ws" &&
        (type == "agent_failed" || type == "agent_completed")) {
      ++sse_ends;
    }
  }
  EXPECT_EQ(sse_ends, 1);

  // The AI SDK stream ends with the SDK's own `abort`, then [DONE].
  std::vector<std::string> chunks;
  while (auto chunk = ai_sdk.Next(10s)) {
    chunks.push_back(chunk->data);
    if (chunk->data == "[DONE]") break;
  }
  ASSERT_GE(chunks.size(), 2u);
  EXPECT_EQ(chunks.back(), "[DONE]");
  EXPECT_EQ(json::parse(chunks[chunks.size() - 2]).value("type", ""), "abort");
  EXPECT_EQ(std::count_if(chunks.begin(), chunks.end(),
                          [](const std::string& c) {
                            return c.find(R"("type":"error")") != std::string::npos;
                          }),
            0);

  // The same over HTTP, for a second run.
  auto& second = StartAgent("alice", "run-http", "t-http");
  // The Stop button shows once the window has seen the run start: so does the replica.
  ReadUntil(
      watcher,
      [](const std::vector<Frame>& f) {
        return std::any_of(f.begin(), f.end(),
                           [](const Frame& frame) { return frame.run_id == "run-http"; });
      },
      10s);
  const auto posted = CancelOverHttp("alice", "run-http");
  EXPECT_EQ(posted.status, 202) << posted.body;
  EXPECT_EQ(json::parse(posted.body).value("status", ""), "cancel_requested");
  const auto ends_http = EndsOf(ReadRun(watcher, "run-http"), "run-http");
  ASSERT_EQ(ends_http.size(), 1u);
  EXPECT_EQ(ErrorCode(ends_http[0]), "cancelled");
  EXPECT_TRUE(second.cancel_seen);

  // Stopping it again: 409 with how it ended.
  const auto again = CancelOverHttp("alice", "run-http");
  EXPECT_EQ(again.status, 409) << again.body;
  const auto body = json::parse(again.body);
  EXPECT_EQ(body.value("error", ""), "run_ended");
  EXPECT_EQ(body["end"].value("type", ""), "agent_failed");
  EXPECT_EQ(body["end"].value("error_code", ""), "cancelled");
  EXPECT_EQ(body["end"].value("cursor", ""), ends_http[0].cursor);
  EXPECT_GE(MetricValue(harness_.Port(),
                        R"(agentwire_gateway_cancel_requests_total{result="run_ended"})"),
            1);
}

TEST_F(GatewayStop, AnotherUserCannotStopARunAndHostileRequestsGetClearAnswers) {
  auto& agent = StartAgent("alice", "run-a");
  WsClient watcher;
  Connect(watcher, "alice");
  ASSERT_GT(WaitForMetric(harness_.Port(), "agentwire_gateway_kafka_messages_total", 2, 10s), 0);

  // Mallory knows the run id; to her it does not exist. Over HTTP and over her WebSocket.
  const auto other = CancelOverHttp("mallory", "run-a");
  EXPECT_EQ(other.status, 404) << other.body;
  EXPECT_EQ(json::parse(other.body).value("error", ""), "unknown_run");
  WsClient mallory;
  Connect(mallory, "mallory");
  mallory.Send(R"({"type":"cancel","run_id":"run-a"})");
  const auto frame_answer = CancelResult(mallory, "run-a");
  ASSERT_TRUE(frame_answer.has_value());
  EXPECT_EQ(frame_answer->value("result", ""), "unknown_run");

  // Unknown ids, hostile ids, no token.
  EXPECT_EQ(CancelOverHttp("alice", "no-such-run").status, 404);
  EXPECT_EQ(CancelOverHttp("alice", "%01%02run").status, 400);
  EXPECT_EQ(CancelOverHttp("alice", std::string(300, 'r')).status, 400);
  EXPECT_EQ(CancelOverHttp("alice", "").status, 400);
  EXPECT_EQ(CancelOverHttp("alice", "run%00a").status, 400);
  EXPECT_EQ(Post("/v1/runs/run-a/cancel", "").status, 401);
  EXPECT_EQ(Post("/v1/runs/run-a/cancel", "not-a-jwt").status, 401);
  const auto get =
      HttpGet(harness_.Port(), "/v1/runs/run-a/cancel", "Bearer " + harness_.Token("alice"));
  EXPECT_EQ(get.status, 405);

  // Malformed frames: each answered (or ignored) without closing the connection.
  WsClient hostile;
  Connect(hostile, "alice");
  hostile.Send(R"({"type":"cancel"})");
  hostile.Send(R"({"type":"cancel","run_id":42})");
  hostile.Send(R"({"type":"cancel","run_id":"a\u0000b"})");
  hostile.Send(R"({"type":"cancel","run_id":")" + std::string(60'000, 'x') + R"("})");
  hostile.Send(R"({"type":"cancel","run_id":)");
  hostile.Send(std::string(40, '[') + std::string(40, ']'));
  const auto hostile_frames = ReadUntil(
      hostile,
      [](const std::vector<Frame>& f) {
        return std::count_if(f.begin(), f.end(),
                             [](const Frame& frame) { return frame.type == "cancel_result"; }) >= 4;
      },
      10s);
  int bad = 0;
  for (const auto& frame : hostile_frames) {
    if (frame.type == "cancel_result") {
      EXPECT_EQ(frame.json.value("result", ""), "bad_run_id") << frame.json.dump();
      ++bad;
    }
  }
  EXPECT_EQ(bad, 4);
  EXPECT_FALSE(hostile.Closed());

  // Nothing above stopped the run: it goes on, and ends when its worker completes it.
  EXPECT_FALSE(agent.cancel_seen);
  const int steps = agent.steps.load();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (agent.steps.load() < steps + 5 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE(agent.steps.load(), steps + 5);
  EXPECT_FALSE(agent.ended);
  const auto frames = ReadUntil(
      watcher, [](const auto&) { return false; }, 500ms);
  EXPECT_TRUE(EndsOf(frames, "run-a").empty());
  EXPECT_GE(MetricValue(harness_.Port(),
                        R"(agentwire_gateway_cancel_requests_total{result="bad_run_id"})"),
            8);
}

TEST_F(GatewayStop, AFloodOfStopsIsOneStopAndForgedControlRecordsAreIgnored) {
  auto& agent = StartAgent("alice", "run-f");
  WsClient watcher;
  Connect(watcher, "alice");
  ASSERT_GT(WaitForMetric(harness_.Port(), "agentwire_gateway_kafka_messages_total", 2, 10s), 0);

  // A forged Stop on the control topic: mallory names alice's run. RunControl reads every
  // partition of the control topic, sees it, and must refuse it.
  producers::ControlPublisher forger({{"bootstrap.servers", harness_.Kafka().BootstrapServers()}},
                                     "forger");
  v1::ControlRecord forged;
  forged.set_user_id("mallory");
  forged.set_run_id("run-f");
  forged.mutable_cancel()->set_request_id("forged-1");
  std::promise<std::string> stored;
  ASSERT_TRUE(forger.Publish(ControlTopicFor(harness_.Topic()), forged,
                             [&stored](const std::string& error) { stored.set_value(error); }));
  EXPECT_EQ(stored.get_future().get(), "");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (control_->Stats().forged_cancels < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(control_->Stats().forged_cancels, 1u);
  EXPECT_FALSE(agent.cancel_seen);

  // 100 Stops at once, over two WebSockets and HTTP: one Stop, one end.
  WsClient second;
  Connect(second, "alice");
  std::vector<std::jthread> posters;
  std::atomic<int> accepted{0};
  for (int i = 0; i < 4; ++i) {
    posters.emplace_back([&] {
      for (int j = 0; j < 10; ++j) {
        const auto status = CancelOverHttp("alice", "run-f").status;
        if (status == 202 || status == 409) ++accepted;
      }
    });
  }
  for (int i = 0; i < 30; ++i) {
    watcher.Send(R"({"type":"cancel","run_id":"run-f"})");
    second.Send(R"({"type":"cancel","run_id":"run-f"})");
  }
  posters.clear();
  EXPECT_EQ(accepted.load(), 40);
  const auto frames = ReadRun(watcher, "run-f");
  const auto ends = EndsOf(frames, "run-f");
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ErrorCode(ends[0]), "cancelled");
  EXPECT_EQ(control_->Stats().cancels_honoured, 1u);
  // Every frame got its answer, requested or (after the end) run_ended.
  const auto answers = std::count_if(frames.begin(), frames.end(),
                                     [](const Frame& f) { return f.type == "cancel_result"; });
  EXPECT_GE(answers, 1);
}

TEST_F(GatewayStop, AZombieWorkersLateEventsNeverReachAClient) {
  WsClient live;
  Connect(live, "alice");
  // The supervisor ended the run (worker_lost); the worker wakes up and goes on.
  uint32_t seq = 1;
  auto publish = [&](const std::function<void(v1::AgentEvent&)>& body) {
    v1::AgentEvent event;
    event.set_user_id("alice");
    event.set_thread_id("t-z");
    event.set_run_id("run-z");
    event.set_run_seq(seq++);
    body(event);
    ASSERT_EQ(publisher_->Publish(event), producers::PublishStatus::kAccepted);
  };
  publish([](auto& e) { e.mutable_agent_started()->set_input("q"); });
  publish([](auto& e) { e.mutable_agent_thinking()->set_text("before"); });
  publish([](auto& e) {
    e.mutable_agent_failed()->set_error_code("worker_lost");
    e.mutable_agent_failed()->set_message("no sign of life");
    (*e.mutable_attributes())["ended_by"] = "supervisor";
  });
  publish([](auto& e) { e.mutable_agent_thinking()->set_text("zombie"); });
  publish([](auto& e) { e.mutable_message_delta()->set_text("zombie text"); });
  publish([](auto& e) { e.mutable_agent_completed()->set_result("zombie end"); });
  publish([](auto& e) { e.mutable_agent_started()->set_input("same id again"); });
  // Then a later, healthy run: the marker that everything before it was read.
  seq = 1;
  v1::AgentEvent marker;
  marker.set_user_id("alice");
  marker.set_run_id("run-next");
  marker.set_run_seq(1);
  marker.mutable_agent_started()->set_input("next");
  ASSERT_EQ(publisher_->Publish(marker), producers::PublishStatus::kAccepted);
  publisher_->Flush(10s);

  auto count = [](const std::vector<Frame>& frames) {
    std::map<std::string, int> by_run;
    for (const auto& f : frames)
      if (f.type == "event") ++by_run[f.run_id];
    return by_run;
  };
  const auto frames = ReadUntil(
      live, [](const auto& f) { return !f.empty() && f.back().run_id == "run-next"; }, 10s);
  auto by_run = count(frames);
  EXPECT_EQ(by_run["run-z"], 3);  // started, thinking, its one end
  EXPECT_EQ(EndsOf(frames, "run-z").size(), 1u);
  EXPECT_EQ(by_run["run-next"], 1);
  EXPECT_EQ(MetricValue(harness_.Port(), "agentwire_gateway_late_events_total"), 4);

  // The run is ended for Stop too.
  EXPECT_EQ(CancelOverHttp("alice", "run-z").status, 409);

  // A client resuming from the start (cache) sees the same; so does one reading Kafka.
  for (const bool from_kafka : {false, true}) {
    if (from_kafka) {
      harness_.StopGateway();
      harness_.StartGateway([](gateway::GatewayConfig& config) { config.cache_bytes = 0; });
    }
    WsClient resumed;
    ASSERT_EQ(resumed.Connect(harness_.ClientOptions("alice", "cursor=earliest")).status, 101);
    const auto replay = ReadUntil(
        resumed, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 10s);
    auto replayed = count(replay);
    EXPECT_EQ(replayed["run-z"], 3) << "from_kafka=" << from_kafka;
    EXPECT_EQ(EndsOf(replay, "run-z").size(), 1u) << "from_kafka=" << from_kafka;
    EXPECT_EQ(ErrorCode(EndsOf(replay, "run-z").at(0)), "worker_lost");
    EXPECT_EQ(replayed["run-next"], 1);
  }
}

}  // namespace
}  // namespace agentwire::testing
