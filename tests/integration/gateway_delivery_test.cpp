// The gateway delivers each user's events live, in order, as the JSON the contract names,
// and never to anyone else.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/producers/run_emitter.hpp"
#include "support/gateway_harness.hpp"
#include "support/kafka_test_utils.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

class GatewayDeliveryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new GatewayHarness(12);
    harness_->StartGateway();
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  static GatewayHarness* harness_;
};
GatewayHarness* GatewayDeliveryTest::harness_ = nullptr;

size_t CountEvents(const std::vector<Frame>& frames) {
  return static_cast<size_t>(std::count_if(frames.begin(), frames.end(),
                                           [](const Frame& f) { return f.type == "event"; }));
}

TEST_F(GatewayDeliveryTest, LifecycleArrivesInOrderAsContractJson) {
  WsClient client;
  ASSERT_EQ(client.Connect(harness_->ClientOptions("lifecycle-user")).status, 101);
  auto first = ReadUntil(
      client, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(first.size(), 1U);
  EXPECT_EQ(first[0].type, "ready");
  EXPECT_EQ(first[0].replayed, 0U);
  EXPECT_FALSE(first[0].cursor.empty());

  producers::EventPublisher publisher([&] {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness_->Kafka().BootstrapServers()}};
    config.topic = harness_->Topic();
    return config;
  }());
  {
    producers::RunEmitter run(publisher,
                              {"lifecycle-user", "t-9", "r-42", "researcher", "trace-1", {}});
    run.Started("find flights", "model-x");
    run.Thinking("checking dates");
    run.ToolExecuting("web_search", R"({"q":"flights"})", "call-1");
    run.ToolCompleted("web_search", "3 results", 812, "", "call-1");
    run.MessageDelta("Here ");
    run.Completed("Here are your flights", 1500);
  }
  {
    producers::RunEmitter failing(publisher,
                                  {"lifecycle-user", "t-9", "r-43", "researcher", "", {}});
    failing.Started("broken request");
    failing.ToolExecuting("sql_query", "SELECT 1", "call-1");
    failing.ToolCompleted("sql_query", "", 20, "permission denied", "call-1");
    failing.Failed("tool_error", "cannot continue");
  }
  ASSERT_EQ(publisher.Flush(30s), 0U);

  auto frames = ReadUntil(
      client, [](const auto& f) { return CountEvents(f) >= 10; }, 20s);
  ASSERT_EQ(CountEvents(frames), 10U);
  const std::vector<std::string> expected_types = {
      "agent_started",   "agent_thinking", "tool_executing", "tool_completed", "message_delta",
      "agent_completed", "agent_started",  "tool_executing", "tool_completed", "agent_failed"};
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto& json = frames[i].json;
    ASSERT_EQ(frames[i].type, "event");
    const auto& event = json["event"];
    EXPECT_EQ(event["type"], expected_types[i]) << json.dump();
    EXPECT_TRUE(event.contains(expected_types[i])) << "body named after the type";
    EXPECT_EQ(event["user_id"], "lifecycle-user");
    EXPECT_TRUE(event["run_seq"].is_number_unsigned());
    EXPECT_EQ(event["run_seq"].get<uint32_t>(), i < 6 ? i + 1 : i - 5);
    EXPECT_TRUE(event["emitted_at"].is_string());
    EXPECT_EQ(event["emitted_at"].get<std::string>().back(), 'Z');
    EXPECT_FALSE(json["cursor"].get<std::string>().empty());
  }
  const auto& tool = frames[3].json["event"]["tool_completed"];
  EXPECT_EQ(tool["tool_name"], "web_search");
  EXPECT_TRUE(tool["duration_ms"].is_number());
  EXPECT_EQ(tool["duration_ms"].get<int>(), 812);
  EXPECT_EQ(frames[8].json["event"]["tool_completed"]["error"], "permission denied");
  EXPECT_EQ(frames[9].json["event"]["agent_failed"]["error_code"], "tool_error");
  // Cursors are distinct and grow: each one resumes after its own event.
  std::set<std::string> cursors;
  for (const auto& frame : frames) cursors.insert(frame.cursor);
  EXPECT_EQ(cursors.size(), frames.size());
}

