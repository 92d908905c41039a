// The Session state machine with a fake transport on one side and the replica's own context on
// the other (no Kafka: the history reader is never started, the test hands chunks over as it
// would). Covers what a hostile or careless client can do to a session: half-close while a write
// waits, stop reading while holding catch-up budget; and the order of a `reset` against the
// catch-up events fetched before it.
#include "session.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/metrics.hpp"
#include "gateway_context.hpp"

namespace agentwire::gateway {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// What the fake transport saw and holds; shared with the test (the session owns the transport).
struct Wire {
  struct Written {
    std::string frame;
    FrameKind kind;
  };
  std::vector<Written> written;
  bool stall_writes = false;  // a client that reads nothing: writes never complete
  Transport::Done pending_write;
  Transport::Done pending_read;
  bool aborted = false;
  bool closed = false;
  int close_code = 0;
};

class FakeTransport final : public Transport {
 public:
  FakeTransport(asio::io_context& ioc, std::shared_ptr<Wire> wire)
      : strand_(asio::make_strand(ioc)), wire_(std::move(wire)) {}

  asio::any_io_executor GetExecutor() override { return strand_; }
  std::string_view Name() const override { return "fake"; }
  void Accept(const Request& /*request*/, Done done) override { Complete(std::move(done), {}); }
  void Write(const Frame& frame, FrameKind kind, bool /*more_follows*/, Done done) override {
    wire_->written.push_back({*frame, kind});
    if (wire_->stall_writes) {
      wire_->pending_write = std::move(done);
      return;
    }
    Complete(std::move(done), {});
  }
  void Read(Done done) override { wire_->pending_read = std::move(done); }
  void Close(boost::beast::websocket::close_code code, const std::string& /*reason*/,
             Done done) override {
    wire_->closed = true;
    wire_->close_code = static_cast<int>(code);
    Complete(std::move(done), {});
  }
  void Abort() override {
    wire_->aborted = true;
    // As a socket's close does: every pending operation completes with operation_aborted.
    if (wire_->pending_write) Complete(std::exchange(wire_->pending_write, {}), Aborted());
    if (wire_->pending_read) Complete(std::exchange(wire_->pending_read, {}), Aborted());
  }
  std::optional<std::chrono::milliseconds> KeepAliveInterval() const override {
    return std::nullopt;
  }

 private:
  static boost::beast::error_code Aborted() { return asio::error::operation_aborted; }
  void Complete(Done done, boost::beast::error_code ec) {
    asio::post(strand_, [done = std::move(done), ec] { done(ec); });
  }
  asio::strand<asio::io_context::executor_type> strand_;
  std::shared_ptr<Wire> wire_;
};

constexpr int64_t kAttachPoint = 10;  // where the (fake) tail of partition 0 starts

class SessionTest : public ::testing::Test {
 protected:
  void MakeContext(const std::function<void(GatewayConfig&)>& tweak = {}) {
    GatewayConfig config;
    config.client_properties = {{"bootstrap.servers", "127.0.0.1:1"}};
    config.auth.hs256_secret = "session-test-secret-0123456789abcdef";
    config.catchup_session_bytes = 64 * 1024;
    config.catchup_buffer_bytes = 1 << 20;
    if (tweak) tweak(config);
    context_ = std::make_shared<GatewayContext>(
        config, TopicIdentity::Of(config.topic, config.topic_epoch, 1), registry_);
    // Partition 0 is read from kAttachPoint on: a cursor below it catches up from Kafka.
    context_->hub.StartTail(0, kAttachPoint);
  }

  std::shared_ptr<Session> StartSession(int64_t cursor_offset) {
    StartPosition start;
    start.kind = StartPosition::Kind::kCursor;
    start.next_offset = cursor_offset;
    auto session = std::make_shared<Session>(std::make_unique<FakeTransport>(ioc_, wire_), context_,
                                             "alice", 0, start, SessionFilters{}, 1);
    session->Run({});
    ioc_.poll();
    ioc_.restart();
    return session;
  }

