// Who may open a stream: every bad token is refused with HTTP 401 before the upgrade (JSON
// body with the reason), a foreign browser Origin with 403, and tokens never reach the logs.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agentwire/gateway/auth.hpp"
#include "support/gateway_harness.hpp"
#include "support/jwt_test_keys.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kIssuer = "https://idp.example";
constexpr const char* kAudience = "agentwire";

enum class Via { kHeader, kQuery };

WsClient::Options UpgradeOptions(uint16_t port, const std::string& token, Via via,
                                 const std::string& origin = {}) {
  WsClient::Options options;
  options.port = port;
  if (via == Via::kHeader) {
    options.bearer = token;
  } else if (!token.empty()) {
    options.target = "/v1/events?access_token=" + token;  // base64url and dots: no escaping needed
  }
  options.origin = origin;
  return options;
}

// A refused upgrade: `status`, and a JSON body {"error": code, "message": text} whose text
// does not echo the token.
void ExpectRefused(const WsClient::HandshakeResult& result, int status, const std::string& code,
                   const std::string& token, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(result.status, status);
  const auto body = json::parse(result.body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << "body: " << result.body;
  ASSERT_TRUE(body.contains("error") && body["error"].is_string()) << result.body;
  ASSERT_TRUE(body.contains("message") && body["message"].is_string()) << result.body;
  EXPECT_EQ(body["error"], code) << result.body;
  EXPECT_FALSE(body["message"].get<std::string>().empty());
  if (token.size() > 8) {
    EXPECT_EQ(result.body.find(token), std::string::npos) << "token echoed";
  }
}

// Connects and reads the first frame: `ready` means the stream opened.
bool OpensStream(const WsClient::Options& options) {
  WsClient client;
  const auto handshake = client.Connect(options);
  if (handshake.status != 101) return false;
  auto frames = ReadUntil(
      client, [](const auto& f) { return !f.empty(); }, 10s);
  client.Close();
  return !frames.empty() && frames[0].type == "ready";
}

class GatewayAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new GatewayHarness(4);
    rsa_ = new RsaTestKey();
    directory_ = MakeTempDirectory("agentwire-auth");
    jwks_path_ = directory_ + "/jwks.json";
    std::ofstream(jwks_path_) << json{{"keys", {rsa_->Jwk("rsa-1")}}}.dump();
  }
  static void TearDownTestSuite() {
    delete harness_;
    delete rsa_;
    std::filesystem::remove_all(directory_);
  }

  // HS256 secret with a required issuer and audience.
  static void StartHs256Gateway() {
    harness_->StartGateway([](gateway::GatewayConfig& config) {
      config.auth.issuer = kIssuer;
      config.auth.audience = kAudience;
    });
  }
  static std::string GoodHs256(const std::string& user) {
    return gateway::MintHs256Token(kTestJwtSecret, user, 1h, kIssuer, kAudience);
  }

  static GatewayHarness* harness_;
  static RsaTestKey* rsa_;
  static std::string directory_;
  static std::string jwks_path_;
};
GatewayHarness* GatewayAuthTest::harness_ = nullptr;
RsaTestKey* GatewayAuthTest::rsa_ = nullptr;
std::string GatewayAuthTest::directory_;
std::string GatewayAuthTest::jwks_path_;

