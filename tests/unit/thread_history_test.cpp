// GET /v1/threads/{thread_id}/events: what a hostile query gets (a refusal before any read), which
// offsets a page looks in, how a page keeps its events across tiers, and the body it answers.
#include "thread_history.hpp"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

namespace agentwire::gateway {
namespace {

using Direction = ThreadPageQuery::Direction;

const TopicIdentity kIdentity = TopicIdentity::Of("agent.lifecycle.v1", 1, 12);
constexpr int kPartition = 3;

std::string CursorText(int64_t next_offset, int partition = kPartition,
                       const TopicIdentity& identity = kIdentity) {
  return EncodeCursor(identity.CursorAt(partition, next_offset));
}

std::variant<ThreadPageQuery, Refusal> Parse(const std::string& query,
                                             const std::string& thread = "t-1") {
  return ParseThreadPageQuery(thread, ParseTarget("/v1/threads/x/events?" + query), kIdentity,
                              kPartition);
}

/// The refusal's error code, or "" when the query passed.
std::string Refused(const std::string& query, const std::string& thread = "t-1") {
  const auto parsed = Parse(query, thread);
  const auto* refusal = std::get_if<Refusal>(&parsed);
  if (refusal == nullptr) return "";
  EXPECT_EQ(refusal->status, boost::beast::http::status::bad_request);
  return refusal->code;
}

ThreadPageQuery Passed(const std::string& query) {
  auto parsed = Parse(query);
  EXPECT_TRUE(std::holds_alternative<ThreadPageQuery>(parsed)) << query;
  return std::holds_alternative<ThreadPageQuery>(parsed) ? std::get<ThreadPageQuery>(parsed)
                                                         : ThreadPageQuery{};
}

TEST(ThreadEventsPath, TheThreadSegmentOfThePathOnly) {
  EXPECT_EQ(ThreadEventsPath("/v1/threads/t-1/events"), "t-1");
  EXPECT_EQ(ThreadEventsPath("/v1/threads/a/b/events"), "a/b") << "a decoded %2F stays in the id";
  EXPECT_EQ(ThreadEventsPath("/v1/threads//events"), "") << "empty: refused as bad_thread_id";
  EXPECT_EQ(ThreadEventsPath("/v1/threads/events"), std::nullopt);
  EXPECT_EQ(ThreadEventsPath("/v1/threads/t-1"), std::nullopt);
  EXPECT_EQ(ThreadEventsPath("/v1/threads/t-1/events/"), std::nullopt);
  EXPECT_EQ(ThreadEventsPath("/v1/events"), std::nullopt);
}

TEST(ParseThreadPageQuery, DefaultsToTheNewestHundred) {
  const auto query = Passed("");
  EXPECT_EQ(query.thread_id, "t-1");
  EXPECT_EQ(query.direction, Direction::kNewest);
  EXPECT_EQ(query.limit, 100U);
}

TEST(ParseThreadPageQuery, LimitIsAnIntegerFromOneToAThousand) {
  EXPECT_EQ(Passed("limit=1").limit, 1U);
  EXPECT_EQ(Passed("limit=1000").limit, 1000U);
  EXPECT_EQ(Passed("limit=050").limit, 50U);
  for (const std::string bad : {"limit=0", "limit=1001", "limit=-1", "limit=", "limit", "limit=abc",
                                "limit=10abc", "limit=1e3", "limit=%2B5", "limit=+5", "limit=5.0",
                                "limit=%205", "limit=99999999999999999999999"}) {
    EXPECT_EQ(Refused(bad), "bad_limit") << bad;
  }
}

TEST(ParseThreadPageQuery, ThreadIdIsOneTo256Bytes) {
  EXPECT_EQ(Refused("", ""), "bad_thread_id");
  EXPECT_EQ(Refused("", std::string(257, 't')), "bad_thread_id");
  EXPECT_EQ(Refused("", std::string(256, 't')), "");
}

TEST(ParseThreadPageQuery, BeforeOrAfterTakeThisUsersCursor) {
  const auto before = Passed("before=" + CursorText(42));
  EXPECT_EQ(before.direction, Direction::kBefore);
  EXPECT_EQ(before.cursor_next_offset, 42);
  const auto after = Passed("after=" + CursorText(7) + "&limit=5");
  EXPECT_EQ(after.direction, Direction::kAfter);
  EXPECT_EQ(after.cursor_next_offset, 7);
  EXPECT_EQ(after.limit, 5U);
}

TEST(ParseThreadPageQuery, HostileCursorsAreRefused) {
  EXPECT_EQ(Refused("before=" + CursorText(1) + "&after=" + CursorText(2)), "bad_request");
  EXPECT_EQ(Refused("before=&after="), "bad_request");
  for (const std::string name : {"before", "after"}) {
    EXPECT_EQ(Refused(name + "=garbage"), "bad_cursor") << name;
    EXPECT_EQ(Refused(name + "="), "bad_cursor") << name;
    EXPECT_EQ(Refused(name + "=earliest"), "bad_cursor") << "not a cursor here: " << name;
    EXPECT_EQ(Refused(name + "=" + CursorText(5, kPartition + 1)), "bad_cursor")
        << "another user's partition: " << name;
    EXPECT_EQ(
        Refused(name + "=" + CursorText(5, kPartition, TopicIdentity::Of("other.topic", 1, 12))),
        "bad_cursor")
        << "another topic: " << name;
    EXPECT_EQ(Refused(name + "=" +
                      CursorText(5, kPartition, TopicIdentity::Of("agent.lifecycle.v1", 2, 12))),
              "bad_cursor")
        << "another epoch: " << name;
    EXPECT_EQ(Refused(name + "=" +
                      CursorText(5, kPartition, TopicIdentity::Of("agent.lifecycle.v1", 1, 24))),
              "bad_cursor")
        << "another partition layout: " << name;
  }
}

TEST(PageRange, WhereEachDirectionLooks) {
  ThreadPageQuery query;
  EXPECT_EQ(PageRange(query, 500), (OffsetRange{0, 500}));
  EXPECT_EQ(PageRange(query, -1), (OffsetRange{0, 0}));
  query.direction = Direction::kBefore;
  query.cursor_next_offset = 101;  // the cursor of the event at offset 100
  EXPECT_EQ(PageRange(query, 500), (OffsetRange{0, 100})) << "strictly older than that event";
  EXPECT_EQ(PageRange(query, 50), (OffsetRange{0, 100})) << "a cursor past this replica's end";
  query.cursor_next_offset = 0;
  EXPECT_EQ(PageRange(query, 500), (OffsetRange{0, 0}));
  query.direction = Direction::kAfter;
  query.cursor_next_offset = 101;
  EXPECT_EQ(PageRange(query, 500), (OffsetRange{101, 500})) << "from the cursor's next offset";
  EXPECT_EQ(PageRange(query, 50), (OffsetRange{101, 101})) << "never ends before the cursor";
}

TEST(ArchiveHole, WhatTheArchiveNeverWrote) {
  EXPECT_EQ(ArchiveHole({0, 100}, 100), std::nullopt);
  EXPECT_EQ(ArchiveHole({0, 100}, 250), std::nullopt);
  EXPECT_EQ(ArchiveHole({0, 100}, 60), (OffsetRange{60, 100}));
  EXPECT_EQ(ArchiveHole({70, 100}, 60), (OffsetRange{70, 100}));
  EXPECT_EQ(ArchiveHole({10, 100}, -1), (OffsetRange{10, 100})) << "never archived";
}

LogEntryPtr Entry(int64_t offset, const std::string& run = "r-1", RunEnd end = RunEnd::kNone,
                  size_t frame_bytes = 10) {
  auto entry = std::make_shared<LogEntry>();
  entry->offset = offset;
  entry->user_id = "alice";
  entry->thread_id = "t-1";
  entry->run_id = run;
  entry->end = end;
  entry->cursor = kIdentity.CursorAt(kPartition, offset + 1);
  entry->SetFrame(std::make_shared<const std::string>(std::max<size_t>(frame_bytes, 1), 'x'));
  return entry;
}

std::vector<int64_t> Offsets(const std::vector<LogEntryPtr>& entries) {
  std::vector<int64_t> offsets;
  offsets.reserve(entries.size());
  for (const auto& entry : entries) offsets.push_back(entry->offset);
  return offsets;
}

TEST(PageCollector, BackwardKeepsTheNewestAcrossOlderBatches) {
  PageCollector page(/*backward=*/true, 3, 1u << 20);
  EXPECT_EQ(page.Wanted(), 4U) << "one past the limit tells whether more exist";
  page.BeginOlder();  // the newest window first
  page.Offer(Entry(90));
  page.EndOlder();
  EXPECT_FALSE(page.Full());
  EXPECT_EQ(page.Wanted(), 3U);
  page.BeginOlder();  // an older window, read in offset order
  for (const int64_t offset : {10, 20, 30, 40}) page.Offer(Entry(offset));
  page.EndOlder();
  EXPECT_TRUE(page.Full()) << "an older event exists beyond the limit";
  EXPECT_EQ(Offsets(page.Take()), (std::vector<int64_t>{30, 40, 90}));
}

TEST(PageCollector, BackwardExactlyTheLimitMeansNothingOlder) {
  PageCollector page(true, 3, 1u << 20);
  page.BeginOlder();
  for (const int64_t offset : {1, 2, 3}) page.Offer(Entry(offset));
  page.EndOlder();
  EXPECT_FALSE(page.Full());
  EXPECT_EQ(Offsets(page.Take()), (std::vector<int64_t>{1, 2, 3}));
}

TEST(PageCollector, DiscardedBatchLeavesThePageAsItWas) {
  PageCollector page(true, 2, 1u << 20);
  page.BeginOlder();
  page.Offer(Entry(50));
  page.EndOlder();
  page.BeginOlder();
  for (const int64_t offset : {1, 2, 3}) page.Offer(Entry(offset));
  EXPECT_TRUE(page.Full());
  page.DiscardOlder();  // retention moved: the window is read again
  EXPECT_FALSE(page.Full());
  page.BeginOlder();
  page.Offer(Entry(3));
  page.EndOlder();
  EXPECT_EQ(Offsets(page.Take()), (std::vector<int64_t>{3, 50}));
}

TEST(PageCollector, ForwardKeepsTheOldest) {
  PageCollector page(/*backward=*/false, 3, 1u << 20);
  for (const int64_t offset : {5, 6, 7}) page.Offer(Entry(offset));
  EXPECT_FALSE(page.Full());
  EXPECT_EQ(page.Wanted(), 1U);
  page.Offer(Entry(8));
  EXPECT_TRUE(page.Full());
  EXPECT_EQ(Offsets(page.Take()), (std::vector<int64_t>{5, 6, 7}));
}

TEST(PageCollector, MarkMoreWhenASourceStoppedAtItsRowLimit) {
  PageCollector page(false, 10, 1u << 20);
  page.Offer(Entry(1));
  EXPECT_FALSE(page.Full());
  page.MarkMore();
  EXPECT_TRUE(page.Full());
}

TEST(PageCollector, ByteBoundKeepsAtLeastOneEvent) {
  const size_t big = 1000;
  const size_t bound = Entry(0, "r", RunEnd::kNone, big)->Bytes() * 2;
  PageCollector forward(false, 100, bound);
  for (const int64_t offset : {1, 2, 3}) forward.Offer(Entry(offset, "r", RunEnd::kNone, big));
  EXPECT_TRUE(forward.Full());
  EXPECT_EQ(Offsets(forward.Take()), (std::vector<int64_t>{1, 2}));

  PageCollector backward(true, 100, bound);
  backward.BeginOlder();
  for (const int64_t offset : {1, 2, 3}) backward.Offer(Entry(offset, "r", RunEnd::kNone, big));
  backward.EndOlder();
  EXPECT_TRUE(backward.Full());
  EXPECT_EQ(Offsets(backward.Take()), (std::vector<int64_t>{2, 3}));

  PageCollector huge(false, 100, 10);
  huge.Offer(Entry(1, "r", RunEnd::kNone, big));
  huge.Offer(Entry(2, "r", RunEnd::kNone, big));
  EXPECT_EQ(Offsets(huge.Take()), (std::vector<int64_t>{1})) << "one event over the bound";
}

TEST(PageCollector, EventsOfARunAfterItsFirstEndAreDropped) {
  PageCollector page(false, 10, 1u << 20);
  page.Offer(Entry(1, "r-1"));
  page.Offer(Entry(2, "r-1", RunEnd::kCompleted));
  page.Offer(Entry(3, "r-2"));
  page.Offer(Entry(4, "r-1"));                       // a zombie's late event
  page.Offer(Entry(5, "r-1", RunEnd::kWorkerLost));  // a second end that lost the race
  page.Offer(Entry(6, ""));
  EXPECT_EQ(Offsets(page.Take()), (std::vector<int64_t>{1, 2, 3, 6}));
}

/// The tiers as a page sees them: the thread's events by offset; Kafka holds offsets from
/// `kafka_start` (the walk may believe in an older start, as a replica whose tailer has not
/// looked since retention moved); the archive holds offsets below `archived_to`. Answers the
/// walk's steps as the reader does.
struct FakeTiers {
  explicit FakeTiers(std::map<int64_t, LogEntryPtr> thread_events, int64_t kafka_log_start = 0,
                     int64_t archive_position = -1)
      : events(std::move(thread_events)),
        kafka_start(kafka_log_start),
        archived_to(archive_position) {}

