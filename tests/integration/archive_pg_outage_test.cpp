// PostgreSQL stopped for a while in the middle of an archive run, then started again: the
// archive pauses, retries with backoff, resumes from the stored offsets, and in the end every
// event is archived exactly once. Embedded Kafka + a real PostgreSQL; the archive runs as a real
// process.

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <thread>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::SharedPostgres;
using testing::Subprocess;

constexpr const char* kTopic = "agent.lifecycle.v1";
constexpr int kPartitions = 24;
constexpr int kEvents = 60'000;

int64_t QueryOr(const std::string& dsn, const std::string& sql, int64_t fallback) {
  try {
    return SharedPostgres().QueryInt(dsn, sql);
  } catch (const std::exception&) {
    return fallback;  // server down or table not there yet
  }
}

TEST(ArchivePgOutageTest, PostgresStoppedMidRunLosesAndDuplicatesNothing) {
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({kTopic, kPartitions});
  kafka.CreateTopic({std::string(kTopic) + ".dlq", 2});
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("pg_outage");

  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", kafka.BootstrapServers()}};
  config.topic = kTopic;
  producers::EventPublisher publisher(config);
  auto publish = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      v1::AgentEvent event;
      event.set_event_id("ev-" + std::to_string(i));
      event.set_user_id("user-" + std::to_string(i % 313));
      event.set_run_id("run-" + std::to_string(i % 313));
      event.set_run_seq(static_cast<uint32_t>(i / 313 + 1));
      event.mutable_emitted_at()->set_seconds(1'790'000'000 + i);
      event.mutable_message_delta()->set_text("partial answer text " + std::to_string(i));
      ASSERT_EQ(publisher.Publish(event, {}, seconds(30)), producers::PublishStatus::kAccepted);
    }
    ASSERT_EQ(publisher.Flush(seconds(60)), 0u);
  };
  publish(0, kEvents / 2);

  Subprocess archive(
      testing::ConsumerCommand("archive", kafka.BootstrapServers(), dsn,
                               {"--topic", kTopic, "--batch-size", "2000", "--batch-ms", "50"}));
  const auto deadline = std::chrono::steady_clock::now() + seconds(60);
  while (QueryOr(dsn, "SELECT count(*) FROM agent_events", 0) < 10'000) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << archive.Describe();
    ASSERT_TRUE(archive.Running()) << archive.Describe();
    std::this_thread::sleep_for(milliseconds(20));
  }

  // Down in the middle of the work (fast shutdown cuts the archive's connection mid-batch);
  // meanwhile the other half of the events is published.
  pg.Stop();
  publish(kEvents / 2, kEvents);
  std::this_thread::sleep_for(seconds(4));
  ASSERT_TRUE(archive.Running()) << "the archive must wait for PostgreSQL, not exit\n"
                                 << archive.Describe();
  pg.Start();

  // A second, crash-like outage while it catches up.
  std::this_thread::sleep_for(milliseconds(1500));
  pg.Stop(/*immediate=*/true);
  std::this_thread::sleep_for(seconds(2));
  pg.Start();

  const auto done = std::chrono::steady_clock::now() + seconds(120);
  while (QueryOr(dsn,
                 "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets"
                 " WHERE group_id = 'agentwire-archive'",
                 0) < kEvents) {
    ASSERT_LT(std::chrono::steady_clock::now(), done) << archive.Describe();
    std::this_thread::sleep_for(milliseconds(200));
  }
  archive.Signal(SIGTERM);
  EXPECT_EQ(archive.Wait(seconds(30)), 0) << archive.Describe();
  EXPECT_NE(archive.StderrText().find("PostgreSQL unavailable"), std::string::npos)
      << "the outage was not noticed: the test did not test anything\n"
      << archive.Describe();

  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events"), kEvents);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(DISTINCT event_id) FROM agent_events"), kEvents);
  EXPECT_EQ(
      pg.QueryInt(dsn, "SELECT count(*) FROM generate_series(0, " + std::to_string(kEvents - 1) +
                           ") i WHERE NOT EXISTS (SELECT 1 FROM agent_events"
                           " WHERE event_id = 'ev-' || i)"),
      0)
      << "events lost";
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM dead_letters"), 0);
  // Stored offsets equal each partition's row count (offsets 0..n-1, none twice).
  EXPECT_EQ(pg.QueryInt(dsn,
                        "SELECT count(*) FROM consumer_offsets o WHERE group_id = "
                        "'agentwire-archive' AND next_offset <> (SELECT count(*) FROM "
                        "agent_events e WHERE e.partition = o.partition)"),
            0);
}

