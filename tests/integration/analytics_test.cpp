// `agentwire analytics` over a scripted set of runs (completed, failed, abandoned, still running;
// tools ok / failed, with and without tool_call_id) gives exactly the expected agent_runs and
// tool_calls rows; replaying the whole topic again (the group's stored offsets reset) changes
// nothing; `agentwire analytics report` shows the counts. Embedded Kafka + a real PostgreSQL.

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <csignal>
#include <regex>
#include <thread>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"
#include "support/ws_client.hpp"

namespace agentwire {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::SharedPostgres;
using testing::Subprocess;

constexpr const char* kTopic = "agent.lifecycle.v1";
// Seconds; every event time is relative to it. An hour ago: analytics trusts emitted_at only
// within 24 h of the Kafka timestamp, which is the publish time.
const int64_t kT0 = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count() -
                    3600;

class Script {
 public:
  explicit Script(producers::EventPublisher& publisher) : publisher_(publisher) {}

  /// Adds the next event of `run` (run_seq counts per run) at kT0 + `at_ms`.
  v1::AgentEvent& Event(const std::string& user, const std::string& run, int64_t at_ms) {
    auto& event = events_.emplace_back();
    event.set_event_id("ev-" + std::to_string(events_.size()));
    event.set_user_id(user);
    event.set_thread_id("thread-" + user);
    event.set_run_id(run);
    event.set_run_seq(++seq_[run]);
    event.set_agent_name("researcher");
    event.mutable_emitted_at()->set_seconds(kT0 + at_ms / 1000);
    event.mutable_emitted_at()->set_nanos(static_cast<int32_t>(at_ms % 1000) * 1'000'000);
    return event;
  }
  void Started(const std::string& u, const std::string& r, int64_t at) {
    Event(u, r, at).mutable_agent_started()->set_input("question");
  }
  void Thinking(const std::string& u, const std::string& r, int64_t at) {
    Event(u, r, at).mutable_agent_thinking()->set_text("hmm");
  }
  void ToolExecuting(const std::string& u, const std::string& r, int64_t at,
                     const std::string& tool, const std::string& id = {}) {
    auto* body = Event(u, r, at).mutable_tool_executing();
    body->set_tool_name(tool);
    body->set_tool_call_id(id);
  }
  void ToolCompleted(const std::string& u, const std::string& r, int64_t at,
                     const std::string& tool, uint32_t duration_ms, const std::string& error = {},
                     const std::string& id = {}) {
    auto* body = Event(u, r, at).mutable_tool_completed();
    body->set_tool_name(tool);
    body->set_duration_ms(duration_ms);
    body->set_error(error);
    body->set_tool_call_id(id);
  }
  void Completed(const std::string& u, const std::string& r, int64_t at) {
    Event(u, r, at).mutable_agent_completed()->set_result("answer");
  }
  void Failed(const std::string& u, const std::string& r, int64_t at, const std::string& code,
              const std::string& message) {
    auto* body = Event(u, r, at).mutable_agent_failed();
    body->set_error_code(code);
    body->set_message(message);
  }

  size_t Publish() {
    for (const auto& event : events_) {
      EXPECT_EQ(publisher_.Publish(event, {}, seconds(10)), producers::PublishStatus::kAccepted);
    }
    EXPECT_EQ(publisher_.Flush(seconds(30)), 0u);
    return events_.size();
  }