  std::map<int64_t, LogEntryPtr> events;
  int64_t kafka_start = 0;
  int64_t archived_to = -1;
  std::vector<OffsetRange> recent_reads;
  std::vector<OffsetRange> archive_reads;

  PageWalk::Result Drive(PageWalk& walk) {
    using Kind = PageWalk::Step::Kind;
    for (int steps = 0; steps < 100; ++steps) {
      const auto step = walk.Next();
      if (step.kind == Kind::kDone) return walk.Finish();
      if (step.kind == Kind::kRecent) {
        recent_reads.push_back(step.range);
        if (step.range.from < kafka_start) {  // the HistoryService's kOutOfRange
          walk.RecentGone(step.range.from, kafka_start);
          continue;
        }
        for (auto it = events.lower_bound(step.range.from);
             it != events.end() && it->first < step.range.to && !walk.Enough(); ++it) {
          walk.Offer(it->second);
        }
        walk.RecentRead();
        continue;
      }
      archive_reads.push_back(step.range);
      std::vector<LogEntryPtr> rows;  // ArchiveReader::Query: newest first on backward pages
      const int64_t end = std::min(step.range.to, archived_to);
      for (const auto& [offset, entry] : events) {
        if (offset >= step.range.from && offset < end) rows.push_back(entry);
      }
      if (walk.Backward()) std::reverse(rows.begin(), rows.end());
      if (rows.size() > step.wanted) rows.resize(step.wanted);
      if (walk.Backward()) std::reverse(rows.begin(), rows.end());
      for (const auto& row : rows) walk.Offer(row);
      walk.ArchiveRead(rows.size(), archived_to);
    }
    ADD_FAILURE() << "the walk did not end";
    return {};
  }
};

/// The thread's events at offsets from, from + step, ... below to.
std::map<int64_t, LogEntryPtr> EventsEvery(int64_t from, int64_t step, int64_t to) {
  std::map<int64_t, LogEntryPtr> events;
  for (int64_t offset = from; offset < to; offset += step) events[offset] = Entry(offset);
  return events;
}

std::vector<int64_t> Every(int64_t from, int64_t step, int64_t to) {
  std::vector<int64_t> offsets;
  for (int64_t offset = from; offset < to; offset += step) offsets.push_back(offset);
  return offsets;
}

ThreadPageQuery Query(Direction direction, size_t limit, int64_t cursor_next_offset = 0) {
  ThreadPageQuery query;
  query.thread_id = "t-1";
  query.direction = direction;
  query.limit = limit;
  query.cursor_next_offset = cursor_next_offset;
  return query;
}

TEST(PageWalk, AnActiveThreadCostsOneSmallRead) {
  FakeTiers tiers(EventsEvery(0, 100, 100'000));
  PageWalk walk(Query(Direction::kNewest, 10), kPartition, 100'000, 0, false);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), Every(99'000, 100, 100'000));
  EXPECT_TRUE(page.has_more_before);
  EXPECT_FALSE(page.has_more_after);
  EXPECT_EQ(page.end_next_offset, 100'000) << "the log's end";
  EXPECT_TRUE(page.missing.empty());
  EXPECT_EQ(tiers.recent_reads, (std::vector<OffsetRange>{{95'904, 100'000}}));
}

TEST(PageWalk, ASparseThreadReadsGrowingWindowsDownToTheLogStart) {
  FakeTiers tiers({{10, Entry(10)}, {50'000, Entry(50'000)}});
  PageWalk walk(Query(Direction::kNewest, 5), kPartition, 100'000, 0, true);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), (std::vector<int64_t>{10, 50'000}));
  EXPECT_FALSE(page.has_more_before);
  EXPECT_EQ(tiers.recent_reads,
            (std::vector<OffsetRange>{
                {95'904, 100'000}, {79'520, 95'904}, {13'984, 79'520}, {0, 13'984}}));
  EXPECT_TRUE(tiers.archive_reads.empty()) << "nothing lies below the log start";
}

TEST(PageWalk, BackwardAcrossTheSeamAsksTheArchiveOnlyForWhatKafkaLacks) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, 1200);
  {
    PageWalk walk(Query(Direction::kNewest, 8), kPartition, 2000, 1000, true);
    const auto page = tiers.Drive(walk);
    EXPECT_EQ(Offsets(page.events), Every(1200, 100, 2000));
    EXPECT_TRUE(page.has_more_before);
    EXPECT_TRUE(tiers.archive_reads.empty()) << "Kafka held the page";
  }
  PageWalk walk(Query(Direction::kNewest, 15), kPartition, 2000, 1000, true);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), Every(500, 100, 2000));
  EXPECT_TRUE(page.has_more_before);
  EXPECT_TRUE(page.missing.empty());
  EXPECT_EQ(tiers.archive_reads, (std::vector<OffsetRange>{{0, 1000}}));
}

TEST(PageWalk, RetentionMovedSinceTheTailerLookedTheArchiveServesTheRest) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, 1200);
  PageWalk walk(Query(Direction::kNewest, 15), kPartition, 2000, -1, true);  // start unknown
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), Every(500, 100, 2000));
  EXPECT_TRUE(page.missing.empty());
  EXPECT_EQ(tiers.recent_reads, (std::vector<OffsetRange>{{0, 2000}, {1000, 2000}}));
  EXPECT_EQ(tiers.archive_reads, (std::vector<OffsetRange>{{0, 1000}}));
}

