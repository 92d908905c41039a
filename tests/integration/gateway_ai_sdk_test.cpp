// GET /v1/ai-sdk/chats/{thread_id}/stream: the Vercel AI SDK's resume endpoint, backed by the
// log. A thread without a run in progress gets 204; otherwise the run in progress is replayed
// from its agent_started and followed live as a UI message stream, to `finish` + [DONE] (or
// `error` + [DONE] for a failed run). Replays of one run are byte-identical (part ids come from
// the run id and the log offset).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agentwire/gateway/auth.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/run_emitter.hpp"
#include "support/gateway_harness.hpp"
#include "support/sse_client.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class GatewayAiSdk : public ::testing::Test {
 protected:
  GatewayAiSdk() : harness_(4) {
    harness_.StartGateway();
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness_.Kafka().BootstrapServers()},
                                {"linger.ms", "0"}};
    config.topic = harness_.Topic();
    publisher_ = std::make_unique<producers::EventPublisher>(config);
  }

  SseClient::Options StreamOptions(const std::string& user, const std::string& thread) {
    SseClient::Options options;
    options.port = harness_.Port();
    options.bearer = harness_.Token(user);
    options.target = "/v1/ai-sdk/chats/" + thread + "/stream";
    options.accept = "text/event-stream";
    return options;
  }

  // A live WebSocket of `user`, past its `ready`: it tells when the replica has read events.
  void ConnectWatcher(WsClient& watcher, const std::string& user) {
    ASSERT_EQ(watcher.Connect(harness_.ClientOptions(user)).status, 101);
    ASSERT_EQ(ReadUntil(
                  watcher, [](const auto& f) { return !f.empty(); }, 10s)
                  .size(),
              1u);
  }

  // Waits until the replica has read `count` events of `user` (a live WebSocket sees them).
  void WaitDelivered(WsClient& watcher, size_t count) {
    seen_ += ReadUntil(
                 watcher, [&](const auto& f) { return seen_ + f.size() >= count; }, 30s)
                 .size();
    ASSERT_GE(seen_, count);
  }

  // Reads `data:` payloads until [DONE], the end of the response, or `count` of them.
  static std::vector<std::string> ReadData(SseClient& client, size_t count = 1000) {
    std::vector<std::string> data;
    while (data.size() < count) {
      auto next = client.Next(15s);
      if (!next) break;
      data.push_back(next->data);
      if (next->data == "[DONE]") break;
    }
    return data;
  }

  static std::vector<std::string> Types(const std::vector<std::string>& data) {
    std::vector<std::string> types;
    types.reserve(data.size());
    for (const auto& d : data)
      types.push_back(d == "[DONE]" ? d : json::parse(d).at("type").get<std::string>());
    return types;
  }

  GatewayHarness harness_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  size_t seen_ = 0;
};