TEST_F(GatewayAuthTest, BadTokensGet401WithJsonReasonBeforeTheUpgrade) {
  StartHs256Gateway();
  const uint16_t port = harness_->Port();
  const json hs256 = {{"alg", "HS256"}, {"typ", "JWT"}};

  auto expired = TestClaims("alice", -3600, kIssuer, kAudience);
  expired["iat"] = expired["exp"].get<long>() - 600;
  struct Case {
    std::string what;
    std::string token;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"no token", "", "token_missing"},
      {"expired", HandMadeHs256(hs256, expired, kTestJwtSecret), "token_expired"},
      {"wrong signature",
       HandMadeHs256(hs256, TestClaims("alice", 600, kIssuer, kAudience),
                     "another-secret-of-sufficient-length-0123456789"),
       "token_signature"},
      {"alg none",
       UnsignedToken({{"alg", "none"}, {"typ", "JWT"}},
                     TestClaims("alice", 600, kIssuer, kAudience)),
       "token_algorithm"},
      {"alg None (case)",
       UnsignedToken({{"alg", "None"}}, TestClaims("alice", 600, kIssuer, kAudience)),
       "token_algorithm"},
      {"wrong aud", gateway::MintHs256Token(kTestJwtSecret, "alice", 1h, kIssuer, "someone-else"),
       "token_audience"},
      {"no aud", gateway::MintHs256Token(kTestJwtSecret, "alice", 1h, kIssuer), "token_audience"},
      {"wrong iss",
       gateway::MintHs256Token(kTestJwtSecret, "alice", 1h, "https://evil.example", kAudience),
       "token_issuer"},
      {"garbage", "not.a.jwt", "token_invalid"},
  };
  for (const auto& c : cases) {
    for (const Via via : {Via::kHeader, Via::kQuery}) {
      WsClient client;
      const auto result = client.Connect(UpgradeOptions(port, c.token, via));
      ExpectRefused(result, 401, c.code, c.token,
                    c.what + (via == Via::kHeader ? " (header)" : " (query)"));
    }
  }
  // The control: the same gateway opens a stream for a good token.
  EXPECT_TRUE(OpensStream(UpgradeOptions(port, GoodHs256("alice"), Via::kHeader)));

  const auto metrics = HttpGet(port, "/metrics").body;
  const std::string series = R"(agentwire_gateway_upgrades_rejected_total{reason="unauthorized"} )";
  const auto at = metrics.find(series);
  ASSERT_NE(at, std::string::npos);
  // (WsClient asks a second time, as plain HTTP, to read a refusal's body.)
  EXPECT_GE(std::stoul(metrics.substr(at + series.size())), cases.size() * 2);
}

TEST_F(GatewayAuthTest, PublicKeyUsedAsHmacSecretIsRefused) {
  // RS256 keys only, no HS256 secret: an attacker who knows the public key (it is public)
  // HMAC-signs a token with it, hoping the verifier uses the key bytes as an HMAC secret.
  harness_->StartGateway([](gateway::GatewayConfig& config) {
    config.auth.hs256_secret.clear();
    config.auth.jwks_file = jwks_path_;
    config.auth.audience = "any";  // a JWKS needs an explicit audience (see JwksNeedsAudience)
  });
  const uint16_t port = harness_->Port();
  const auto claims = TestClaims("alice");

  // The control: a real RS256 token of that key opens a stream.
  EXPECT_TRUE(
      OpensStream(UpgradeOptions(port, rsa_->SignRs256({{"kid", "rsa-1"}}, claims), Via::kHeader)));
  EXPECT_TRUE(OpensStream(UpgradeOptions(port, rsa_->SignRs256({}, claims), Via::kQuery)));

  const std::vector<std::pair<std::string, std::string>> keys = {
      {"public key PEM", rsa_->PublicPem()},
      {"public key JWK JSON", rsa_->Jwk("rsa-1").dump()},
      {"public key JWK JSON without kid", rsa_->Jwk().dump()},
  };
  for (const auto& [what, key] : keys) {
    for (const json& header :
         {json{{"alg", "HS256"}, {"typ", "JWT"}}, json{{"alg", "HS256"}, {"kid", "rsa-1"}}}) {
      const auto token = HandMadeHs256(header, claims, key);
      WsClient client;
      ExpectRefused(client.Connect(UpgradeOptions(port, token, Via::kHeader)), 401,
                    "token_algorithm", token, what + " header " + header.dump());
    }
  }
  // And an RS256 token signed by anyone else's key fails the signature check.
  RsaTestKey other;
  const auto forged = other.SignRs256({{"kid", "rsa-1"}}, claims);
  WsClient client;
  ExpectRefused(client.Connect(UpgradeOptions(port, forged, Via::kHeader)), 401, "token_signature",
                forged, "other RSA key");
}