TEST(PageWalk, WithoutAnArchiveThePageNamesTheHoleBeforeTheLogStart) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, -1);
  PageWalk walk(Query(Direction::kNewest, 100), kPartition, 2000, 1000, false);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), Every(1000, 100, 2000));
  EXPECT_FALSE(page.has_more_before) << "nothing older can be read";
  ASSERT_EQ(page.missing.size(), 1U);
  EXPECT_EQ(page.missing[0].partition, kPartition);
  EXPECT_EQ(page.missing[0].from_offset, 0);
  EXPECT_EQ(page.missing[0].to_offset, 1000);
}

TEST(PageWalk, AnArchiveBehindRetentionLeavesANamedHole) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, 600);
  PageWalk walk(Query(Direction::kNewest, 100), kPartition, 2000, 1000, true);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), (std::vector<int64_t>{100, 200, 300, 400, 500, 1000, 1100, 1200,
                                                        1300, 1400, 1500, 1600, 1700, 1800, 1900}));
  ASSERT_EQ(page.missing.size(), 1U);
  EXPECT_EQ(page.missing[0].from_offset, 600);
  EXPECT_EQ(page.missing[0].to_offset, 1000);
}

TEST(PageWalk, BeforeACursorBelowTheLogStartReadsTheArchiveOnly) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, 1200);
  PageWalk walk(Query(Direction::kBefore, 3, 1001), kPartition, 2000, 1000, true);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), (std::vector<int64_t>{700, 800, 900}));
  EXPECT_TRUE(page.has_more_before);
  EXPECT_TRUE(page.has_more_after);
  EXPECT_EQ(page.end_next_offset, 901) << "after the last event returned";
  EXPECT_TRUE(tiers.recent_reads.empty());
}