TEST(ArchivePgOutageTest, ASchemaProblemIsReportedAsSuchAndNothingIsSkipped) {
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({kTopic, 4});
  kafka.CreateTopic({std::string(kTopic) + ".dlq", 2});
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("pg_refused");

  // Migrated and running, then the table is taken away (an operator's mistake, a half-applied
  // change) before any event arrives.
  Subprocess archive(testing::ConsumerCommand("archive", kafka.BootstrapServers(), dsn,
                                              {"--batch-size", "100", "--batch-ms", "20"}));
  ASSERT_TRUE(archive.WaitForStderr("partitions assigned", seconds(60))) << archive.Describe();
  pg.Query(dsn, "ALTER TABLE agent_events RENAME TO agent_events_elsewhere");

  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", kafka.BootstrapServers()}};
  config.topic = kTopic;
  producers::EventPublisher publisher(config);
  constexpr int kCount = 500;
  for (int i = 0; i < kCount; ++i) {
    v1::AgentEvent event;
    event.set_event_id("ev-" + std::to_string(i));
    event.set_user_id("user-" + std::to_string(i % 13));
    event.set_run_id("run-" + std::to_string(i % 13));
    event.set_run_seq(static_cast<uint32_t>(i / 13 + 1));
    event.mutable_message_delta()->set_text("text");
    ASSERT_EQ(publisher.Publish(event, {}, seconds(30)), producers::PublishStatus::kAccepted);
  }
  ASSERT_EQ(publisher.Flush(seconds(60)), 0u);

  ASSERT_TRUE(archive.WaitForStderr("schema or permission problem", seconds(60)))
      << archive.Describe();
  EXPECT_NE(archive.StderrText().find("42P01"), std::string::npos) << archive.Describe();
  EXPECT_EQ(archive.StderrText().find("PostgreSQL unavailable"), std::string::npos)
      << archive.Describe();
  EXPECT_EQ(QueryOr(dsn, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets", -1), 0)
      << "offsets moved past events that were not archived";

  // Fixed: everything is archived, once.
  pg.Query(dsn, "ALTER TABLE agent_events_elsewhere RENAME TO agent_events");
  const auto done = std::chrono::steady_clock::now() + seconds(60);
  while (QueryOr(dsn, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets", 0) < kCount) {
    ASSERT_LT(std::chrono::steady_clock::now(), done) << archive.Describe();
    std::this_thread::sleep_for(milliseconds(100));
  }
  archive.Signal(SIGTERM);
  EXPECT_EQ(archive.Wait(seconds(30)), 0) << archive.Describe();
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(DISTINCT event_id) FROM agent_events"), kCount);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events"), kCount);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM dead_letters"), 0);
}

// A bad --writers is one line naming the flag and exit code 2, before PostgreSQL is touched (the
// DSN here points nowhere: a connection attempt would fail with another message).
TEST(ArchiveConfigTest, HostileWritersRefuseToStartBeforePostgres) {
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_ARCHIVE_WRITERS", "AGENTWIRE_PG_DSN", "AGENTWIRE_BROKERS"};
  for (const std::string writers : {"0", "65", "-1", "two", "1e400", "99999999999999999999"}) {
    const auto result =
        testing::Run({testing::AgentwireBinary(), "archive", "--brokers", "127.0.0.1:9", "--pg",
                      "host=/nonexistent/agentwire-socket connect_timeout=1", "--writers", writers},
                     options, seconds(20));
    EXPECT_EQ(result.exit_code, std::optional<int>(2)) << writers << "\n" << result.stderr_text;
    EXPECT_NE(result.stderr_text.find("--writers"), std::string::npos) << writers << "\n"
                                                                       << result.stderr_text;
  }
}

}  // namespace
}  // namespace agentwire
