// --tail auto across two real replica processes: each reads only the partitions of the users
// connected to it (its consumed-messages counter is its share of the topic, not the topic),
// and a user who reaches the "wrong" replica -- one that does not read their partition, or
// stopped reading it when its warm window ran out -- still gets every event exactly once, in
// order, across resumes from replica to replica.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <thread>

#include "agentwire/core/hashing.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/gateway_harness.hpp"
#include "support/replica_stream.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kPartitions = 8;
constexpr char kShareTopic[] = "tail.share";
constexpr char kWrongTopic[] = "tail.wrong";
constexpr char kConsumed[] = "agentwire_gateway_kafka_messages_total";
constexpr char kTailed[] = "agentwire_gateway_tailed_partitions";

class GatewayTailAutoTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = MakeTempDirectory("agentwire-tail-auto");
    const std::string bootstrap_file = directory_ + "/bootstrap";
    const auto spec = [](const char* topic) {
      return std::string(topic) + ":" + std::to_string(kPartitions);
    };
    broker_ = new Subprocess({AgentwireBinary(), "broker", "--bootstrap-file", bootstrap_file,
                              "--topic", spec(kShareTopic), "--topic", spec(kWrongTopic)});
    ASSERT_TRUE(WaitForFile(bootstrap_file, 30s)) << broker_->Describe();
    bootstrap_ = ReadFirstLine(bootstrap_file);
  }
  static void TearDownTestSuite() {
    delete broker_;
    broker_ = nullptr;
    std::filesystem::remove_all(directory_);
  }

  static GatewayProcess StartReplica(const std::string& name, const std::string& topic,
                                     const std::string& warm_window, bool warm_start = true) {
    return StartGatewayProcess(bootstrap_, directory_, name,
                               {"--topic", topic, "--tail", "auto", "--tail-warm-window",
                                warm_window, "--warm-start", warm_start ? "true" : "false"});
  }
  static WsClient::Options Options(uint16_t port, const std::string& user,
                                   const std::string& cursor) {
    return ResumeOptions(port, user, cursor);
  }

  /// Polls a gauge until it equals `value` (or `timeout`); returns the last reading.
  static double WaitForGauge(uint16_t port, const std::string& series, double value,
                             std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    double now = MetricValue(port, series);
    while (now != value && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
      now = MetricValue(port, series);
    }
    return now;
  }

  static Subprocess* broker_;
  static std::string directory_;
  static std::string bootstrap_;
};
Subprocess* GatewayTailAutoTest::broker_ = nullptr;
std::string GatewayTailAutoTest::directory_;
std::string GatewayTailAutoTest::bootstrap_;

