// `agentwire replay --source postgres` (the archive, for ranges beyond Kafka's retention) must
// print what `--source kafka` prints for the same events: same lines, same order, same cursors
// (the archive does not keep the Kafka timestamp, so "timestamp" is null there and is the one
// field left out of the comparison). The archive table is created from infra/sql and filled
// here from a plain consumer of the topic, independently of `agentwire archive`.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

constexpr const char* kTopic = "replay.pg";
constexpr int kPartitions = 4;

std::string Rfc3339(Clock::time_point time) {
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(millis / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", text, millis % 1000);
}

std::string Hex(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string SqlText(const std::string& text) {
  std::string out = "'";
  for (const char c : text) {
    out.push_back(c);
    if (c == '\'') out.push_back('\'');
  }
  return out + "'";
}

class ReplayPostgresTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    kafka_ = std::make_unique<kafka::EmbeddedKafka>(1);
    kafka_->CreateTopic({kTopic, kPartitions});
    kafka_->CreateTopic({"replay.pg.copy", kPartitions});
    Publish();
    records_ = new std::vector<ConsumedRecord>(
        ConsumeAll(kafka_->BootstrapServers(), kTopic, published_, 60s));
    dsn_ = new std::string(SharedPostgres().CreateDatabase("replay"));
    LoadArchive();
  }

  static void TearDownTestSuite() {
    delete records_;
    delete dsn_;
    kafka_.reset();
  }

  // Two phases a second apart, 12 users, a few runs each; text with every escaping rule.
  static void Publish() {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", kafka_->BootstrapServers()}};
    config.topic = kTopic;
    producers::EventPublisher publisher(config);
    for (int phase = 0; phase < 2; ++phase) {
      if (phase > 0) std::this_thread::sleep_for(1100ms);
      phase_starts_.push_back(Clock::now());
      for (int step = 1; step <= 8; ++step) {
        for (int u = 0; u < 12; ++u) {
          for (int r = 0; r < 2; ++r) {
            v1::AgentEvent event;
            event.set_user_id(fmt::format("pg-user-{:02}", u));
            event.set_thread_id(fmt::format("pg-thread-{:02}", u));
            event.set_run_id(fmt::format("pg-run-{}-{:02}-{}", phase, u, r));
            event.set_run_seq(static_cast<uint32_t>(step));
            event.set_agent_name("researcher");
            if (r == 1) (*event.mutable_attributes())["tenant"] = "acme";
            if (step == 1) {
              event.mutable_agent_started()->set_input("question");
            } else if (step == 8) {
              if (u % 4 == 0) {
                event.mutable_agent_failed()->set_error_code("tool_error");
              } else {
                event.mutable_agent_completed()->set_result("done");
              }
            } else if (step % 2 == 0) {
              event.mutable_agent_thinking()->set_text(
                  "it's \"quoted\" <b> \\ \n \xe2\x80\xa8 \xf0\x9f\x98\x80 \xc3\xa9");
            } else {
              event.mutable_tool_completed()->set_tool_name("web_search");
              event.mutable_tool_completed()->set_duration_ms(42);
            }
            // Run pg-run-1-05-0 never ends: the gap report must say so from both sources.
            if (step == 8 && phase == 1 && u == 5 && r == 0) continue;
            // Millisecond emitted_at (FillDefaults would stamp whole seconds).
            const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                                 Clock::now().time_since_epoch())
                                 .count();
            event.mutable_emitted_at()->set_seconds(now / 1'000'000);
            event.mutable_emitted_at()->set_nanos(static_cast<int32_t>(now % 1'000'000) * 1000);
            schemas::FillDefaults(event);
            ASSERT_EQ(publisher.Publish(event, {}, 5s), producers::PublishStatus::kAccepted);
            ++published_;
          }
        }
      }
      ASSERT_EQ(publisher.Flush(30s), 0U);
    }
  }

  // The schema from infra/sql, then one row per message, as the archive would write it.
  static void LoadArchive() {
    auto& pg = SharedPostgres();
    std::vector<std::filesystem::path> migrations;
    for (const auto& entry : std::filesystem::directory_iterator(SourceDir() + "/infra/sql")) {
      if (entry.path().extension() == ".sql") migrations.push_back(entry.path());
    }
    std::sort(migrations.begin(), migrations.end());
    ASSERT_FALSE(migrations.empty());
    for (const auto& path : migrations) {
      std::ifstream in(path);
      std::stringstream sql;
      sql << in.rdbuf();
      pg.Query(*dsn_, sql.str());
    }
    std::string values;
    size_t rows = 0;
    auto flush = [&] {
      if (values.empty()) return;
      pg.Query(*dsn_,
               "INSERT INTO agent_events (topic, partition, \"offset\", event_id, user_id, "
               "thread_id, run_id, run_seq, type, emitted_at, agent_name, payload, raw) VALUES " +
                   values);
      values.clear();
    };
    for (const auto& record : *records_) {
      v1::AgentEvent event;
      ASSERT_TRUE(event.ParseFromString(record.value));
      const auto micros =
          event.emitted_at().seconds() * 1'000'000 + event.emitted_at().nanos() / 1000;
      if (!values.empty()) values += ",\n";
      values += fmt::format(
          "({}, {}, {}, {}, {}, {}, {}, {}, {}, to_timestamp({}::double precision / 1000000), {}, "
          "{}::jsonb, decode('{}', 'hex'))",
          SqlText(kTopic), record.partition, record.offset, SqlText(event.event_id()),
          SqlText(event.user_id()), SqlText(event.thread_id()), SqlText(event.run_id()),
          event.run_seq(), SqlText(std::string(schemas::EventType(event))), micros,
          SqlText(event.agent_name()), SqlText(schemas::ToJson(event)), Hex(record.value));
      if (++rows % 40 == 0) flush();  // psql gets the SQL as one argument (128 KiB at most)
    }
    flush();
    ASSERT_EQ(pg.QueryInt(*dsn_, "SELECT count(*) FROM agent_events"),
              static_cast<int64_t>(records_->size()));
  }

  static RunResult Replay(std::vector<std::string> args) {
    std::vector<std::string> argv = {AgentwireBinary(),          "replay",  "--brokers",
                                     kafka_->BootstrapServers(), "--topic", kTopic};
    argv.insert(argv.end(), args.begin(), args.end());
    Subprocess::Options options;
    options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC", "AGENTWIRE_PG_DSN",
                         "AGENTWIRE_TOPIC_EPOCH"};
    return agentwire::testing::Run(argv, options, 120s);
  }

  // Kafka's "timestamp" values become null, as the archive prints them.
  static std::string WithoutTimestamps(const std::string& jsonl) {
    static const std::regex timestamp(R"("timestamp":"[^"]*")");
    return std::regex_replace(jsonl, timestamp, "\"timestamp\":null");
  }

  static inline std::unique_ptr<kafka::EmbeddedKafka> kafka_;
  static inline std::vector<ConsumedRecord>* records_ = nullptr;
  static inline std::string* dsn_ = nullptr;
  static inline std::vector<Clock::time_point> phase_starts_;
  static inline size_t published_ = 0;
};

