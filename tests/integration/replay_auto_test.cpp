// `agentwire replay --source auto` reads history as the user sees it, across the seam between
// the archive and Kafka: the archive's rows below Kafka's log start, then Kafka. Real processes
// throughout: an `agentwire broker` whose ~5 MiB per-partition cap plays retention, two
// `agentwire archive` processes (one keeps up, one is stopped before retention deletes what it
// has not stored) and the replay CLI itself.
//
// One partition's history, in publish order: the watched user's "early" run (both archives
// store it), a "middle" run (only the archive that keeps up stores it), 12,000 filler events of
// another user of that partition (they push early and middle out of Kafka), and a "late" run
// (still in Kafka). Another user in the other partition, which retention never touches.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/hashing.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTopic = "replay.auto";
constexpr int kPartitions = 2;
constexpr const char* kWatched = "auto-user";
constexpr const char* kBehindGroup = "archive-behind";
constexpr int kFillerEvents = 12'000;

const std::vector<std::string> kUnsetEnv = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC",
                                            "AGENTWIRE_PG_DSN", "AGENTWIRE_TOPIC_EPOCH",
                                            "AGENTWIRE_ARCHIVE_GROUP"};

// The user of `partition` whose name starts with `prefix` (murmur2, as the producers place it).
std::string UserIn(int partition, const std::string& prefix) {
  for (int i = 0;; ++i) {
    std::string candidate = prefix + std::to_string(i);
    if (PartitionForKey(candidate, kPartitions) == partition) return candidate;
  }
}

struct Line {
  std::string text;
  int32_t partition = -1;
  int64_t offset = -1;
  std::string event_id;
  std::string cursor;
};

// The text after `"name":` up to the next `,` or `}` (a number), or inside its quotes (a
// string); empty when the line has no such field. The first occurrence: the envelope's fields
// come before the event's.
std::string Field(const std::string& line, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  size_t at = line.find(key);
  if (at == std::string::npos) return {};
  at += key.size();
  if (line[at] == '"') return line.substr(at + 1, line.find('"', at + 1) - at - 1);
  return line.substr(at, line.find_first_of(",}", at) - at);
}