TEST_F(GatewayDeliveryTest, HundredUsersTwoSessionsEachReceiveOnlyTheirOwn) {
  constexpr int kUsers = 100;
  constexpr int kEventsPerUser = 20;
  std::vector<std::unique_ptr<WsClient>> clients;
  for (int u = 0; u < kUsers; ++u) {
    for (int s = 0; s < 2; ++s) {
      auto client = std::make_unique<WsClient>();
      ASSERT_EQ(client->Connect(harness_->ClientOptions("iso-" + std::to_string(u))).status, 101);
      clients.push_back(std::move(client));
    }
  }
  for (auto& client : clients) {
    auto ready = ReadUntil(
        *client, [](const auto& f) { return !f.empty(); }, 10s);
    ASSERT_EQ(ready.size(), 1U);
    ASSERT_EQ(ready[0].type, "ready");
  }
  std::map<std::string, std::vector<std::string>> published;
  for (int seq = 1; seq <= kEventsPerUser; ++seq) {
    for (int u = 0; u < kUsers; ++u) {
      const std::string user = "iso-" + std::to_string(u);
      published[user].push_back(harness_->Publish(user, "run-" + user, static_cast<uint32_t>(seq)));
    }
  }
  harness_->Flush();

  size_t leaks = 0, lost = 0, duplicated = 0, reordered = 0;
  for (size_t i = 0; i < clients.size(); ++i) {
    const std::string user = "iso-" + std::to_string(i / 2);
    auto frames = ReadUntil(
        *clients[i], [](const auto& f) { return CountEvents(f) >= kEventsPerUser; }, 30s);
    // Anything extra that is already in flight would be a leak or a duplicate.
    auto extra = ReadUntil(
        *clients[i], [](const auto&) { return false; }, 10ms);
    frames.insert(frames.end(), extra.begin(), extra.end());
    std::vector<std::string> received;
    for (const auto& frame : frames) {
      if (frame.type != "event") continue;
      if (frame.user_id != user) ++leaks;
      received.push_back(frame.event_id);
    }
    const auto& expected = published[user];
    std::set<std::string> unique(received.begin(), received.end());
    duplicated += received.size() - unique.size();
    for (const auto& id : expected) lost += !unique.contains(id) ? 1 : 0;
    if (received != expected && lost == 0 && duplicated == 0) ++reordered;
  }
  EXPECT_EQ(leaks, 0U);
  EXPECT_EQ(lost, 0U);
  EXPECT_EQ(duplicated, 0U);
  EXPECT_EQ(reordered, 0U);
}

