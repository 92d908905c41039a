// The guarantee across replicas, with real processes: a client streaming from gateway A while
// events keep arriving resumes on gateway B with its last cursor after A is killed (-9) or
// drained (SIGTERM: close 1012 first, /readyz 503, exit 0 within the grace period), and
// receives every event exactly once, in order.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <thread>

#include "support/gateway_harness.hpp"
#include "support/replica_stream.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kDrainGrace = 20s;

class GatewayFailoverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = MakeTempDirectory("agentwire-failover");
    const std::string bootstrap_file = directory_ + "/bootstrap";
    broker_ = new Subprocess({AgentwireBinary(), "broker", "--bootstrap-file", bootstrap_file});
    ASSERT_TRUE(WaitForFile(bootstrap_file, 30s)) << broker_->Describe();
    bootstrap_ = ReadFirstLine(bootstrap_file);
  }
  static void TearDownTestSuite() {
    delete broker_;
    broker_ = nullptr;
    std::filesystem::remove_all(directory_);
  }

  static GatewayProcess StartReplica(const std::string& name) {
    return StartGatewayProcess(bootstrap_, directory_, name,
                               {"--drain-grace", std::to_string(kDrainGrace.count()) + "s"});
  }
  static WsClient::Options Options(uint16_t port, const std::string& user,
                                   const std::string& cursor) {
    return ResumeOptions(port, user, cursor);
  }

  static Subprocess* broker_;
  static std::string directory_;
  static std::string bootstrap_;
};
Subprocess* GatewayFailoverTest::broker_ = nullptr;
std::string GatewayFailoverTest::directory_;
std::string GatewayFailoverTest::bootstrap_;

constexpr int kTotal = 1200;
constexpr size_t kSwitchAfter = 200;

TEST_F(GatewayFailoverTest, KillNineMidStreamResumesOnTheOtherReplica) {
  auto a = StartReplica("kill-a");
  auto b = StartReplica("kill-b");
  const std::string user = "failover-kill";
  PacedPublisher publisher(bootstrap_, user, kTotal);

  ClientLog log;
  WsClient on_a;
  ASSERT_EQ(on_a.Connect(Options(a.port, user, "")).status, 101);
  log.ReadEvents(on_a, kSwitchAfter, 30s);
  ASSERT_GE(log.events.size(), kSwitchAfter);
  EXPECT_FALSE(publisher.Done()) << "the kill should land mid-stream; publish more or slower";

  a.process->Signal(SIGKILL);
  EXPECT_EQ(a.process->Wait(10s), std::optional<int>(-SIGKILL));
  log.ReadUntilClosed(on_a, 10s);  // frames already in flight still count
  EXPECT_TRUE(on_a.Closed());
  const size_t before_switch = log.events.size();

  WsClient on_b;
  ASSERT_EQ(on_b.Connect(Options(b.port, user, log.cursor)).status, 101);
  log.ReadToTheEnd(on_b, publisher, kTotal);

  ExpectExactlyOnceInOrder(publisher.Published(), kTotal, log.events);
  EXPECT_EQ(log.ready_frames, 2);
  EXPECT_LT(before_switch, static_cast<size_t>(kTotal)) << "nothing was left to resume";
}

TEST_F(GatewayFailoverTest, SigtermDrainsWith1012AndTheClientResumesElsewhere) {
  auto a = StartReplica("term-a");
  auto b = StartReplica("term-b");
  const std::string user = "failover-term";

  // A client that never reads: it never answers the close handshake, which keeps A draining
  // long enough to observe /readyz.
  WsClient stubborn;
  ASSERT_EQ(stubborn.Connect(Options(a.port, "stubborn", "")).status, 101);

  PacedPublisher publisher(bootstrap_, user, kTotal);
  ClientLog log;
  WsClient on_a;
  ASSERT_EQ(on_a.Connect(Options(a.port, user, "")).status, 101);
  log.ReadEvents(on_a, kSwitchAfter, 30s);
  ASSERT_GE(log.events.size(), kSwitchAfter);
  EXPECT_FALSE(publisher.Done()) << "the drain should land mid-stream; publish more or slower";

  const auto signalled = std::chrono::steady_clock::now();
  a.process->Signal(SIGTERM);
  log.ReadUntilClosed(on_a, 10s);
  EXPECT_TRUE(on_a.Closed());
  EXPECT_EQ(on_a.CloseCode(), 1012) << "sessions must be told to reconnect (service restart)";

  // Still draining (the stubborn session holds it open): not ready, no new streams.
  EXPECT_TRUE(a.process->Running());
  const auto readyz = HttpGet(a.port, "/readyz");
  EXPECT_EQ(readyz.status, 503) << readyz.body;
  WsClient late;
  const auto refused = late.Connect(Options(a.port, user, log.cursor));
  EXPECT_EQ(refused.status, 503);
  EXPECT_NE(refused.body.find(R"("error":"draining")"), std::string::npos) << refused.body;

  // Resume on B right away, watching for A's exit meanwhile.
  WsClient on_b;
  ASSERT_EQ(on_b.Connect(Options(b.port, user, log.cursor)).status, 101);
  std::optional<std::chrono::steady_clock::time_point> exited_at;
  const auto deadline = std::chrono::steady_clock::now() + kDrainGrace + 40s;
  while ((log.events.size() < static_cast<size_t>(kTotal) || !exited_at) &&
         std::chrono::steady_clock::now() < deadline) {
    if (log.events.size() < static_cast<size_t>(kTotal)) {
      log.ReadEvents(on_b, kTotal, 100ms);
    } else {
      std::this_thread::sleep_for(20ms);
    }
    if (!exited_at && !a.process->Running()) exited_at = std::chrono::steady_clock::now();
  }
  publisher.Join();
  log.ReadEvents(on_b, SIZE_MAX, 500ms);

  ASSERT_TRUE(exited_at) << "A did not exit: " << a.process->Describe();
  EXPECT_EQ(a.process->Wait(0ms), std::optional<int>(0)) << a.process->Describe();
  EXPECT_LE(*exited_at - signalled, kDrainGrace + 1s) << "A outlived its grace period";

  ExpectExactlyOnceInOrder(publisher.Published(), kTotal, log.events);
  EXPECT_EQ(log.ready_frames, 2);
}

}  // namespace
}  // namespace agentwire::testing
