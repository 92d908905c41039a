// The archive as the log's cold tier (issue 23; docs/architecture.md "History past retention"):
// a client whose cursor lies before Kafka's log start is served from PostgreSQL up to the
// archive's committed position, then from Kafka, then live: every event once, in order, over
// WebSocket and SSE, from a fresh replica that never saw the events. `reset` remains only for a
// real hole (the archive fell behind retention), and names it; PostgreSQL down makes such a
// resume fail visibly (1013, retried later) without touching anyone else's delivery.
//
// Real processes where it matters: `agentwire archive` writes PostgreSQL (a throwaway cluster)
// from the embedded Kafka, whose ~5 MiB per-partition cap is the retention that deletes the
// early events.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <thread>

#include "agentwire/core/cursor.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/gateway_harness.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/sse_client.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kPartitions = 1;  // every user shares the partition: filler pushes out anyone's
constexpr const char* kUser = "alice";

class GatewayArchiveResume : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<GatewayHarness>(kPartitions, 1, "archive.resume.v1");
    dsn_ = SharedPostgres().CreateDatabase("archive_resume");
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness_->Kafka().BootstrapServers()},
                                {"linger.ms", "5"}};
    config.topic = harness_->Topic();
    publisher_ = std::make_unique<producers::EventPublisher>(config);
    StartArchive();
  }
  void TearDown() override {
    if (archive_) archive_->Signal(SIGCONT);
    archive_.reset();
    harness_->StopGateway();
  }

  void StartArchive() {
    archive_ = std::make_unique<Subprocess>(
        ConsumerCommand("archive", harness_->Kafka().BootstrapServers(), dsn_,
                        {"--topic", harness_->Topic(), "--writers", "1", "--batch-ms", "20"}));
  }

  /// The archive's committed position for the partition (-1 before its first batch).
  int64_t Archived() {
    try {
      return SharedPostgres().QueryInt(dsn_,
                                       "SELECT coalesce(max(next_offset), -1) FROM "
                                       "consumer_offsets WHERE group_id = 'agentwire-archive'");
    } catch (const std::runtime_error&) {
      return -1;  // the archive has not created its tables yet
    }
  }
  PartitionWatermarks Marks() {
    return Watermarks(harness_->Kafka().BootstrapServers(), harness_->Topic(), 10s).at(0);
  }
  /// Waits until the archive has written everything Kafka holds now.
  void WaitArchivedToEnd() {
    const int64_t high = Marks().high;
    const auto deadline = Clock::now() + 90s;
    while (Archived() < high) {
      ASSERT_LT(Clock::now(), deadline) << archive_->Describe();
      ASSERT_TRUE(archive_->Running()) << archive_->Describe();
      std::this_thread::sleep_for(100ms);
    }
  }

  /// Publishes `user`'s event `id` (agent_thinking of run r-<user>) and returns nothing: the
  /// caller flushes.
  void Publish(const std::string& user, const std::string& id, size_t text_bytes = 16) {
    v1::AgentEvent event;
    event.set_event_id(id);
    event.set_user_id(user);
    event.set_thread_id("t-" + user);
    event.set_run_id("r-" + user);
    event.set_run_seq(++seq_[user]);
    event.mutable_agent_thinking()->set_text(IncompressibleText(text_bytes));
    ASSERT_EQ(publisher_->Publish(event, {}, 30s), producers::PublishStatus::kAccepted);
  }
  void Flush() { ASSERT_EQ(publisher_->Flush(60s), 0U); }

  /// Filler of another user until Kafka's log start passes `offset` (retention deleted it).
  void PushOutOfKafka(int64_t offset) {
    for (int round = 0; Marks().low <= offset; ++round) {
      ASSERT_LT(round, 6) << "the filler did not move the log start past " << offset;
      for (int i = 0; i < 4'000; ++i) {
        Publish("filler", "filler-" + std::to_string(round) + "-" + std::to_string(i), 700);
      }
      Flush();
    }
  }

  /// The offset of the event `id` in Kafka or the archive (the archive keeps them all).
  int64_t OffsetOf(const std::string& id) {
    return SharedPostgres().QueryInt(
        dsn_, "SELECT \"offset\" FROM agent_events WHERE event_id = '" + id + "'");
  }

  /// The cursor a client holds after receiving the event at `offset`.
  std::string CursorAfter(int64_t offset) const {
    return EncodeCursor(
        TopicIdentity::Of(harness_->Topic(), 1, kPartitions).CursorAt(0, offset + 1));
  }

  void StartGateway(bool with_archive) {
    harness_->StopGateway();
    harness_->StartGateway([&](gateway::GatewayConfig& config) {
      if (with_archive) config.archive.dsn = dsn_;
    });
  }

  /// What a WebSocket client resuming from `cursor` receives until `ready`: event ids, and
  /// "(reset a-b)" for a reset naming the missing offsets [a, b).
  std::vector<std::string> ResumeOverWebSocket(const std::string& cursor, int* close_code) {
    WsClient client;
    const auto handshake =
        client.Connect(harness_->ClientOptions(kUser, "cursor=" + cursor + "&thread_id=t-alice"));
    EXPECT_EQ(handshake.status, 101) << handshake.body;
    std::vector<std::string> received;
    const auto deadline = Clock::now() + 60s;
    while (Clock::now() < deadline && !client.Closed()) {
      const auto text = client.Read(200ms);
      if (!text) continue;
      const auto frame = ParseFrame(*text);
      if (!frame) continue;
      if (frame->type == "ready") break;
      if (frame->type == "event") received.push_back(frame->event_id);
      if (frame->type == "reset") received.push_back(ResetText(frame->json));
    }
    if (close_code != nullptr) *close_code = client.Closed() ? client.CloseCode() : 0;
    return received;
  }
  /// The same over Server-Sent Events (Last-Event-ID carries the cursor, as EventSource does).
  std::vector<std::string> ResumeOverSse(const std::string& cursor) {
    SseClient client;
    SseClient::Options options;
    options.port = harness_->Port();
    options.target = "/v1/events?thread_id=t-alice";
    options.bearer = harness_->Token(kUser);
    options.last_event_id = cursor;
    EXPECT_EQ(client.Connect(options).status, 200);
    std::vector<std::string> received;
    const auto deadline = Clock::now() + 60s;
    while (Clock::now() < deadline && !client.Ended()) {
      const auto event = client.Next(200ms);
      if (!event) continue;
      if (event->event == "ready") break;
      const auto json = nlohmann::json::parse(event->data, nullptr, false);
      if (event->event == "reset") received.push_back(ResetText(json));
      // SSE's data of an `event` is the event itself (docs/protocol.md).
      if (event->event == "event") received.push_back(json.value("event_id", ""));
    }
    return received;
  }
  static std::string ResetText(const nlohmann::json& reset) {
    if (!reset.contains("missing")) return "(reset)";
    return "(reset " + std::to_string(reset["missing"].value("from_offset", -1)) + "-" +
           std::to_string(reset["missing"].value("to_offset", -1)) + ")";
  }

  std::unique_ptr<GatewayHarness> harness_;
  std::string dsn_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  std::unique_ptr<Subprocess> archive_;
  std::map<std::string, uint32_t> seq_;
};

