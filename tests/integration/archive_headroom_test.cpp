// The archive's retention headroom: how many of the records it has written Kafka still holds.
// While the archive keeps up, every owned partition has headroom and the ratio is 1. Then the
// archive is killed, retention deletes records it never wrote, and it is started again while
// PostgreSQL refuses its writes (a trigger): the headroom is negative by exactly the offsets that
// are gone, the ratio 0, and a warning names the partition. Once PostgreSQL takes writes again,
// the archive goes on from the log start and counts the lost offsets exactly once.
// Real processes: `agentwire broker`, `agentwire archive`, and a real PostgreSQL.

#include <agentwire/v1/events.pb.h>
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "agentwire/core/hashing.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"
#include "support/ws_client.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kTopic = "headroom.v1";
constexpr int kPartitions = 2;

/// An event whose text lz4 cannot shrink: the embedded Kafka's ~5 MiB per-partition cap counts
/// compressed bytes.
v1::AgentEvent Event(const std::string& user, const std::string& id, uint32_t seq,
                     size_t text_bytes) {
  v1::AgentEvent event;
  event.set_event_id(id);
  event.set_user_id(user);
  event.set_thread_id("t-1");
  event.set_run_id("r-" + user);
  event.set_run_seq(seq);
  event.mutable_emitted_at()->set_seconds(std::chrono::duration_cast<std::chrono::seconds>(
                                              std::chrono::system_clock::now().time_since_epoch())
                                              .count());
  event.mutable_agent_thinking()->set_text(IncompressibleText(text_bytes));
  return event;
}

/// A user whose events land in `partition` (murmur2, as EventPublisher partitions).
std::string UserIn(int32_t partition, const std::string& prefix) {
  for (int i = 0;; ++i) {
    std::string user = prefix + std::to_string(i);
    if (PartitionForKey(user, kPartitions) == partition) return user;
  }
}

uint16_t FreePort() {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor acceptor(
      ioc, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

/// The value of `series` (name and labels, as rendered) in a /metrics text; nullopt if absent.
std::optional<double> Sample(const std::string& metrics, const std::string& series) {
  const std::string prefix = series + " ";
  for (size_t at = 0; at < metrics.size();) {
    const size_t end = metrics.find('\n', at);
    const std::string line = metrics.substr(at, end == std::string::npos ? end : end - at);
    if (line.rfind(prefix, 0) == 0) return std::stod(line.substr(prefix.size()));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return std::nullopt;
}

std::string Records(int32_t partition) {
  return "agentwire_archive_retention_headroom_records{partition=\"" + std::to_string(partition) +
         "\"}";
}
constexpr const char* kRatio = "agentwire_archive_retention_headroom_ratio";
constexpr const char* kHoles = "agentwire_archive_retention_holes_total";
constexpr const char* kGaps = "agentwire_archive_retention_gap_messages_total";

class ArchiveHeadroomTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = MakeTempDirectory("agentwire-headroom");
    const std::string bootstrap_file = directory_ + "/bootstrap";
    broker_ = std::make_unique<Subprocess>(std::vector<std::string>{
        AgentwireBinary(), "broker", "--brokers", "1", "--topic",
        std::string(kTopic) + ":" + std::to_string(kPartitions), "--topic",
        std::string(kTopic) + ".dlq:1", "--bootstrap-file", bootstrap_file});
    ASSERT_TRUE(WaitForFile(bootstrap_file, 30s)) << broker_->Describe();
    bootstrap_ = ReadFirstLine(bootstrap_file);
    dsn_ = SharedPostgres().CreateDatabase("archive_headroom");
  }

  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::unique_ptr<Subprocess> StartArchive(uint16_t metrics_port) {
    auto argv = ConsumerCommand("archive", bootstrap_, dsn_,
                                {"--topic", kTopic, "--writers", "2", "--batch-ms", "20"});
    *(std::find(argv.begin(), argv.end(), "--metrics-port") + 1) = std::to_string(metrics_port);
    return std::make_unique<Subprocess>(argv);
  }

  /// consumer_offsets.next_offset of `partition` (0 before the first commit).
  int64_t Stored(int32_t partition) const {
    try {
      return SharedPostgres().QueryInt(
          dsn_, "SELECT COALESCE(max(next_offset), 0) FROM consumer_offsets WHERE partition = " +
                    std::to_string(partition));
    } catch (const std::exception&) {
      return 0;  // not migrated yet
    }
  }

  /// Polls /metrics until `done` holds for it (true) or 30 s passed (false); `last` gets the
  /// last text read, for assertion messages.
  static bool WaitForMetrics(Subprocess& archive, uint16_t port,
                             const std::function<bool(const std::string&)>& done,
                             std::string& last) {
    const auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline && archive.Running()) {
      last = HttpGet(port, "/metrics").body;
      if (done(last)) return true;
      std::this_thread::sleep_for(200ms);
    }
    return false;
  }

  std::string directory_;
  std::unique_ptr<Subprocess> broker_;
  std::string bootstrap_;
  std::string dsn_;
};

