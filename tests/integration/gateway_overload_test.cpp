// At its limits a replica sheds load cleanly and says so, and never spins: a gateway (and the
// metrics endpoint of archive) out of descriptors pauses accepting instead of looping on
// EMFILE, logs a few lines instead of millions, and serves again once the flood is gone;
// past --max-connections an upgrade gets 503 + Retry-After and /readyz turns 503 at the
// high-water mark, while the clients it holds keep receiving every event exactly once.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "support/gateway_harness.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// A descriptor limit far below the flood: the gateway needs about 25 descriptors idle.
constexpr int kDescriptorLimit = 128;
constexpr int kFloodConnections = 400;
constexpr auto kSampleWindow = 5s;

// utime + stime of `pid` in clock ticks (fields 14 and 15 of /proc/PID/stat).
int64_t CpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  int64_t utime = 0;
  int64_t stime = 0;
  // After ")": state is field 3, so utime (14) is the 12th token and stime the 13th.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return utime + stime;
}

size_t LineCount(const std::string& text) { return std::count(text.begin(), text.end(), '\n'); }

// The value of one Prometheus series ("name{labels}") in /metrics text; -1 when absent.
double SeriesValue(const std::string& metrics, const std::string& series) {
  const auto at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + series.size() + 2));
}

// A flood of half-open HTTP connections from a separate process. Returns once it holds them.
std::unique_ptr<Subprocess> StartFlood(uint16_t port) {
  auto flood = std::make_unique<Subprocess>(std::vector<std::string>{
      "/usr/bin/python3", SourceDir() + "/tests/support/half_open_flood.py", "127.0.0.1",
      std::to_string(port), std::to_string(kFloodConnections)});
  EXPECT_TRUE(flood->WaitForStdout("open ", 60s)) << flood->Describe();
  return flood;
}

// What the process did while a flood held it: CPU ticks and log lines over kSampleWindow.
struct FloodSample {
  int64_t ticks = 0;
  size_t log_lines = 0;
};
FloodSample SampleUnderFlood(Subprocess& process) {
  FloodSample sample;
  const int64_t ticks_before = CpuTicks(process.Pid());
  const size_t lines_before = LineCount(process.StderrText());
  std::this_thread::sleep_for(kSampleWindow);
  sample.ticks = CpuTicks(process.Pid()) - ticks_before;
  sample.log_lines = LineCount(process.StderrText()) - lines_before;
  return sample;
}

void ExpectQuiet(const FloodSample& sample, const Subprocess& process) {
  const int64_t ticks_per_second = sysconf(_SC_CLK_TCK);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(kSampleWindow).count();
  // Under 20 % of one core averaged over the window (a hot accept loop burns a whole core).
  EXPECT_LT(sample.ticks, ticks_per_second * seconds / 5)
      << sample.ticks << " ticks in " << seconds << " s";
  // At most one line per second per kind (paused / accepting again), plus slack.
  EXPECT_LE(sample.log_lines, static_cast<size_t>(3 * seconds))
      << process.StderrText().substr(0, 4000);
}