std::vector<Line> ParseLines(const std::string& jsonl) {
  std::vector<Line> lines;
  size_t begin = 0;
  while (begin < jsonl.size()) {
    const size_t end = jsonl.find('\n', begin);
    Line line;
    line.text = jsonl.substr(begin, end - begin);
    line.partition = std::stoi(Field(line.text, "partition"));
    line.offset = std::stoll(Field(line.text, "offset"));
    line.cursor = Field(line.text, "cursor");
    line.event_id = Field(line.text, "event_id");
    lines.push_back(std::move(line));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return lines;
}

std::vector<std::string> EventIds(const std::vector<Line>& lines) {
  std::vector<std::string> ids;
  ids.reserve(lines.size());
  for (const auto& line : lines) ids.push_back(line.event_id);
  return ids;
}

// Kafka's "timestamp" values become null, as the archive prints them.
std::string WithoutTimestamps(const std::string& jsonl) {
  static const std::string kKey = "\"timestamp\":\"";
  std::string out;
  out.reserve(jsonl.size());
  size_t from = 0;
  for (size_t at = jsonl.find(kKey); at != std::string::npos; at = jsonl.find(kKey, from)) {
    out.append(jsonl, from, at - from);
    out += "\"timestamp\":null";
    from = jsonl.find('"', at + kKey.size()) + 1;
  }
  out.append(jsonl, from);
  return out;
}

class ReplayAutoTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = new std::string(MakeTempDirectory("agentwire-replay-auto"));
    const std::string bootstrap_file = *directory_ + "/bootstrap";
    broker_ = new Subprocess({AgentwireBinary(), "broker", "--brokers", "1", "--topic",
                              fmt::format("{}:{}", kTopic, kPartitions), "--topic",
                              fmt::format("{}.dlq:{}", kTopic, kPartitions), "--bootstrap-file",
                              bootstrap_file});
    ASSERT_TRUE(WaitForFile(bootstrap_file, 30s)) << broker_->Describe();
    bootstrap_ = new std::string(ReadFirstLine(bootstrap_file));
    full_dsn_ = new std::string(SharedPostgres().CreateDatabase("replay_auto_full"));
    behind_dsn_ = new std::string(SharedPostgres().CreateDatabase("replay_auto_behind"));
    watched_partition_ = PartitionForKey(kWatched, kPartitions);
    other_user_ = new std::string(UserIn(1 - watched_partition_, "other-"));
    published_ = new std::vector<Published>();
    BuildHistory();
  }

  static void TearDownTestSuite() {
    publisher_.reset();  // while the broker is still up
    delete published_;
    delete other_user_;
    delete behind_dsn_;
    delete full_dsn_;
    delete bootstrap_;
    delete broker_;
    std::filesystem::remove_all(*directory_);
    delete directory_;
  }

  struct Published {
    std::string user;
    std::string event_id;
  };

  static producers::EventPublisher& Publisher() {
    if (!publisher_) {
      producers::PublisherConfig config;
      config.client_properties = {{"bootstrap.servers", *bootstrap_}, {"linger.ms", "1"}};
      config.topic = kTopic;
      publisher_ = std::make_unique<producers::EventPublisher>(config);
    }
    return *publisher_;
  }

  // A run of `steps` events ending with agent_completed, so the gap report has nothing to say
  // about it unless events are missing.
  static void PublishRun(const std::string& user, const std::string& run, int steps) {
    for (int seq = 1; seq <= steps; ++seq) {
      v1::AgentEvent event;
      event.set_event_id(fmt::format("{}-{}", run, seq));
      event.set_user_id(user);
      event.set_thread_id("t-" + user);
      event.set_run_id(run);
      event.set_run_seq(static_cast<uint32_t>(seq));
      if (seq == 1) {
        event.mutable_agent_started()->set_input("question");
      } else if (seq == steps) {
        event.mutable_agent_completed()->set_result("done");
      } else {
        event.mutable_agent_thinking()->set_text("step " + std::to_string(seq));
      }
      ASSERT_EQ(Publisher().Publish(event, {}, 10s), producers::PublishStatus::kAccepted);
      published_->push_back({user, event.event_id()});
    }
    ASSERT_EQ(Publisher().Flush(30s), 0U);
  }

  static Subprocess::Options Env() {
    Subprocess::Options options;
    options.unset_env = kUnsetEnv;
    return options;
  }

  static std::vector<std::string> ArchiveCommand(const std::string& dsn, const std::string& group) {
    return ConsumerCommand("archive", *bootstrap_, dsn,
                           {"--topic", kTopic, "--group", group, "--batch-ms", "20"});
  }

  // Waits until the archive's committed positions cover `messages` messages of the topic.
  static void WaitUntilArchived(Subprocess& archive, const std::string& dsn,
                                const std::string& group, int64_t messages) {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      int64_t stored = 0;
      try {
        stored = SharedPostgres().QueryInt(
            dsn, fmt::format("SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE "
                             "group_id = '{}' AND topic = '{}'",
                             group, kTopic));
      } catch (const std::exception&) {
        // The archive has not created its tables yet.
      }
      if (stored >= messages) return;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << archive.Describe();
      ASSERT_TRUE(archive.Running()) << archive.Describe();
      std::this_thread::sleep_for(100ms);
    }
  }

  static void Stop(Subprocess& archive) {
    archive.Signal(SIGTERM);
    ASSERT_EQ(archive.Wait(30s), 0) << archive.Describe();
  }

  static void BuildHistory() {
    PublishRun(kWatched, "early", 6);
    PublishRun(*other_user_, "other-early", 4);
    early_count_ = static_cast<int64_t>(published_->size());

    Subprocess full(ArchiveCommand(*full_dsn_, "agentwire-archive"), Env());
    {
      Subprocess behind(ArchiveCommand(*behind_dsn_, kBehindGroup), Env());
      WaitUntilArchived(behind, *behind_dsn_, kBehindGroup, early_count_);
      Stop(behind);
    }

    PublishRun(kWatched, "middle", 5);
    PublishRun(*other_user_, "other-middle", 3);
    int64_t published = static_cast<int64_t>(published_->size());
    WaitUntilArchived(full, *full_dsn_, "agentwire-archive", published);
    // In chunks the archive stores before the next one: it must never fall behind retention.
    const std::string filler = UserIn(watched_partition_, "filler-");
    constexpr int kChunk = 2'000;
    for (int i = 0; i < kFillerEvents; ++i) {
      v1::AgentEvent event;
      event.set_event_id(fmt::format("filler-{}", i));
      event.set_user_id(filler);
      event.set_run_id("filler-run");
      event.set_run_seq(static_cast<uint32_t>(i + 1));
      event.mutable_agent_thinking()->set_text(IncompressibleText(700));
      ASSERT_EQ(Publisher().Publish(event, {}, 30s), producers::PublishStatus::kAccepted);
      if ((i + 1) % kChunk == 0) {
        ASSERT_EQ(Publisher().Flush(60s), 0U);
        published += kChunk;
        WaitUntilArchived(full, *full_dsn_, "agentwire-archive", published);
      }
    }
    PublishRun(kWatched, "late", 5);
    PublishRun(*other_user_, "other-late", 3);

    total_messages_ = static_cast<int64_t>(published_->size()) + kFillerEvents;
    WaitUntilArchived(full, *full_dsn_, "agentwire-archive", total_messages_);
    Stop(full);
    watermarks_ = Watermarks(*bootstrap_, kTopic, 10s);
  }

  static RunResult Replay(std::vector<std::string> args) {
    std::vector<std::string> argv = {AgentwireBinary(), "replay", "--brokers",  *bootstrap_,
                                     "--topic",         kTopic,   "--progress", "off"};
    argv.insert(argv.end(), args.begin(), args.end());
    return agentwire::testing::Run(argv, Env(), 120s);
  }

  // The watched user's event ids in publish order, from the runs named.
  static std::vector<std::string> Watched(const std::vector<std::string>& runs) {
    std::vector<std::string> ids;
    for (const auto& run : runs) {
      for (const auto& event : *published_) {
        if (event.user == kWatched && event.event_id.rfind(run + "-", 0) == 0) {
          ids.push_back(event.event_id);
        }
      }
    }
    return ids;
  }

  static int64_t Low() { return watermarks_.at(watched_partition_).low; }

  static inline std::unique_ptr<producers::EventPublisher> publisher_;
  static inline std::string* directory_ = nullptr;
  static inline Subprocess* broker_ = nullptr;
  static inline std::string* bootstrap_ = nullptr;
  static inline std::string* full_dsn_ = nullptr;
  static inline std::string* behind_dsn_ = nullptr;
  static inline std::string* other_user_ = nullptr;
  static inline int watched_partition_ = 0;
  static inline std::vector<Published>* published_ = nullptr;
  static inline int64_t early_count_ = 0;
  static inline int64_t total_messages_ = 0;
  static inline std::map<int32_t, PartitionWatermarks> watermarks_;
};