TEST_F(GatewayAiSdk, ARunInProgressIsReplayedFromItsStartAndFollowedLiveToDone) {
  WsClient watcher;
  ASSERT_NO_FATAL_FAILURE(ConnectWatcher(watcher, "alice"));

  {
    SseClient none;
    EXPECT_EQ(none.Connect(StreamOptions("alice", "t-1")).status, 204) << "no run yet";
  }
  producers::RunEmitter run(*publisher_, {"alice", "t-1", "r-1", "researcher", "", {}});
  ASSERT_EQ(run.Started("what is the weather"), producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.Thinking("look it up"), producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.ToolExecuting("search", R"({"q":"weather"})", "c1"),
            producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.ToolCompleted("search", "sunny", 12, "", "c1"),
            producers::PublishStatus::kAccepted);
  ASSERT_EQ(publisher_->Flush(10s), 0u);
  WaitDelivered(watcher, 4);

  // Resumed mid-run: the replay, then live.
  SseClient client;
  const auto head = client.Connect(StreamOptions("alice", "t-1"));
  ASSERT_EQ(head.status, 200) << head.body;
  EXPECT_NE(head.headers.find("x-vercel-ai-ui-message-stream: v1"), std::string::npos);
  auto data = ReadData(client, 9);
  ASSERT_EQ(run.MessageDelta("It is "), producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.MessageDelta("sunny."), producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.Completed("It is sunny.", 900), producers::PublishStatus::kAccepted);
  ASSERT_EQ(publisher_->Flush(10s), 0u);
  for (auto& more : ReadData(client)) data.push_back(std::move(more));

  EXPECT_EQ(Types(data), (std::vector<std::string>{
                             "start", "start-step", "reasoning-start", "reasoning-delta",
                             "reasoning-end", "tool-input-available", "tool-output-available",
                             "finish-step", "start-step", "text-start", "text-delta", "text-delta",
                             "text-end", "finish-step", "finish", "[DONE]"}));
  ASSERT_EQ(data.size(), 16u);
  EXPECT_EQ(json::parse(data[0]), (json{{"type", "start"}, {"messageId", "r-1"}}));
  EXPECT_EQ(json::parse(data[3]).at("delta"), "look it up");
  EXPECT_EQ(json::parse(data[5]), (json{{"type", "tool-input-available"},
                                        {"toolCallId", "c1"},
                                        {"toolName", "search"},
                                        {"input", {{"q", "weather"}}},
                                        {"dynamic", true}}));
  EXPECT_EQ(json::parse(data[6]),
            (json{{"type", "tool-output-available"}, {"toolCallId", "c1"}, {"output", "sunny"}}));
  EXPECT_EQ(json::parse(data[10]).at("delta"), "It is ");
  EXPECT_EQ(json::parse(data[11]).at("delta"), "sunny.");
  EXPECT_EQ(json::parse(data[9]).at("id"), json::parse(data[12]).at("id"));
  EXPECT_FALSE(client.Next(5s).has_value());
  EXPECT_TRUE(client.Ended()) << "the response ends after [DONE]";

  SseClient after;
  EXPECT_EQ(after.Connect(StreamOptions("alice", "t-1")).status, 204) << "the run has ended";
  SseClient other_user;
  EXPECT_EQ(other_user.Connect(StreamOptions("bob", "t-1")).status, 204)
      << "bob has no run in alice's thread";
}

// --tail auto: the replica reads nothing of alice's partition when her chat page reloads and
// asks for the run in progress. It starts reading the partition, waits until it has read up
// to the log's end, and finds the run (not 204).
TEST_F(GatewayAiSdk, ARunIsFoundOnAReplicaThatWasNotReadingItsPartition) {
  harness_.StartGateway([](gateway::GatewayConfig& config) {
    config.tail = gateway::TailMode::kAuto;
    config.tail_warm_window = std::chrono::milliseconds(0);
  });
  producers::RunEmitter run(*publisher_, {"alice", "t-1", "r-1", "researcher", "", {}});
  ASSERT_EQ(run.Started("what is the weather"), producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.Thinking("look it up"), producers::PublishStatus::kAccepted);
  ASSERT_EQ(publisher_->Flush(10s), 0u);
  ASSERT_EQ(MetricValue(harness_.Port(), "agentwire_gateway_tailed_partitions"), 0);

  SseClient client;
  const auto head = client.Connect(StreamOptions("alice", "t-1"));
  ASSERT_EQ(head.status, 200) << head.body;
  ASSERT_EQ(run.Completed("sunny", 100), producers::PublishStatus::kAccepted);
  ASSERT_EQ(publisher_->Flush(10s), 0u);
  const auto data = ReadData(client);
  ASSERT_FALSE(data.empty());
  EXPECT_EQ(json::parse(data.front()), (json{{"type", "start"}, {"messageId", "r-1"}}));
  EXPECT_EQ(data.back(), "[DONE]");
}