 private:
  producers::EventPublisher& publisher_;
  std::vector<v1::AgentEvent> events_;
  std::map<std::string, uint32_t> seq_;
};

class AnalyticsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kafka_ = std::make_unique<kafka::EmbeddedKafka>(1);
    kafka_->CreateTopic({kTopic, 6});
    kafka_->CreateTopic({std::string(kTopic) + ".dlq", 2});
    dsn_ = SharedPostgres().CreateDatabase("analytics");
  }

  /// Runs analytics until the stored offsets cover `events`, then stops it with SIGTERM.
  void RunAnalyticsUntilCaughtUp(int64_t events) {
    (void)RunUntilCaughtUp(events, "agentwire-analytics", "7");
  }

  /// The same for consumer group `group` with --batch-size `batch_size`; returns
  /// agentwire_analytics_late_events_total as the process reported it once caught up.
  double RunUntilCaughtUp(int64_t events, const std::string& group, const std::string& batch_size) {
    const uint16_t port = FreePort();
    auto argv = testing::ConsumerCommand("analytics", kafka_->BootstrapServers(), dsn_,
                                         {"--abandon-after", "15m", "--batch-size", batch_size,
                                          "--batch-ms", "20", "--group", group});
    *(std::find(argv.begin(), argv.end(), "--metrics-port") + 1) = std::to_string(port);
    Subprocess analytics(argv);
    const auto deadline = std::chrono::steady_clock::now() + seconds(60);
    while (true) {
      int64_t stored = 0;
      try {
        stored = SharedPostgres().QueryInt(
            dsn_, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = '" +
                      group + "'");
      } catch (const std::exception&) {
      }
      if (stored >= events) break;
      EXPECT_LT(std::chrono::steady_clock::now(), deadline) << analytics.Describe();
      EXPECT_TRUE(analytics.Running()) << analytics.Describe();
      if (std::chrono::steady_clock::now() >= deadline || !analytics.Running()) return -1;
      std::this_thread::sleep_for(milliseconds(100));
    }
    // The counter moves just after the commit that moved the offsets.
    std::this_thread::sleep_for(milliseconds(300));
    const auto metrics = testing::HttpGet(port, "/metrics");
    EXPECT_EQ(metrics.status, 200) << analytics.Describe();
    analytics.Signal(SIGTERM);
    EXPECT_EQ(analytics.Wait(seconds(30)), 0) << analytics.Describe();
    return SeriesValue(metrics.body, "agentwire_analytics_late_events_total");
  }

  static uint16_t FreePort() {
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::acceptor acceptor(
        ioc, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    return acceptor.local_endpoint().port();
  }

  static double SeriesValue(const std::string& metrics, const std::string& series) {
    const auto at = metrics.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(metrics.substr(at + series.size() + 2));
  }

  std::string Runs() const {
    return SharedPostgres().Query(
        dsn_,
        "SELECT run_id, user_id, thread_id, status, COALESCE(duration_ms::text, '-'),"
        " COALESCE(time_to_first_thought_ms::text, '-'), tool_count, tool_errors,"
        " COALESCE(error_code, '-'), last_seq FROM agent_runs ORDER BY run_id");
  }
  std::string Tools() const {
    return SharedPostgres().Query(
        dsn_,
        "SELECT run_id, call_key, tool_name, COALESCE(duration_ms::text, '-'),"
        " COALESCE(ok::text, '-'), COALESCE(error, '-') FROM tool_calls ORDER BY run_id, call_key");
  }
  /// Every column but updated_at, for the replay comparison.
  std::string Everything() const {
    return SharedPostgres().Query(
               dsn_,
               "SELECT run_id, user_id, thread_id, agent_name, started_at, first_thought_at,"
               " ended_at, status, terminal_seq, terminal_offset, duration_ms,"
               " time_to_first_thought_ms, tool_count, tool_errors, error_code, error_message,"
               " last_seq, last_event_at, late_events, late_offset"
               " FROM agent_runs ORDER BY run_id") +
           "\n" +
           SharedPostgres().Query(dsn_, "SELECT * FROM tool_calls ORDER BY run_id, call_key");
  }

  std::unique_ptr<kafka::EmbeddedKafka> kafka_;
  std::string dsn_;
};