TEST(PageWalk, ABeforePageWithNothingOlderEndsBeforeTheCursorsEvent) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 0, -1);
  PageWalk walk(Query(Direction::kBefore, 3, 101), kPartition, 2000, 0, false);
  const auto page = tiers.Drive(walk);
  EXPECT_TRUE(page.events.empty());
  EXPECT_FALSE(page.has_more_before);
  EXPECT_EQ(page.end_next_offset, 100);
}

TEST(PageWalk, ForwardFromTheArchiveIntoKafka) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, 1200);
  {
    PageWalk walk(Query(Direction::kAfter, 5, 301), kPartition, 2000, 1000, true);
    const auto page = tiers.Drive(walk);
    EXPECT_EQ(Offsets(page.events), Every(400, 100, 900));
    EXPECT_TRUE(page.has_more_after);
    EXPECT_TRUE(page.has_more_before);
    EXPECT_EQ(page.end_next_offset, 801);
    EXPECT_TRUE(tiers.recent_reads.empty());
  }
  PageWalk walk(Query(Direction::kAfter, 20, 301), kPartition, 2000, 1000, true);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), Every(400, 100, 2000));
  EXPECT_FALSE(page.has_more_after);
  EXPECT_EQ(page.end_next_offset, 2000) << "the log's end";
  EXPECT_TRUE(page.missing.empty());
}

