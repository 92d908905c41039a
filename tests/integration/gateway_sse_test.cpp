// Server-Sent Events on GET /v1/events (Accept: text/event-stream): the same session as the
// WebSocket (catch-up, hand-off, filters, drain), framed as SSE. What an EventSource sees:
// `id:` = cursor on every event and on `ready`, the event object as data, a `retry:` hint,
// and after a drain or a dropped connection a reconnect with Last-Event-ID (to any replica)
// that continues exactly once, in order.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support/gateway_harness.hpp"
#include "support/sse_client.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

SseClient::Options SseOptions(GatewayHarness& harness, const std::string& user,
                              const std::string& query = {}) {
  SseClient::Options options;
  options.port = harness.Port();
  options.bearer = harness.Token(user);
  if (!query.empty()) options.target += "?" + query;
  return options;
}

// Reads SSE events until `count` event-type events were seen (or a timeout / the end).
std::vector<SseEvent> ReadSse(SseClient& client, size_t count, std::chrono::milliseconds timeout,
                              bool until_ready = false) {
  std::vector<SseEvent> got;
  size_t events = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (events < count || (until_ready && (got.empty() || got.back().event != "ready"))) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto next = client.Next(left);
    if (!next) break;
    if (next->event == "event") ++events;
    got.push_back(std::move(*next));
  }
  return got;
}

size_t CountEventFrames(const std::vector<Frame>& frames) {
  return static_cast<size_t>(std::count_if(frames.begin(), frames.end(),
                                           [](const Frame& f) { return f.type == "event"; }));
}

std::vector<std::string> EventIds(const std::vector<SseEvent>& events) {
  std::vector<std::string> ids;
  for (const auto& e : events) {
    if (e.event == "event") ids.push_back(nlohmann::json::parse(e.data).at("event_id"));
  }
  return ids;
}

TEST(GatewaySse, SameEventsAsWebSocketAndAResumeWithLastEventIdAcrossADrain) {
  GatewayHarness harness(12);
  harness.StartGateway();

  // Both transports of one user, from the start of the log.
  WsClient ws;
  ASSERT_EQ(ws.Connect(harness.ClientOptions("alice", "cursor=earliest")).status, 101);
  SseClient sse;
  auto options = SseOptions(harness, "alice", "cursor=earliest");
  options.origin = "https://chat.example";
  const auto head = sse.Connect(options);
  ASSERT_EQ(head.status, 200) << head.body;
  EXPECT_NE(head.headers.find("Content-Type: text/event-stream"), std::string::npos);
  EXPECT_NE(head.headers.find("Access-Control-Allow-Origin: https://chat.example"),
            std::string::npos)
      << "CORS for an allowed origin";

  std::vector<std::string> alice;
  for (uint32_t seq = 1; seq <= 60; ++seq) {
    alice.push_back(harness.Publish("alice", "run-a", seq));
    harness.Publish("bob", "run-b", seq);  // never reaches alice, on either transport
  }
  harness.Flush();

  const auto first = ReadSse(sse, 30, 30s);
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(sse.RetryMs(), 1000) << "a retry: hint follows the head";
  EXPECT_EQ(first.front().event, "ready") << "nothing was published when it connected";
  EXPECT_FALSE(first.front().id.empty()) << "ready carries its cursor as id:";
  EXPECT_EQ(nlohmann::json::parse(first.front().data).at("cursor"), first.front().id);
  for (const auto& e : first) {
    if (e.event != "event") continue;
    const auto event = nlohmann::json::parse(e.data);
    EXPECT_EQ(event.at("user_id"), "alice");
    EXPECT_FALSE(e.id.empty());
  }
  ASSERT_EQ(EventIds(first), std::vector<std::string>(alice.begin(), alice.begin() + 30));

  // The WebSocket client of the same user sees the same events with the same cursors.
  const auto frames = ReadUntil(
      ws, [](const auto& f) { return CountEventFrames(f) >= 60; }, 30s);
  std::vector<std::string> ws_ids;
  std::vector<std::string> ws_cursors;
  for (const auto& f : frames) {
    if (f.type != "event") continue;
    ws_ids.push_back(f.event_id);
    ws_cursors.push_back(f.cursor);
  }
  ASSERT_EQ(ws_ids, alice);
  size_t i = 0;
  for (const auto& e : first) {
    if (e.event == "event") {
      EXPECT_EQ(e.id, ws_cursors[i++]) << "SSE id: is the cursor";
    }
  }

  // The replica drains: the response ends after what was already sent. The browser
  // reconnects with Last-Event-ID to another replica (here: a new one) and gets the rest,
  // once, in order.
  harness.StopGateway();
  const auto tail = ReadSse(sse, alice.size(), 10s);
  EXPECT_TRUE(sse.Ended()) << "the response ends on drain";
  const size_t consumed = 30 + EventIds(tail).size();
  ASSERT_LE(consumed, alice.size());
  EXPECT_EQ(EventIds(tail), std::vector<std::string>(alice.begin() + 30, alice.begin() + consumed));
  const std::string last_id = sse.LastEventId();
  for (uint32_t seq = 61; seq <= 80; ++seq) alice.push_back(harness.Publish("alice", "run-a", seq));
  harness.Flush();
  harness.StartGateway();

  SseClient again;
  auto resume = SseOptions(harness, "alice", "cursor=earliest");  // the URL EventSource kept
  resume.last_event_id = last_id;                                 // the header wins
  ASSERT_EQ(again.Connect(resume).status, 200);
  const auto rest = ReadSse(again, alice.size() - consumed, 30s, /*until_ready=*/true);
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(EventIds(rest), std::vector<std::string>(alice.begin() + consumed, alice.end()))
      << "every later event exactly once, in order";
  EXPECT_EQ(rest.back().event, "ready");
  EXPECT_EQ(nlohmann::json::parse(rest.back().data).at("replayed"), alice.size() - consumed);
}