uint16_t FreePort() {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor acceptor(
      ioc, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

TEST(GatewayOverload, DescriptorFloodPausesAcceptingAndRecovers) {
  GatewayHarness harness(4);
  const std::string directory = MakeTempDirectory("agentwire-overload");
  const std::string port_file = directory + "/port";
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_JWT_SECRET", "AGENTWIRE_LOG_FORMAT", "PORT"};
  options.env = {{"AGENTWIRE_MAX_CONNECTIONS", "40"}};
  // prlimit sets soft and hard limit, then execs the gateway: its pid is the gateway's.
  Subprocess gateway_process(
      {"prlimit", "--nofile=" + std::to_string(kDescriptorLimit), AgentwireBinary(), "gateway",
       "--brokers", harness.Kafka().BootstrapServers(), "--port", "0", "--port-file", port_file,
       "--jwt-secret", kTestJwtSecret, "--drain-grace", "2s"},
      options);
  ASSERT_TRUE(WaitForFile(port_file, 30s)) << gateway_process.Describe();
  const auto port = static_cast<uint16_t>(std::stoi(ReadFirstLine(port_file)));
  // The limit was logged at start (the hard one could not be raised past 128).
  EXPECT_TRUE(gateway_process.WaitForStderr("descriptor limit", 5s)) << gateway_process.Describe();
  EXPECT_NE(gateway_process.StderrText().find("hard=128"), std::string::npos)
      << gateway_process.StderrText();
  EXPECT_NE(gateway_process.StderrText().find("max_connections=40"), std::string::npos)
      << gateway_process.StderrText();

  // A client connected before the flood keeps being served during it.
  WsClient before;
  ASSERT_EQ(before.Connect(harness.ClientOptions("alice", {}, port)).status, 101);
  auto frames = ReadUntil(
      before, [](const auto& f) { return !f.empty(); }, 20s);
  ASSERT_EQ(frames.size(), 1U);
  ASSERT_EQ(frames[0].type, "ready");

  auto flood = StartFlood(port);
  const FloodSample sample = SampleUnderFlood(gateway_process);
  ExpectQuiet(sample, gateway_process);
  std::vector<std::string> during;
  for (uint32_t seq = 1; seq <= 5; ++seq) during.push_back(harness.Publish("alice", "r1", seq));
  harness.Flush();
  frames = ReadUntil(
      before, [](const auto& f) { return f.size() >= 5; }, 20s);
  ASSERT_EQ(frames.size(), 5U);
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(frames[i].event_id, during[i]);

  // /readyz says "overloaded" (503) while accepting is paused and for 5 s after the last
  // descriptor error. A request cannot be accepted while the loop is paused (it waits in the
  // backlog), so the first answer comes as the flood ends, inside those 5 s. Asked from a
  // thread during the flood, and answered when it ends.
  HttpResponse during_flood;
  std::thread ask([&] { during_flood = HttpGet(port, "/readyz"); });
  std::this_thread::sleep_for(500ms);
  flood->Kill();
  flood.reset();
  ask.join();
  EXPECT_EQ(during_flood.status, 503) << during_flood.body << gateway_process.Describe();
  EXPECT_EQ(json::parse(during_flood.body, nullptr, false).value("status", ""), "overloaded")
      << during_flood.body;

  // Accepting resumes on its own: a new client is served and gets its events.
  WsClient after;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  int status = 0;
  while ((status = after.Connect(harness.ClientOptions("bob", {}, port)).status) != 101 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(status, 101) << gateway_process.Describe();
  frames = ReadUntil(
      after, [](const auto& f) { return !f.empty(); }, 20s);
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].type, "ready");
  const auto id = harness.Publish("bob", "r2", 1);
  harness.Flush();
  frames = ReadUntil(
      after, [](const auto& f) { return !f.empty(); }, 20s);
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].event_id, id);

  const std::string metrics = HttpGet(port, "/metrics").body;
  EXPECT_GT(SeriesValue(metrics, R"(agentwire_gateway_accept_errors_total{reason="emfile"})"), 0)
      << metrics;
  EXPECT_EQ(SeriesValue(metrics, "agentwire_gateway_max_connections"), 40) << metrics;
  // Ready again once 5 s passed without a descriptor error.
  const auto ready_deadline = std::chrono::steady_clock::now() + 20s;
  while (HttpGet(port, "/readyz").status != 200 &&
         std::chrono::steady_clock::now() < ready_deadline) {
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(HttpGet(port, "/readyz").status, 200);

  gateway_process.Signal(SIGTERM);
  EXPECT_EQ(gateway_process.Wait(20s), std::optional<int>(0)) << gateway_process.Describe();
  std::filesystem::remove_all(directory);
}