std::vector<std::string> Ids(const std::string& prefix, int from, int to) {
  std::vector<std::string> ids;
  for (int i = from; i <= to; ++i) ids.push_back(prefix + std::to_string(i));
  return ids;
}

std::vector<std::string> Concat(std::vector<std::vector<std::string>> parts) {
  std::vector<std::string> all;
  for (auto& part : parts) all.insert(all.end(), part.begin(), part.end());
  return all;
}

TEST_F(GatewayArchiveResume, CursorBeforeTheLogStartIsServedFromTheArchiveThenKafka) {
  // alice's early events, archived, then deleted from Kafka by other users' traffic.
  for (const auto& id : Ids("early-", 1, 10)) Publish(kUser, id);
  Flush();
  WaitArchivedToEnd();
  PushOutOfKafka(OffsetOf("early-10"));
  // Later events, still in Kafka; the archive is stopped before they come, so the resume
  // crosses the seam at the archive's committed position (behind Kafka's end).
  WaitArchivedToEnd();
  archive_->Signal(SIGSTOP);
  for (const auto& id : Ids("late-", 1, 5)) Publish(kUser, id);
  Flush();

  const std::string cursor = CursorAfter(OffsetOf("early-1"));
  const auto expected = Concat({Ids("early-", 2, 10), Ids("late-", 1, 5)});

  // A fresh replica (nothing cached: warm start reads only what Kafka holds).
  StartGateway(/*with_archive=*/true);
  int close_code = -1;
  EXPECT_EQ(ResumeOverWebSocket(cursor, &close_code), expected);
  EXPECT_EQ(close_code, 0);
  EXPECT_EQ(ResumeOverSse(cursor), expected);
  EXPECT_GE(MetricValue(harness_->Port(), R"(agentwire_gateway_resumes_total{source="archive"})"),
            2);
  EXPECT_EQ(MetricValue(harness_->Port(), "agentwire_gateway_resets_total"), 0);

  // Without an archive the same cursor gets `reset` naming what is gone, then the rest.
  StartGateway(/*with_archive=*/false);
  const auto low = Marks().low;
  const auto without = ResumeOverWebSocket(cursor, nullptr);
  EXPECT_EQ(without, Concat({{"(reset " + std::to_string(OffsetOf("early-1") + 1) + "-" +
                              std::to_string(low) + ")"},
                             Ids("late-", 1, 5)}));
}