// One user on two replicas at once: a WebSocket on one, SSE on the other. Both receive the
// same events in the same order with the same cursors (replicas share nothing but Kafka).
TEST(GatewaySse, WebSocketOnOneReplicaAndSseOnAnotherSeeTheSameSequence) {
  GatewayHarness harness(12);
  harness.StartGateway();
  gateway::Gateway other(harness.BaseConfig());
  other.Start();
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (HttpGet(other.Port(), "/readyz").status != 200) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "second replica never ready";
    std::this_thread::sleep_for(20ms);
  }

  WsClient ws;
  ASSERT_EQ(ws.Connect(harness.ClientOptions("carol", "cursor=earliest")).status, 101);
  SseClient sse;
  auto options = SseOptions(harness, "carol", "cursor=earliest");
  options.port = other.Port();
  ASSERT_EQ(sse.Connect(options).status, 200);

  std::vector<std::string> carol;
  for (uint32_t seq = 1; seq <= 200; ++seq) {
    carol.push_back(harness.Publish("carol", "run-c" + std::to_string(seq / 50), seq));
    harness.Publish("dave", "run-d", seq);
  }
  harness.Flush();

  const auto frames = ReadUntil(
      ws, [](const auto& f) { return CountEventFrames(f) >= 200; }, 60s);
  std::vector<std::string> ws_ids;
  std::vector<std::string> ws_cursors;
  for (const auto& f : frames) {
    if (f.type != "event") continue;
    ws_ids.push_back(f.event_id);
    ws_cursors.push_back(f.cursor);
  }
  const auto events = ReadSse(sse, 200, 60s);
  std::vector<std::string> sse_cursors;
  for (const auto& e : events) {
    if (e.event == "event") sse_cursors.push_back(e.id);
  }
  EXPECT_EQ(ws_ids, carol) << "WebSocket: every event once, in order";
  EXPECT_EQ(EventIds(events), carol) << "SSE on the other replica: the same";
  EXPECT_EQ(sse_cursors, ws_cursors) << "and the same cursors";
  other.Drain();
}