  LogEntryPtr Entry(int64_t offset, size_t padding = 0) const {
    auto entry = std::make_shared<LogEntry>();
    entry->offset = offset;
    entry->user_id = "alice";
    entry->run_id = "run-1";
    entry->cursor = context_->identity.CursorAt(0, offset + 1);
    entry->SetFrame(std::make_shared<const std::string>(
        R"({"type":"event","cursor":")" + EncodeCursor(entry->cursor) + R"(","event":{"offset":)" +
        std::to_string(offset) + R"(,"pad":")" + std::string(padding, 'p') + R"("}})"));
    return entry;
  }

  /// A history chunk as the reader hands it over: its bytes charged to the budget first.
  HistoryChunk Chunk(HistoryChunk::Status status, std::vector<LogEntryPtr> entries,
                     int64_t next_offset) {
    HistoryChunk chunk;
    chunk.status = status;
    chunk.next_offset = next_offset;
    for (const auto& entry : entries) {
      context_->catchup_budget.Charge("alice", entry->Bytes());
      chunk.charged_bytes += entry->Bytes();
    }
    chunk.entries = std::move(entries);
    return chunk;
  }

  void TearDown() override {
    // Ends what the fake left pending, so every session is gone before the fixture is.
    wire_->stall_writes = false;
    for (int round = 0; round < 3; ++round) {
      for (auto* pending : {&wire_->pending_write, &wire_->pending_read}) {
        if (*pending) {
          asio::post(
              ioc_, [done = std::exchange(*pending, {})] { done(asio::error::operation_aborted); });
        }
      }
      RunFor(10ms);
    }
  }

  void RunFor(std::chrono::milliseconds duration) {
    ioc_.run_for(duration);
    ioc_.restart();
  }

  metrics::Registry registry_;
  asio::io_context ioc_;
  std::shared_ptr<Wire> wire_ = std::make_shared<Wire>();
  std::shared_ptr<GatewayContext> context_;
};

TEST_F(SessionTest, AResetFollowsTheCatchupEventsFetchedBeforeIt) {
  MakeContext();
  auto session = StartSession(0);
  // Retention removed the rest of the range while the reader was in it: the chunk carries the
  // events read before, then says the history is gone.
  session->OnHistory(Chunk(HistoryChunk::Status::kOutOfRange, {Entry(3), Entry(4)}, 5));
  RunFor(100ms);
  std::vector<std::string> types;
  for (const auto& written : wire_->written) {
    types.push_back(written.frame.substr(9, written.frame.find('"', 9) - 9));
  }
  EXPECT_EQ(types, (std::vector<std::string>{"event", "event", "reset", "ready"}))
      << "the reset overtook events of the log before it";
  EXPECT_EQ(context_->catchup_budget.Buffered(), 0u);
}

TEST_F(SessionTest, AHalfClosedClientWithAWriteInFlightIsDroppedAndReleasesEverything) {
  MakeContext([](GatewayConfig& config) { config.catchup_stall_timeout = 0ms; });
  wire_->stall_writes = true;
  std::weak_ptr<Session> weak;
  {
    auto session = StartSession(0);
    weak = session;
    session->OnHistory(Chunk(HistoryChunk::Status::kMore, {Entry(0, 1000), Entry(1, 1000)}, 2));
    RunFor(50ms);
  }
  ASSERT_TRUE(wire_->pending_write) << "the first catch-up write should be waiting";
  ASSERT_TRUE(wire_->pending_read);
  // The client shuts down its sending side: the read ends with eof, the write still waits.
  asio::post(ioc_, [done = std::exchange(wire_->pending_read, {})] { done(asio::error::eof); });
  RunFor(100ms);
  EXPECT_TRUE(wire_->aborted) << "nothing dropped the connection of a client that left";
  EXPECT_TRUE(weak.expired()) << "the session (and its connection slot) is still held";
  EXPECT_EQ(context_->catchup_budget.Buffered(), 0u);
}

TEST_F(SessionTest, ASessionHoldingCatchupBudgetWhoseClientStopsReadingIsClosedWith1013) {
  MakeContext([](GatewayConfig& config) { config.catchup_stall_timeout = 100ms; });
  wire_->stall_writes = true;
  auto session = StartSession(0);
  session->OnHistory(
      Chunk(HistoryChunk::Status::kMore, {Entry(0, 1000), Entry(1, 1000), Entry(2, 1000)}, 3));
  RunFor(20ms);
  ASSERT_TRUE(wire_->pending_write);
  EXPECT_GT(context_->catchup_budget.Buffered(), 0u);
  // No write completes: after the stall timeout the session gives its share back and closes.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (context_->metrics.catchup_stalled_closes.Value() == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    RunFor(20ms);
  }
  EXPECT_EQ(context_->metrics.catchup_stalled_closes.Value(), 1u);
  EXPECT_EQ(context_->catchup_budget.Buffered(), 0u) << "the stalled session kept its bytes";
  // The write in flight finally completes (or is aborted): the close frame goes out, 1013.
  asio::post(ioc_, [done = std::exchange(wire_->pending_write, {})] { done({}); });
  wire_->stall_writes = false;
  RunFor(50ms);
  EXPECT_TRUE(wire_->closed);
  EXPECT_EQ(wire_->close_code, 1013);
}

