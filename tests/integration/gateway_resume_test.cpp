// The guarantee: a client that reconnects with the last cursor it received gets every later
// event of its user exactly once, in order — from the cache, from Kafka, or a `reset` when
// the history is gone.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/hashing.hpp"
#include "support/gateway_harness.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

struct Audit {
  size_t lost = 0;
  size_t duplicated = 0;
  size_t reordered = 0;
};

Audit Compare(const std::vector<std::string>& expected, const std::vector<std::string>& received) {
  Audit audit;
  std::set<std::string> seen;
  for (const auto& id : received) {
    if (!seen.insert(id).second) ++audit.duplicated;
  }
  for (const auto& id : expected) audit.lost += !seen.contains(id) ? 1 : 0;
  // Order: the received sequence (first occurrences) must be a prefix-consistent copy.
  std::vector<std::string> firsts;
  std::set<std::string> once;
  for (const auto& id : received) {
    if (once.insert(id).second) firsts.push_back(id);
  }
  size_t j = 0;
  for (const auto& id : expected) {
    if (j < firsts.size() && firsts[j] == id) ++j;
  }
  audit.reordered = firsts.size() - j;
  return audit;
}

// Streams `total` events for one user while a client disconnects at random points and
// resumes with its last cursor each time.
Audit StreamWithDisconnects(GatewayHarness& harness, const std::string& user, int total,
                            int disconnects, uint64_t seed) {
  std::vector<std::string> published;
  std::atomic<bool> publishing_done{false};
  std::thread publisher([&] {
    for (int i = 1; i <= total; ++i) {
      published.push_back(harness.Publish(user, "run-" + user, static_cast<uint32_t>(i)));
      if (i % 25 == 0) {
        harness.Flush();
        std::this_thread::sleep_for(5ms);
      }
    }
    harness.Flush();
    publishing_done = true;
  });

  std::mt19937_64 rng(seed);
  std::vector<std::string> received;
  std::string cursor;
  int connections = 0;
  while (true) {
    WsClient client;
    const std::string query = cursor.empty() ? "cursor=earliest" : "cursor=" + cursor;
    const auto handshake = client.Connect(harness.ClientOptions(user, query));
    if (handshake.status != 101) {
      ADD_FAILURE() << "handshake " << handshake.status << " " << handshake.body;
      break;
    }
    ++connections;
    const bool last = connections > disconnects;
    const size_t read_budget = last ? SIZE_MAX : std::uniform_int_distribution<size_t>(1, 40)(rng);
    size_t read_events = 0;
    bool saw_ready = false;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (last && publishing_done && received.size() >= static_cast<size_t>(total)) break;
      auto text = client.Read(200ms);
      if (!text) {
        if (client.Closed()) break;
        continue;
      }
      auto frame = ParseFrame(*text);
      if (!frame) continue;
      if (frame->type == "ready") {
        if (saw_ready) ADD_FAILURE() << "two ready frames on one connection";
        saw_ready = true;
        cursor = frame->cursor;
      } else if (frame->type == "event") {
        received.push_back(frame->event_id);
        cursor = frame->cursor;
        if (++read_events >= read_budget) break;
      } else if (frame->type == "reset") {
        ADD_FAILURE() << "unexpected reset";
      }
    }
    client.Abort();  // a network failure, not a clean close
    if (last) break;
  }
  publisher.join();
  return Compare(published, received);
}

TEST(GatewayResume, FromCacheAtRandomPoints) {
  GatewayHarness harness(12);
  harness.StartGateway();
  const auto audit = StreamWithDisconnects(harness, "cache-user", 400, 12, 1);
  EXPECT_EQ(audit.lost, 0U);
  EXPECT_EQ(audit.duplicated, 0U);
  EXPECT_EQ(audit.reordered, 0U);
  const auto metrics = HttpGet(harness.Port(), "/metrics").body;
  EXPECT_NE(metrics.find(R"(agentwire_gateway_resumes_total{source="cache"})"), std::string::npos);
}

TEST(GatewayResume, FromKafkaWithCacheDisabled) {
  GatewayHarness harness(12);
  harness.StartGateway([](gateway::GatewayConfig& config) { config.cache_bytes = 0; });
  const auto audit = StreamWithDisconnects(harness, "kafka-user", 300, 10, 2);
  EXPECT_EQ(audit.lost, 0U);
  EXPECT_EQ(audit.duplicated, 0U);
  EXPECT_EQ(audit.reordered, 0U);
  const auto metrics = HttpGet(harness.Port(), "/metrics").body;
  const std::string series = R"(agentwire_gateway_resumes_total{source="kafka"} )";
  const auto at = metrics.find(series);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(std::stoi(metrics.substr(at + series.size())), 0);
}

