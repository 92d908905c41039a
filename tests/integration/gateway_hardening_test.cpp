// What a hostile or careless client, or a misconfigured producer, can do to a replica (issue
// 25), each reproduced against a real replica and the embedded Kafka: a half-closed client that
// stopped reading, clients that stop reading while they hold the catch-up budget, a request for
// an empty path, a token whose exp cannot be scheduled, records in the wrong partition, and the
// SSE keep-alive cadence.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/gateway/auth.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "support/gateway_harness.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/sse_client.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Publishes `count` events of `user` with `text_bytes` of text each (compressible: the
/// embedded Kafka's partitions are small) and waits for Kafka's acknowledgement.
void PublishLarge(GatewayHarness& harness, const std::string& user, int count, size_t text_bytes) {
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", harness.Kafka().BootstrapServers()},
                              {"linger.ms", "5"}};
  config.topic = harness.Topic();
  producers::EventPublisher publisher(config);
  const std::string padding(text_bytes, 'p');
  for (int i = 1; i <= count; ++i) {
    v1::AgentEvent event;
    event.set_event_id(user + "-" + std::to_string(i));
    event.set_user_id(user);
    event.set_run_id("run-" + user);
    event.set_thread_id("t-1");
    event.set_run_seq(static_cast<uint32_t>(i));
    event.mutable_agent_thinking()->set_text(std::to_string(i) + padding);
    schemas::FillDefaults(event);
    ASSERT_EQ(publisher.Publish(event, {}, 10s), producers::PublishStatus::kAccepted);
  }
  ASSERT_EQ(publisher.Flush(30s), 0);
}

/// Polls `series` until it stops changing for `quiet` (and is at least `at_least`), or
/// `timeout` passes; returns the last value.
double WaitUntilSettled(uint16_t port, const std::string& series, double at_least,
                        std::chrono::milliseconds quiet, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  double value = MetricValue(port, series);
  auto since = Clock::now();
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    const double now = MetricValue(port, series);
    if (now != value) {
      value = now;
      since = Clock::now();
    } else if (value >= at_least && Clock::now() - since >= quiet) {
      break;
    }
  }
  return value;
}

/// Polls `series` until it is at most `at_most`; returns the last value.
double WaitForMetricAtMost(uint16_t port, const std::string& series, double at_most,
                           std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  double value = MetricValue(port, series);
  while (value > at_most && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    value = MetricValue(port, series);
  }
  return value;
}

/// A WebSocket client on a bare socket: the upgrade by hand, then whatever the test does with
/// the descriptor (stop reading, shut down one direction).
class RawWebSocket final {
 public:
  RawWebSocket(uint16_t port, int receive_buffer_bytes) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof(receive_buffer_bytes));
    timeval timeout{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~RawWebSocket() { ::close(fd_); }
  RawWebSocket(const RawWebSocket&) = delete;
  RawWebSocket& operator=(const RawWebSocket&) = delete;

  /// Sends the upgrade and reads the response head only (byte by byte: nothing after it).
  std::string Upgrade(const std::string& target, const std::string& token) {
    if (!connected_) return {};
    const std::string request = "GET " + target +
                                " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Authorization: Bearer " +
                                token + "\r\n\r\n";
    if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      return {};
    }
    std::string head;
    char byte = 0;
    while (head.find("\r\n\r\n") == std::string::npos && ::recv(fd_, &byte, 1, 0) == 1) {
      head.push_back(byte);
    }
    return head;
  }
  void ShutdownSending() { ::shutdown(fd_, SHUT_WR); }
  /// A masked close frame, code 1000, as a browser sends when the page closes the socket.
  bool SendClose() {
    const unsigned char frame[] = {0x88, 0x82, 0x01, 0x02, 0x03, 0x04, 0x03 ^ 0x01, 0xE8 ^ 0x02};
    return ::send(fd_, frame, sizeof(frame), MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof(frame));
  }
  /// Reads until the server closes the TCP connection (or 10 s pass without a byte) and
  /// returns the opcode of every frame received, in order (0x1 text, 0x8 close, ...).
  std::vector<int> ReadOpcodesUntilEnd() {
    std::string bytes;
    char chunk[65536];
    for (ssize_t n = 0; (n = ::recv(fd_, chunk, sizeof(chunk), 0)) > 0;) bytes.append(chunk, n);
    std::vector<int> opcodes;
    size_t at = 0;
    while (at + 2 <= bytes.size()) {
      const auto byte = [&](size_t i) { return static_cast<unsigned char>(bytes[at + i]); };
      uint64_t length = byte(1) & 0x7F;
      size_t header = 2;
      if (length == 126) {
        if (at + 4 > bytes.size()) break;
        length = (uint64_t{byte(2)} << 8) | byte(3);
        header = 4;
      } else if (length == 127) {
        if (at + 10 > bytes.size()) break;
        length = 0;
        for (size_t i = 2; i < 10; ++i) length = (length << 8) | byte(i);
        header = 10;
      }
      if (at + header + length > bytes.size()) break;  // cut short: not a whole frame
      opcodes.push_back(byte(0) & 0x0F);
      at += header + length;
    }
    return opcodes;
  }

 private:
  int fd_;
  bool connected_ = false;
};