// The archive as the cold tier (issue 23), driven the same way: the test plays Kafka's history
// reader and the archive reader, handing the session the chunks each would. The archive's DSN
// is set (the path is on) but its pool never starts, so nothing reaches PostgreSQL.
class SessionArchiveTest : public SessionTest {
 protected:
  static constexpr int64_t kLogStart = 7;  // Kafka's log start; the tail is at kAttachPoint (10)

  void MakeArchiveContext(bool with_archive) {
    MakeContext([with_archive](GatewayConfig& config) {
      if (with_archive) config.archive.dsn = "host=127.0.0.1 port=1";
    });
  }
  HistoryChunk ArchiveChunk(HistoryChunk::Status status, std::vector<LogEntryPtr> entries,
                            int64_t next_offset) {
    auto chunk = Chunk(status, std::move(entries), next_offset);
    chunk.source = HistoryChunk::Source::kArchive;
    return chunk;
  }
  /// Kafka's answer to a read that starts before its log start.
  HistoryChunk BeforeLogStart(int64_t from) {
    auto chunk = Chunk(HistoryChunk::Status::kOutOfRange, {}, from);
    chunk.log_start = kLogStart;
    return chunk;
  }
  void Hand(const std::shared_ptr<Session>& session, HistoryChunk chunk) {
    session->OnHistory(std::move(chunk));
    RunFor(20ms);
  }
  /// "event:N", "ready", "reset" or "reset:A-B" (its missing range), in the order written.
  std::vector<std::string> Written() const {
    std::vector<std::string> out;
    for (const auto& written : wire_->written) {
      const auto json = nlohmann::json::parse(written.frame, nullptr, false);
      const auto type = json.value("type", "");
      if (type == "event") {
        out.push_back("event:" + std::to_string(json["event"].value("offset", -1)));
      } else if (type == "reset" && json.contains("missing")) {
        out.push_back("reset:" + std::to_string(json["missing"].value("from_offset", -1)) + "-" +
                      std::to_string(json["missing"].value("to_offset", -1)));
      } else {
        out.push_back(type);
      }
    }
    return out;
  }
};