TEST_F(ReplayAutoTest, EveryEventOnceInOrderAcrossTheSeam) {
  // The history is what the test needs: the middle run (published right before the filler) is
  // gone from Kafka, and the archive that kept up holds every message.
  const auto middle_end = SharedPostgres().QueryInt(
      *full_dsn_, "SELECT max(\"offset\") FROM agent_events WHERE run_id = 'middle'");
  ASSERT_GT(Low(), middle_end) << "the filler did not push the middle run out of Kafka";
  ASSERT_EQ(watermarks_.at(1 - watched_partition_).low, 0);
  ASSERT_EQ(SharedPostgres().QueryInt(*full_dsn_, "SELECT count(*) FROM agent_events"),
            total_messages_);

  const auto from_auto = Replay({"--source", "auto", "--pg", *full_dsn_, "--user", kWatched});
  ASSERT_EQ(from_auto.exit_code, 0) << from_auto.stderr_text;
  const auto lines = ParseLines(from_auto.stdout_text);
  EXPECT_EQ(EventIds(lines), Watched({"early", "middle", "late"}));
  EXPECT_EQ(from_auto.stderr_text.find("neither"), std::string::npos) << from_auto.stderr_text;

  // The lines themselves are the archive's below Kafka's log start and Kafka's from it on.
  const auto from_pg = Replay({"--source", "postgres", "--pg", *full_dsn_, "--user", kWatched});
  const auto from_kafka = Replay({"--source", "kafka", "--user", kWatched});
  ASSERT_EQ(from_pg.exit_code, 0) << from_pg.stderr_text;
  ASSERT_EQ(from_kafka.exit_code, 0) << from_kafka.stderr_text;
  EXPECT_EQ(EventIds(ParseLines(from_kafka.stdout_text)), Watched({"late"}))
      << "Kafka alone lacks what retention deleted";
  std::string expected;
  for (const auto& line : ParseLines(from_pg.stdout_text)) {
    if (line.offset < Low()) expected += line.text + '\n';
  }
  expected += from_kafka.stdout_text;
  EXPECT_EQ(from_auto.stdout_text, expected);

  // A cursor from the archive's part resumes right after its event, across the seam.
  ASSERT_GE(lines.size(), 3U);
  const auto resumed = Replay({"--source", "auto", "--pg", *full_dsn_, "--user", kWatched,
                               "--from-cursor", lines[1].cursor});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.stderr_text;
  auto after_second = Watched({"early", "middle", "late"});
  after_second.erase(after_second.begin(), after_second.begin() + 2);
  EXPECT_EQ(EventIds(ParseLines(resumed.stdout_text)), after_second);
  EXPECT_EQ(resumed.stderr_text.find("warning"), std::string::npos) << resumed.stderr_text;
}

