// CatchUp, the read side of a session, driven as a unit: a fake PartitionLog plays the replica's
// recent-log cache, Kafka's history reader and the archive (the test hands over the chunks each
// would), and the test writes what the CatchUp hands out the way a session does. No sockets, no
// Kafka, no PostgreSQL, no sleeps.
#include "catch_up.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "agentwire/core/metrics.hpp"
#include "gateway_context.hpp"

namespace agentwire::gateway {
namespace {

constexpr int64_t kAttachPoint = 10;  // where live delivery starts
constexpr int64_t kLogStart = 7;      // Kafka's log start, when a test says so

/// The log of partition 0 as alice's catch-up sees it.
class FakeLog final : public PartitionLog {
 public:
  PartitionHub::CacheRead ReadCached(int64_t from, int64_t to,
                                     size_t /*max_bytes*/) const override {
    PartitionHub::CacheRead read;
    if (from < cache_from) {
      read.next_offset = to;  // older than the cache: read Kafka (as the hub answers)
      return read;
    }
    read.covered = true;
    to = std::min(to, dispatched_end);
    read.next_offset = std::max(from, to);
    for (const auto& entry : cache) {
      if (entry->offset >= from && entry->offset < to) read.entries.push_back(entry);
    }
    return read;
  }
  int64_t LogStart() const override { return log_start; }
  int64_t DispatchedEnd() const override { return dispatched_end; }
  bool IsLate(const LogEntry& entry) const override { return late.contains(entry.offset); }
  bool ArchiveEnabled() const override { return archive; }
  void SubmitKafka(HistoryRequest request) override { kafka_reads.push_back(request); }
  void SubmitArchive(HistoryRequest request) override { archive_reads.push_back(request); }
  void Release(size_t bytes) override { released += bytes; }

  std::vector<LogEntryPtr> cache;  // the user's cached entries, offset order
  int64_t cache_from = kAttachPoint;
  int64_t dispatched_end = kAttachPoint;
  int64_t log_start = -1;
  bool archive = false;
  std::set<int64_t> late;  // offsets the hub judges late events
  std::vector<HistoryRequest> kafka_reads;
  std::vector<HistoryRequest> archive_reads;
  size_t released = 0;
};

/// [from, to) of a request, for comparisons.
std::pair<int64_t, int64_t> Range(const HistoryRequest& request) {
  return {request.from, request.to};
}

class CatchUpTest : public ::testing::Test {
 protected:
  void Make(HandOff::BufferLimits live_buffer = {}, int64_t max_catchup_events = 0) {
    CatchUp::Settings settings;
    settings.partition = 0;
    settings.user_id = "alice";
    settings.session_id = 1;
    settings.live_buffer = live_buffer;
    settings.max_catchup_events = max_catchup_events;
    catch_up_ = std::make_unique<CatchUp>(
        log_, metrics_, settings,
        [this](const CatchUp::Frame& frame) { written_.push_back(Name(*frame)); });
  }

  void Start(int64_t cursor) {
    StartPosition start;
    start.kind = StartPosition::Kind::kCursor;
    start.next_offset = cursor;
    catch_up_->Start(kAttachPoint, start);
  }

  static LogEntryPtr Entry(int64_t offset, std::string run_id = "run-1",
                           RunEnd end = RunEnd::kNone) {
    auto entry = std::make_shared<LogEntry>();
    entry->offset = offset;
    entry->user_id = "alice";
    entry->run_id = std::move(run_id);
    entry->end = end;
    entry->SetFrame(std::make_shared<const std::string>(R"({"type":"event","event":{"offset":)" +
                                                        std::to_string(offset) + "}}"));
    return entry;
  }

  /// A chunk as a reader hands it over: charged to the budget, and announced (Session::OnHistory).
  HistoryChunk Chunk(HistoryChunk::Status status, std::vector<LogEntryPtr> entries,
                     int64_t next_offset,
                     HistoryChunk::Source source = HistoryChunk::Source::kKafka) {
    HistoryChunk chunk;
    chunk.status = status;
    chunk.source = source;
    chunk.next_offset = next_offset;
    for (const auto& entry : entries) chunk.charged_bytes += entry->Bytes();
    charged_ += chunk.charged_bytes;
    catch_up_->Charge(chunk.charged_bytes);
    chunk.entries = std::move(entries);
    return chunk;
  }
  HistoryChunk Archive(HistoryChunk::Status status, std::vector<LogEntryPtr> entries,
                       int64_t next_offset) {
    return Chunk(status, std::move(entries), next_offset, HistoryChunk::Source::kArchive);
  }
  /// Kafka's answer to a read that starts before its log start.
  HistoryChunk BeforeLogStart(int64_t from) {
    auto chunk = Chunk(HistoryChunk::Status::kOutOfRange, {}, from);
    chunk.log_start = kLogStart;
    return chunk;
  }