TEST_F(GatewayArchiveResume, ArchiveBehindRetentionResetNamesTheHoleAndNothingElseIsLost) {
  for (const auto& id : Ids("kept-", 1, 3)) Publish(kUser, id);
  Flush();
  WaitArchivedToEnd();
  // The archive stops; alice's next events are deleted by retention before it comes back.
  archive_->Signal(SIGSTOP);
  const int64_t seam = Archived();
  for (const auto& id : Ids("gone-", 1, 3)) Publish(kUser, id);
  Flush();
  PushOutOfKafka(seam + 2);  // gone-1..3 are seam, seam + 1, seam + 2
  for (const auto& id : Ids("after-", 1, 3)) Publish(kUser, id);
  Flush();
  const int64_t low = Marks().low;
  ASSERT_GT(low, seam);

  const std::string cursor = CursorAfter(OffsetOf("kept-1"));
  StartGateway(/*with_archive=*/true);
  EXPECT_EQ(ResumeOverWebSocket(cursor, nullptr),
            Concat({Ids("kept-", 2, 3),
                    {"(reset " + std::to_string(seam) + "-" + std::to_string(low) + ")"},
                    Ids("after-", 1, 3)}));
  EXPECT_EQ(MetricValue(harness_->Port(), "agentwire_gateway_history_missing_offsets_total"),
            static_cast<double>(low - seam));
}