TEST_F(ReplayAutoTest, WholeTopicAgreesWithTheArchive) {
  // Every message is in the archive that kept up: auto must print the archive's lines, in the
  // same cross-partition order, with Kafka's timestamps where Kafka served them.
  const auto from_auto = Replay({"--source", "auto", "--pg", *full_dsn_, "--gaps"});
  const auto from_pg = Replay({"--source", "postgres", "--pg", *full_dsn_, "--gaps"});
  ASSERT_EQ(from_auto.exit_code, 0) << from_auto.stderr_text;
  ASSERT_EQ(from_pg.exit_code, 0) << from_pg.stderr_text;
  EXPECT_EQ(ParseLines(from_auto.stdout_text).size(), static_cast<size_t>(total_messages_));
  EXPECT_EQ(WithoutTimestamps(from_auto.stdout_text), from_pg.stdout_text);
  EXPECT_EQ(from_auto.stderr_text.find("offset holes"), std::string::npos) << from_auto.stderr_text;
}

TEST_F(ReplayAutoTest, ArchiveBehindRetentionIsAHoleWithItsExactRange) {
  const int64_t archived_to = SharedPostgres().QueryInt(
      *behind_dsn_, fmt::format("SELECT next_offset FROM consumer_offsets WHERE group_id = '{}' "
                                "AND partition = {}",
                                kBehindGroup, watched_partition_));
  ASSERT_EQ(archived_to, static_cast<int64_t>(Watched({"early"}).size()))
      << "the stopped archive stored the partition's early run, nothing after it";
  const auto result = Replay({"--source", "auto", "--pg", *behind_dsn_, "--archive-group",
                              kBehindGroup, "--user", kWatched, "--gaps"});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find(fmt::format(
                "{} partition {}: offsets [{}, {}) ({} messages) are in neither the archive nor "
                "Kafka",
                kTopic, watched_partition_, archived_to, Low(), Low() - archived_to)),
            std::string::npos)
      << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("offset holes: 1 (offsets in neither the archive nor Kafka"),
            std::string::npos)
      << result.stderr_text;
  EXPECT_NE(result.stderr_text.find(fmt::format("  partition {}: offsets [{}, {}) ({} messages)",
                                                watched_partition_, archived_to, Low(),
                                                Low() - archived_to)),
            std::string::npos)
      << result.stderr_text;
  EXPECT_NE(result.stderr_text.find(
                fmt::format("; {} offsets in neither the archive nor Kafka", Low() - archived_to)),
            std::string::npos)
      << result.stderr_text;
  // The hole took the middle run and nothing else: the early run from the archive, the late
  // one from Kafka.
  EXPECT_EQ(EventIds(ParseLines(result.stdout_text)), Watched({"early", "late"}));

  // Nothing outside the hole is lost, in either partition: every offset below the archive's
  // position and from Kafka's log start on, once, in offset order.
  const auto whole =
      Replay({"--source", "auto", "--pg", *behind_dsn_, "--archive-group", kBehindGroup});
  ASSERT_EQ(whole.exit_code, 0) << whole.stderr_text;
  std::map<int32_t, std::vector<int64_t>> offsets;
  for (const auto& line : ParseLines(whole.stdout_text)) {
    offsets[line.partition].push_back(line.offset);
  }
  for (int partition = 0; partition < kPartitions; ++partition) {
    const auto& marks = watermarks_.at(partition);
    std::vector<int64_t> expected;
    for (int64_t offset = 0; offset < marks.high; ++offset) {
      if (partition != watched_partition_ || offset < archived_to || offset >= Low()) {
        expected.push_back(offset);
      }
    }
    EXPECT_EQ(offsets[partition], expected) << "partition " << partition;
  }

  // Another group's positions say nothing about this archive: everything deleted is missing.
  const auto wrong_group = Replay({"--source", "auto", "--pg", *behind_dsn_, "--user", kWatched});
  ASSERT_EQ(wrong_group.exit_code, 0) << wrong_group.stderr_text;
  EXPECT_NE(wrong_group.stderr_text.find("no committed position"), std::string::npos)
      << wrong_group.stderr_text;
  EXPECT_NE(wrong_group.stderr_text.find(fmt::format("offsets [0, {})", Low())), std::string::npos)
      << wrong_group.stderr_text;
  EXPECT_EQ(EventIds(ParseLines(wrong_group.stdout_text)), Watched({"late"}));
}

