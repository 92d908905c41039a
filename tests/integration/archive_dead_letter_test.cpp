// Poison messages (random bytes, truncated protobuf, missing user_id, a key that is not the
// user_id, an empty value) produced with a raw producer between good events: each lands in
// dead_letters with its reason and raw bytes, and in <topic>.dlq with the reason header and the
// original key; every good event is still archived and the archive keeps running.

#include <agentwire/v1/events.pb.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <map>
#include <random>
#include <thread>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "support/kafka_test_utils.hpp"
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
constexpr const char* kDlqTopic = "agent.lifecycle.v1.dlq";
constexpr int kPartitions = 4;

struct Poison {
  std::string key;
  std::string value;
  std::string reason_contains;  // expected in the reason
};

v1::AgentEvent GoodEvent(int i) {
  v1::AgentEvent event;
  event.set_event_id("good-" + std::to_string(i));
  event.set_user_id("user-" + std::to_string(i % 7));
  event.set_run_id("run-" + std::to_string(i % 7));
  event.set_run_seq(static_cast<uint32_t>(i / 7 + 1));
  event.mutable_emitted_at()->set_seconds(1'790'000'000 + i);
  event.mutable_tool_executing()->set_tool_name("web_search");
  return event;
}

void Produce(rd_kafka_t* producer, const std::string& key, const std::string& value) {
  ASSERT_EQ(agentwire::testing::ProduceRaw(producer, kTopic, key, value),
            RD_KAFKA_RESP_ERR_NO_ERROR);
}

struct DlqMessage {
  std::string key;
  std::string value;
  std::string reason;
};

std::vector<DlqMessage> ReadDlq(const std::string& brokers, size_t expected) {
  auto consumer =
      kafka::MakeClient(RD_KAFKA_CONSUMER, kafka::MakeConf({{"bootstrap.servers", brokers},
                                                            {"group.id", "dlq-reader"},
                                                            {"enable.auto.commit", "false"},
                                                            {"fetch.wait.max.ms", "10"}}));
  kafka::TopicPartitionListPtr partitions(rd_kafka_topic_partition_list_new(kPartitions));
  for (int p = 0; p < kPartitions; ++p) {
    rd_kafka_topic_partition_list_add(partitions.get(), kDlqTopic, p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(consumer.get(), partitions.get());
  std::vector<DlqMessage> messages;
  const auto deadline = std::chrono::steady_clock::now() + seconds(30);
  while (messages.size() < expected && std::chrono::steady_clock::now() < deadline) {
    kafka::MessagePtr message(rd_kafka_consumer_poll(consumer.get(), 100));
    if (!message || message->err) continue;
    DlqMessage m;
    if (message->key != nullptr)
      m.key.assign(static_cast<const char*>(message->key), message->key_len);
    if (message->payload != nullptr) {
      m.value.assign(static_cast<const char*>(message->payload), message->len);
    }
    rd_kafka_headers_t* headers = nullptr;
    const void* reason = nullptr;
    size_t size = 0;
    if (rd_kafka_message_headers(message.get(), &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(headers, "agentwire-dlq-reason", &reason, &size) ==
            RD_KAFKA_RESP_ERR_NO_ERROR) {
      m.reason.assign(static_cast<const char*>(reason), size);
    }
    messages.push_back(std::move(m));
  }
  rd_kafka_consumer_close(consumer.get());
  return messages;
}

/// Runs `agentwire archive` until the stored offsets cover `total` messages, then stops it
/// with SIGTERM (exit 0 expected).
void ArchiveUntilStored(const std::string& brokers, const std::string& dsn, int64_t total,
                        const std::vector<std::string>& expected_in_log = {}) {
  auto& pg = SharedPostgres();
  Subprocess archive(testing::ConsumerCommand("archive", brokers, dsn,
                                              {"--batch-size", "300", "--batch-ms", "50"}));
  const auto deadline = std::chrono::steady_clock::now() + seconds(90);
  while (true) {
    int64_t stored = 0;
    try {
      stored = pg.QueryInt(dsn, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets");
    } catch (const std::exception&) {
    }
    if (stored >= total) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << archive.Describe();
    ASSERT_TRUE(archive.Running()) << archive.Describe();
    std::this_thread::sleep_for(milliseconds(100));
  }
  archive.Signal(SIGTERM);
  EXPECT_EQ(archive.Wait(seconds(30)), 0) << archive.Describe();
  for (const auto& needle : expected_in_log) {
    EXPECT_NE(archive.StderrText().find(needle), std::string::npos) << archive.Describe();
  }
}

TEST(ArchiveDeadLetterTest, PoisonMessagesGoToDeadLettersAndDlqTopicGoodEventsStillArchived) {
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({kTopic, kPartitions});
  kafka.CreateTopic({kDlqTopic, kPartitions});
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("dead_letters");

  std::mt19937 random(12345);
  std::vector<Poison> poison;
  {
    // Random bytes that protobuf refuses (checked: a few random strings happen to parse).
    for (int n = 0; n < 3;) {
      std::string bytes(40, '\0');
      for (auto& c : bytes) c = static_cast<char>(random() & 0xff);
      v1::AgentEvent probe;
      if (probe.ParseFromString(bytes)) continue;
      poison.push_back({"user-r" + std::to_string(n), bytes, "protobuf"});
      ++n;
    }
    // Truncated where the cut falls inside a field (a cut between fields would still parse).
    const std::string whole = GoodEvent(999).SerializeAsString();
    size_t cut = whole.size() / 2;
    for (v1::AgentEvent probe; probe.ParseFromString(whole.substr(0, cut));) --cut;
    poison.push_back({"user-6", whole.substr(0, cut), "protobuf"});
    auto no_user = GoodEvent(1000);
    no_user.clear_user_id();
    poison.push_back({"user-x", no_user.SerializeAsString(), "user_id"});
    auto no_body = GoodEvent(1001);
    no_body.clear_body();
    poison.push_back({"user-3", no_body.SerializeAsString(), "type"});
    poison.push_back({"someone-else", GoodEvent(1002).SerializeAsString(), "key"});
    poison.push_back({"user-1", "", "empty"});
    // A real NUL anywhere in the text (here a map value) cannot be stored in PostgreSQL.
    auto nul = GoodEvent(1003);
    (*nul.mutable_attributes())["tenant"] = std::string("ac\0me", 5);
    poison.push_back({nul.user_id(), nul.SerializeAsString(), "NUL"});
  }

  constexpr int kGood = 2000;
  {
    auto producer = kafka::MakeClient(
        RD_KAFKA_PRODUCER, kafka::MakeConf({{"bootstrap.servers", kafka.BootstrapServers()},
                                            {"enable.idempotence", "true"},
                                            {"partitioner", "murmur2_random"}}));
    size_t next_poison = 0;
    for (int i = 0; i < kGood; ++i) {
      auto event = GoodEvent(i);
      // Valid events that an earlier archive dead-lettered or misplaced: the six characters
      // \u0000 in a text (its JSON holds "\\u0000", not a NUL), and a worker clock in year 9999.
      if (i == 8) event.mutable_tool_executing()->set_input(R"({"path":"C:\u0000"})");
      if (i == 9) event.mutable_emitted_at()->set_seconds(253'402'300'799);
      Produce(producer.get(), event.user_id(), event.SerializeAsString());
      if (i % 200 == 100 && next_poison < poison.size()) {
        Produce(producer.get(), poison[next_poison].key, poison[next_poison].value);
        ++next_poison;
      }
    }
    while (next_poison < poison.size()) {
      Produce(producer.get(), poison[next_poison].key, poison[next_poison].value);
      ++next_poison;
    }
    ASSERT_EQ(rd_kafka_flush(producer.get(), 30'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  const int64_t total = kGood + static_cast<int64_t>(poison.size());

  ASSERT_NO_FATAL_FAILURE(ArchiveUntilStored(kafka.BootstrapServers(), dsn, total));

  // Every good event archived once.
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events"), kGood);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(DISTINCT event_id) FROM agent_events"), kGood);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events WHERE event_id NOT LIKE 'good-%'"),
            0);
  EXPECT_EQ(pg.Query(dsn,
                     "SELECT payload->'tool_executing'->>'input' FROM agent_events"
                     " WHERE event_id = 'good-8'"),
            R"({"path":"C:\u0000"})");
  // The year-9999 event is archived with its Kafka timestamp (the publish time) as emitted_at;
  // its bytes keep what the worker sent.
  EXPECT_EQ(pg.QueryInt(dsn,
                        "SELECT count(*) FROM agent_events WHERE event_id = 'good-9'"
                        " AND emitted_at BETWEEN now() - interval '1 hour' AND now()"
                        " AND payload->>'emitted_at' LIKE '9999-12-31%'"),
            1);

  // Every poison message in dead_letters with its reason, key and exact bytes.
  const auto rows = pg.QueryRows(
      dsn,
      "SELECT convert_from(COALESCE(key, ''), 'SQL_ASCII'), reason, encode(COALESCE(raw, ''), "
      "'hex') FROM dead_letters ORDER BY partition, \"offset\"");
  ASSERT_EQ(rows.size(), poison.size());
  auto hex = [](const std::string& bytes) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (const unsigned char c : bytes) {
      out += digits[c >> 4];
      out += digits[c & 0xf];
    }
    return out;
  };
  for (const auto& p : poison) {
    bool found = false;
    for (const auto& row : rows) {
      if (row[2] != hex(p.value) || row[0] != p.key) continue;
      found = true;
      EXPECT_NE(row[1].find(p.reason_contains), std::string::npos)
          << "reason '" << row[1] << "' for key " << p.key;
    }
    EXPECT_TRUE(found) << "poison with key " << p.key << " not in dead_letters";
  }

  // And in the DLQ topic with the reason header and the original key.
  const auto dlq = ReadDlq(kafka.BootstrapServers(), poison.size());
  ASSERT_EQ(dlq.size(), poison.size());
  for (const auto& p : poison) {
    bool found = false;
    for (const auto& m : dlq) {
      if (m.key != p.key || m.value != p.value) continue;
      found = true;
      EXPECT_NE(m.reason.find(p.reason_contains), std::string::npos) << m.reason;
    }
    EXPECT_TRUE(found) << "poison with key " << p.key << " not in " << kDlqTopic;
  }
}

TEST(ArchiveDeadLetterTest, AnEventPublishedTwiceIsArchivedOnce) {
  // An upstream retry outside Kafka's idempotence (a worker that re-sends after a crash) stores
  // the same event_id at two offsets. The copy lands in the same batch as the original or in a
  // later one; both paths must archive it once and keep going. A poison message among them: the
  // staging path decodes its batch a second time, and must still write one dead letter.
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({kTopic, kPartitions});
  kafka.CreateTopic({kDlqTopic, kPartitions});
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("duplicates");

  constexpr int kDistinct = 3000;
  int64_t total = 0;
  {
    auto producer = kafka::MakeClient(
        RD_KAFKA_PRODUCER, kafka::MakeConf({{"bootstrap.servers", kafka.BootstrapServers()},
                                            {"enable.idempotence", "true"},
                                            {"partitioner", "murmur2_random"}}));
    for (int i = 0; i < kDistinct; ++i) {
      const auto event = GoodEvent(i);
      Produce(producer.get(), event.user_id(), event.SerializeAsString());
      ++total;
      // Right away (same batch) for some, much later (a later batch) for others.
      if (i % 97 == 0) {
        Produce(producer.get(), event.user_id(), event.SerializeAsString());
        ++total;
      }
      if (i % 101 == 0 && i >= 1500) {
        const auto old = GoodEvent(i - 1500);
        Produce(producer.get(), old.user_id(), old.SerializeAsString());
        ++total;
      }
      if (i == 1) {
        Produce(producer.get(), event.user_id(), "not a protobuf message");
        ++total;
      }
    }
    ASSERT_EQ(rd_kafka_flush(producer.get(), 30'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  ASSERT_GT(total, kDistinct + 40);

  ASSERT_NO_FATAL_FAILURE(ArchiveUntilStored(kafka.BootstrapServers(), dsn, total));
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events"), kDistinct);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(DISTINCT event_id) FROM agent_events"), kDistinct);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM dead_letters"), 1);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets"), total);
}

TEST(ArchiveDeadLetterTest, NoCommitUntilTheDlqTopicAcknowledges) {
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({kTopic, kPartitions});
  kafka.CreateTopic({kDlqTopic, kPartitions});
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("dlq_refuses");

  constexpr int kGood = 200;
  const std::string poison_value = GoodEvent(5000).SerializeAsString();
  {
    auto producer = kafka::MakeClient(
        RD_KAFKA_PRODUCER, kafka::MakeConf({{"bootstrap.servers", kafka.BootstrapServers()},
                                            {"enable.idempotence", "true"},
                                            {"partitioner", "murmur2_random"}}));
    for (int i = 0; i < kGood; ++i) {
      const auto event = GoodEvent(i);
      Produce(producer.get(), event.user_id(), event.SerializeAsString());
      if (i == kGood / 2) Produce(producer.get(), "not-the-user", poison_value);
    }
    ASSERT_EQ(rd_kafka_flush(producer.get(), 30'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  // From now on the only producer is the archive's DLQ producer: its next produce requests are
  // refused (the DLQ topic does not accept writes, then it does again).
  constexpr int16_t kProduceApiKey = 0;
  kafka.PushRequestErrors(kProduceApiKey, std::vector<rd_kafka_resp_err_t>(
                                              3, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED));

  ASSERT_NO_FATAL_FAILURE(ArchiveUntilStored(
      kafka.BootstrapServers(), dsn, kGood + 1,
      {"batch not committed", "did not acknowledge the batch's 1 dead letters"}));
  // Committed only once the DLQ held the dead letter: it is there (at least once), and in
  // dead_letters once.
  const auto dlq = ReadDlq(kafka.BootstrapServers(), 1);
  ASSERT_GE(dlq.size(), 1U);
  EXPECT_EQ(dlq[0].value, poison_value);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM dead_letters"), 1);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events"), kGood);
}

TEST(ArchiveDeadLetterTest, ARetentionGapIsCountedAndLoggedNotSkippedSilently) {
  // The archive is down while retention deletes events it never read: on restart it goes on
  // from the oldest retained message, and says how many it could not archive.
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({kTopic, 1});
  kafka.CreateTopic({kDlqTopic, 1});
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("retention_gap");
  auto producer = kafka::MakeClient(
      RD_KAFKA_PRODUCER, kafka::MakeConf({{"bootstrap.servers", kafka.BootstrapServers()},
                                          {"enable.idempotence", "true"}}));
  for (int i = 0; i < 10; ++i) {
    const auto event = GoodEvent(i);
    Produce(producer.get(), event.user_id(), event.SerializeAsString());
  }
  ASSERT_EQ(rd_kafka_flush(producer.get(), 30'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_NO_FATAL_FAILURE(ArchiveUntilStored(kafka.BootstrapServers(), dsn, 10));

  // ~8 MiB more: the embedded Kafka keeps about 5 MiB per partition.
  constexpr int kMore = 12'000;
  for (int i = 10; i < 10 + kMore; ++i) {
    auto event = GoodEvent(i);
    event.mutable_tool_executing()->set_input(std::string(700, 'x'));
    Produce(producer.get(), event.user_id(), event.SerializeAsString());
  }
  ASSERT_EQ(rd_kafka_flush(producer.get(), 60'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  const int64_t low = testing::LowWatermarks(kafka.BootstrapServers(), kTopic, seconds(10)).at(0);
  ASSERT_GT(low, 10) << "retention deleted nothing the archive had not read; publish more";

  ASSERT_NO_FATAL_FAILURE(
      ArchiveUntilStored(kafka.BootstrapServers(), dsn, 10 + kMore,
                         {"deleted by Kafka retention before this group read them",
                          "offset=10 count=" + std::to_string(low - 10)}));
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events"), 10 + (10 + kMore - low));
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT min(\"offset\") FROM agent_events WHERE \"offset\" >= 10"),
            low);
}

}  // namespace
}  // namespace agentwire