TEST(GatewayOverload, MaxConnectionsAnswers503AndReadyzFollowsTheWaterMarks) {
  GatewayHarness harness(4);
  // 4 sessions at most: the high-water mark (95 %) is 4, the low-water mark (90 %) 3.
  harness.StartGateway([](gateway::GatewayConfig& config) { config.max_connections = 4; });
  const uint16_t port = harness.Port();
  EXPECT_EQ(HttpGet(port, "/readyz").status, 200);

  const std::vector<std::string> users = {"u0", "u1", "u2", "u3"};
  std::map<std::string, std::unique_ptr<WsClient>> clients;
  for (const auto& user : users) {
    auto client = std::make_unique<WsClient>();
    ASSERT_EQ(client->Connect(harness.ClientOptions(user)).status, 101);
    auto ready = ReadUntil(
        *client, [](const auto& f) { return !f.empty(); }, 10s);
    ASSERT_EQ(ready.size(), 1U);
    ASSERT_EQ(ready[0].type, "ready");
    clients[user] = std::move(client);
    if (user == "u2") {
      EXPECT_EQ(HttpGet(port, "/readyz").status, 200) << "3 of 4: below 95 %";
    }
  }
  const auto readyz = HttpGet(port, "/readyz");
  EXPECT_EQ(readyz.status, 503);
  EXPECT_EQ(json::parse(readyz.body, nullptr, false).value("status", ""), "full") << readyz.body;

  // The next upgrade: 503, Retry-After and a JSON reason, before its token is even looked at.
  WsClient refused;
  auto options = harness.ClientOptions("u4");
  options.bearer = "not.a.jwt";
  const auto result = refused.Connect(options);
  EXPECT_EQ(result.status, 503);
  EXPECT_EQ(result.retry_after, "5");
  const auto body = json::parse(result.body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << result.body;
  EXPECT_EQ(body.value("error", ""), "replica_full");
  EXPECT_NE(body.value("message", "").find("4 connections"), std::string::npos) << result.body;

  // Every connected client keeps receiving its events, exactly once and in order.
  std::map<std::string, std::vector<std::string>> published;
  auto publish_round = [&](uint32_t first_seq) {
    for (uint32_t seq = first_seq; seq < first_seq + 5; ++seq) {
      for (const auto& [user, client] : clients) {
        published[user].push_back(harness.Publish(user, "run-" + user, seq));
      }
    }
    harness.Flush();
  };
  auto expect_delivered = [&](size_t from) {
    for (const auto& [user, client] : clients) {
      const size_t expected = published[user].size() - from;
      auto frames = ReadUntil(
          *client, [&](const auto& f) { return f.size() >= expected; }, 20s);
      // Anything more (a duplicate) would be waiting right behind.
      auto extra = ReadUntil(
          *client, [](const auto& f) { return !f.empty(); }, 300ms);
      frames.insert(frames.end(), extra.begin(), extra.end());
      ASSERT_EQ(frames.size(), expected) << user;
      for (size_t i = 0; i < expected; ++i) {
        EXPECT_EQ(frames[i].event_id, published[user][from + i]) << user << " #" << i;
      }
    }
  };
  publish_round(1);
  expect_delivered(0);

  // One client leaves: 3 of 4 is below the low-water mark, so the replica is ready again,
  // and a new upgrade is accepted.
  clients["u3"]->Close();
  clients.erase("u3");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (HttpGet(port, "/readyz").status != 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(HttpGet(port, "/readyz").status, 200);
  publish_round(6);
  expect_delivered(5);

  const std::string metrics = HttpGet(port, "/metrics").body;
  EXPECT_EQ(SeriesValue(metrics, "agentwire_gateway_max_connections"), 4) << metrics;
  EXPECT_EQ(SeriesValue(metrics, "agentwire_gateway_connections"), 3) << metrics;
  EXPECT_GE(SeriesValue(metrics,
                        R"(agentwire_gateway_upgrades_rejected_total{reason="max_connections"})"),
            1)
      << metrics;
}

// archive's metrics endpoint has the same loop: out of descriptors it pauses, stays quiet and
// answers again after the flood.
TEST(MetricsEndpointOverload, ArchiveMetricsPortSurvivesADescriptorFlood) {
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({"agent.lifecycle.v1", 2});
  kafka.CreateTopic({"agent.lifecycle.v1.dlq", 2});
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("metrics_flood");
  const uint16_t port = FreePort();
  auto argv = ConsumerCommand("archive", kafka.BootstrapServers(), dsn, {});
  const auto flag = std::find(argv.begin(), argv.end(), "--metrics-port");
  ASSERT_NE(flag, argv.end());
  *(flag + 1) = std::to_string(port);
  argv.insert(argv.begin(), {"prlimit", "--nofile=" + std::to_string(kDescriptorLimit)});
  Subprocess archive(argv);
  ASSERT_TRUE(archive.WaitForStderr("metrics endpoint listening", 60s)) << archive.Describe();
  EXPECT_EQ(HttpGet(port, "/healthz").status, 200);

  auto flood = StartFlood(port);
  const FloodSample sample = SampleUnderFlood(archive);
  ExpectQuiet(sample, archive);
  ASSERT_TRUE(archive.Running()) << archive.Describe();
  flood->Kill();
  flood.reset();

  const auto deadline = std::chrono::steady_clock::now() + 30s;
  HttpResponse response;
  while ((response = HttpGet(port, "/metrics")).status != 200 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(response.status, 200) << archive.Describe();
  EXPECT_GT(SeriesValue(response.body,
                        R"(agentwire_metrics_endpoint_accept_errors_total{reason="emfile"})"),
            0)
      << response.body;
  archive.Signal(SIGTERM);
  EXPECT_EQ(archive.Wait(30s), std::optional<int>(0)) << archive.Describe();
}

}  // namespace
}  // namespace agentwire::testing