TEST(GatewayResume, ResumesFromAReplicaThatStartedLater) {
  GatewayHarness harness(12);
  harness.StartGateway();
  std::vector<std::string> published;
  for (uint32_t i = 1; i <= 50; ++i) published.push_back(harness.Publish("late-user", "r", i));
  harness.Flush();
  // A replica started after the events exist has them only in Kafka, not in its cache.
  harness.StartGateway();
  WsClient client;
  ASSERT_EQ(client.Connect(harness.ClientOptions("late-user", "cursor=earliest")).status, 101);
  auto frames = ReadUntil(
      client, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().type, "ready");
  EXPECT_EQ(frames.back().replayed, 50U);
  std::vector<std::string> received;
  for (const auto& f : frames) {
    if (f.type == "event") received.push_back(f.event_id);
  }
  EXPECT_EQ(received, published);

  // Resume from the middle on yet another replica: exactly the second half.
  const std::string middle = frames[24].cursor;
  harness.StartGateway([](gateway::GatewayConfig& config) { config.cache_bytes = 0; });
  WsClient resumed;
  ASSERT_EQ(resumed.Connect(harness.ClientOptions("late-user", "cursor=" + middle)).status, 101);
  auto rest = ReadUntil(
      resumed, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s);
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.back().replayed, 25U);
  std::vector<std::string> second_half;
  for (const auto& f : rest) {
    if (f.type == "event") second_half.push_back(f.event_id);
  }
  EXPECT_EQ(second_half, std::vector<std::string>(published.begin() + 25, published.end()));
}

TEST(GatewayResume, ReadyCursorIsAResumePointEvenWithNothingSent) {
  GatewayHarness harness(12);
  harness.StartGateway();
  WsClient first;
  ASSERT_EQ(first.Connect(harness.ClientOptions("quiet-user")).status, 101);
  auto ready = ReadUntil(
      first, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(ready.size(), 1U);
  first.Abort();
  // Events published after the ready frame, while disconnected, all arrive on resume.
  std::vector<std::string> published;
  for (uint32_t i = 1; i <= 10; ++i) published.push_back(harness.Publish("quiet-user", "r", i));
  harness.Flush();
  // Resume once the replica has read all ten: then every one of them is history (replayed
  // before `ready`), none arrives live after it.
  ASSERT_GE(WaitForMetric(harness.Port(), "agentwire_gateway_kafka_messages_total", 10, 20s), 10);
  WsClient second;
  ASSERT_EQ(second.Connect(harness.ClientOptions("quiet-user", "cursor=" + ready[0].cursor)).status,
            101);
  auto frames = ReadUntil(
      second, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 20s);
  std::vector<std::string> received;
  for (const auto& f : frames) {
    if (f.type == "event") received.push_back(f.event_id);
  }
  EXPECT_EQ(received, published);
  EXPECT_EQ(frames.back().replayed, 10U);
}

TEST(GatewayResume, CursorOfAnotherTopicGetsReset) {
  GatewayHarness harness(12);
  harness.StartGateway();
  const int partition = PartitionForKey("reset-user", 12);
  const auto foreign =
      EncodeCursor({1, TopicHash("some.other.topic"), 12, static_cast<uint32_t>(partition), 5});
  WsClient client;
  ASSERT_EQ(client.Connect(harness.ClientOptions("reset-user", "cursor=" + foreign)).status, 101);
  auto frames = ReadUntil(
      client, [](const auto& f) { return f.size() >= 2; }, 10s);
  ASSERT_EQ(frames.size(), 2U);
  EXPECT_EQ(frames[0].type, "reset");
  EXPECT_EQ(frames[0].json["reason"], "history_unavailable");
  EXPECT_EQ(frames[1].type, "ready");
  // And the stream goes on live after the reset.
  const auto id = harness.Publish("reset-user", "r", 1);
  harness.Flush();
  auto live = ReadUntil(
      client, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(live.size(), 1U);
  EXPECT_EQ(live[0].event_id, id);
}

TEST(GatewayResume, CursorOlderThanTheRetainedLogGetsReset) {
  // One partition: the embedded Kafka keeps ~5 MiB per partition and drops older batches,
  // which moves the low watermark past offset 0.
  GatewayHarness harness(1);
  harness.StartGateway([](gateway::GatewayConfig& config) { config.cache_bytes = 0; });
  const std::string big(64 * 1024, 'x');
  producers::EventPublisher publisher([&] {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness.Kafka().BootstrapServers()},
                                {"compression.type", "none"},
                                {"linger.ms", "0"}};
    config.topic = harness.Topic();
    return config;
  }());
  for (uint32_t i = 1; i <= 160; ++i) {  // ~10 MiB
    v1::AgentEvent event;
    event.set_event_id("big-" + std::to_string(i));
    event.set_user_id("old-user");
    event.set_run_id("r");
    event.set_run_seq(i);
    event.mutable_agent_thinking()->set_text(big);
    ASSERT_EQ(publisher.Publish(event, {}, 10s), producers::PublishStatus::kAccepted);
    ASSERT_EQ(publisher.Flush(10s), 0U);
  }
  const auto stale = EncodeCursor({1, TopicHash(harness.Topic()), 1, 0, 0});
  WsClient client;
  ASSERT_EQ(client.Connect(harness.ClientOptions("old-user", "cursor=" + stale)).status, 101);
  auto frames = ReadUntil(
      client, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s);
  ASSERT_GE(frames.size(), 2U);
  EXPECT_EQ(frames[0].type, "reset");
  EXPECT_EQ(frames.back().type, "ready");
}