TEST_F(SessionArchiveTest, BeforeTheLogStartTheArchiveThenKafkaEveryEventOnceNoReset) {
  MakeArchiveContext(true);
  auto session = StartSession(2);
  Hand(session, BeforeLogStart(2));  // Kafka: [2, 7) is gone; the session asks the archive
  // The archive answers one chunk at a time, each asked for once the last was written.
  Hand(session, ArchiveChunk(HistoryChunk::Status::kMore, {Entry(3), Entry(4)}, 5));
  Hand(session, ArchiveChunk(HistoryChunk::Status::kDone, {Entry(6)}, kLogStart));
  // From the log start on, Kafka again, up to the tail.
  Hand(session, Chunk(HistoryChunk::Status::kDone, {Entry(8), Entry(9)}, kAttachPoint));
  EXPECT_EQ(Written(), (std::vector<std::string>{"event:3", "event:4", "event:6", "event:8",
                                                 "event:9", "ready"}));
  EXPECT_EQ(context_->metrics.resumes_archive.Value(), 1u);
  EXPECT_EQ(context_->metrics.resets.Value(), 0u);
  EXPECT_EQ(context_->catchup_budget.Buffered(), 0u);
}

TEST_F(SessionArchiveTest, AnArchiveBehindRetentionGivesAResetNamingOnlyTheHole) {
  MakeArchiveContext(true);
  auto session = StartSession(2);
  Hand(session, BeforeLogStart(2));
  // The archive's position is 5: [5, 7) exists nowhere.
  Hand(session, ArchiveChunk(HistoryChunk::Status::kOutOfRange, {Entry(3), Entry(4)}, 5));
  Hand(session, Chunk(HistoryChunk::Status::kDone, {Entry(8)}, kAttachPoint));
  EXPECT_EQ(Written(),
            (std::vector<std::string>{"event:3", "event:4", "reset:5-7", "event:8", "ready"}));
  EXPECT_EQ(context_->metrics.missing_offsets.Value(), 2u);
}

TEST_F(SessionArchiveTest, WithoutAnArchiveOnlyTheHoleIsSkippedNotWhatKafkaStillHolds) {
  MakeArchiveContext(false);
  auto session = StartSession(2);
  Hand(session, BeforeLogStart(2));
  Hand(session, Chunk(HistoryChunk::Status::kDone, {Entry(7), Entry(9)}, kAttachPoint));
  EXPECT_EQ(Written(), (std::vector<std::string>{"reset:2-7", "event:7", "event:9", "ready"}));
}

TEST_F(SessionArchiveTest, PostgresFailingClosesWith1013AndDeliversNothingPastIt) {
  MakeArchiveContext(true);
  auto session = StartSession(2);
  Hand(session, BeforeLogStart(2));
  auto failed = ArchiveChunk(HistoryChunk::Status::kError, {}, 2);
  failed.error = "archive unreachable: connection refused";
  Hand(session, std::move(failed));
  RunFor(50ms);
  EXPECT_EQ(Written(), std::vector<std::string>{});
  EXPECT_TRUE(wire_->closed);
  EXPECT_EQ(wire_->close_code, 1013);
}

TEST(CatchupBudgetTest, OneUserCannotHoldMoreThanAFairShare) {
  metrics::Registry registry;
  CatchupBudget budget(1000, 100, registry.GetGauge("b", "b"), registry.GetGauge("p", "p"));
  EXPECT_EQ(budget.FairShare(), 1000u);  // nobody holds anything
  budget.Charge("mallory", 499);
  EXPECT_FALSE(budget.UserOverShare("mallory"));  // alone: 1000 / 2
  budget.Charge("mallory", 1);
  EXPECT_TRUE(budget.UserOverShare("mallory"));
  EXPECT_FALSE(budget.UserOverShare("carol"));
  budget.Charge("carol", 10);
  EXPECT_EQ(budget.FairShare(), 333u);  // two users hold bytes: a third of it each
  EXPECT_FALSE(budget.UserOverShare("carol"));
  budget.Release("mallory", 500);
  EXPECT_EQ(budget.UserBytes("mallory"), 0u);
  EXPECT_EQ(budget.Buffered(), 10u);
  // Never below the floor (one session's worth), however many users hold bytes.
  for (int i = 0; i < 50; ++i) budget.Charge("user-" + std::to_string(i), 1);
  EXPECT_EQ(budget.FairShare(), 100u);
}

}  // namespace
}  // namespace agentwire::gateway