TEST_F(ArchiveHeadroomTest, NegativeWhenRetentionOvertakesTheArchiveAndHolesCountedExactly) {
  const int32_t watched = 0;
  const int32_t other = 1;
  const std::string user = UserIn(watched, "user-");
  const std::string filler = UserIn(watched, "filler-");
  const std::string other_user = UserIn(other, "other-");

  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", bootstrap_}, {"linger.ms", "1"}};
  config.topic = kTopic;
  producers::EventPublisher publisher(config);
  auto publish = [&](const std::string& who, int from, int to, size_t text_bytes) {
    for (int i = from; i < to; ++i) {
      ASSERT_EQ(publisher.Publish(Event(who, who + "-" + std::to_string(i),
                                        static_cast<uint32_t>(i + 1), text_bytes),
                                  {}, 30s),
                producers::PublishStatus::kAccepted);
    }
    ASSERT_EQ(publisher.Flush(60s), 0U);
  };
  constexpr int kWatched = 100;
  constexpr int kOther = 50;
  ASSERT_NO_FATAL_FAILURE(publish(user, 0, kWatched, 64));
  ASSERT_NO_FATAL_FAILURE(publish(other_user, 0, kOther, 64));

  // Keeping up: everything archived, every record still in Kafka is headroom, the ratio is 1.
  const uint16_t port = FreePort();
  auto archive = StartArchive(port);
  const auto deadline = Clock::now() + 60s;
  while (Stored(watched) < kWatched || Stored(other) < kOther) {
    ASSERT_LT(Clock::now(), deadline) << archive->Describe();
    ASSERT_TRUE(archive->Running()) << archive->Describe();
    std::this_thread::sleep_for(100ms);
  }
  std::string metrics;
  EXPECT_TRUE(WaitForMetrics(
      *archive, port,
      [&](const std::string& m) {
        return Sample(m, Records(watched)) == kWatched && Sample(m, Records(other)) == kOther &&
               Sample(m, kRatio) == 1.0;
      },
      metrics))
      << metrics << archive->Describe();
  EXPECT_EQ(Sample(metrics, kHoles), 0.0) << metrics;

  // The archive dies; PostgreSQL will refuse its writes when it comes back (an error class that
  // is neither a connection loss nor one message's data: it pauses and retries, skipping
  // nothing). Meanwhile retention deletes records it never wrote.
  archive->Kill();
  ASSERT_EQ(archive->Wait(10s), -SIGKILL);
  const int64_t position = Stored(watched);
  ASSERT_EQ(position, kWatched);
  SharedPostgres().Query(dsn_,
                         "CREATE FUNCTION refuse_archive() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN RAISE EXCEPTION 'archive writes refused by the test'; END $$;"
                         "CREATE TRIGGER refuse_archive BEFORE INSERT ON agent_events "
                         "FOR EACH STATEMENT EXECUTE FUNCTION refuse_archive()");
  ASSERT_NO_FATAL_FAILURE(publish(filler, 0, 12'000, 700));
  const auto after = Watermarks(bootstrap_, kTopic, 10s);
  const int64_t low = after.at(watched).low;
  const int64_t high = after.at(watched).high;
  ASSERT_GT(low, position) << "the filler did not push unarchived records out; publish more";
  ASSERT_EQ(after.at(other).low, 0) << "the other partition must keep all its records";

  // Back, but stuck: the headroom says exactly how many offsets are gone, the ratio is 0 (the
  // other partition's 1 does not hide it), and a warning names the partition.
  const uint16_t port2 = FreePort();
  archive = StartArchive(port2);
  EXPECT_TRUE(WaitForMetrics(
      *archive, port2,
      [&](const std::string& m) {
        return Sample(m, Records(watched)) == static_cast<double>(position - low) &&
               Sample(m, Records(other)) == kOther && Sample(m, kRatio) == 0.0;
      },
      metrics))
      << metrics << archive->Describe();
  EXPECT_EQ(Sample(metrics, kHoles), 0.0) << "nothing was committed across the hole yet\n"
                                          << metrics;
  ASSERT_TRUE(archive->WaitForStderr("the archive is close to Kafka's log start", 30s))
      << archive->Describe();
  {
    const std::string log = archive->StderrText();
    const auto at = log.find("the archive is close to Kafka's log start");
    const std::string line = log.substr(at, log.find('\n', at) - at);
    EXPECT_NE(line.find("topic=" + std::string(kTopic)), std::string::npos) << line;
    EXPECT_NE(line.find("partition=" + std::to_string(watched)), std::string::npos) << line;
    EXPECT_NE(line.find("headroom_records=" + std::to_string(position - low)), std::string::npos)
        << line;
    EXPECT_NE(line.find("ratio=0"), std::string::npos) << line;
  }
  EXPECT_EQ(SharedPostgres().QueryInt(dsn_, "SELECT count(*) FROM agent_events WHERE partition = " +
                                                std::to_string(watched)),
            kWatched);

  // PostgreSQL takes writes again: the archive goes on from the log start, every retained record
  // archived once, the lost offsets counted once (however often the refused batch was retried).
  SharedPostgres().Query(dsn_, "DROP TRIGGER refuse_archive ON agent_events");
  const auto resumed = Clock::now() + 60s;
  while (Stored(watched) < high) {
    ASSERT_LT(Clock::now(), resumed) << archive->Describe();
    ASSERT_TRUE(archive->Running()) << archive->Describe();
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(Stored(watched), high);
  EXPECT_TRUE(WaitForMetrics(
      *archive, port2,
      [&](const std::string& m) {
        return Sample(m, Records(watched)) == static_cast<double>(high - low) &&
               Sample(m, kRatio) == 1.0;
      },
      metrics))
      << metrics << archive->Describe();
  EXPECT_EQ(Sample(metrics, kHoles), static_cast<double>(low - position)) << metrics;
  EXPECT_EQ(Sample(metrics, kGaps), static_cast<double>(low - position)) << metrics;
  const auto rows = SharedPostgres().QueryRows(
      dsn_,
      "SELECT count(*), count(DISTINCT \"offset\"), min(\"offset\") FILTER (WHERE \"offset\" >= " +
          std::to_string(position) +
          ") FROM agent_events WHERE partition = " + std::to_string(watched));
  EXPECT_EQ(std::stoll(rows.at(0).at(0)), position + (high - low));
  EXPECT_EQ(std::stoll(rows.at(0).at(1)), position + (high - low));
  EXPECT_EQ(std::stoll(rows.at(0).at(2)), low);
  EXPECT_EQ(SharedPostgres().QueryInt(dsn_, "SELECT count(*) FROM dead_letters"), 0);

  archive->Signal(SIGTERM);
  EXPECT_EQ(archive->Wait(30s), 0) << archive->Describe();
}

}  // namespace
}  // namespace agentwire::testing