TEST_F(GatewayDeliveryTest, ThreadAndRunFiltersNarrowTheStream) {
  WsClient by_run;
  WsClient by_thread;
  ASSERT_EQ(by_run.Connect(harness_->ClientOptions("filter-user", "run_id=r-b")).status, 101);
  ASSERT_EQ(by_thread.Connect(harness_->ClientOptions("filter-user", "thread_id=t-x")).status, 101);
  ASSERT_EQ(ReadUntil(
                by_run, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1U);
  ASSERT_EQ(ReadUntil(
                by_thread, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1U);
  for (uint32_t seq = 1; seq <= 5; ++seq) {
    harness_->Publish("filter-user", "r-a", seq, "t-x");
    harness_->Publish("filter-user", "r-b", seq, "t-y");
  }
  harness_->Flush();
  auto runs = ReadUntil(
      by_run, [](const auto& f) { return CountEvents(f) >= 5; }, 20s);
  auto threads = ReadUntil(
      by_thread, [](const auto& f) { return CountEvents(f) >= 5; }, 20s);
  runs.erase(
      std::remove_if(runs.begin(), runs.end(), [](const Frame& f) { return f.type != "event"; }),
      runs.end());
  threads.erase(std::remove_if(threads.begin(), threads.end(),
                               [](const Frame& f) { return f.type != "event"; }),
                threads.end());
  ASSERT_EQ(runs.size(), 5U);
  ASSERT_EQ(threads.size(), 5U);
  for (const auto& f : runs) EXPECT_EQ(f.run_id, "r-b");
  for (const auto& f : threads) EXPECT_EQ(f.run_id, "r-a");
}

TEST_F(GatewayDeliveryTest, OpsEndpointsAnswer) {
  EXPECT_EQ(HttpGet(harness_->Port(), "/healthz").status, 200);
  EXPECT_EQ(HttpGet(harness_->Port(), "/readyz").status, 200);
  const auto metrics = HttpGet(harness_->Port(), "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("agentwire_gateway_connections"), std::string::npos);
  EXPECT_NE(metrics.body.find("agentwire_gateway_delivery_latency_seconds_bucket"),
            std::string::npos);
  const auto page = HttpGet(harness_->Port(), "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<html"), std::string::npos);
  EXPECT_EQ(HttpGet(harness_->Port(), "/../etc/passwd").status, 404);
  EXPECT_EQ(HttpGet(harness_->Port(), "/v1/events").status, 401);
  const auto plain =
      HttpGet(harness_->Port(), "/v1/events", "Bearer " + harness_->Token("probe-user"));
  EXPECT_EQ(plain.status, 426);
  EXPECT_NE(plain.body.find("\"error\""), std::string::npos);
}

// One routing rule (issue 15): a record belongs to the user its key names. A record keyed by
// another user but whose payload says "alice" (a worker bug, or a forgery) sits in the key's
// order, so a resume could never deliver it again: it is delivered to nobody, live or on
// resume, and counted.
TEST_F(GatewayDeliveryTest, RecordWhoseKeyIsNotItsUserIsDeliveredToNobody) {
  const std::string user = "routing-alice";
  const int partitions = harness_->Partitions();
  const int partition = PartitionForKey(user, partitions);
  std::string other_key;  // another user's key that lands in alice's partition
  for (int i = 0; other_key.empty(); ++i) {
    const std::string candidate = "routing-mallory-" + std::to_string(i);
    if (PartitionForKey(candidate, partitions) == partition) other_key = candidate;
  }

  WsClient live;
  ASSERT_EQ(live.Connect(harness_->ClientOptions(user)).status, 101);
  const auto ready = ReadUntil(
      live, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(ready.size(), 1U);
  ASSERT_EQ(ready[0].type, "ready");

  v1::AgentEvent forged;
  forged.set_event_id("forged-1");
  forged.set_user_id(user);
  forged.set_run_id("r-forged");
  forged.set_run_seq(1);
  forged.mutable_agent_thinking()->set_text("not yours");
  const std::string value = forged.SerializeAsString();
  auto producer = kafka::MakeClient(
      RD_KAFKA_PRODUCER,
      kafka::MakeConf({{"bootstrap.servers", harness_->Kafka().BootstrapServers()}}));
  ASSERT_EQ(ProduceRaw(producer.get(), harness_->Topic(), other_key, value, partition),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(rd_kafka_flush(producer.get(), 10'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  const std::string genuine = harness_->Publish(user, "r-genuine", 1);
  harness_->Flush();

  auto has = [](const std::vector<Frame>& frames, const std::string& id) {
    return std::any_of(frames.begin(), frames.end(),
                       [&](const Frame& f) { return f.event_id == id; });
  };
  const auto live_frames = ReadUntil(
      live, [&](const auto& f) { return has(f, genuine); }, 10s);
  EXPECT_TRUE(has(live_frames, genuine));
  EXPECT_FALSE(has(live_frames, "forged-1")) << "delivered live by the payload's user_id";

  // A resume from before both records: the same answer from the catch-up path.
  WsClient resumed;
  ASSERT_EQ(resumed.Connect(harness_->ClientOptions(user, "cursor=" + ready[0].cursor)).status,
            101);
  const auto resumed_frames = ReadUntil(
      resumed, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 10s);
  EXPECT_TRUE(has(resumed_frames, genuine));
  EXPECT_FALSE(has(resumed_frames, "forged-1"));

  const auto metrics = HttpGet(harness_->Port(), "/metrics").body;
  EXPECT_NE(metrics.find("agentwire_gateway_key_mismatch_total 1"), std::string::npos) << metrics;
}

}  // namespace
}  // namespace agentwire::testing