  /// Writes what the CatchUp hands out, as the session's write loop does, until it holds
  /// nothing and waits for a reader, or is ready ("ready", then the live events it buffered).
  void Write() {
    for (;;) {
      if (!catch_up_->Holding()) {
        if (live_) return;
        if (catch_up_->Pump() == CatchUp::Pumped::kReady) {
          live_ = true;
          written_.emplace_back("ready");
          for (const auto& entry : catch_up_->GoLive()) {
            if (catch_up_->AcceptLive(*entry) == CatchUp::Live::kDeliver) {
              written_.push_back(Name(*entry->Frame()));
            }
          }
          return;
        }
        if (!catch_up_->Holding()) return;  // a read is on its way
      }
      const auto piece = catch_up_->Take();
      if (piece.frame) written_.push_back(Name(*piece.frame));
    }
  }
  CatchUp::Next Hand(HistoryChunk chunk) {
    const auto next = catch_up_->OnChunk(std::move(chunk));
    if (next == CatchUp::Next::kWrite) Write();
    return next;
  }

  /// "event:N", "reset", "reset:A-B" (its missing range) or "reset:catchup_limit".
  static std::string Name(const std::string& frame) {
    const auto json = nlohmann::json::parse(frame);
    std::string type = json.value("type", "");
    if (type == "event") return "event:" + std::to_string(json["event"].value("offset", -1));
    if (type == "reset" && json.contains("missing")) {
      return "reset:" + std::to_string(json["missing"].value("from_offset", -1)) + "-" +
             std::to_string(json["missing"].value("to_offset", -1));
    }
    if (type == "reset" && json.value("reason", "") == kResetCatchupLimit) {
      return "reset:catchup_limit";
    }
    return type;
  }

  void ExpectBudgetBack() const {
    EXPECT_EQ(catch_up_->PendingBytes(), 0u);
    EXPECT_EQ(log_.released, charged_);
  }