TEST_F(GatewayAuthTest, TokenInHeaderOrQueryBothWork) {
  StartHs256Gateway();
  const uint16_t port = harness_->Port();
  const std::string token = GoodHs256("bob");
  for (const Via via : {Via::kHeader, Via::kQuery}) {
    SCOPED_TRACE(via == Via::kHeader ? "header" : "query");
    WsClient client;
    ASSERT_EQ(client.Connect(UpgradeOptions(port, token, via)).status, 101);
    auto ready = ReadUntil(
        client, [](const auto& f) { return !f.empty(); }, 10s);
    ASSERT_EQ(ready.size(), 1U);
    EXPECT_EQ(ready[0].type, "ready");
    // The stream is the token's subject's: bob's event arrives, carol's does not.
    harness_->Publish("carol", "r", 1);
    const auto id = harness_->Publish("bob", "r", 1);
    harness_->Flush();
    auto frames = ReadUntil(
        client, [](const auto& f) { return !f.empty(); }, 10s);
    ASSERT_EQ(frames.size(), 1U);
    EXPECT_EQ(frames[0].event_id, id);
    EXPECT_EQ(frames[0].user_id, "bob");
    client.Close();
  }
  // The header wins over the query: a bad header with a good query token is refused.
  WsClient both;
  auto options = UpgradeOptions(port, token, Via::kQuery);
  options.bearer = "not.a.jwt";
  EXPECT_EQ(both.Connect(options).status, 401);
}

TEST_F(GatewayAuthTest, OriginAllowlist) {
  harness_->StartGateway([](gateway::GatewayConfig& config) {
    config.allowed_origins = {"https://chat.example", "http://localhost:3000"};
  });
  const uint16_t port = harness_->Port();
  const std::string token = harness_->Token("dave");

  for (const std::string foreign : {"https://evil.example", "https://chat.example.evil.example",
                                    "http://chat.example", "null"}) {
    WsClient client;
    ExpectRefused(client.Connect(UpgradeOptions(port, token, Via::kHeader, foreign)), 403,
                  "origin_not_allowed", token, "origin " + foreign);
  }
  EXPECT_TRUE(OpensStream(UpgradeOptions(port, token, Via::kHeader, "https://chat.example")));
  EXPECT_TRUE(OpensStream(UpgradeOptions(port, token, Via::kQuery, "http://localhost:3000")));
  // No Origin (a worker, a CLI): judged by the token alone.
  EXPECT_TRUE(OpensStream(UpgradeOptions(port, token, Via::kHeader)));
  WsClient no_origin_bad_token;
  ExpectRefused(no_origin_bad_token.Connect(UpgradeOptions(port, "not.a.jwt", Via::kHeader)), 401,
                "token_invalid", "", "no origin, bad token");
  // An allowed Origin does not excuse a bad token.
  WsClient allowed_origin_no_token;
  ExpectRefused(allowed_origin_no_token.Connect(
                    UpgradeOptions(port, "", Via::kHeader, "https://chat.example")),
                401, "token_missing", "", "allowed origin, no token");
}