TEST(GatewayHardening, AHalfClosedClientThatStoppedReadingLosesItsSlot) {
  GatewayHarness harness(4);
  harness.StartGateway([](gateway::GatewayConfig& config) {
    config.auth.leeway = 0s;
    config.catchup_stall_timeout = 0ms;  // this is about the half-close alone
  });
  const std::string user = "half-closed";
  // ~10 MB of frames: far more than the kernel's socket buffers hold.
  constexpr int kEvents = 300;
  PublishLarge(harness, user, kEvents, 32 * 1024);

  RawWebSocket client(harness.Port(), 4096);
  const auto head = client.Upgrade("/v1/events?cursor=earliest",
                                   gateway::MintHs256Token(kTestJwtSecret, user, 5s));
  ASSERT_NE(head.find(" 101 "), std::string::npos) << head;
  ASSERT_EQ(MetricValue(harness.Port(), "agentwire_gateway_connections"), 1);
  // The catch-up runs until the socket buffers are full, then a write waits for the client.
  const double delivered =
      WaitUntilSettled(harness.Port(), "agentwire_gateway_events_delivered_total", 1, 1s, 30s);
  ASSERT_LT(delivered, kEvents) << "the backlog fit in the socket buffers: nothing waits";

  client.ShutdownSending();
  // The session must end: the client will read nothing more. (It used to stay, past its
  // token's expiry too, holding its slot until a restart.)
  EXPECT_EQ(WaitForMetricAtMost(harness.Port(), "agentwire_gateway_connections", 0, 15s), 0)
      << "a half-closed client still holds its connection";
}

// RFC 6455 5.5.1: once a close frame was sent, no data frame may follow. Our event frames
// bypass Beast's write path, so when the client's close arrives while a catch-up is being
// written, Beast's close reply must be the last frame on the wire.
TEST(GatewayHardening, NoDataFrameFollowsTheCloseReply) {
  GatewayHarness harness(4);
  harness.StartGateway([](gateway::GatewayConfig& config) {
    config.catchup_stall_timeout = 0ms;  // this is about the close alone
  });
  const std::string user = "closing";
  constexpr int kEvents = 300;
  PublishLarge(harness, user, kEvents, 32 * 1024);  // ~10 MB: the catch-up waits for the client

  RawWebSocket client(harness.Port(), 4096);
  const auto head = client.Upgrade("/v1/events?cursor=earliest",
                                   gateway::MintHs256Token(kTestJwtSecret, user, 60s));
  ASSERT_NE(head.find(" 101 "), std::string::npos) << head;
  const double delivered =
      WaitUntilSettled(harness.Port(), "agentwire_gateway_events_delivered_total", 1, 1s, 30s);
  ASSERT_LT(delivered, kEvents) << "the backlog fit in the socket buffers: nothing waits";

  ASSERT_TRUE(client.SendClose());
  const auto opcodes = client.ReadOpcodesUntilEnd();
  const auto close = std::find(opcodes.begin(), opcodes.end(), 0x8);
  ASSERT_NE(close, opcodes.end()) << "no close reply among " << opcodes.size() << " frames";
  EXPECT_GT(std::count(opcodes.begin(), close, 0x1), 0) << "no event before the close";
  EXPECT_EQ(close + 1, opcodes.end())
      << std::count(close + 1, opcodes.end(), 0x1) << " data frames after the close reply";
}

