// A connection lives no longer than its token (docs/protocol.md "Token lifetime"): at exp +
// leeway a WebSocket is closed with 4001 and an SSE response ends with `event: token_expired`
// (not `error`, which EventSource fires on its own); a client that
// refreshes in-band (`{"type":"refresh","token":…}`, same sub) keeps streaming; a refresh
// with another sub (or a bad token) is closed with 4003.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "agentwire/gateway/auth.hpp"
#include "support/gateway_harness.hpp"
#include "support/sse_client.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kLeeway = 1s;

std::string ShortToken(const std::string& user, std::chrono::seconds ttl) {
  return gateway::MintHs256Token(kTestJwtSecret, user, ttl);
}

void StartWithShortLeeway(GatewayHarness& harness) {
  harness.StartGateway([](gateway::GatewayConfig& config) { config.auth.leeway = kLeeway; });
}

WsClient::Options WithToken(GatewayHarness& harness, const std::string& token) {
  auto options = harness.ClientOptions("unused");
  options.bearer = token;
  return options;
}

// Reads until the server closes (or `timeout`); returns how long that took.
Clock::duration ReadUntilClosed(WsClient& client, std::chrono::milliseconds timeout) {
  const auto start = Clock::now();
  while (!client.Closed() && Clock::now() - start < timeout) client.Read(200ms);
  return Clock::now() - start;
}

std::string RefreshFrame(const std::string& token) {
  return nlohmann::json{{"type", "refresh"}, {"token", token}}.dump();
}

TEST(GatewayTokenLifetime, AnExpiredTokenEndsTheWebSocketWith4001) {
  GatewayHarness harness(4);
  StartWithShortLeeway(harness);
  WsClient client;
  const auto connected = Clock::now();
  ASSERT_EQ(client.Connect(WithToken(harness, ShortToken("alice", 3s))).status, 101);
  ReadUntilClosed(client, 20s);
  ASSERT_TRUE(client.Closed()) << "still open 20 s after a 3 s token expired";
  EXPECT_EQ(client.CloseCode(), 4001);
  // exp is whole seconds (it can fall up to 1 s before connect + 3 s); never before it.
  EXPECT_GE(Clock::now() - connected, 2s) << "closed before the token expired";
  const auto metrics = harness.Gateway().Metrics().RenderPrometheus();
  EXPECT_NE(metrics.find("agentwire_gateway_token_expired_closes_total 1"), std::string::npos);
}

TEST(GatewayTokenLifetime, ARefreshedConnectionKeepsReceivingPastTheFirstTokensExpiry) {
  GatewayHarness harness(4);
  StartWithShortLeeway(harness);
  WsClient client;
  ASSERT_EQ(client.Connect(WithToken(harness, ShortToken("alice", 3s))).status, 101);
  const auto ready = ReadUntil(
      client, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(ready.size(), 1u);

  // Refresh every second with another 3 s token, for 8 s: well past the first token's end.
  const auto until = Clock::now() + 8s;
  std::vector<std::string> published;
  uint32_t seq = 0;
  while (Clock::now() < until) {
    client.Send(RefreshFrame(ShortToken("alice", 3s)));
    published.push_back(harness.Publish("alice", "run-r", ++seq));
    harness.Flush();
    const auto frames = ReadUntil(
        client, [](const auto& f) { return !f.empty(); }, 1s);
    ASSERT_FALSE(client.Closed()) << "closed with " << client.CloseCode() << " after a refresh";
    for (const auto& frame : frames) EXPECT_EQ(frame.type, "event");
  }
  const auto metrics = harness.Gateway().Metrics().RenderPrometheus();
  EXPECT_NE(metrics.find(R"(agentwire_gateway_token_refreshes_total{result="accepted"})"),
            std::string::npos);
  EXPECT_NE(metrics.find("agentwire_gateway_token_expired_closes_total 0"), std::string::npos);

  // Refreshing stops: the last token runs out, and the connection with it.
  ReadUntilClosed(client, 20s);
  EXPECT_EQ(client.CloseCode(), 4001);
}

TEST(GatewayTokenLifetime, ARefreshForAnotherUserOrABadTokenIsRefusedWith4003) {
  GatewayHarness harness(4);
  StartWithShortLeeway(harness);
  struct Case {
    std::string name;
    std::string refresh;
    bool refused;
  };
  const Case cases[] = {
      {"another user's valid token", RefreshFrame(ShortToken("mallory", 60s)), true},
      {"not a token", RefreshFrame("not.a.token"), true},
      {"a token signed with another key",
       RefreshFrame(gateway::MintHs256Token("another-secret-0123456789abcdefghij", "alice", 60s)),
       true},
      {"the same user's valid token", RefreshFrame(ShortToken("alice", 60s)), false},
      {"another message", R"({"type":"hello"})", false},
      {"a refresh without a token", R"({"type":"refresh"})", true},
      {"a refresh whose token is a number", R"({"type":"refresh","token":12345})", true},
      {"a refresh with a 40 KB token", RefreshFrame(std::string(40'000, 'x')), true},
      {"a token with NUL and control characters", RefreshFrame(std::string("a.b\0\x01.c\n", 8)),
       true},
      {"not JSON", "\x01\x02 not json {", false},
      {"JSON nested 30,000 deep", std::string(30'000, '[') + std::string(30'000, ']'), false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    WsClient client;
    ASSERT_EQ(client.Connect(WithToken(harness, ShortToken("alice", 60s))).status, 101);
    ASSERT_EQ(ReadUntil(
                  client, [](const auto& f) { return !f.empty(); }, 10s)
                  .size(),
              1u);
    client.Send(c.refresh);
    if (c.refused) {
      ReadUntilClosed(client, 10s);
      EXPECT_TRUE(client.Closed());
      EXPECT_EQ(client.CloseCode(), 4003);
    } else {
      // Still open: an event published now arrives.
      harness.Publish("alice", "run-" + std::to_string(client.Closed()), 1);
      harness.Flush();
      const auto frames = ReadUntil(
          client, [](const auto& f) { return !f.empty(); }, 10s);
      EXPECT_FALSE(client.Closed());
      ASSERT_EQ(frames.size(), 1u);
      EXPECT_EQ(frames[0].type, "event");
    }
  }
}

TEST(GatewayTokenLifetime, AnSseResponseEndsWithATokenExpiredEventWhenItsTokenExpires) {
  GatewayHarness harness(4);
  StartWithShortLeeway(harness);
  SseClient client;
  SseClient::Options options;
  options.port = harness.Port();
  options.bearer = ShortToken("alice", 3s);
  ASSERT_EQ(client.Connect(options).status, 200);
  std::optional<SseEvent> last;
  const auto deadline = Clock::now() + 20s;
  while (Clock::now() < deadline) {
    auto next = client.Next(1s);
    if (next) last = std::move(next);
    if (client.Ended()) break;
  }
  ASSERT_TRUE(client.Ended()) << "the response outlived its token";
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->event, "token_expired");
  EXPECT_EQ(nlohmann::json::parse(last->data).at("error"), "token_expired");
}

}  // namespace
}  // namespace agentwire::testing