// A real `agentwire gateway` with JSON logs at debug level: refused and accepted upgrades
// with tokens in the query string (and the header) leave no token text in its output.
TEST(GatewayAuthLogs, TokensNeverAppearInLogs) {
  const std::string directory = MakeTempDirectory("agentwire-auth-logs");
  const std::string bootstrap_file = directory + "/bootstrap";
  const std::string port_file = directory + "/port";
  Subprocess broker({AgentwireBinary(), "broker", "--bootstrap-file", bootstrap_file});
  ASSERT_TRUE(WaitForFile(bootstrap_file, 20s)) << broker.Describe();
  const std::string secret = kTestJwtSecret;
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_JWT_SECRET", "AGENTWIRE_LOG_FORMAT", "PORT"};
  Subprocess gateway_process(
      {AgentwireBinary(), "gateway", "--brokers", ReadFirstLine(bootstrap_file), "--port", "0",
       "--port-file", port_file, "--jwt-secret", secret, "--allowed-origins",
       "https://chat.example", "--log-format", "json", "--log-level", "debug", "--drain-grace",
       "2s"},
      options);
  ASSERT_TRUE(WaitForFile(port_file, 30s)) << gateway_process.Describe();
  const auto port = static_cast<uint16_t>(std::stoi(ReadFirstLine(port_file)));

  const auto good = gateway::MintHs256Token(secret, "erin", 1h);
  const json hs256 = {{"alg", "HS256"}};
  auto expired_claims = TestClaims("erin", -3600);
  expired_claims["iat"] = expired_claims["exp"].get<long>() - 600;
  const std::vector<std::string> tokens = {
      good,
      HandMadeHs256(hs256, TestClaims("erin"), "a-wrong-secret-that-is-long-enough-000000"),
      HandMadeHs256(hs256, expired_claims, secret),
      UnsignedToken({{"alg", "none"}}, TestClaims("erin")),
      gateway::MintHs256Token(secret, "frank", 1h),
  };
  auto upgrade = [&](const std::string& target, const std::string& bearer,
                     const std::string& origin) {
    WsClient client;
    WsClient::Options options;
    options.port = port;
    options.target = target;
    options.bearer = bearer;
    options.origin = origin;
    const auto result = client.Connect(options);
    if (result.status == 101)
      ReadUntil(
          client, [](const auto& f) { return !f.empty(); }, 10s);
    return result.status;
  };
  // Accepted, with the token in the query (and extra parameters around it).
  EXPECT_EQ(upgrade("/v1/events?access_token=" + tokens[0], "", ""), 101);
  EXPECT_EQ(upgrade("/v1/events?run_id=r1&access_token=" + tokens[0] + "&thread_id=t", "",
                    "https://chat.example"),
            101);
  // Refused for the token itself, in the query and in the header.
  EXPECT_EQ(upgrade("/v1/events?access_token=" + tokens[1], "", ""), 401);
  EXPECT_EQ(upgrade("/v1/events?access_token=" + tokens[2], "", ""), 401);
  EXPECT_EQ(upgrade("/v1/events?access_token=" + tokens[3], "", ""), 401);
  EXPECT_EQ(upgrade("/v1/events", tokens[1], ""), 401);
  // Refused for something else while carrying a valid token: Origin, cursor, path.
  EXPECT_EQ(upgrade("/v1/events?access_token=" + tokens[4], "", "https://evil.example"), 403);
  EXPECT_EQ(upgrade("/v1/events?cursor=bogus&access_token=" + tokens[4], "", ""), 400);
  EXPECT_EQ(upgrade("/v1/other?access_token=" + tokens[4], "", ""), 404);
  // Plain HTTP requests carrying tokens in the query.
  EXPECT_EQ(HttpGet(port, "/healthz?access_token=" + tokens[4]).status, 200);
  EXPECT_EQ(HttpGet(port, "/nope?token=" + tokens[4]).status, 404);

  gateway_process.Signal(SIGTERM);
  ASSERT_EQ(gateway_process.Wait(20s), std::optional<int>(0)) << gateway_process.Describe();
  const std::string logs = gateway_process.StderrText() + gateway_process.StdoutText();

  // The test can fail: debug logging was on and the refusals were logged.
  EXPECT_NE(logs.find("websocket upgrade"), std::string::npos) << logs;
  EXPECT_NE(logs.find("unauthorized"), std::string::npos) << logs;
  for (const auto& token : tokens) {
    EXPECT_EQ(logs.find(token), std::string::npos) << "token in logs: " << token;
    const std::string signature = token.substr(token.rfind('.') + 1);
    if (!signature.empty()) {
      EXPECT_EQ(logs.find(signature), std::string::npos) << "signature in logs: " << signature;
    }
    const auto first_dot = token.find('.');
    const std::string payload = token.substr(first_dot + 1, token.rfind('.') - first_dot - 1);
    EXPECT_EQ(logs.find(payload), std::string::npos) << "claims in logs: " << payload;
  }
  std::filesystem::remove_all(directory);
}

}  // namespace
}  // namespace agentwire::testing

namespace agentwire::testing {
namespace {

// An identity provider signs tokens for all of its applications with the keys of its JWKS: a
// gateway that checks no audience would accept a token issued for another application. It
// refuses to start instead, with one line that says what to set.
TEST(GatewayAuthConfig, JwksWithoutAudienceRefusesToStart) {
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_JWT_SECRET", "AGENTWIRE_JWT_AUDIENCE", "AGENTWIRE_JWKS_FILE"};
  const auto result =
      agentwire::testing::Run({AgentwireBinary(), "gateway", "--brokers", "127.0.0.1:9",
                               "--jwks-file", "/etc/agentwire/jwks.json"},
                              options, 20s);
  EXPECT_EQ(result.exit_code, std::optional<int>(2)) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("--jwt-audience / AGENTWIRE_JWT_AUDIENCE"), std::string::npos)
      << result.stderr_text;
  EXPECT_EQ(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'), 1)
      << result.stderr_text;
}

}  // namespace
}  // namespace agentwire::testing