TEST(GatewayHardening, ClientsThatStopReadingDoNotStallAnotherUsersResumeFromKafka) {
  constexpr size_t kBudget = 4u << 20;
  GatewayHarness harness(4);
  harness.StartGateway([](gateway::GatewayConfig& config) {
    config.cache_bytes = 0;  // every resume reads Kafka
    // Far more than a connection's CoalescingStream takes off the budget (64 KiB held and one
    // write on the wire), so a session that does not read really holds it.
    config.catchup_session_bytes = 512 * 1024;
    config.catchup_buffer_bytes = kBudget;
    config.catchup_stall_timeout = 0ms;  // the fair share alone must keep room for others
  });
  // The issue's scenario scaled down: two users with ~6 MB of frames each (more than the kernel
  // buffers of a connection absorb) open 12 sessions apiece that never read; at 512 KiB each
  // they would hold more than twice the 4 MiB budget.
  const std::vector<std::string> hostile = {"mallory-1", "mallory-2"};
  for (const auto& user : hostile) PublishLarge(harness, user, 600, 10 * 1024);
  std::vector<std::unique_ptr<WsClient>> stalled;
  for (const auto& user : hostile) {
    for (int i = 0; i < 12; ++i) {
      auto options = harness.ClientOptions(user, "cursor=earliest");
      options.receive_buffer_bytes = 4096;
      stalled.push_back(std::make_unique<WsClient>());
      ASSERT_EQ(stalled.back()->Connect(options).status, 101);
    }
  }
  const std::string buffered = "agentwire_gateway_catchup_buffered_bytes";
  const double held = WaitUntilSettled(harness.Port(), buffered, 1 << 20, 1s, 30s);
  RecordProperty("held_by_stalled_sessions", std::to_string(held));
  EXPECT_LT(held, kBudget) << "sessions that do not read hold the whole catch-up budget";

  // A third user resumes from Kafka: every event, then `ready`.
  constexpr int kEvents = 100;
  std::vector<std::string> published;
  for (int i = 1; i <= kEvents; ++i) published.push_back(harness.Publish("carol", "run-c", i));
  harness.Flush();
  // Once the replica has read them (so they come from the catch-up, not live):
  ASSERT_GE(WaitForMetric(harness.Port(), "agentwire_gateway_kafka_messages_total",
                          2 * 600 + kEvents, 30s),
            2 * 600 + kEvents);
  const std::string kafka_resumes = R"(agentwire_gateway_resumes_total{source="kafka"})";
  const double resumes_before = MetricValue(harness.Port(), kafka_resumes);
  WsClient carol;
  ASSERT_EQ(carol.Connect(harness.ClientOptions("carol", "cursor=earliest")).status, 101);
  const auto frames = ReadUntil(
      carol, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 20s);
  EXPECT_EQ(MetricValue(harness.Port(), kafka_resumes), resumes_before + 1);
  std::vector<std::string> received;
  for (const auto& frame : frames) {
    if (frame.type == "event") received.push_back(frame.event_id);
  }
  EXPECT_EQ(received, published);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().type, "ready");
}

TEST(GatewayHardening, SessionsThatHoldTheBudgetWithoutReadingAreClosedAndTheStallIsVisible) {
  GatewayHarness harness(4);
  harness.StartGateway([](gateway::GatewayConfig& config) {
    config.cache_bytes = 0;
    // One session's worth is the whole budget: one user that does not read exhausts it.
    config.catchup_session_bytes = 64 * 1024;
    config.catchup_buffer_bytes = 64 * 1024;
    config.catchup_stall_timeout = 2s;
  });
  PublishLarge(harness, "mallory", 600, 10 * 1024);
  harness.Publish("carol", "run-c", 1);
  harness.Flush();
  ASSERT_GE(WaitForMetric(harness.Port(), "agentwire_gateway_kafka_messages_total", 601, 30s), 601);
  std::vector<std::unique_ptr<WsClient>> stalled;
  for (int i = 0; i < 4; ++i) {
    auto options = harness.ClientOptions("mallory", "cursor=earliest");
    options.receive_buffer_bytes = 4096;
    stalled.push_back(std::make_unique<WsClient>());
    ASSERT_EQ(stalled.back()->Connect(options).status, 101);
  }
  // carol's resume waits behind them, and the replica says the history reader is stalled.
  WsClient carol;
  ASSERT_EQ(carol.Connect(harness.ClientOptions("carol", "cursor=earliest")).status, 101);
  EXPECT_EQ(WaitForMetric(harness.Port(), "agentwire_gateway_history_stalled", 1, 20s), 1);
  // The stalled sessions lose their share (1013) and carol gets her event and `ready`.
  const auto frames = ReadUntil(
      carol, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].type, "event");
  EXPECT_EQ(frames[1].type, "ready");
  EXPECT_GE(MetricValue(harness.Port(), "agentwire_gateway_catchup_stalled_closes_total"), 1);
  EXPECT_GT(MetricValue(harness.Port(), "agentwire_gateway_history_stalled_microseconds_total"), 0);
}

