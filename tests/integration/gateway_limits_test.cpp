// Limits that protect the replica and the other clients: a client that stops reading is closed
// with 1013 (and loses nothing when it resumes), oversized inbound frames close with 1009,
// garbage bytes only cost their own connection, the per-user cap answers 429, non-GET 405.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "support/gateway_harness.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A blocking TCP socket to the gateway with a receive timeout, for raw bytes.
class RawSocket final {
 public:
  explicit RawSocket(uint16_t port) : socket_(ioc_) {
    socket_.connect({asio::ip::make_address("127.0.0.1"), port});
    timeval timeout{10, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  void Write(const std::string& bytes) {
    beast::error_code ec;
    asio::write(socket_, asio::buffer(bytes), ec);
  }
  /// Reads until the peer closes (true) or the receive timeout / an error other than EOF.
  bool ReadUntilClosed(std::string* received = nullptr) {
    char chunk[4096];
    while (true) {
      beast::error_code ec;
      const size_t n = socket_.read_some(asio::buffer(chunk), ec);
      if (received) received->append(chunk, n);
      if (ec == asio::error::eof || ec == asio::error::connection_reset) return true;
      if (ec) return false;  // timeout (EAGAIN) or other failure
    }
  }
  /// Reads until `delimiter` arrives; returns everything read.
  std::string ReadUntil(const std::string& delimiter) {
    beast::error_code ec;
    const size_t n = asio::read_until(socket_, asio::dynamic_buffer(buffer_), delimiter, ec);
    std::string head = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return head;
  }

 private:
  asio::io_context ioc_;
  tcp::socket socket_;
  std::string buffer_;
};

TEST(GatewayLimits, StalledClientIsClosedWith1013OthersUnaffectedAndItResumesLosslessly) {
  GatewayHarness harness(12);
  harness.StartGateway([](gateway::GatewayConfig& config) {
    config.send_queue_max_frames = 64;
    config.send_queue_max_bytes = 2u << 20;
  });
  const std::string user = "stalled-user";

  WsClient fast;
  ASSERT_EQ(fast.Connect(harness.ClientOptions(user)).status, 101);
  ASSERT_EQ(ReadUntil(
                fast, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1U);
  // The stalled client: a tiny receive window, reads its `ready`, then never reads again.
  WsClient stalled;
  auto stalled_options = harness.ClientOptions(user);
  stalled_options.receive_buffer_bytes = 4096;
  ASSERT_EQ(stalled.Connect(stalled_options).status, 101);
  auto stalled_ready = ReadUntil(
      stalled, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(stalled_ready.size(), 1U);
  ASSERT_EQ(stalled_ready[0].type, "ready");

  // ~13 MB of frames (32 KiB each), far past the kernel's socket buffers (a few MB) and the
  // 2 MiB queue. The text compresses well, so the partition stays far below the embedded
  // Kafka's 5 MiB cap. Paced, one event per Kafka round trip, so the healthy reader (which
  // shares 2 busy cores with everything else here) never falls 64 frames behind.
  constexpr int kTotal = 400;
  const std::string padding(32 * 1024, 'p');
  producers::EventPublisher publisher([&] {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness.Kafka().BootstrapServers()},
                                {"linger.ms", "0"}};
    config.topic = harness.Topic();
    return config;
  }());
  std::vector<std::string> published;
  std::atomic<bool> publishing_done{false};
  std::thread publishing([&] {
    for (int i = 1; i <= kTotal; ++i) {
      v1::AgentEvent event;
      event.set_event_id("stall-" + std::to_string(i));
      event.set_user_id(user);
      event.set_run_id("r");
      event.set_run_seq(static_cast<uint32_t>(i));
      event.mutable_agent_thinking()->set_text(std::to_string(i) + padding);
      if (publisher.Publish(event, {}, 10s) != producers::PublishStatus::kAccepted) break;
      published.push_back(event.event_id());
      publisher.Flush(10s);
      std::this_thread::sleep_for(3ms);
    }
    publishing_done = true;
  });
  std::vector<std::string> fast_received;
  std::thread fast_reader([&] {
    auto frames = ReadUntil(
        fast, [&](const auto& f) { return f.size() >= static_cast<size_t>(kTotal); }, 60s);
    for (const auto& f : frames) {
      if (f.type == "event") fast_received.push_back(f.event_id);
    }
  });

  // Wait for the gateway to give up on the stalled client, then read what it had buffered:
  // the events, then the close frame with 1013.
  const std::string slow_series = "agentwire_gateway_slow_client_closes_total";
  EXPECT_GE(WaitForMetric(harness.Port(), slow_series, 1, 60s), 1)
      << "the stalled client was never closed";
  std::vector<std::string> stalled_received;
  std::string cursor = stalled_ready[0].cursor;
  while (!stalled.Closed()) {
    auto text = stalled.Read(10s);
    if (!text) break;
    auto frame = ParseFrame(*text);
    if (!frame || frame->type != "event") {
      ADD_FAILURE() << "unexpected frame " << *text;
      break;
    }
    stalled_received.push_back(frame->event_id);
    cursor = frame->cursor;
  }
  EXPECT_TRUE(stalled.Closed());
  EXPECT_EQ(stalled.CloseCode(), 1013);
  EXPECT_LT(stalled_received.size(), static_cast<size_t>(kTotal));
  RecordProperty("stalled_events_before_close", static_cast<int>(stalled_received.size()));

  publishing.join();
  fast_reader.join();
  ASSERT_EQ(published.size(), static_cast<size_t>(kTotal));
  EXPECT_EQ(fast_received, published)
      << "the healthy client of the same user lost or reordered events";
  EXPECT_FALSE(fast.Closed());

  // The stalled client resumes with its last cursor: everything after it, exactly once.
  WsClient resumed;
  ASSERT_EQ(resumed.Connect(harness.ClientOptions(user, "cursor=" + cursor)).status, 101);
  auto frames = ReadUntil(
      resumed, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().type, "ready");
  for (const auto& f : frames) {
    if (f.type == "event") stalled_received.push_back(f.event_id);
  }
  EXPECT_EQ(stalled_received, published) << "lost, duplicated or reordered across the 1013 close";
}

TEST(GatewayLimits, OversizedInboundFrameClosesWith1009) {
  GatewayHarness harness(4);
  harness.StartGateway();  // default limit 64 KiB
  auto options = harness.ClientOptions("big-sender");
  options.send_buffer_bytes = 1 << 20;  // the refused frame fits: see WsClient::Options
  WsClient client;
  ASSERT_EQ(client.Connect(options).status, 101);
  ASSERT_EQ(ReadUntil(
                client, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1U);
  client.Send(std::string(60 * 1024, 'a'));  // under the limit: ignored, connection stays
  client.Send(std::string(100 * 1024, 'b'));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!client.Closed() && std::chrono::steady_clock::now() < deadline) client.Read(1s);
  EXPECT_TRUE(client.Closed());
  EXPECT_EQ(client.CloseCode(), 1009);

  // A smaller configured limit applies too.
  harness.StartGateway(
      [](gateway::GatewayConfig& config) { config.max_inbound_frame_bytes = 1024; });
  auto small_options = harness.ClientOptions("big-sender");
  small_options.send_buffer_bytes = 1 << 20;
  WsClient small;
  ASSERT_EQ(small.Connect(small_options).status, 101);
  ASSERT_EQ(ReadUntil(
                small, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1U);
  small.Send(std::string(2000, 'c'));
  const auto small_deadline = std::chrono::steady_clock::now() + 10s;
  while (!small.Closed() && std::chrono::steady_clock::now() < small_deadline) small.Read(1s);
  EXPECT_EQ(small.CloseCode(), 1009);
}

TEST(GatewayLimits, GarbageBytesCloseOnlyTheirConnection) {
  GatewayHarness harness(4);
  harness.StartGateway();
  const uint16_t port = harness.Port();

  // A live client that must not notice anything.
  WsClient bystander;
  ASSERT_EQ(bystander.Connect(harness.ClientOptions("bystander")).status, 101);
  ASSERT_EQ(ReadUntil(
                bystander, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1U);

  std::mt19937 rng(7);
  std::string garbage(8 * 1024, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  {
    RawSocket raw(port);  // binary noise instead of HTTP
    raw.Write(garbage);
    EXPECT_TRUE(raw.ReadUntilClosed()) << "the gateway kept a garbage connection open";
  }
  {
    RawSocket raw(port);  // a request line that is not HTTP
    raw.Write("HELLO /v1/events SMTP/0.9\r\n\r\n" + garbage);
    EXPECT_TRUE(raw.ReadUntilClosed());
  }
  {
    // A valid upgrade followed by bytes that are not WebSocket frames (unmasked, reserved
    // opcodes): the protocol error closes this connection.
    RawSocket raw(port);
    raw.Write(
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " +
        harness.Token("garbler") + "\r\n\r\n");
    const auto head = raw.ReadUntil("\r\n\r\n");
    ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0U) << head;
    raw.Write(garbage);
    EXPECT_TRUE(raw.ReadUntilClosed());
  }
  {
    // A client that sends half a request and goes quiet is not served by a stuck worker.
    RawSocket raw(port);
    raw.Write("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    EXPECT_EQ(HttpGet(port, "/healthz").status, 200);
  }

  // The server still serves: health, a fresh stream, and the bystander's stream.
  EXPECT_EQ(HttpGet(port, "/healthz").status, 200);
  WsClient fresh;
  ASSERT_EQ(fresh.Connect(harness.ClientOptions("fresh")).status, 101);
  ASSERT_EQ(ReadUntil(
                fresh, [](const auto& f) { return !f.empty(); }, 10s)
                .size(),
            1U);
  const auto fresh_id = harness.Publish("fresh", "r", 1);
  const auto bystander_id = harness.Publish("bystander", "r", 1);
  harness.Flush();
  auto fresh_frames = ReadUntil(
      fresh, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(fresh_frames.size(), 1U);
  EXPECT_EQ(fresh_frames[0].event_id, fresh_id);
  auto bystander_frames = ReadUntil(
      bystander, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(bystander_frames.size(), 1U);
  EXPECT_EQ(bystander_frames[0].event_id, bystander_id);
}

TEST(GatewayLimits, PerUserConnectionCapAnswers429) {
  GatewayHarness harness(4);
  harness.StartGateway([](gateway::GatewayConfig& config) { config.max_connections_per_user = 2; });
  std::vector<std::unique_ptr<WsClient>> open;
  for (int i = 0; i < 2; ++i) {
    open.push_back(std::make_unique<WsClient>());
    ASSERT_EQ(open.back()->Connect(harness.ClientOptions("capped")).status, 101);
    ASSERT_EQ(ReadUntil(
                  *open.back(), [](const auto& f) { return !f.empty(); }, 10s)
                  .size(),
              1U);
  }
  WsClient third;
  const auto refused = third.Connect(harness.ClientOptions("capped"));
  EXPECT_EQ(refused.status, 429);
  const auto body = nlohmann::json::parse(refused.body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << refused.body;
  EXPECT_EQ(body.value("error", ""), "too_many_connections");
  EXPECT_FALSE(body.value("message", "").empty());

  // Other users are not affected by one user's cap.
  WsClient other;
  EXPECT_EQ(other.Connect(harness.ClientOptions("someone-else")).status, 101);

  // A closed connection frees its slot.
  open.front()->Close();
  bool reconnected = false;
  for (int attempt = 0; attempt < 50 && !reconnected; ++attempt) {
    WsClient again;
    reconnected = again.Connect(harness.ClientOptions("capped")).status == 101;
    if (!reconnected) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(reconnected);
}

TEST(GatewayLimits, NonGetMethodsAnswer405) {
  GatewayHarness harness(4);
  harness.StartGateway();
  for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
           {"POST", "/v1/events"}, {"POST", "/healthz"}, {"PUT", "/"}, {"DELETE", "/metrics"}}) {
    SCOPED_TRACE(method + " " + target);
    asio::io_context ioc;
    tcp::socket socket(ioc);
    socket.connect({asio::ip::make_address("127.0.0.1"), harness.Port()});
    http::request<http::string_body> request(http::string_to_verb(method), target, 11);
    request.set(http::field::host, "127.0.0.1");
    request.set(http::field::content_type, "application/json");
    request.body() = R"({"hello":"world"})";
    request.prepare_payload();
    http::write(socket, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    beast::error_code ec;
    http::read(socket, buffer, response, ec);
    EXPECT_EQ(response.result_int(), 405U);
    const auto body = nlohmann::json::parse(response.body(), nullptr, false);
    ASSERT_TRUE(body.is_object()) << response.body();
    EXPECT_EQ(body.value("error", ""), "method_not_allowed");
  }
  EXPECT_EQ(HttpGet(harness.Port(), "/healthz").status, 200);
}

}  // namespace
}  // namespace agentwire::testing