  metrics::Registry registry_;
  GatewayMetrics metrics_{registry_};
  FakeLog log_;
  std::unique_ptr<CatchUp> catch_up_;
  std::vector<std::string> written_;
  size_t charged_ = 0;
  bool live_ = false;
};

using Status = HistoryChunk::Status;
using Strings = std::vector<std::string>;

TEST_F(CatchUpTest, AResumeInsideTheCacheIsServedFromItAlone) {
  log_.cache_from = 0;
  log_.cache = {Entry(3), Entry(5), Entry(8)};
  Make();
  Start(4);
  Write();
  EXPECT_EQ(written_, (Strings{"event:5", "event:8", "ready"}));
  EXPECT_TRUE(log_.kafka_reads.empty());
  EXPECT_EQ(catch_up_->NextOffset(), kAttachPoint);
  EXPECT_EQ(metrics_.resumes_cache.Value(), 1u);
  EXPECT_EQ(metrics_.resumes_kafka.Value(), 0u);
}

TEST_F(CatchUpTest, OlderThanTheCacheKafkaServesItInPiecesEachEventOnce) {
  log_.cache_from = 8;
  log_.cache = {Entry(9)};
  Make();
  Start(2);
  Write();
  ASSERT_EQ(log_.kafka_reads.size(), 1u);
  EXPECT_EQ(Range(log_.kafka_reads[0]), std::make_pair(int64_t{2}, kAttachPoint));
  EXPECT_EQ(log_.kafka_reads[0].user_id, "alice");
  EXPECT_FALSE(log_.kafka_reads[0].earliest);
  EXPECT_EQ(Hand(Chunk(Status::kMore, {Entry(3), Entry(4)}, 5)), CatchUp::Next::kWrite);
  EXPECT_EQ(log_.kafka_reads.size(), 1u) << "asked again while the read goes on";
  // A piece that overlaps what was handed out already (a re-read) gives each event once.
  Hand(Chunk(Status::kDone, {Entry(4), Entry(6), Entry(9)}, kAttachPoint));
  EXPECT_EQ(written_, (Strings{"event:3", "event:4", "event:6", "event:9", "ready"}));
  EXPECT_EQ(metrics_.resumes_kafka.Value(), 1u);
  EXPECT_EQ(metrics_.resumes_cache.Value(), 0u);
  ExpectBudgetBack();
}

TEST_F(CatchUpTest, BelowTheLogStartTheArchiveThenKafkaFromTheLogStart) {
  log_.archive = true;
  Make();
  Start(2);
  Write();
  ASSERT_EQ(log_.kafka_reads.size(), 1u);
  Hand(BeforeLogStart(2));  // Kafka: [2, 7) is gone; the archive has it
  ASSERT_EQ(log_.archive_reads.size(), 1u);
  EXPECT_EQ(Range(log_.archive_reads[0]), std::make_pair(int64_t{2}, kLogStart));
  EXPECT_EQ(metrics_.resumes_archive.Value(), 1u);
  // Pulled: the next chunk is asked for once this one is written.
  Hand(Archive(Status::kMore, {Entry(3), Entry(4)}, 5));
  ASSERT_EQ(log_.archive_reads.size(), 2u);
  EXPECT_EQ(Range(log_.archive_reads[1]), std::make_pair(int64_t{5}, kLogStart));
  Hand(Archive(Status::kDone, {Entry(6)}, kLogStart));
  ASSERT_EQ(log_.kafka_reads.size(), 2u);
  EXPECT_EQ(Range(log_.kafka_reads[1]), std::make_pair(kLogStart, kAttachPoint));
  Hand(Chunk(Status::kDone, {Entry(8), Entry(9)}, kAttachPoint));
  EXPECT_EQ(written_, (Strings{"event:3", "event:4", "event:6", "event:8", "event:9", "ready"}));
  EXPECT_EQ(metrics_.resets.Value(), 0u);
  EXPECT_EQ(metrics_.resumes_archive.Value(), 1u);
  EXPECT_EQ(metrics_.resumes_kafka.Value(), 1u);
  ExpectBudgetBack();
}

TEST_F(CatchUpTest, TheTailersLogStartSendsAResumeToTheArchiveWithoutAskingKafka) {
  log_.archive = true;
  log_.log_start = kLogStart;
  Make();
  Start(2);
  Write();
  EXPECT_TRUE(log_.kafka_reads.empty());
  ASSERT_EQ(log_.archive_reads.size(), 1u);
  EXPECT_EQ(Range(log_.archive_reads[0]), std::make_pair(int64_t{2}, kLogStart));
}

TEST_F(CatchUpTest, AnArchiveBehindRetentionResetsNamingTheHoleAfterTheEventsBeforeIt) {
  log_.archive = true;
  Make();
  Start(2);
  Write();
  Hand(BeforeLogStart(2));
  // The archive's position is 5: [5, 7) exists nowhere. The reset follows 3 and 4.
  Hand(Archive(Status::kOutOfRange, {Entry(3), Entry(4)}, 5));
  ASSERT_EQ(log_.kafka_reads.size(), 2u);
  EXPECT_EQ(Range(log_.kafka_reads[1]), std::make_pair(kLogStart, kAttachPoint));
  Hand(Chunk(Status::kDone, {Entry(8)}, kAttachPoint));
  EXPECT_EQ(written_, (Strings{"event:3", "event:4", "reset:5-7", "event:8", "ready"}));
  EXPECT_EQ(metrics_.resets.Value(), 1u);
  EXPECT_EQ(metrics_.missing_offsets.Value(), 2u);
  ExpectBudgetBack();
}

TEST_F(CatchUpTest, WithoutAnArchiveTheHoleIsNamedAndKafkaGoesOnFromItsLogStart) {
  Make();
  Start(2);
  Write();
  Hand(BeforeLogStart(2));
  EXPECT_EQ(written_, (Strings{"reset:2-7"}));  // nothing held: sent at once
  ASSERT_EQ(log_.kafka_reads.size(), 2u);
  EXPECT_EQ(Range(log_.kafka_reads[1]), std::make_pair(kLogStart, kAttachPoint));
  Hand(Chunk(Status::kDone, {Entry(7), Entry(9)}, kAttachPoint));
  EXPECT_EQ(written_, (Strings{"reset:2-7", "event:7", "event:9", "ready"}));
  EXPECT_EQ(metrics_.missing_offsets.Value(), 5u);
}

TEST_F(CatchUpTest, PausedHoldingNothingAsksAgainOnlyAfterRetry) {
  Make();
  Start(2);
  Write();
  EXPECT_EQ(Hand(Chunk(Status::kPaused, {}, 4)), CatchUp::Next::kRetryLater);
  EXPECT_EQ(metrics_.catchup_share_waits.Value(), 1u);
  Write();
  EXPECT_EQ(log_.kafka_reads.size(), 1u) << "asked again before the retry";
  catch_up_->Retry();
  Write();
  ASSERT_EQ(log_.kafka_reads.size(), 2u);
  EXPECT_EQ(Range(log_.kafka_reads[1]), std::make_pair(int64_t{4}, kAttachPoint));
  // Paused while holding something: asked again as soon as that is written, no wait.
  EXPECT_EQ(Hand(Chunk(Status::kPaused, {Entry(5)}, 6)), CatchUp::Next::kWrite);
  ASSERT_EQ(log_.kafka_reads.size(), 3u);
  EXPECT_EQ(Range(log_.kafka_reads[2]), std::make_pair(int64_t{6}, kAttachPoint));
  EXPECT_EQ(metrics_.catchup_share_waits.Value(), 1u);
  Hand(Chunk(Status::kDone, {Entry(7)}, kAttachPoint));
  EXPECT_EQ(written_, (Strings{"event:5", "event:7", "ready"}));
  ExpectBudgetBack();
}

TEST_F(CatchUpTest, TheArchiveIsReadOneChunkAheadWhileTheClientIsNotBehind) {
  log_.archive = true;
  log_.log_start = kLogStart;
  Make();
  Start(0);
  Write();
  ASSERT_EQ(log_.archive_reads.size(), 1u);
  // A chunk arrives while nothing is held: the next read goes out before it is written.
  EXPECT_EQ(catch_up_->OnChunk(Archive(Status::kMore, {Entry(1)}, 2)), CatchUp::Next::kWrite);
  ASSERT_EQ(log_.archive_reads.size(), 2u);
  EXPECT_EQ(Range(log_.archive_reads[1]), std::make_pair(int64_t{2}, kLogStart));
  // The next arrives while the first is unwritten (a slow client): as much was held as it
  // brings, so one more read ahead...
  catch_up_->OnChunk(Archive(Status::kMore, {Entry(2)}, 3));
  ASSERT_EQ(log_.archive_reads.size(), 3u);
  // ... but no further while more than that is held: asked again once everything is written.
  catch_up_->OnChunk(Archive(Status::kMore, {Entry(3)}, 4));
  EXPECT_EQ(log_.archive_reads.size(), 3u);
  Write();
  ASSERT_EQ(log_.archive_reads.size(), 4u);
  EXPECT_EQ(Range(log_.archive_reads[3]), std::make_pair(int64_t{4}, kLogStart));
  Hand(Archive(Status::kDone, {Entry(5), Entry(6)}, kLogStart));
  Hand(Chunk(Status::kDone, {Entry(8)}, kAttachPoint));
  EXPECT_EQ(written_,
            (Strings{"event:1", "event:2", "event:3", "event:5", "event:6", "event:8", "ready"}));
  ExpectBudgetBack();
}

TEST_F(CatchUpTest, ArchivePausedAsksTheSameChunkAgainAfterRetry) {
  log_.archive = true;
  log_.log_start = kLogStart;
  Make();
  Start(2);
  Write();
  EXPECT_EQ(Hand(Archive(Status::kPaused, {}, 2)), CatchUp::Next::kRetryLater);
  Write();
  EXPECT_EQ(log_.archive_reads.size(), 1u);
  catch_up_->Retry();
  Write();
  ASSERT_EQ(log_.archive_reads.size(), 2u);
  EXPECT_EQ(Range(log_.archive_reads[1]), std::make_pair(int64_t{2}, kLogStart));
}

TEST_F(CatchUpTest, AReaderErrorFailsTheCatchUpAndWritesNothing) {
  log_.archive = true;
  log_.log_start = kLogStart;
  Make();
  Start(2);
  Write();
  EXPECT_EQ(Hand(Archive(Status::kError, {}, 2)), CatchUp::Next::kFailed);
  EXPECT_TRUE(written_.empty());
}

TEST_F(CatchUpTest, LiveOverflowExtendsTheCatchUpToTheLogsEnd) {
  log_.cache_from = 0;
  log_.cache = {Entry(5), Entry(10), Entry(11), Entry(12)};
  log_.dispatched_end = 13;
  Make({2, 1 << 20});
  Start(5);
  // Three live events while catching up: over the buffer of two, dropped.
  catch_up_->BufferLive(Entry(10));
  catch_up_->BufferLive(Entry(11));
  catch_up_->BufferLive(Entry(12));
  EXPECT_EQ(metrics_.catchup_extended.Value(), 1u);
  Write();
  EXPECT_EQ(written_, (Strings{"event:5", "event:10", "event:11", "event:12", "ready"}));
  EXPECT_EQ(catch_up_->NextOffset(), 13);
  EXPECT_EQ(catch_up_->AcceptLive(*Entry(12)), CatchUp::Live::kSkip);
  EXPECT_EQ(catch_up_->AcceptLive(*Entry(13)), CatchUp::Live::kDeliver);
}

TEST_F(CatchUpTest, LiveEventsBufferedDuringTheCatchUpFollowItOnce) {
  log_.cache_from = 0;
  log_.cache = {Entry(8)};
  Make();
  Start(5);
  catch_up_->BufferLive(Entry(9));   // below the attach point: the catch-up covers it
  catch_up_->BufferLive(Entry(10));  // live
  Write();
  EXPECT_EQ(written_, (Strings{"event:8", "ready", "event:10"}));
  EXPECT_EQ(metrics_.catchup_extended.Value(), 0u);
}

TEST_F(CatchUpTest, EventsAfterTheirRunsEndAreNotDelivered) {
  Make();
  Start(2);
  Write();
  log_.late.insert(4);  // the hub saw run-2 end before offset 4
  Hand(Chunk(
      Status::kDone,
      {Entry(3, "run-1", RunEnd::kCompleted), Entry(4, "run-2"), Entry(5, "run-1"), Entry(6, "")},
      kAttachPoint));
  EXPECT_EQ(written_, (Strings{"event:3", "event:6", "ready"}));
  EXPECT_EQ(catch_up_->AcceptLive(*Entry(10, "run-1")), CatchUp::Live::kSkip);
  ExpectBudgetBack();
}

TEST_F(CatchUpTest, EarliestIsLimitedToTheNewestRecordsWithAReset) {
  log_.cache_from = 0;
  log_.log_start = 0;
  log_.cache = {Entry(1), Entry(8)};
  Make({}, 3);
  StartPosition start;
  start.kind = StartPosition::Kind::kEarliest;
  catch_up_->Start(kAttachPoint, start);
  Write();
  EXPECT_EQ(written_, (Strings{"reset:catchup_limit", "event:8", "ready"}));
  EXPECT_EQ(metrics_.catchup_limited.Value(), 1u);
}

TEST_F(CatchUpTest, ACursorPastTheTailAsksKafkaAndGoesLiveFromTheTailWhenItIsGone) {
  Make();
  Start(15);
  ASSERT_EQ(log_.kafka_reads.size(), 1u);
  EXPECT_EQ(Range(log_.kafka_reads[0]), std::make_pair(int64_t{15}, int64_t{15}));
  Write();
  EXPECT_TRUE(written_.empty());
  Hand(Chunk(Status::kOutOfRange, {}, 15));
  EXPECT_EQ(written_, (Strings{"reset", "ready"}));
  EXPECT_EQ(catch_up_->NextOffset(), kAttachPoint);
}

TEST_F(CatchUpTest, DropGivesBackWhatIsHeld) {
  Make();
  Start(2);
  Write();
  catch_up_->OnChunk(Chunk(Status::kMore, {Entry(3), Entry(4)}, 5));
  EXPECT_GT(catch_up_->PendingBytes(), 0u);
  catch_up_->Drop();
  ExpectBudgetBack();
}

}  // namespace
}  // namespace agentwire::gateway