TEST(GatewaySse, RefusalsComeBeforeTheStreamAsJson) {
  GatewayHarness harness(4);
  harness.StartGateway();
  {
    SseClient client;
    auto options = SseOptions(harness, "alice");
    options.bearer.clear();
    const auto head = client.Connect(options);
    EXPECT_EQ(head.status, 401);
    EXPECT_NE(head.body.find("\"error\""), std::string::npos) << head.body;
  }
  {
    SseClient client;
    auto options = SseOptions(harness, "alice");
    options.last_event_id = "not-a-cursor";
    const auto head = client.Connect(options);
    EXPECT_EQ(head.status, 400);
    EXPECT_NE(head.body.find("bad_cursor"), std::string::npos) << head.body;
  }
  {
    // The token in the query, as EventSource (which cannot set headers) sends it.
    SseClient client;
    SseClient::Options options;
    options.port = harness.Port();
    options.target = "/v1/events?access_token=" + harness.Token("alice");
    const auto head = client.Connect(options);
    ASSERT_EQ(head.status, 200);
    const auto ready = client.Next(10s);
    ASSERT_TRUE(ready.has_value());
    EXPECT_EQ(ready->event, "ready");
  }
  {
    // Without Accept: text/event-stream a GET is the reference client's probe: 426.
    SseClient client;
    auto options = SseOptions(harness, "alice");
    options.accept.clear();
    EXPECT_EQ(client.Connect(options).status, 426);
  }
}

// A refusal that passes (replica full, too many connections of one user, draining) must not
// end an EventSource for good: EventSource never retries a response that is not 200. It gets a
// 200 stream with `retry:` and one `refused` event (the JSON body), which ends; EventSource
// comes back after `retry:`, and once there is room the same request streams.
TEST(GatewaySse, ARefusalThatPassesIsAStreamEventSourceRetries) {
  GatewayHarness harness(4);
  harness.StartGateway([](gateway::GatewayConfig& config) {
    config.max_connections = 1;
    config.allowed_origins = {"https://chat.example.com"};
  });
  WsClient holder;
  ASSERT_EQ(holder.Connect(harness.ClientOptions("bob")).status, 101);
  {
    SseClient client;
    auto options = SseOptions(harness, "alice");
    options.origin = "https://chat.example.com";
    const auto head = client.Connect(options);
    ASSERT_EQ(head.status, 200) << head.body;
    EXPECT_NE(head.headers.find("text/event-stream"), std::string::npos) << head.headers;
    EXPECT_NE(head.headers.find("https://chat.example.com"), std::string::npos)
        << "a cross-origin EventSource must be allowed to read the refusal: " << head.headers;
    const auto refused = client.Next(10s);
    ASSERT_TRUE(refused.has_value());
    EXPECT_EQ(refused->event, "refused");
    EXPECT_EQ(nlohmann::json::parse(refused->data).at("error"), "replica_full") << refused->data;
    EXPECT_EQ(client.RetryMs(), 5000);
    EXPECT_FALSE(client.Next(2s).has_value());
    EXPECT_TRUE(client.Ended());
  }
  {
    // A WebSocket upgrade (or any other HTTP client) still gets the status and Retry-After.
    WsClient refused;
    EXPECT_EQ(refused.Connect(harness.ClientOptions("carol")).status, 503);
  }
  holder.Close();
  // The retry once there is room: the same request streams.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    SseClient client;
    const auto head = client.Connect(SseOptions(harness, "alice"));
    ASSERT_EQ(head.status, 200);
    const auto first = client.Next(10s);
    ASSERT_TRUE(first.has_value());
    if (first->event == "ready") break;
    ASSERT_EQ(first->event, "refused") << first->data;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the slot was never freed";
    std::this_thread::sleep_for(100ms);
  }
}

}  // namespace
}  // namespace agentwire::testing