TEST_F(GatewayArchiveResume, PostgresDownFailsTheArchiveResumeVisiblyAndNobodyElseWaits) {
  for (const auto& id : Ids("early-", 1, 5)) Publish(kUser, id);
  Flush();
  WaitArchivedToEnd();
  PushOutOfKafka(OffsetOf("early-5"));
  WaitArchivedToEnd();
  const std::string cursor = CursorAfter(OffsetOf("early-1"));
  StartGateway(/*with_archive=*/true);

  // bob is live on the same replica (and partition) the whole time.
  WsClient bob;
  ASSERT_EQ(bob.Connect(harness_->ClientOptions("bob")).status, 101);
  ASSERT_FALSE(ReadUntil(
                   bob, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s)
                   .empty());

  archive_->Signal(SIGSTOP);  // it would only retry; keep its reconnects out of the picture
  SharedPostgres().Stop();
  int close_code = 0;
  const auto during = ResumeOverWebSocket(cursor, &close_code);
  EXPECT_TRUE(during.empty()) << "nothing may be delivered past a hole it cannot read";
  EXPECT_EQ(close_code, 1013) << "the client must be told to come back later";
  for (const auto& id : Ids("bob-", 1, 3)) Publish("bob", id);
  Flush();
  const auto bob_frames = ReadUntil(
      bob,
      [](const auto& frames) {
        return std::count_if(frames.begin(), frames.end(),
                             [](const Frame& f) { return f.type == "event"; }) == 3;
      },
      30s);
  EXPECT_EQ(std::count_if(bob_frames.begin(), bob_frames.end(),
                          [](const Frame& f) { return f.type == "event"; }),
            3)
      << "live delivery must not wait for PostgreSQL";

  SharedPostgres().Start();
  // The client retries with the same cursor once PostgreSQL is back (the pool reconnects).
  std::vector<std::string> after;
  const auto deadline = Clock::now() + 30s;
  do {
    close_code = 0;
    after = ResumeOverWebSocket(cursor, &close_code);
    if (close_code != 1013) break;
    std::this_thread::sleep_for(300ms);
  } while (Clock::now() < deadline);
  EXPECT_EQ(after, Ids("early-", 2, 5));
}

TEST_F(GatewayArchiveResume, AiSdkStreamOfARunWhoseStartRetentionDeletedReplaysFromTheArchive) {
  // A long run: its agent_started and first thoughts are archived, then deleted from Kafka.
  v1::AgentEvent started;
  started.set_event_id("ai-start");
  started.set_user_id(kUser);
  started.set_thread_id("t-ai");
  started.set_run_id("r-ai");
  started.set_run_seq(1);
  started.set_agent_name("writer");
  started.mutable_agent_started();
  ASSERT_EQ(publisher_->Publish(started, {}, 30s), producers::PublishStatus::kAccepted);
  auto think = [&](int n) {
    v1::AgentEvent event = started;
    event.set_event_id("ai-think-" + std::to_string(n));
    event.set_run_seq(1 + n);
    event.mutable_agent_thinking()->set_text("thought " + std::to_string(n));
    ASSERT_EQ(publisher_->Publish(event, {}, 30s), producers::PublishStatus::kAccepted);
  };
  for (int n = 1; n <= 3; ++n) think(n);
  Flush();
  WaitArchivedToEnd();
  PushOutOfKafka(OffsetOf("ai-think-3"));
  for (int n = 4; n <= 5; ++n) think(n);
  Flush();
  // As a healthy archive does, it holds what Kafka deleted before the stream asks: the filler
  // is a real hole until archived, and a hole ends an AI SDK stream with history_unavailable
  // (seen under TSan, where the archive was still writing the filler).
  WaitArchivedToEnd();

  // A fresh replica never read the run's start: without the archive it knows no run (204).
  StartGateway(/*with_archive=*/false);
  SseClient::Options options;
  options.port = harness_->Port();
  options.target = "/v1/ai-sdk/chats/t-ai/stream";
  options.bearer = harness_->Token(kUser);
  options.accept = "*/*";
  {
    SseClient none;
    EXPECT_EQ(none.Connect(options).status, 204);
  }
  StartGateway(/*with_archive=*/true);
  options.port = harness_->Port();
  SseClient stream;
  ASSERT_EQ(stream.Connect(options).status, 200);
  std::vector<std::string> thoughts;
  while (thoughts.size() < 5) {
    const auto next = stream.Next(15s);
    if (!next) break;
    const auto chunk = nlohmann::json::parse(next->data, nullptr, false);
    if (chunk.is_object() && chunk.value("type", "") == "reasoning-delta") {
      thoughts.push_back(chunk.value("delta", ""));
    }
  }
  EXPECT_EQ(thoughts, (std::vector<std::string>{"thought 1", "thought 2", "thought 3", "thought 4",
                                                "thought 5"}));
}

}  // namespace
}  // namespace agentwire::testing