TEST_F(ReplayPostgresTest, SameOutputAsKafkaForEverySelector) {
  ASSERT_EQ(records_->size(), published_);
  const auto cursor_source = Replay({"--user", "pg-user-03"});
  ASSERT_EQ(cursor_source.exit_code, 0) << cursor_source.stderr_text;
  const std::string first_line =
      cursor_source.stdout_text.substr(0, cursor_source.stdout_text.find('\n'));
  const auto at = first_line.find("\"cursor\":\"") + 10;
  const std::string cursor = first_line.substr(at, first_line.find('"', at) - at);

  const std::vector<std::vector<std::string>> selections = {
      {},
      {"--user", "pg-user-03"},
      {"--run", "pg-run-1-07-1"},
      {"--thread", "pg-thread-09"},
      {"--type", "agent_failed,agent_started"},
      {"--since", Rfc3339(phase_starts_[1])},
      {"--until", Rfc3339(phase_starts_[1])},
      {"--from-cursor", cursor, "--user", "pg-user-03"},
      {"--from-cursor", cursor},
      {"--limit", "37"},
      {"--user", "pg-user-06", "--type", "tool_completed", "--since", "1h", "--limit", "3"},
  };
  for (const auto& selection : selections) {
    const std::string what = fmt::format("replay {}", fmt::join(selection, " "));
    const auto& kafka_args = selection;
    const auto from_kafka = Replay(kafka_args);
    auto pg_args = selection;
    pg_args.insert(pg_args.end(), {"--source", "postgres", "--pg", *dsn_});
    const auto from_pg = Replay(pg_args);
    ASSERT_EQ(from_kafka.exit_code, 0) << what << "\n" << from_kafka.stderr_text;
    ASSERT_EQ(from_pg.exit_code, 0) << what << "\n" << from_pg.stderr_text;
    EXPECT_FALSE(from_kafka.stdout_text.empty()) << what;
    EXPECT_EQ(from_pg.stdout_text, WithoutTimestamps(from_kafka.stdout_text)) << what;
  }
}

TEST_F(ReplayPostgresTest, TableAndGapReportMatchKafka) {
  const auto from_kafka = Replay({"--format", "table"});
  const auto from_pg = Replay({"--format", "table", "--source", "postgres", "--pg", *dsn_});
  ASSERT_EQ(from_kafka.exit_code, 0) << from_kafka.stderr_text;
  ASSERT_EQ(from_pg.exit_code, 0) << from_pg.stderr_text;
  EXPECT_EQ(from_pg.stdout_text, from_kafka.stdout_text);
  EXPECT_NE(from_pg.stdout_text.find("run pg-run-1-05-0 (user pg-user-05, thread pg-thread-05): "
                                     "no terminal event"),
            std::string::npos)
      << from_pg.stdout_text;
  EXPECT_NE(from_pg.stdout_text.find("gap report: 48 runs; 0 with run_seq holes, 1 without"),
            std::string::npos);
}

