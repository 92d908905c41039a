// The run supervisor (docs/runs.md) against the embedded Kafka: a leased run whose worker went
// silent ends once as worker_lost; heartbeats keep a quiet run alive; a Stop no worker confirms
// ends the run once as cancelled (a flood of Stops too); forged Stops are ignored and counted; a
// supervisor killed with SIGKILL and restarted neither ends a run twice nor forgets an open one;
// a run that ends itself is left alone, and events after an end are counted as late. Every test
// counts the ends per run in the topic itself.

#include "agentwire/supervisor/supervisor.hpp"

#include <agentwire/v1/control.pb.h>
#include <agentwire/v1/events.pb.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr int kPartitions = 4;
constexpr auto kCancelTimeout = milliseconds(1000);
constexpr auto kCheckInterval = milliseconds(200);
// Generous room over a lease or a cancel timeout for a check, a publish and the read-back.
constexpr auto kSlack = seconds(6);
// Joining the group and reading the partitions once, on a shared 2-core machine.
constexpr auto kReadyTimeout = seconds(30);

/// The value of `series` (name plus labels, as rendered) in the registry's exposition; -1 when
/// absent.
double Metric(const metrics::Registry& registry, const std::string& series) {
  const std::string text = registry.RenderPrometheus();
  const std::string needle = series + " ";
  size_t at = 0;
  while ((at = text.find(needle, at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + needle.size()));
    at += needle.size();
  }
  return -1;
}

/// A user whose events land in another partition than `user`'s.
std::string UserInAnotherPartition(const std::string& user) {
  for (int i = 0;; ++i) {
    std::string other = "attacker-" + std::to_string(i);
    if (PartitionForKey(other, kPartitions) != PartitionForKey(user, kPartitions)) return other;
  }
}

class SupervisorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { kafka_ = new kafka::EmbeddedKafka(1); }
  static void TearDownTestSuite() {
    delete kafka_;
    kafka_ = nullptr;
  }

  void SetUp() override {
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    topic_ = "supervisor-" + name;
    group_ = "supervisor-group-" + name;
    for (const auto& spec : kafka::DefaultTopics(topic_, kPartitions)) kafka_->CreateTopic(spec);
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", kafka_->BootstrapServers()}};
    config.topic = topic_;
    publisher_ = std::make_unique<producers::EventPublisher>(config);
    control_ = kafka::MakeClient(RD_KAFKA_PRODUCER,
                                 kafka::MakeConf({{"bootstrap.servers", kafka_->BootstrapServers()},
                                                  {"partitioner", "murmur2_random"},
                                                  {"linger.ms", "1"}}));
  }

  void TearDown() override {
    StopSupervisor();
    publisher_.reset();
    control_.reset();
  }

  kafka::Properties ClientProperties() const {
    return {{"bootstrap.servers", kafka_->BootstrapServers()},
            {"session.timeout.ms", "6000"},
            {"heartbeat.interval.ms", "1000"},
            {"fetch.wait.max.ms", "10"}};
  }

  /// The supervisor in this process, on its own thread; waits until it is ready.
  void StartSupervisor() {
    supervisor::SupervisorConfig config;
    config.client_properties = ClientProperties();
    config.topic = topic_;
    config.group = group_;
    config.cancel_timeout = kCancelTimeout;
    config.check_interval = kCheckInterval;
    registry_ = std::make_unique<metrics::Registry>();
    supervisor_ = std::make_unique<supervisor::Supervisor>(config, *registry_);
    thread_ = std::jthread([this](std::stop_token stop) { supervisor_->Run(stop); });
    const auto deadline = Clock::now() + kReadyTimeout;
    while (!supervisor_->Ready() && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(20));
    }
    ASSERT_TRUE(supervisor_->Ready()) << "the supervisor did not get its partitions in time";
  }

  void StopSupervisor() {
    if (thread_.joinable()) {
      thread_.request_stop();
      thread_.join();
    }
    supervisor_.reset();
  }

  double Metric(const std::string& series) const { return agentwire::Metric(*registry_, series); }
  /// Polls until `series` equals `value` or `timeout` passes; returns the last value.
  double WaitForMetric(const std::string& series, double value, milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    while (Metric(series) != value && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(20));
    }
    return Metric(series);
  }

  /// The next event of `run` (run_seq counts per run), published and acknowledged.
  void Publish(const std::string& user, const std::string& run,
               const std::function<void(v1::AgentEvent&)>& body) {
    v1::AgentEvent event;
    event.set_user_id(user);
    event.set_thread_id("thread-" + user);
    event.set_run_id(run);
    event.set_run_seq(++seq_[run]);
    event.set_agent_name("researcher");
    event.set_trace_id("trace-" + run);
    body(event);
    schemas::FillDefaults(event);
    ASSERT_TRUE(publisher_->Publish(event).Accepted());
    ASSERT_EQ(publisher_->Flush(seconds(10)), 0U);
  }
  void Started(const std::string& user, const std::string& run, uint32_t lease_ms) {
    Publish(user, run, [&](v1::AgentEvent& e) {
      e.mutable_agent_started()->set_input("question");
      e.mutable_agent_started()->set_lease_ms(lease_ms);
    });
  }
  void Thinking(const std::string& user, const std::string& run) {
    Publish(user, run, [](v1::AgentEvent& e) { e.mutable_agent_thinking()->set_text("hmm"); });
  }
  void Completed(const std::string& user, const std::string& run) {
    Publish(user, run, [](v1::AgentEvent& e) { e.mutable_agent_completed()->set_result("ok"); });
  }

  /// A ControlRecord keyed by `key` (the sender's user unless given).
  void Control(const v1::ControlRecord& record, const std::string& topic, std::string key = {}) {
    if (key.empty()) key = record.user_id();
    ASSERT_EQ(testing::ProduceRaw(control_.get(), topic, key, record.SerializeAsString()), 0);
    ASSERT_EQ(rd_kafka_flush(control_.get(), 10'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  void Cancel(const std::string& sender, const std::string& run, const std::string& key = {}) {
    v1::ControlRecord record;
    record.set_user_id(sender);
    record.set_run_id(run);
    *record.mutable_sent_at() = schemas::TimestampNow();
    record.mutable_cancel()->set_request_id(schemas::NewEventId());
    record.mutable_cancel()->set_requested_by("gateway");
    Control(record, ControlTopicFor(topic_), key);
  }
  void Heartbeat(const std::string& user, const std::string& run, uint32_t lease_ms) {
    v1::ControlRecord record;
    record.set_user_id(user);
    record.set_run_id(run);
    *record.mutable_sent_at() = schemas::TimestampNow();
    record.mutable_heartbeat()->set_worker_id("test-worker");
    record.mutable_heartbeat()->set_lease_ms(lease_ms);
    Control(record, HeartbeatTopicFor(topic_));
  }

  /// Every terminal event in the topic, by run, in log order.
  std::map<std::string, std::vector<v1::AgentEvent>> Ends() const {
    std::map<std::string, std::vector<v1::AgentEvent>> ends;
    for (const auto& record :
         testing::ConsumeAll(kafka_->BootstrapServers(), topic_, 0, seconds(10))) {
      v1::AgentEvent event;
      if (event.ParseFromString(record.value) && schemas::IsTerminal(event)) {
        ends[event.run_id()].push_back(event);
      }
    }
    return ends;
  }
  size_t EndCount(const std::string& run) const {
    const auto ends = Ends();
    const auto found = ends.find(run);
    return found == ends.end() ? 0 : found->second.size();
  }
  /// Polls the topic until `run` has an end; returns how long it took (nullopt: it never came).
  std::optional<milliseconds> WaitForEnd(const std::string& run, milliseconds timeout) const {
    const auto start = Clock::now();
    while (Clock::now() - start < timeout) {
      if (EndCount(run) > 0) {
        return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    return std::nullopt;
  }

  static void ExpectSupervisorEnd(const v1::AgentEvent& end, const std::string& user,
                                  const std::string& run, uint32_t run_seq,
                                  const std::string& error_code) {
    EXPECT_EQ(end.user_id(), user);
    EXPECT_EQ(end.run_id(), run);
    EXPECT_EQ(end.thread_id(), "thread-" + user);
    EXPECT_EQ(end.agent_name(), "researcher");
    EXPECT_EQ(end.trace_id(), "trace-" + run);
    EXPECT_EQ(end.run_seq(), run_seq);
    EXPECT_FALSE(end.event_id().empty());
    ASSERT_TRUE(end.has_agent_failed());
    EXPECT_EQ(end.agent_failed().error_code(), error_code);
    ASSERT_TRUE(end.attributes().contains("ended_by"));
    EXPECT_EQ(end.attributes().at("ended_by"), "supervisor");
  }

  static kafka::EmbeddedKafka* kafka_;
  std::string topic_;
  std::string group_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  kafka::HandlePtr control_;
  std::map<std::string, uint32_t> seq_;
  std::unique_ptr<metrics::Registry> registry_;
  std::unique_ptr<supervisor::Supervisor> supervisor_;
  std::jthread thread_;
};

kafka::EmbeddedKafka* SupervisorTest::kafka_ = nullptr;

// a. The worker published agent_started and a thought, then died: one worker_lost end after the
// lease, none before it; runs that are not leased or that are alive are not touched.
TEST_F(SupervisorTest, SilentLeasedRunEndsOnceAsWorkerLost) {
  StartSupervisor();
  Started("alice", "run-lost", 1500);
  Started("bob", "run-unleased", 0);  // published without run control: not supervised
  Started("carol", "run-busy", 1500);
  Thinking("alice", "run-lost");
  const auto silent_since = Clock::now();

  // carol's worker keeps talking meanwhile.
  std::optional<milliseconds> took;
  std::jthread busy([&](std::stop_token stop) {
    while (!stop.stop_requested()) {
      Thinking("carol", "run-busy");
      std::this_thread::sleep_for(milliseconds(300));
    }
  });
  took = WaitForEnd("run-lost", milliseconds(1500) + kSlack);
  const auto since_silence = std::chrono::duration_cast<milliseconds>(Clock::now() - silent_since);
  ASSERT_TRUE(took) << "no end within lease + slack";
  // Never before the lease (measured from before the last event was even published).
  EXPECT_GE(since_silence.count(), 1500);

  std::this_thread::sleep_for(seconds(2));  // room for a second end, if it were to come
  busy.request_stop();
  busy.join();
  const auto ends = Ends();
  ASSERT_EQ(ends.count("run-lost"), 1U);
  ASSERT_EQ(ends.at("run-lost").size(), 1U) << "ended more than once";
  ExpectSupervisorEnd(ends.at("run-lost")[0], "alice", "run-lost", 3, "worker_lost");
  EXPECT_NE(ends.at("run-lost")[0].agent_failed().message().find("stopped responding"),
            std::string::npos);
  EXPECT_EQ(ends.count("run-unleased"), 0U);
  EXPECT_EQ(ends.count("run-busy"), 0U);
  EXPECT_EQ(Metric(R"(agentwire_supervisor_runs_ended_total{reason="worker_lost"})"), 1);
  EXPECT_EQ(Metric(R"(agentwire_supervisor_runs_ended_total{reason="cancelled"})"), 0);
  EXPECT_EQ(Metric("agentwire_supervisor_open_runs"), 2);  // unleased and busy
}

// b. A long tool call: no event for 5 s, longer than the 1.5 s lease, but heartbeats every
// 300 ms. The run stays open; it then ends itself and the supervisor writes nothing.
TEST_F(SupervisorTest, HeartbeatsKeepAQuietRunAlive) {
  StartSupervisor();
  Started("dave", "run-tool", 1500);
  const auto until = Clock::now() + seconds(5);
  while (Clock::now() < until) {
    Heartbeat("dave", "run-tool", 1500);
    std::this_thread::sleep_for(milliseconds(300));
  }
  EXPECT_EQ(EndCount("run-tool"), 0U) << "ended while its heartbeats came";
  Completed("dave", "run-tool");
  std::this_thread::sleep_for(seconds(3));  // past the lease after the end
  const auto ends = Ends();
  ASSERT_EQ(ends.at("run-tool").size(), 1U);
  EXPECT_TRUE(ends.at("run-tool")[0].has_agent_completed());
  EXPECT_EQ(Metric(R"(agentwire_supervisor_runs_ended_total{reason="worker_lost"})"), 0);
  EXPECT_EQ(Metric("agentwire_supervisor_open_runs"), 0);
}

// c. Stop for a run whose worker is dead: the supervisor ends it as cancelled after
// --cancel-timeout, once; a flood of 50 Stops for another run is one end too; a run whose
// worker confirms the Stop itself is left alone.
TEST_F(SupervisorTest, UnconfirmedStopEndsTheRunOnceAsCancelled) {
  StartSupervisor();
  Started("erin", "run-dead", 0);
  Started("frank", "run-flood", 0);
  Started("grace", "run-obeys", 0);
  Thinking("grace", "run-obeys");

  Cancel("erin", "run-dead");
  const auto took = WaitForEnd("run-dead", kCancelTimeout + kSlack);
  ASSERT_TRUE(took) << "no end within cancel timeout + slack";
  EXPECT_GE(took->count(), kCancelTimeout.count() - 100);

  for (int i = 0; i < 50; ++i) Cancel("frank", "run-flood");
  Cancel("grace", "run-obeys");
  // The worker obeys a moment later (the supervisor reads the Stop first, as it would).
  std::this_thread::sleep_for(milliseconds(300));
  Publish("grace", "run-obeys", [](v1::AgentEvent& e) {
    e.mutable_agent_failed()->set_error_code("cancelled");
    e.mutable_agent_failed()->set_message("stopped by the user");
  });
  ASSERT_TRUE(WaitForEnd("run-flood", kCancelTimeout + kSlack));
  std::this_thread::sleep_for(seconds(2));

  const auto ends = Ends();
  ASSERT_EQ(ends.at("run-dead").size(), 1U);
  ExpectSupervisorEnd(ends.at("run-dead")[0], "erin", "run-dead", 2, "cancelled");
  EXPECT_EQ(ends.at("run-dead")[0].agent_failed().message(), "stopped by the user");
  ASSERT_EQ(ends.at("run-flood").size(), 1U) << "a flood of Stops ended the run more than once";
  ExpectSupervisorEnd(ends.at("run-flood")[0], "frank", "run-flood", 2, "cancelled");
  ASSERT_EQ(ends.at("run-obeys").size(), 1U) << "the supervisor ended a run its worker ended";
  EXPECT_EQ(ends.at("run-obeys")[0].attributes().count("ended_by"), 0U);

  EXPECT_EQ(Metric(R"(agentwire_supervisor_runs_ended_total{reason="cancelled"})"), 2);
  EXPECT_EQ(Metric("agentwire_supervisor_cancel_requests_total"), 52);
  EXPECT_EQ(Metric("agentwire_supervisor_cancel_to_end_seconds_count"), 3);
  EXPECT_EQ(Metric("agentwire_supervisor_open_runs"), 0);
}

// d. Stops sent by someone who is not the run's user: keyed by the attacker (another partition)
// and keyed by the victim (the run's own partition) with the attacker as user_id. Both ignored
// and counted; the run goes on and ends itself.
TEST_F(SupervisorTest, ForgedStopsAreIgnoredAndCounted) {
  StartSupervisor();
  const std::string attacker = UserInAnotherPartition("heidi");
  Started("heidi", "run-victim", 0);
  ASSERT_EQ(WaitForMetric("agentwire_supervisor_open_runs", 1, seconds(10)), 1);
  Cancel(attacker, "run-victim");           // lands in the attacker's partition
  Cancel(attacker, "run-victim", "heidi");  // lands in heidi's partition, wrong user
  std::this_thread::sleep_for(kCancelTimeout + seconds(2));
  EXPECT_EQ(EndCount("run-victim"), 0U) << "a forged Stop ended the run";
  EXPECT_EQ(Metric("agentwire_supervisor_forged_cancels_total"), 2);
  EXPECT_EQ(Metric("agentwire_supervisor_open_runs"), 1);

  Thinking("heidi", "run-victim");
  Completed("heidi", "run-victim");
  std::this_thread::sleep_for(seconds(1));
  const auto ends = Ends();
  ASSERT_EQ(ends.at("run-victim").size(), 1U);
  EXPECT_TRUE(ends.at("run-victim")[0].has_agent_completed());
  EXPECT_EQ(Metric(R"(agentwire_supervisor_runs_ended_total{reason="cancelled"})"), 0);
}

// e. `agentwire supervisor` is killed with SIGKILL right after it wrote an end, and started
// again: the restarted one rebuilds from the committed offsets (the oldest open run, started
// before the ended one), reads that end and does not write another; the run that was open
// across the kill is ended once, by the restarted supervisor.
TEST_F(SupervisorTest, KilledAndRestartedSupervisorNeverEndsARunTwice) {
  const auto argv = testing::SupervisorCommand(
      kafka_->BootstrapServers(), topic_,
      {"--group", group_, "--cancel-timeout", "1s", "--check-interval", "200ms"});
  // One user: both runs in one partition, the open one first (it holds the committed offset).
  Started("ivan", "run-open", 3000);
  Started("ivan", "run-lost", 1500);
  Thinking("ivan", "run-lost");

  std::atomic<bool> beating{true};
  std::jthread heartbeats([&](std::stop_token stop) {
    while (!stop.stop_requested() && beating) {
      Heartbeat("ivan", "run-open", 3000);
      std::this_thread::sleep_for(milliseconds(300));
    }
  });

  auto first = std::make_unique<testing::Subprocess>(argv);
  ASSERT_TRUE(WaitForEnd("run-lost", kReadyTimeout + kSlack)) << first->Describe();
  first->Kill();
  first->Wait(seconds(10));
  first.reset();
  beating = false;  // run-open's worker dies now
  heartbeats.request_stop();
  heartbeats.join();
  EXPECT_EQ(EndCount("run-open"), 0U);

  testing::Subprocess second(argv);
  // The dead member's session (6 s) times out, the partitions move, run-open gets a fresh
  // 3 s lease from then.
  ASSERT_TRUE(WaitForEnd("run-open", seconds(40))) << second.Describe();
  std::this_thread::sleep_for(seconds(3));
  const auto ends = Ends();
  ASSERT_EQ(ends.at("run-lost").size(), 1U) << "ended twice across the restart\n"
                                            << second.Describe();
  ASSERT_EQ(ends.at("run-open").size(), 1U) << second.Describe();
  ExpectSupervisorEnd(ends.at("run-lost")[0], "ivan", "run-lost", 3, "worker_lost");
  ExpectSupervisorEnd(ends.at("run-open")[0], "ivan", "run-open", 2, "worker_lost");
  second.Signal(SIGTERM);
  EXPECT_EQ(second.Wait(seconds(20)), 0) << second.Describe();
}

// f. A run that ends itself before its lease is left alone; events after an end (a zombie
// worker, after the supervisor's end or its own) are counted as late and reopen nothing.
TEST_F(SupervisorTest, SelfEndedRunsAreLeftAloneAndLateEventsCounted) {
  StartSupervisor();
  Started("judy", "run-quick", 1500);
  Thinking("judy", "run-quick");
  Completed("judy", "run-quick");
  Started("ken", "run-zombie", 1000);
  ASSERT_TRUE(WaitForEnd("run-zombie", milliseconds(1000) + kSlack));
  std::this_thread::sleep_for(seconds(1));  // past run-quick's lease, too

  // The zombie wakes up; run-quick's worker sends one more thing too.
  Thinking("ken", "run-zombie");
  Completed("ken", "run-zombie");
  Thinking("judy", "run-quick");
  EXPECT_EQ(WaitForMetric("agentwire_supervisor_late_events_total", 3, seconds(10)), 3);
  std::this_thread::sleep_for(seconds(2));  // a reopened run would be past its lease by now

  const auto ends = Ends();
  ASSERT_EQ(ends.at("run-quick").size(), 1U);
  EXPECT_TRUE(ends.at("run-quick")[0].has_agent_completed());
  // The supervisor's end, then the zombie's own: the log keeps both, the first wins.
  ASSERT_EQ(ends.at("run-zombie").size(), 2U);
  ExpectSupervisorEnd(ends.at("run-zombie")[0], "ken", "run-zombie", 2, "worker_lost");
  EXPECT_TRUE(ends.at("run-zombie")[1].has_agent_completed());
  EXPECT_EQ(Metric(R"(agentwire_supervisor_runs_ended_total{reason="worker_lost"})"), 1);
  EXPECT_EQ(Metric("agentwire_supervisor_open_runs"), 0);
}

}  // namespace
}  // namespace agentwire