TEST_F(AnalyticsTest, ScriptedRunsGiveExactRowsAndReplayChangesNothing) {
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", kafka_->BootstrapServers()}};
  config.topic = kTopic;
  producers::EventPublisher publisher(config);
  Script s(publisher);
  constexpr int64_t kMinute = 60'000;
  // Completed, one tool with an id.
  s.Started("alice", "run-ok", 0);
  s.Thinking("alice", "run-ok", 1500);
  s.ToolExecuting("alice", "run-ok", 2000, "web_search", "c1");
  s.ToolCompleted("alice", "run-ok", 2500, "web_search", 500, "", "c1");
  s.Completed("alice", "run-ok", 5000);
  // Failed after a tool error; no tool_call_id, no reported duration (timestamps give it).
  s.Started("bob", "run-fail", 10'000);
  s.ToolExecuting("bob", "run-fail", 11'000, "sql");
  s.ToolCompleted("bob", "run-fail", 13'000, "sql", 0, "timeout");
  s.Failed("bob", "run-fail", 14'000, "tool_error", "sql timed out");
  // Never finished: abandoned once an event 15+ minutes newer has been seen.
  s.Started("carol", "run-abandoned", 20'000);
  s.Thinking("carol", "run-abandoned", 21'000);
  s.ToolExecuting("carol", "run-abandoned", 22'000, "browser", "c9");
  // Two calls of the same tool without ids, one failing.
  s.Started("dave", "run-two", 30'000);
  s.ToolExecuting("dave", "run-two", 31'000, "search");
  s.ToolCompleted("dave", "run-two", 31'300, "search", 300);
  s.ToolExecuting("dave", "run-two", 32'000, "search");
  s.ToolCompleted("dave", "run-two", 32'100, "search", 100, "upstream 503");
  s.Thinking("dave", "run-two", 33'000);
  s.Completed("dave", "run-two", 40'000);
  // Still running: its newest event is only ~10 minutes older than the newest seen.
  s.Started("frank", "run-recent", 10 * kMinute);
  s.Thinking("frank", "run-recent", 10 * kMinute + 1000);
  // The newest events: they move "now" to T0 + 20 min.
  s.Started("erin", "run-late", 20 * kMinute);
  s.Completed("erin", "run-late", 20 * kMinute + 2000);
  const auto events = static_cast<int64_t>(s.Publish());

  RunAnalyticsUntilCaughtUp(events);

  // run_id user thread status duration ttft tools errors error_code last_seq
  const std::string expected_runs =
      "run-abandoned\tcarol\tthread-carol\tabandoned\t-\t1000\t1\t0\t-\t3\n"
      "run-fail\tbob\tthread-bob\tfailed\t4000\t-\t1\t1\ttool_error\t4\n"
      "run-late\terin\tthread-erin\tcompleted\t2000\t-\t0\t0\t-\t2\n"
      "run-ok\talice\tthread-alice\tcompleted\t5000\t1500\t1\t0\t-\t5\n"
      "run-recent\tfrank\tthread-frank\trunning\t-\t1000\t0\t0\t-\t2\n"
      "run-two\tdave\tthread-dave\tcompleted\t10000\t3000\t2\t1\t-\t7";
  EXPECT_EQ(Runs(), expected_runs);
  // run_id call_key tool duration ok error
  const std::string expected_tools =
      "run-abandoned\tc9\tbrowser\t-\t-\t-\n"
      "run-fail\tseq:2\tsql\t2000\tfalse\ttimeout\n"
      "run-ok\tc1\tweb_search\t500\ttrue\t-\n"
      "run-two\tseq:2\tsearch\t300\ttrue\t-\n"
      "run-two\tseq:4\tsearch\t100\tfalse\tupstream 503";
  EXPECT_EQ(Tools(), expected_tools);

  // Replay the whole topic: forget the stored offsets and run again.
  const std::string before = Everything();
  SharedPostgres().Query(dsn_,
                         "DELETE FROM consumer_offsets WHERE group_id = 'agentwire-analytics'");
  RunAnalyticsUntilCaughtUp(events);
  EXPECT_EQ(Everything(), before) << "a replay changed agent_runs / tool_calls";

  const auto report =
      testing::Run({testing::AgentwireBinary(), "analytics", "report", "--pg", dsn_}, seconds(30));
  ASSERT_EQ(report.exit_code, 0) << report.stderr_text;
  const std::string& text = report.stdout_text;
  EXPECT_NE(text.find("6 runs"), std::string::npos) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(completed\s+3\b)"))) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(failed\s+1\b)"))) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(abandoned\s+1\b)"))) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(running\s+1\b)"))) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(tool_error\s+1\b)"))) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(search\s+2\s+1\b)"))) << text;
  std::cerr << text;
}

// docs/runs.md: a run ends with its first terminal event in log order. A supervisor's
// agent_failed{worker_lost} followed by a zombie worker's events, a Stop (cancelled), a second
// end and a late agent_started in a later batch: the first end decides status, ended_at and the
// error; later events are counted in late_events (and the metric) and change nothing else;
// re-reading the same records (offsets forgotten, or another group) gives the same rows and
// counts nothing again.
TEST_F(AnalyticsTest, TheFirstTerminalEndsTheRunAndLateEventsAreCountedOnce) {
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", kafka_->BootstrapServers()}};
  config.topic = kTopic;
  producers::EventPublisher publisher(config);
  constexpr int64_t kMinute = 60'000;
  int64_t events = 0;
  {
    Script s(publisher);
    // The supervisor ends a silent run (run_seq 3, one past the last it saw); the zombie worker
    // wakes up and goes on: a thought and its own end, both late.
    s.Started("gina", "run-lost", 0);
    s.Thinking("gina", "run-lost", 1000);
    s.Failed("gina", "run-lost", 20'000, "worker_lost", "the agent stopped responding");
    s.Thinking("gina", "run-lost", 25'000);
    s.Completed("gina", "run-lost", 26'000);
    // The user pressed Stop.
    s.Started("hank", "run-cancelled", 30'000);
    s.Thinking("hank", "run-cancelled", 31'000);
    s.Failed("hank", "run-cancelled", 32'000, "cancelled", "stopped by the user");
    // Ends here; its late events come in the second part.
    s.Started("ivan", "run-split", 40'000);
    s.Completed("ivan", "run-split", 45'000);
    // No end: abandoned once the second part moves the newest event time.
    s.Started("judy", "run-silent", 50'000);
    events += static_cast<int64_t>(s.Publish());
  }
  EXPECT_EQ(RunUntilCaughtUp(events, "agentwire-analytics", "1000"), 2);
  const std::string columns =
      "SELECT run_id, status, COALESCE(error_code, '-'), COALESCE(terminal_seq::text, '-'),"
      " COALESCE(duration_ms::text, '-'), last_seq, late_events, tool_count FROM agent_runs"
      " ORDER BY run_id";
  // run_id status error_code terminal_seq duration last_seq late_events tools
  EXPECT_EQ(SharedPostgres().Query(dsn_, columns),
            "run-cancelled\tcancelled\tcancelled\t3\t2000\t3\t0\t0\n"
            "run-lost\tfailed\tworker_lost\t3\t20000\t3\t2\t0\n"
            "run-silent\trunning\t-\t-\t-\t1\t0\t0\n"
            "run-split\tcompleted\t-\t2\t5000\t2\t0\t0");

  {
    // A later batch (another process even): a second end and a late tool call of run-split, a
    // late agent_started reusing run-cancelled's id, and the newest events, 40 minutes on.
    Script s(publisher);
    auto& second_end = s.Event("ivan", "run-split", 60'000);
    second_end.set_run_seq(3);
    second_end.mutable_agent_failed()->set_error_code("worker_lost");
    second_end.mutable_agent_failed()->set_message("the agent stopped responding");
    auto& tool = s.Event("ivan", "run-split", 61'000);
    tool.set_run_seq(4);
    tool.mutable_tool_executing()->set_tool_name("search");
    tool.mutable_tool_executing()->set_tool_call_id("late-1");
    auto& tool_done = s.Event("ivan", "run-split", 62'000);
    tool_done.set_run_seq(5);
    tool_done.mutable_tool_completed()->set_tool_name("search");
    tool_done.mutable_tool_completed()->set_tool_call_id("late-1");
    tool_done.mutable_tool_completed()->set_duration_ms(1000);
    s.Started("hank", "run-cancelled", 63'000);  // run_seq 1 again
    s.Started("kate", "run-newest", 40 * kMinute);
    s.Completed("kate", "run-newest", 40 * kMinute + 1000);
    events += static_cast<int64_t>(s.Publish());
  }
  EXPECT_EQ(RunUntilCaughtUp(events, "agentwire-analytics", "7"), 4);
  const std::string expected =
      "run-cancelled\tcancelled\tcancelled\t3\t2000\t3\t1\t0\n"
      "run-lost\tfailed\tworker_lost\t3\t20000\t3\t2\t0\n"
      "run-newest\tcompleted\t-\t2\t1000\t2\t0\t0\n"
      "run-silent\tabandoned\t-\t-\t-\t1\t0\t0\n"
      "run-split\tcompleted\t-\t2\t5000\t2\t3\t0";
  EXPECT_EQ(SharedPostgres().Query(dsn_, columns), expected);
  EXPECT_EQ(SharedPostgres().QueryInt(dsn_, "SELECT count(*) FROM tool_calls"), 0)
      << "a late tool call is not one of the run's";
  // The end is the first terminal's position in the log.
  EXPECT_EQ(
      SharedPostgres().QueryInt(dsn_,
                                "SELECT count(*) FROM agent_runs WHERE terminal_offset IS NOT NULL"
                                " AND late_events > 0 AND late_offset > terminal_offset"),
      3);

  // Replays: the group's offsets forgotten (with other batch boundaries), then another group
  // from the beginning. Same rows; nothing counted again.
  const std::string before = Everything();
  SharedPostgres().Query(dsn_,
                         "DELETE FROM consumer_offsets WHERE group_id = 'agentwire-analytics'");
  EXPECT_EQ(RunUntilCaughtUp(events, "agentwire-analytics", "3"), 0);
  EXPECT_EQ(Everything(), before) << "a replay changed agent_runs / tool_calls";
  EXPECT_EQ(RunUntilCaughtUp(events, "analytics-replay", "1000"), 0);
  EXPECT_EQ(Everything(), before) << "another group changed agent_runs / tool_calls";
  EXPECT_EQ(SharedPostgres().Query(dsn_, columns), expected);

  const auto report =
      testing::Run({testing::AgentwireBinary(), "analytics", "report", "--pg", dsn_}, seconds(30));
  ASSERT_EQ(report.exit_code, 0) << report.stderr_text;
  EXPECT_NE(report.stdout_text.find("late events (after a run's first end): 6 in 3 runs"),
            std::string::npos)
      << report.stdout_text;
  EXPECT_TRUE(std::regex_search(report.stdout_text, std::regex(R"(cancelled\s+1\b)")))
      << report.stdout_text;
  EXPECT_TRUE(std::regex_search(report.stdout_text, std::regex(R"(worker_lost\s+1\b)")))
      << report.stdout_text;
}

testing::Subprocess::Options NoPgDsnEnv() {
  testing::Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_PG_DSN"};
  return options;
}

TEST_F(AnalyticsTest, ATopicTypoIsAConfigErrorAndCreatesNothing) {
  for (const std::string command : {"archive", "analytics"}) {
    const auto result =
        testing::Run(testing::ConsumerCommand(command, kafka_->BootstrapServers(), dsn_,
                                              {"--topic", "agent.lifecycle.v1x"}),
                     seconds(60));
    EXPECT_EQ(result.exit_code, 2) << command << "\n" << result.stderr_text;
    EXPECT_NE(result.stderr_text.find("--topic agent.lifecycle.v1x: no such topic on the cluster"),
              std::string::npos)
        << command << "\n"
        << result.stderr_text;
  }
  auto client = kafka::MakeClient(
      RD_KAFKA_PRODUCER,
      kafka::MakeConf({{"bootstrap.servers", kafka_->BootstrapServers()}, {"log_level", "3"}}));
  EXPECT_EQ(kafka::FindPartitionCount(client.get(), "agent.lifecycle.v1x", seconds(10)),
            std::nullopt);
  EXPECT_EQ(kafka::FindPartitionCount(client.get(), "agent.lifecycle.v1x.dlq", seconds(10)),
            std::nullopt);
}

TEST_F(AnalyticsTest, MissingDsnIsAConfigError) {
  const auto result = testing::Run(
      {testing::AgentwireBinary(), "analytics", "--brokers", kafka_->BootstrapServers()},
      NoPgDsnEnv(), seconds(30));
  EXPECT_EQ(result.exit_code, 2) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("AGENTWIRE_PG_DSN"), std::string::npos) << result.stderr_text;
}

TEST_F(AnalyticsTest, ABrokenClockDoesNotAbandonAnotherUsersRunningRun) {
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", kafka_->BootstrapServers()}};
  config.topic = kTopic;
  producers::EventPublisher publisher(config);
  Script s(publisher);
  // Alice's run is running: her newest event is a minute old by the Kafka clock.
  s.Started("alice", "run-alice", 59 * 60'000);
  s.Thinking("alice", "run-alice", 59 * 60'000 + 500);
  // Mallory's worker has a broken clock: 9999-12-31T23:59:59Z.
  auto& future = s.Event("mallory", "run-mallory", 0);
  future.mutable_emitted_at()->set_seconds(253'402'300'799);
  future.mutable_emitted_at()->set_nanos(0);
  future.mutable_agent_started()->set_input("hi");
  // A NUL in the text: skipped like the archive does, not half-applied.
  s.Event("nul", std::string("run-nul\0x", 9), 59 * 60'000).mutable_agent_started()->set_input("a");
  const auto events = static_cast<int64_t>(s.Publish());

  Subprocess analytics(testing::ConsumerCommand(
      "analytics", kafka_->BootstrapServers(), dsn_,
      {"--abandon-after", "15m", "--batch-size", "100", "--batch-ms", "20"}));
  const auto deadline = std::chrono::steady_clock::now() + seconds(60);
  for (;;) {
    int64_t stored = 0;
    try {
      stored = SharedPostgres().QueryInt(
          dsn_, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets");
    } catch (const std::exception&) {  // not migrated yet
    }
    if (stored >= events) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << analytics.Describe();
    ASSERT_TRUE(analytics.Running()) << analytics.Describe();
    std::this_thread::sleep_for(milliseconds(100));
  }
  analytics.Signal(SIGTERM);
  EXPECT_EQ(analytics.Wait(seconds(30)), 0) << analytics.Describe();

  EXPECT_EQ(
      SharedPostgres().Query(dsn_, "SELECT status FROM agent_runs WHERE run_id = 'run-alice'"),
      "running");
  // Mallory's run is placed at its Kafka timestamp (now), not in year 9999.
  EXPECT_EQ(
      SharedPostgres().QueryInt(
          dsn_,
          "SELECT count(*) FROM agent_runs WHERE run_id = 'run-mallory'"
          " AND last_event_at BETWEEN now() - interval '1 hour' AND now() + interval '1 minute'"),
      1);
  EXPECT_EQ(
      SharedPostgres().QueryInt(dsn_, "SELECT count(*) FROM agent_runs WHERE user_id = 'nul'"), 0);
  EXPECT_TRUE(analytics.StderrText().find("emitted_at more than 24 h away") != std::string::npos)
      << analytics.Describe();
  EXPECT_TRUE(analytics.StderrText().find("analytics skipped a message") != std::string::npos)
      << analytics.Describe();
  // Like the archive, the skipped message is in the DLQ topic, marked as analytics'.
  const auto dlq =
      testing::ConsumeAll(kafka_->BootstrapServers(), std::string(kTopic) + ".dlq", 1, seconds(30));
  ASSERT_EQ(dlq.size(), 1U);
  EXPECT_EQ(dlq[0].key, "nul");
  EXPECT_EQ(dlq[0].headers.at("agentwire-dlq-group"), "agentwire-analytics");
  EXPECT_NE(dlq[0].headers.at("agentwire-dlq-reason").find("NUL"), std::string::npos);
  EXPECT_EQ(dlq[0].headers.at("agentwire-dlq-source").rfind(std::string(kTopic) + "/", 0), 0U);
}

TEST_F(AnalyticsTest, ArchiveAndAnalyticsStartSideBySideWithTheirDefaultMetricsPorts) {
  // A new user starts both on one host without --metrics-port: each serves its own /metrics.
  auto without_port = [&](const std::string& command) {
    auto argv = testing::ConsumerCommand(command, kafka_->BootstrapServers(), dsn_, {});
    const auto flag = std::find(argv.begin(), argv.end(), "--metrics-port");
    argv.erase(flag, flag + 2);
    testing::Subprocess::Options options;
    options.unset_env = {"AGENTWIRE_METRICS_PORT"};
    return std::make_unique<Subprocess>(argv, options);
  };
  auto archive = without_port("archive");
  ASSERT_TRUE(archive->WaitForStderr("consumer started", seconds(60))) << archive->Describe();
  auto analytics = without_port("analytics");
  const auto deadline = std::chrono::steady_clock::now() + seconds(60);
  for (;;) {
    const auto archive_metrics = testing::HttpGet(9464, "/metrics");
    const auto analytics_metrics = testing::HttpGet(9465, "/metrics");
    if (archive_metrics.body.find("agentwire_archive_batches_total") != std::string::npos &&
        analytics_metrics.body.find("agentwire_analytics_batches_total") != std::string::npos) {
      break;
    }
    ASSERT_TRUE(archive->Running()) << archive->Describe();
    ASSERT_TRUE(analytics->Running()) << analytics->Describe();
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << archive->Describe() << analytics->Describe();
    std::this_thread::sleep_for(milliseconds(100));
  }
  for (auto* process : {archive.get(), analytics.get()}) {
    process->Signal(SIGTERM);
    EXPECT_EQ(process->Wait(seconds(30)), 0) << process->Describe();
  }
}

}  // namespace
}  // namespace agentwire