TEST_F(ReplayPostgresTest, RepublishFromTheArchive) {
  const auto result = Replay({"--source", "postgres", "--pg", *dsn_, "--user", "pg-user-02",
                              "--republish-to", "replay.pg.copy"});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  std::vector<const ConsumedRecord*> source;
  for (const auto& record : *records_) {
    if (record.key == "pg-user-02") source.push_back(&record);
  }
  std::sort(source.begin(), source.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  const auto copies = ConsumeAll(kafka_->BootstrapServers(), "replay.pg.copy", source.size(), 30s);
  ASSERT_EQ(copies.size(), source.size());
  // Nothing more than that: the target's partitions hold exactly these.
  int64_t stored = 0;
  {
    auto client = kafka::MakeClient(
        RD_KAFKA_PRODUCER,
        kafka::MakeConf({{"bootstrap.servers", kafka_->BootstrapServers()}, {"log_level", "3"}}));
    for (int p = 0; p < kPartitions; ++p) {
      int64_t low = 0;
      int64_t high = 0;
      rd_kafka_query_watermark_offsets(client.get(), "replay.pg.copy", p, &low, &high, 10'000);
      stored += high - low;
    }
  }
  EXPECT_EQ(stored, static_cast<int64_t>(source.size()));
  for (size_t i = 0; i < copies.size(); ++i) {
    EXPECT_EQ(copies[i].key, source[i]->key);
    EXPECT_EQ(copies[i].value, source[i]->value) << i;
    EXPECT_EQ(copies[i].headers, source[i]->headers) << i;
  }
}

TEST_F(ReplayPostgresTest, ReadingAnArchiveWrittenByTheArchiveNeedsNoKafka) {
  // The real archive fills a database; then replay reads it with no Kafka anywhere (no
  // --brokers; the default address has nothing listening): no librdkafka noise, real cursors,
  // the same lines as from Kafka.
  const std::string archived = SharedPostgres().CreateDatabase("replay_archived");
  {
    Subprocess archive(ConsumerCommand("archive", kafka_->BootstrapServers(), archived,
                                       {"--topic", kTopic, "--batch-ms", "20"}));
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      int64_t stored = 0;
      try {
        stored = SharedPostgres().QueryInt(
            archived, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets");
      } catch (const std::exception&) {
      }
      if (stored >= static_cast<int64_t>(records_->size())) break;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << archive.Describe();
      ASSERT_TRUE(archive.Running()) << archive.Describe();
      std::this_thread::sleep_for(100ms);
    }
    archive.Signal(SIGTERM);
    ASSERT_EQ(archive.Wait(30s), 0) << archive.Describe();
  }
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC", "AGENTWIRE_PG_DSN",
                       "AGENTWIRE_TOPIC_EPOCH"};
  const auto from_pg = agentwire::testing::Run(
      {AgentwireBinary(), "replay", "--topic", kTopic, "--source", "postgres", "--pg", archived},
      options, 60s);
  ASSERT_EQ(from_pg.exit_code, 0) << from_pg.stderr_text;
  EXPECT_EQ(from_pg.stderr_text.find("rdkafka"), std::string::npos) << from_pg.stderr_text;
  EXPECT_EQ(from_pg.stderr_text.find("9092"), std::string::npos) << from_pg.stderr_text;
  EXPECT_EQ(from_pg.stderr_text.find("partition count unknown"), std::string::npos)
      << from_pg.stderr_text;
  EXPECT_EQ(from_pg.stdout_text.find("\"cursor\":null"), std::string::npos);
  const auto from_kafka = Replay({});
  ASSERT_EQ(from_kafka.exit_code, 0) << from_kafka.stderr_text;
  EXPECT_EQ(from_pg.stdout_text, WithoutTimestamps(from_kafka.stdout_text));
}

TEST_F(ReplayPostgresTest, ArchiveErrors) {
  // A database without the archive's table: configuration error.
  const std::string empty = SharedPostgres().CreateDatabase("replay_empty");
  const auto no_table = Replay({"--source", "postgres", "--pg", empty});
  EXPECT_EQ(no_table.exit_code, 2) << no_table.stderr_text;
  EXPECT_NE(no_table.stderr_text.find("no agent_events table"), std::string::npos)
      << no_table.stderr_text;
  // Nothing listening: a failure (exit 1) that says what it tried.
  const auto down =
      Replay({"--source", "postgres", "--pg",
              "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2"});
  EXPECT_EQ(down.exit_code, 1) << down.stderr_text;
  EXPECT_NE(down.stderr_text.find("cannot connect to PostgreSQL"), std::string::npos)
      << down.stderr_text;
  // --follow is Kafka only.
  const auto follow = Replay({"--source", "postgres", "--pg", *dsn_, "--follow"});
  EXPECT_EQ(follow.exit_code, 2) << follow.stderr_text;
}

}  // namespace
}  // namespace agentwire::testing