TEST(PageWalk, ForwardMeetsAHoleOnlyWhenItReachesIt) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, 600);
  {
    PageWalk walk(Query(Direction::kAfter, 1, 301), kPartition, 2000, 1000, true);
    const auto page = tiers.Drive(walk);
    EXPECT_EQ(Offsets(page.events), (std::vector<int64_t>{400}));
    EXPECT_TRUE(page.missing.empty()) << "the page ends before the hole";
  }
  PageWalk walk(Query(Direction::kAfter, 4, 301), kPartition, 2000, 1000, true);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), (std::vector<int64_t>{400, 500, 1000, 1100}));
  ASSERT_EQ(page.missing.size(), 1U);
  EXPECT_EQ(page.missing[0].from_offset, 600);
  EXPECT_EQ(page.missing[0].to_offset, 1000);
}

TEST(PageWalk, ForwardWithoutAnArchiveSkipsTheHoleEvenWhenTheStartWasStale) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 1000, -1);
  PageWalk walk(Query(Direction::kAfter, 3, 301), kPartition, 2000, 0, false);
  const auto page = tiers.Drive(walk);
  EXPECT_EQ(Offsets(page.events), (std::vector<int64_t>{1000, 1100, 1200}));
  ASSERT_EQ(page.missing.size(), 1U);
  EXPECT_EQ(page.missing[0].from_offset, 301);
  EXPECT_EQ(page.missing[0].to_offset, 1000);
  EXPECT_FALSE(page.has_more_before) << "nothing before the cursor can be read";
}