TEST(GatewayHardening, ARequestWithAnEmptyPathGets400AndTheReplicaGoesOn) {
  GatewayHarness harness(2);
  harness.StartGateway();
  for (int i = 0; i < 50; ++i) {
    const auto response = HttpGet(harness.Port(), "?x");
    ASSERT_EQ(response.status, 400) << "request " << i << ": " << response.body;
    EXPECT_EQ(nlohmann::json::parse(response.body).at("error"), "bad_request");
  }
  EXPECT_EQ(HttpGet(harness.Port(), "/healthz").status, 200);
}

TEST(GatewayHardening, ATokenWhoseExpCannotBeScheduledIsRefusedWith401) {
  GatewayHarness harness(2);
  harness.StartGateway();
  auto options = harness.ClientOptions("alice");
  // exp around the year 2290: past what a steady_clock deadline holds (2262).
  options.bearer =
      gateway::MintHs256Token(kTestJwtSecret, "alice", std::chrono::seconds(8'300'000'000LL));
  WsClient client;
  const auto result = client.Connect(options);
  EXPECT_EQ(result.status, 401) << "accepted, and its session's deadline overflowed";
  EXPECT_NE(result.body.find("2255"), std::string::npos) << result.body;
}

TEST(GatewayHardening, RecordsInTheWrongPartitionForTheirKeyAreCountedPerPartition) {
  constexpr int kPartitions = 4;
  GatewayHarness harness(kPartitions);
  harness.StartGateway();
  const std::string user = "alice";
  const int expected = PartitionForKey(user, kPartitions);
  const int wrong = (expected + 1) % kPartitions;
  // As a producer with another partitioner (CRC32) would: alice's record where murmur2 does not
  // put it. A correctly placed one next to it is not counted.
  v1::AgentEvent event;
  event.set_event_id("misplaced-1");
  event.set_user_id(user);
  event.set_run_id("run-1");
  event.set_run_seq(1);
  event.mutable_agent_thinking()->set_text("lost");
  schemas::FillDefaults(event);
  auto producer = kafka::MakeClient(
      RD_KAFKA_PRODUCER,
      kafka::MakeConf({{"bootstrap.servers", harness.Kafka().BootstrapServers()}}));
  ASSERT_EQ(ProduceRaw(producer.get(), harness.Topic(), user, event.SerializeAsString(), wrong), 0);
  ASSERT_EQ(ProduceRaw(producer.get(), harness.Topic(), user, event.SerializeAsString(), wrong), 0);
  ASSERT_EQ(rd_kafka_flush(producer.get(), 10'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  harness.Publish(user, "run-2", 1);
  harness.Flush();
  const std::string series =
      "agentwire_gateway_wrong_partition_total{partition=\"" + std::to_string(wrong) + "\"}";
  EXPECT_EQ(WaitForMetric(harness.Port(), series, 2, 20s), 2);
  EXPECT_EQ(MetricValue(harness.Port(), "agentwire_gateway_wrong_partition_total{partition=\"" +
                                            std::to_string(expected) + "\"}"),
            -1);
}

TEST(GatewayHardening, SseKeepAlivesGoOutEveryIntervalWhileNothingElseIsWritten) {
  constexpr auto kInterval = 400ms;
  GatewayHarness harness(2);
  harness.StartGateway(
      [&](gateway::GatewayConfig& config) { config.event_stream_keep_alive = kInterval; });
  SseClient client;
  SseClient::Options options;
  options.port = harness.Port();
  options.bearer = harness.Token("alice");
  ASSERT_EQ(client.Connect(options).status, 200);
  ASSERT_TRUE(client.Next(10s).has_value());  // `ready`
  // Record when each comment arrives, for a few intervals.
  std::vector<Clock::time_point> arrivals;
  size_t seen = client.Comments();
  const auto until = Clock::now() + 10 * kInterval;
  while (Clock::now() < until && !client.Ended()) {
    client.Next(20ms);
    if (client.Comments() != seen) {
      seen = client.Comments();
      arrivals.push_back(Clock::now());
    }
  }
  ASSERT_GE(arrivals.size(), 3u) << "too few keep-alives to judge their cadence";
  std::vector<Clock::duration> gaps;
  for (size_t i = 1; i < arrivals.size(); ++i) gaps.push_back(arrivals[i] - arrivals[i - 1]);
  std::sort(gaps.begin(), gaps.end());
  const auto median = gaps[gaps.size() / 2];
  // Every interval, not every other one (the keep-alive itself used to count as output).
  EXPECT_LT(median, kInterval * 3 / 2)
      << "median gap " << std::chrono::duration_cast<std::chrono::milliseconds>(median).count()
      << " ms for an interval of " << kInterval.count() << " ms";
}

}  // namespace
}  // namespace agentwire::testing