// Last (it publishes), when the tests share one process.
TEST_F(ReplayAutoTest, FollowTailsKafkaAfterTheArchive) {
  std::vector<std::string> argv = {
      AgentwireBinary(), "replay",     "--brokers", *bootstrap_, "--topic", kTopic,
      "--source",        "auto",       "--pg",      *full_dsn_,  "--user",  kWatched,
      "--follow",        "--progress", "off"};
  Subprocess replay(argv, Env());
  ASSERT_TRUE(replay.WaitForStdout("\"event_id\":\"late-5\"", 30s)) << replay.Describe();
  PublishRun(kWatched, "live", 2);
  ASSERT_TRUE(replay.WaitForStdout("\"event_id\":\"live-2\"", 30s)) << replay.Describe();
  replay.Signal(SIGINT);
  ASSERT_EQ(replay.Wait(15s), 0) << replay.Describe();
  EXPECT_EQ(EventIds(ParseLines(replay.StdoutText())),
            Watched({"early", "middle", "late", "live"}));
}

// Refused before anything is read, so no broker or database is needed.
TEST(ReplayAuto, NeedsTheArchivesDatabase) {
  Subprocess::Options options;
  options.unset_env = kUnsetEnv;
  const auto result =
      agentwire::testing::Run({AgentwireBinary(), "replay", "--brokers", "127.0.0.1:1", "--topic",
                               kTopic, "--source", "auto", "--user", kWatched},
                              options, 30s);
  EXPECT_EQ(result.exit_code, 2) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("--source auto"), std::string::npos) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("--pg"), std::string::npos) << result.stderr_text;
  EXPECT_TRUE(result.stdout_text.empty());
}

}  // namespace
}  // namespace agentwire::testing
