// Retention overtaking a replica: a gateway process that was frozen (SIGSTOP) while its
// partition's oldest messages were deleted must not go silent on that partition. Its sessions
// get `reset` (events were lost before delivery, and the client must know), then every event
// still in the log after that point, in order, and delivery goes on for new events.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "agentwire/core/hashing.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/gateway_harness.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTopic = "retention.v1";
constexpr int kPartitions = 2;

v1::AgentEvent Event(const std::string& user, const std::string& id, uint32_t seq,
                     size_t text_bytes = 16) {
  v1::AgentEvent event;
  event.set_event_id(id);
  event.set_user_id(user);
  event.set_thread_id("t-1");
  event.set_run_id("r-" + user);
  event.set_run_seq(seq);
  event.mutable_agent_thinking()->set_text(IncompressibleText(text_bytes));
  return event;
}

TEST(GatewayRetention, ReplicaBehindRetentionSendsResetAndKeepsDelivering) {
  const std::string directory = MakeTempDirectory("agentwire-retention");
  const std::string bootstrap_file = directory + "/bootstrap";
  Subprocess broker({AgentwireBinary(), "broker", "--brokers", "1", "--topic",
                     std::string(kTopic) + ":" + std::to_string(kPartitions), "--bootstrap-file",
                     bootstrap_file});
  ASSERT_TRUE(WaitForFile(bootstrap_file, 30s)) << broker.Describe();
  const std::string bootstrap = ReadFirstLine(bootstrap_file);

  const std::string port_file = directory + "/port";
  Subprocess::Options env;
  env.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_JWT_SECRET", "PORT", "AGENTWIRE_TOPIC"};
  Subprocess gateway({AgentwireBinary(), "gateway", "--brokers", bootstrap, "--topic", kTopic,
                      "--port", "0", "--port-file", port_file, "--jwt-secret", kTestJwtSecret},
                     env);
  ASSERT_TRUE(WaitForFile(port_file, 30s)) << gateway.Describe();
  const auto port = static_cast<uint16_t>(std::stoi(ReadFirstLine(port_file)));
  auto ready = [&] {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (HttpGet(port, "/readyz").status != 200) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(50ms);
    }
    return true;
  };
  ASSERT_TRUE(ready()) << gateway.Describe();

  // The watched user and a filler user in the same partition, whose events push the
  // watched user's older ones out of the embedded Kafka's ~5 MiB per-partition log.
  const std::string user = "retention-user";
  const int partition = PartitionForKey(user, kPartitions);
  std::string filler;
  for (int i = 0; filler.empty(); ++i) {
    const std::string candidate = "filler-" + std::to_string(i);
    if (PartitionForKey(candidate, kPartitions) == partition) filler = candidate;
  }

  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", bootstrap}, {"linger.ms", "1"}};
  config.topic = kTopic;
  producers::EventPublisher publisher(config);
  uint32_t seq = 0;
  auto publish = [&](const std::string& id) {
    ASSERT_EQ(publisher.Publish(Event(user, id, ++seq), {}, 10s),
              producers::PublishStatus::kAccepted);
  };

  WsClient client;
  WsClient::Options options;
  options.port = port;
  options.target = "/v1/events";
  options.bearer = gateway::MintHs256Token(kTestJwtSecret, user, std::chrono::hours(1));
  ASSERT_EQ(client.Connect(options).status, 101);

  std::vector<Frame> frames;
  auto read_until = [&](const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && !client.Closed() && std::chrono::steady_clock::now() < deadline) {
      if (auto text = client.Read(200ms)) {
        if (auto frame = ParseFrame(*text)) frames.push_back(*frame);
      }
    }
  };
  auto count = [&](const std::string& type) {
    return static_cast<size_t>(std::count_if(frames.begin(), frames.end(),
                                             [&](const Frame& f) { return f.type == type; }));
  };
  read_until([&] { return count("ready") == 1; }, 30s);
  ASSERT_EQ(count("ready"), 1U);

  for (int i = 1; i <= 5; ++i) publish("before-" + std::to_string(i));
  ASSERT_EQ(publisher.Flush(30s), 0U);
  read_until([&] { return count("event") == 5; }, 30s);
  ASSERT_EQ(count("event"), 5U);

  // Freeze the replica, then let retention delete an event it never read.
  gateway.Signal(SIGSTOP);
  publish("lost-1");
  ASSERT_EQ(publisher.Flush(30s), 0U);
  const int64_t lost_offset = [&] {
    const auto records = ConsumeAll(bootstrap, kTopic, 6, 30s);
    int64_t offset = -1;
    for (const auto& record : records) {
      v1::AgentEvent event;
      if (event.ParseFromString(record.value) && event.event_id() == "lost-1") {
        offset = record.offset;
      }
    }
    return offset;
  }();
  ASSERT_GE(lost_offset, 0);
  for (int i = 0; i < 12'000; ++i) {
    ASSERT_EQ(publisher.Publish(Event(filler, "filler-" + std::to_string(i), i + 1, 700), {}, 30s),
              producers::PublishStatus::kAccepted);
  }
  ASSERT_EQ(publisher.Flush(60s), 0U);
  const auto low = LowWatermarks(bootstrap, kTopic, 10s);
  ASSERT_GT(low.at(partition), lost_offset)
      << "the filler did not push lost-1 out of the log; publish more filler";
  for (int i = 1; i <= 5; ++i) publish("after-" + std::to_string(i));
  ASSERT_EQ(publisher.Flush(30s), 0U);
  gateway.Signal(SIGCONT);

  // reset, then the events still in the log, and delivery goes on.
  read_until([&] { return count("event") == 10; }, 60s);
  for (int i = 1; i <= 5; ++i) publish("later-" + std::to_string(i));
  ASSERT_EQ(publisher.Flush(30s), 0U);
  read_until([&] { return count("event") == 15; }, 60s);
  EXPECT_TRUE(ready()) << "/readyz must recover once the replica is past the gap";
  read_until([] { return false; }, 500ms);  // anything extra would show up here

  std::vector<std::string> expected;
  for (int i = 1; i <= 5; ++i) expected.push_back("before-" + std::to_string(i));
  expected.emplace_back("(reset)");
  for (int i = 1; i <= 5; ++i) expected.push_back("after-" + std::to_string(i));
  for (int i = 1; i <= 5; ++i) expected.push_back("later-" + std::to_string(i));
  std::vector<std::string> received;
  for (const auto& frame : frames) {
    if (frame.type == "event") received.push_back(frame.event_id);
    if (frame.type == "reset") received.emplace_back("(reset)");
  }
  EXPECT_EQ(received, expected) << gateway.Describe();
  EXPECT_FALSE(client.Closed()) << "close code " << client.CloseCode();

  gateway.Signal(SIGTERM);
  EXPECT_EQ(gateway.Wait(30s), std::optional<int>(0)) << gateway.Describe();
  std::filesystem::remove_all(directory);
}

}  // namespace
}  // namespace agentwire::testing