// Users routed by partition (even partitions to A, odd to B), as a load balancer hashing on
// the user would: each replica reads its half of the topic, and every user gets all of theirs.
TEST_F(GatewayTailAutoTest, EachReplicaReadsTheShareOfTheUsersRoutedToIt) {
  auto a = StartReplica("share-a", kShareTopic, "60s");
  auto b = StartReplica("share-b", kShareTopic, "60s");
  EXPECT_EQ(MetricValue(a.port, kTailed), 0) << "nothing is read before a session needs it";

  constexpr int kUsersPerPartition = 3;
  constexpr int kEventsPerUser = 150;
  std::map<int, std::vector<std::string>> users_of;  // partition -> users
  for (int i = 0; static_cast<int>(users_of.size()) < kPartitions ||
                  std::any_of(users_of.begin(), users_of.end(),
                              [](const auto& p) { return p.second.size() < kUsersPerPartition; });
       ++i) {
    const std::string user = "share-user-" + std::to_string(i);
    auto& list = users_of[PartitionForKey(user, kPartitions)];
    if (list.size() < kUsersPerPartition) list.push_back(user);
  }

  struct Client {
    std::string user;
    std::unique_ptr<WsClient> ws;
    ClientLog log;
    std::vector<std::string> published;
  };
  std::vector<Client> clients;
  for (const auto& [partition, users] : users_of) {
    for (const auto& user : users) {
      Client client{user, std::make_unique<WsClient>(), {}, {}};
      const uint16_t port = partition % 2 == 0 ? a.port : b.port;
      ASSERT_EQ(client.ws->Connect(Options(port, user, "")).status, 101);
      clients.push_back(std::move(client));
    }
  }
  // Every client's `ready` first: its partition is tailed from then on.
  for (auto& client : clients) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (client.log.ready_frames == 0 && std::chrono::steady_clock::now() < deadline) {
      if (auto text = client.ws->Read(200ms)) {
        if (auto frame = ParseFrame(*text)) client.log.Take(*frame);
      }
    }
    ASSERT_EQ(client.log.ready_frames, 1) << client.user;
  }
  EXPECT_EQ(MetricValue(a.port, kTailed), kPartitions / 2);
  EXPECT_EQ(MetricValue(b.port, kTailed), kPartitions / 2);

  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", bootstrap_}, {"linger.ms", "5"}};
  config.topic = kShareTopic;
  producers::EventPublisher publisher(config);
  for (int seq = 1; seq <= kEventsPerUser; ++seq) {
    for (auto& client : clients) {
      v1::AgentEvent event;
      event.set_event_id(client.user + "-" + std::to_string(seq));
      event.set_user_id(client.user);
      event.set_thread_id("t-1");
      event.set_run_id("r-1");
      event.set_run_seq(static_cast<uint32_t>(seq));
      event.mutable_agent_thinking()->set_text("step");
      ASSERT_EQ(publisher.Publish(event, {}, 10s), producers::PublishStatus::kAccepted);
      client.published.push_back(event.event_id());
    }
  }
  publisher.Flush(30s);

  for (auto& client : clients) {
    client.log.ReadEvents(*client.ws, kEventsPerUser, 30s);
    client.log.ReadEvents(*client.ws, SIZE_MAX, 100ms);  // a duplicate would show up now
    const auto audit = CompareStreams(client.published, client.log.events);
    EXPECT_EQ(audit.lost, 0U) << client.user;
    EXPECT_EQ(audit.duplicated, 0U) << client.user;
    EXPECT_EQ(audit.reordered, 0U) << client.user;
  }

  const double total = static_cast<double>(clients.size() * kEventsPerUser);
  const double consumed_a = MetricValue(a.port, kConsumed);
  const double consumed_b = MetricValue(b.port, kConsumed);
  // Exactly half each when every message is read once; a fetch repeated after an assignment
  // change may add a few (the hub drops them).
  EXPECT_GE(consumed_a, total / 2);
  EXPECT_LE(consumed_a, total / 2 * 1.1);
  EXPECT_GE(consumed_b, total / 2);
  EXPECT_LE(consumed_b, total / 2 * 1.1);
  std::printf("consumed: A %.0f, B %.0f of %.0f messages on the topic\n", consumed_a, consumed_b,
              total);
}

// The user's replica is A. They resume on B, which reads nothing of theirs: the tail starts at
// the partition's end (no warm start), and the catch-up from the cursor to there reads Kafka.
// They leave B until its warm window (0 s) stops the tail, and resume on B again: every event
// exactly once, in order, while the stream is live.
TEST_F(GatewayTailAutoTest, AUserOnTheWrongReplicaGetsEverythingExactlyOnceAcrossResumes) {
  auto a = StartReplica("wrong-a", kWrongTopic, "60s");
  auto b = StartReplica("wrong-b", kWrongTopic, "0s", /*warm_start=*/false);
  const std::string user = "wrong-replica-user";
  constexpr int kTotal = 3000;
  PacedPublisher publisher(bootstrap_, user, kTotal, kWrongTopic);

  ClientLog log;
  {
    WsClient on_a;
    ASSERT_EQ(on_a.Connect(Options(a.port, user, "")).status, 101);
    log.ReadEvents(on_a, 300, 30s);
    ASSERT_GE(log.events.size(), 300U);
    EXPECT_EQ(MetricValue(b.port, kTailed), 0);
  }
  {
    WsClient on_b;
    ASSERT_EQ(on_b.Connect(Options(b.port, user, log.cursor)).status, 101);
    log.ReadEvents(on_b, 900, 30s);
    ASSERT_GE(log.events.size(), 900U);
    EXPECT_EQ(MetricValue(b.port, kTailed), 1);
  }
  // B stops reading the partition once idle for its window (checked every second).
  EXPECT_EQ(WaitForGauge(b.port, kTailed, 0, 10s), 0);
  EXPECT_FALSE(publisher.Done()) << "the last resume should land mid-stream; publish more";

  WsClient on_b_again;
  ASSERT_EQ(on_b_again.Connect(Options(b.port, user, log.cursor)).status, 101);
  log.ReadToTheEnd(on_b_again, publisher, kTotal);

  ExpectExactlyOnceInOrder(publisher.Published(), kTotal, log.events);
  EXPECT_EQ(log.ready_frames, 3);
  EXPECT_EQ(MetricValue(b.port, kTailed), 1);
}

}  // namespace
}  // namespace agentwire::testing
