// The guarantee across replicas, with real processes: a client streaming from gateway A while
// events keep arriving resumes on gateway B with its last cursor after A is killed (-9) or
// drained (SIGTERM: close 1012 first, /readyz 503, exit 0 within the grace period), and
// receives every event exactly once, in order.
#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <set>
#include <thread>

#include "agentwire/producers/event_publisher.hpp"
#include "support/gateway_harness.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kDrainGrace = 20s;

struct Audit {
  size_t lost = 0;
  size_t duplicated = 0;
  size_t reordered = 0;
};

Audit Compare(const std::vector<std::string>& expected, const std::vector<std::string>& received) {
  Audit audit;
  std::set<std::string> seen;
  std::vector<std::string> firsts;
  for (const auto& id : received) {
    if (seen.insert(id).second) {
      firsts.push_back(id);
    } else {
      ++audit.duplicated;
    }
  }
  for (const auto& id : expected) audit.lost += !seen.contains(id) ? 1 : 0;
  // The first copies must follow publish order: count those out of step.
  size_t j = 0;
  for (const auto& id : expected) {
    if (j < firsts.size() && firsts[j] == id) ++j;
  }
  audit.reordered = firsts.size() - j;
  return audit;
}

// One user's events published at a steady pace from a thread, so the stream is live while
// replicas die.
class PacedPublisher final {
 public:
  PacedPublisher(const std::string& bootstrap, std::string user, int total)
      : user_(std::move(user)), total_(total) {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", bootstrap}, {"linger.ms", "1"}};
    publisher_ = std::make_unique<producers::EventPublisher>(config);
    thread_ = std::thread([this] { Run(); });
  }
  ~PacedPublisher() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  bool Done() const { return done_; }
  const std::vector<std::string>& Published() const { return published_; }  // after Join()

 private:
  void Run() {
    for (int i = 1; i <= total_; ++i) {
      v1::AgentEvent event;
      event.set_event_id(user_ + "-" + std::to_string(i));
      event.set_user_id(user_);
      event.set_thread_id("t-1");
      event.set_run_id("r-1");
      event.set_run_seq(static_cast<uint32_t>(i));
      event.mutable_agent_thinking()->set_text("step " + std::to_string(i));
      if (publisher_->Publish(event, {}, 10s) != producers::PublishStatus::kAccepted) break;
      published_.push_back(event.event_id());
      if (i % 10 == 0) {
        publisher_->Flush(10s);
        std::this_thread::sleep_for(20ms);
      }
    }
    publisher_->Flush(30s);
    done_ = true;
  }

  std::string user_;
  int total_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  std::vector<std::string> published_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// What one client saw across its connections.
struct ClientLog {
  std::vector<std::string> events;
  std::string cursor;
  int ready_frames = 0;

  void Take(const Frame& frame) {
    if (frame.type == "event") {
      events.push_back(frame.event_id);
      cursor = frame.cursor;
    } else if (frame.type == "ready") {
      ++ready_frames;
      cursor = frame.cursor;
    } else {
      ADD_FAILURE() << "unexpected frame " << frame.json.dump();
    }
  }
  /// Reads until `count` events in total, the connection closes, or `timeout`.
  void ReadEvents(WsClient& client, size_t count, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (events.size() < count && !client.Closed() &&
           std::chrono::steady_clock::now() < deadline) {
      auto text = client.Read(200ms);
      if (!text) continue;
      if (auto frame = ParseFrame(*text)) Take(*frame);
    }
  }
  /// Reads whatever was still buffered until the server's close.
  void ReadUntilClosed(WsClient& client, std::chrono::milliseconds timeout) {
    ReadEvents(client, SIZE_MAX, timeout);
  }
};

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

  struct Replica {
    std::unique_ptr<Subprocess> process;
    uint16_t port = 0;
  };

  // Starts an `agentwire gateway` process and waits until it is ready (Kafka assigned).
  static Replica StartReplica(const std::string& name) {
    const std::string port_file = directory_ + "/" + name + ".port";
    std::filesystem::remove(port_file);
    Replica replica;
    Subprocess::Options options;
    options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_JWT_SECRET", "PORT",
                         "AGENTWIRE_DRAIN_GRACE"};
    replica.process = std::make_unique<Subprocess>(
        std::vector<std::string>{AgentwireBinary(), "gateway", "--brokers", bootstrap_, "--port",
                                 "0", "--port-file", port_file, "--jwt-secret", kTestJwtSecret,
                                 "--threads", "2", "--drain-grace",
                                 std::to_string(kDrainGrace.count()) + "s"},
        options);
    EXPECT_TRUE(WaitForFile(port_file, 30s)) << replica.process->Describe();
    replica.port = static_cast<uint16_t>(std::stoi(ReadFirstLine(port_file)));
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (HttpGet(replica.port, "/readyz").status != 200 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(HttpGet(replica.port, "/readyz").status, 200) << replica.process->Describe();
    return replica;
  }

  static WsClient::Options Options(uint16_t port, const std::string& user,
                                   const std::string& cursor) {
    WsClient::Options options;
    options.port = port;
    options.target = "/v1/events?cursor=" + (cursor.empty() ? std::string("earliest") : cursor);
    options.bearer = gateway::MintHs256Token(kTestJwtSecret, user, std::chrono::hours(1));
    return options;
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
  log.ReadEvents(on_b, kTotal, 60s);
  publisher.Join();
  // Anything after the last event would be a duplicate: give it a moment to show up.
  log.ReadEvents(on_b, SIZE_MAX, 500ms);

  const auto audit = Compare(publisher.Published(), log.events);
  EXPECT_EQ(publisher.Published().size(), static_cast<size_t>(kTotal));
  EXPECT_EQ(audit.lost, 0U);
  EXPECT_EQ(audit.duplicated, 0U);
  EXPECT_EQ(audit.reordered, 0U);
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

  const auto audit = Compare(publisher.Published(), log.events);
  EXPECT_EQ(publisher.Published().size(), static_cast<size_t>(kTotal));
  EXPECT_EQ(audit.lost, 0U);
  EXPECT_EQ(audit.duplicated, 0U);
  EXPECT_EQ(audit.reordered, 0U);
  EXPECT_EQ(log.ready_frames, 2);
}

}  // namespace
}  // namespace agentwire::testing