TEST_F(GatewayAiSdk, ReplaysAreIdenticalAndAFailedRunEndsInAnError) {
  WsClient watcher;
  ASSERT_NO_FATAL_FAILURE(ConnectWatcher(watcher, "carol"));
  producers::RunEmitter run(*publisher_, {"carol", "t-9", "r-9", "researcher", "", {}});
  ASSERT_EQ(run.Started("plan a trip"), producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.Thinking("consider trains"), producers::PublishStatus::kAccepted);
  ASSERT_EQ(run.MessageDelta("Trains are "), producers::PublishStatus::kAccepted);
  ASSERT_EQ(publisher_->Flush(10s), 0u);
  WaitDelivered(watcher, 3);

  SseClient first;
  ASSERT_EQ(first.Connect(StreamOptions("carol", "t-9")).status, 200);
  const auto once = ReadData(first, 7);
  SseClient second;
  ASSERT_EQ(second.Connect(StreamOptions("carol", "t-9")).status, 200);
  const auto twice = ReadData(second, 7);
  ASSERT_EQ(once.size(), 7u);
  EXPECT_EQ(once, twice) << "part ids from the run id and the log offset: identical replays";

  ASSERT_EQ(run.Failed("upstream_timeout", "the booking API timed out"),
            producers::PublishStatus::kAccepted);
  ASSERT_EQ(publisher_->Flush(10s), 0u);
  const auto rest = ReadData(second);
  EXPECT_EQ(Types(rest), (std::vector<std::string>{"text-end", "error", "[DONE]"}));
  ASSERT_EQ(rest.size(), 3u);
  EXPECT_EQ(json::parse(rest[1]),
            (json{{"type", "error"}, {"errorText", "the booking API timed out"}}));
}

TEST_F(GatewayAiSdk, PreflightAndCorsForAllowedOriginsAndTheTokenIsRequired) {
  SseClient preflight;
  auto options = StreamOptions("alice", "t-1");
  options.method = "OPTIONS";
  options.bearer.clear();
  options.origin = "https://chat.example";
  const auto head = preflight.Connect(options);
  EXPECT_EQ(head.status, 204);
  EXPECT_NE(head.headers.find("Access-Control-Allow-Origin: https://chat.example"),
            std::string::npos)
      << head.headers;
  EXPECT_NE(head.headers.find("Authorization"), std::string::npos) << "allowed header";

  SseClient anonymous;
  auto no_token = StreamOptions("alice", "t-1");
  no_token.bearer.clear();
  EXPECT_EQ(anonymous.Connect(no_token).status, 401);

  SseClient none;
  auto with_origin = StreamOptions("alice", "t-1");
  with_origin.origin = "https://chat.example";
  const auto empty = none.Connect(with_origin);
  EXPECT_EQ(empty.status, 204);
  EXPECT_NE(empty.headers.find("Access-Control-Allow-Origin: https://chat.example"),
            std::string::npos);
}

TEST_F(GatewayAiSdk, HostileThreadIdsAreJustThreadsWithoutARun) {
  for (const std::string& thread :
       {std::string("%00"), std::string("a%0Ab%1B[2J"), std::string(4000, 't'),
        std::string("..%2F..%2Fetc"), std::string("%E2%80%AE%F0%9F%98%80")}) {
    SseClient client;
    EXPECT_EQ(client.Connect(StreamOptions("alice", thread)).status, 204) << thread.substr(0, 40);
  }
  SseClient empty;
  auto options = StreamOptions("alice", "");
  EXPECT_EQ(empty.Connect(options).status, 404) << "no thread id: not this endpoint";
}

TEST_F(GatewayAiSdk, AStreamWhoseTokenExpiresEndsInAnErrorTheSdkShows) {
  harness_.StartGateway([](gateway::GatewayConfig& config) { config.auth.leeway = 1s; });
  WsClient watcher;
  ASSERT_NO_FATAL_FAILURE(ConnectWatcher(watcher, "dora"));
  producers::RunEmitter run(*publisher_, {"dora", "t-5", "r-5", "researcher", "", {}});
  ASSERT_EQ(run.Started("a long task"), producers::PublishStatus::kAccepted);
  ASSERT_EQ(publisher_->Flush(10s), 0u);
  WaitDelivered(watcher, 1);

  SseClient client;
  auto options = StreamOptions("dora", "t-5");
  options.port = harness_.Port();
  options.bearer = gateway::MintHs256Token(kTestJwtSecret, "dora", 2s);
  ASSERT_EQ(client.Connect(options).status, 200);
  const auto data = ReadData(client);  // start, start-step, then nothing until the token ends
  EXPECT_EQ(Types(data), (std::vector<std::string>{"start", "start-step", "error", "[DONE]"}));
  ASSERT_EQ(data.size(), 4u);
  EXPECT_EQ(json::parse(data[2]).at("errorText"), "token_expired");
  run.Completed("done");
}

}  // namespace
}  // namespace agentwire::testing