TEST(PageWalk, AfterTheLogsEndIsAnEmptyPageThatKeepsTheCursor) {
  FakeTiers tiers(EventsEvery(100, 100, 2000), 0, -1);
  PageWalk walk(Query(Direction::kAfter, 3, 2500), kPartition, 2000, 0, false);
  const auto page = tiers.Drive(walk);
  EXPECT_TRUE(page.events.empty());
  EXPECT_FALSE(page.has_more_after);
  EXPECT_EQ(page.end_next_offset, 2500) << "never before the client's cursor";
  EXPECT_TRUE(tiers.recent_reads.empty());
}

TEST(ThreadPageJson, FramesSplicedAsTheyAre) {
  ThreadPage page;
  page.thread_id = "t-\"1\"";
  page.frames = {
      std::make_shared<const std::string>(R"({"type":"event","cursor":"A","event":{}})"),
      std::make_shared<const std::string>(R"({"type":"event","cursor":"B","event":{}})")};
  page.has_more_before = true;
  page.end_cursor = "B";
  page.missing = {{3, 0, 10}, {3, 20, 25}};
  const std::string body = ThreadPageJson(page);
  EXPECT_NE(body.find(R"("events":[{"type":"event","cursor":"A","event":{}},{"type")"),
            std::string::npos)
      << body;
  const auto json = nlohmann::json::parse(body);
  EXPECT_EQ(json["thread_id"], "t-\"1\"");
  ASSERT_EQ(json["events"].size(), 2U);
  EXPECT_EQ(json["events"][1]["cursor"], "B");
  EXPECT_EQ(json["has_more_before"], true);
  EXPECT_EQ(json["has_more_after"], false);
  EXPECT_EQ(json["end_cursor"], "B");
  ASSERT_EQ(json["missing"].size(), 2U);
  EXPECT_EQ(json["missing"][1],
            (nlohmann::json{{"partition", 3}, {"from_offset", 20}, {"to_offset", 25}}));
}

TEST(ThreadPageJson, AnEmptyPage) {
  ThreadPage page;
  page.thread_id = "t";
  page.end_cursor = "C";
  EXPECT_EQ(ThreadPageJson(page),
            R"({"thread_id":"t","events":[],"has_more_before":false,"has_more_after":false,)"
            R"("end_cursor":"C","missing":[]})");
}

}  // namespace
}  // namespace agentwire::gateway