TEST(GatewayResume, MalformedCursorIsRejectedBeforeTheUpgrade) {
  GatewayHarness harness(12);
  harness.StartGateway();
  for (const char* bad : {"not-a-cursor", "AAAA", "%25%25", "AQAAAAE"}) {
    WsClient client;
    const auto result = client.Connect(harness.ClientOptions("u", std::string("cursor=") + bad));
    EXPECT_EQ(result.status, 400) << bad;
    EXPECT_NE(result.body.find(R"("error":"bad_cursor")"), std::string::npos) << result.body;
  }
  // A cursor of another user's partition cannot widen what a client receives.
  const int mine = PartitionForKey("alice", 12);
  const auto other =
      EncodeCursor({1, TopicHash(harness.Topic()), 12, static_cast<uint32_t>((mine + 1) % 12), 0});
  WsClient client;
  EXPECT_EQ(client.Connect(harness.ClientOptions("alice", "cursor=" + other)).status, 400);
}

// The catch-up and warm-start flags refuse nonsense at start: one line naming the flag, exit 2
// (never a gateway that pauses every session at 0 bytes or waits forever to be ready).
TEST(GatewayResumeConfig, HostileCatchupWarmStartAndTailFlagsRefuseToStart) {
  const std::vector<std::vector<std::string>> cases = {
      {"--catchup-session-bytes", "10"},
      {"--catchup-session-bytes", "-5"},
      {"--catchup-buffer-bytes", "1e400"},
      {"--catchup-buffer-bytes", "70000", "--catchup-session-bytes", "1048576"},
      {"--warm-start-timeout", "abc"},
      {"--warm-start-timeout", "999999999999d"},
      {"--warm-start", "maybe"},
      {"--max-catchup-events", "-1"},
      {"--max-catchup-events", "1e400"},
      {"--max-catchup-events", "ten"},
      {"--jwt-leeway", "-5s"},
      {"--jwt-leeway", "2h"},
      {"--jwt-leeway", "9999999999999999999s"},
      {"--tail", "some"},
      {"--tail", ""},
      {"--tail", "AUTO\x01"},
      {"--tail-warm-window", "-5s"},
      {"--tail-warm-window", "soon"},
      {"--tail-warm-window", "999999999999d"},
  };
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_CATCHUP_BUFFER_BYTES", "AGENTWIRE_WARM_START",
                       "AGENTWIRE_WARM_START_TIMEOUT",   "AGENTWIRE_MAX_CATCHUP_EVENTS",
                       "AGENTWIRE_JWT_LEEWAY",           "AGENTWIRE_TAIL",
                       "AGENTWIRE_TAIL_WARM_WINDOW"};
  for (const auto& flags : cases) {
    std::vector<std::string> argv{AgentwireBinary(), "gateway",      "--brokers",
                                  "127.0.0.1:9",     "--jwt-secret", kTestJwtSecret};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const auto result = agentwire::testing::Run(argv, options, 20s);
    EXPECT_EQ(result.exit_code, std::optional<int>(2)) << flags[0] << " " << flags[1] << "\n"
                                                       << result.stderr_text;
    EXPECT_NE(result.stderr_text.find(flags[0].substr(0, 8)), std::string::npos)
        << result.stderr_text;
  }
}

}  // namespace
}  // namespace agentwire::testing
