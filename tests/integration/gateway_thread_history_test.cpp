// GET /v1/threads/{thread_id}/events (issue 23; docs/protocol.md "A thread's history"): a page
// opens a thread, loads older pages, and goes live from the page's end_cursor with no gap and no
// duplicate. Pages hold exactly one thread of the token's user, oldest first, from the cache,
// from Kafka, and past Kafka's retention from the archive (`agentwire archive` writing a
// throwaway PostgreSQL; the embedded Kafka's ~5 MiB per-partition cap is the retention).
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <csignal>
#include <map>
#include <thread>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/gateway_harness.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr const char* kOrigin = "https://chat.example.com";

// nlohmann::json's destructor is noexcept; the check follows it into throws it cannot reach
// (as for support/gateway_harness.hpp's Frame).
struct Answer {  // NOLINT(bugprone-exception-escape)
  int status = 0;
  std::string body;
  std::string retry_after;
  std::string allow_origin;  // Access-Control-Allow-Origin
  nlohmann::json json;       // the body, parsed (null when it is not JSON)
};

/// One HTTP request with the headers a browser page would send.
Answer Request(uint16_t port, http::verb method, const std::string& target,
               const std::string& token, const std::string& origin = {}) {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket socket(ioc);
  beast::error_code ec;
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return {};
  http::request<http::empty_body> request(method, target, 11);
  request.set(http::field::host, "127.0.0.1");
  if (!token.empty()) request.set(http::field::authorization, "Bearer " + token);
  if (!origin.empty()) request.set(http::field::origin, origin);
  http::write(socket, request, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response, ec);
  Answer answer;
  answer.status = static_cast<int>(response.result_int());
  answer.body = response.body();
  answer.retry_after = std::string(response[http::field::retry_after]);
  answer.allow_origin = std::string(response[http::field::access_control_allow_origin]);
  answer.json = nlohmann::json::parse(answer.body, nullptr, false);
  return answer;
}

/// A 200 page, read.
struct Page {                        // NOLINT(bugprone-exception-escape): as for Answer
  std::vector<std::string> ids;      // event_ids, in the page's order
  std::vector<std::string> cursors;  // each event frame's cursor
  std::vector<std::string> users;
  std::vector<std::string> threads;
  bool has_more_before = false;
  bool has_more_after = false;
  std::string end_cursor;
  nlohmann::json missing;
  nlohmann::json events;  // the frames as JSON
};

Page ReadPage(const Answer& answer) {
  EXPECT_EQ(answer.status, 200) << answer.body;
  Page page;
  if (answer.status != 200 || !answer.json.is_object()) return page;
  page.events = answer.json["events"];
  for (const auto& frame : page.events) {
    EXPECT_EQ(frame.value("type", ""), "event");
    page.cursors.push_back(frame.value("cursor", ""));
    page.ids.push_back(frame["event"].value("event_id", ""));
    page.users.push_back(frame["event"].value("user_id", ""));
    page.threads.push_back(frame["event"].value("thread_id", ""));
  }
  page.has_more_before = answer.json.value("has_more_before", false);
  page.has_more_after = answer.json.value("has_more_after", true);
  page.end_cursor = answer.json.value("end_cursor", "");
  page.missing = answer.json["missing"];
  EXPECT_FALSE(page.end_cursor.empty()) << answer.body;
  return page;
}

std::vector<std::string> Slice(const std::vector<std::string>& all, size_t from, size_t to) {
  return {all.begin() + static_cast<std::ptrdiff_t>(from),
          all.begin() + static_cast<std::ptrdiff_t>(to)};
}

/// Pages backward from the newest with `limit` until has_more_before is false; returns every
/// event id, oldest first, and checks each page's flags and size on the way.
std::vector<std::string> PageBackward(const std::function<Answer(const std::string&)>& get,
                                      size_t limit, std::string* newest_end_cursor = nullptr) {
  std::vector<std::string> all;
  std::string query = "limit=" + std::to_string(limit);
  for (int round = 0; round < 100; ++round) {
    const Page page = ReadPage(get(query));
    if (round == 0) {
      EXPECT_FALSE(page.has_more_after) << "the newest page reaches the log's end";
      if (newest_end_cursor != nullptr) *newest_end_cursor = page.end_cursor;
    } else {
      EXPECT_TRUE(page.has_more_after);
    }
    EXPECT_LE(page.ids.size(), limit);
    all.insert(all.begin(), page.ids.begin(), page.ids.end());
    if (!page.has_more_before) return all;
    EXPECT_EQ(page.ids.size(), limit) << "a page short of its limit says nothing older exists";
    if (page.cursors.empty()) return all;
    query = "before=" + page.cursors.front() + "&limit=" + std::to_string(limit);
  }
  ADD_FAILURE() << "backward paging did not end";
  return all;
}

/// Pages forward from `cursor` with `limit` until has_more_after is false; returns every event
/// id and the last page's end_cursor.
std::vector<std::string> PageForward(const std::function<Answer(const std::string&)>& get,
                                     std::string cursor, size_t limit, std::string* end_cursor) {
  std::vector<std::string> all;
  for (int round = 0; round < 100; ++round) {
    const Page page = ReadPage(get("after=" + cursor + "&limit=" + std::to_string(limit)));
    EXPECT_LE(page.ids.size(), limit);
    all.insert(all.end(), page.ids.begin(), page.ids.end());
    if (!page.has_more_after) {
      *end_cursor = page.end_cursor;
      return all;
    }
    EXPECT_EQ(page.ids.size(), limit);
    EXPECT_EQ(page.end_cursor, page.cursors.back()) << "more follow: resume after the last one";
    cursor = page.end_cursor;
  }
  ADD_FAILURE() << "forward paging did not end";
  return all;
}

/// Subscribes to /v1/events from `cursor` with the thread's filter, calls `publish_live` at
/// `ready` and reads until `expected` events came (and a moment longer, for duplicates); returns
/// the event ids before and after `ready`.
std::pair<std::vector<std::string>, std::vector<std::string>> GoLive(
    GatewayHarness& harness, const std::string& user, const std::string& thread,
    const std::string& cursor, size_t expected, const std::function<void()>& publish_live) {
  WsClient client;
  const auto handshake =
      client.Connect(harness.ClientOptions(user, "cursor=" + cursor + "&thread_id=" + thread));
  EXPECT_EQ(handshake.status, 101) << handshake.body;
  std::vector<std::string> caught_up;
  std::vector<std::string> live_ids;
  bool ready = false;
  auto deadline = Clock::now() + 30s;
  while (Clock::now() < deadline && !client.Closed()) {
    const auto text = client.Read(200ms);
    if (!text) continue;
    const auto frame = ParseFrame(*text);
    if (!frame) continue;
    if (frame->type == "reset") ADD_FAILURE() << "reset: " << *text;
    if (frame->type == "ready") {
      ready = true;
      publish_live();
      deadline = Clock::now() + 30s;
    }
    if (frame->type == "event") (ready ? live_ids : caught_up).push_back(frame->event_id);
    if (ready && caught_up.size() + live_ids.size() >= expected) break;
  }
  EXPECT_TRUE(ready);
  // Anything extra (a duplicate) would arrive now.
  for (auto extra = client.Read(300ms); extra; extra = client.Read(300ms)) {
    if (const auto frame = ParseFrame(*extra); frame && frame->type == "event") {
      live_ids.push_back(frame->event_id);
    }
  }
  return {caught_up, live_ids};
}

/// A user whose events land in `partition` (of `partitions`), other than those in `taken`.
std::string UserIn(int partition, int partitions, const std::vector<std::string>& taken) {
  for (int i = 0;; ++i) {
    std::string user = "user-" + std::to_string(i);
    if (PartitionForKey(user, partitions) == partition &&
        std::find(taken.begin(), taken.end(), user) == taken.end()) {
      return user;
    }
  }
}

class GatewayThreadHistory : public ::testing::Test {
 protected:
  static constexpr int kPartitions = 4;

  void SetUp() override {
    harness_ = std::make_unique<GatewayHarness>(kPartitions, 1, "thread.history.v1");
    alice_ = UserIn(0, kPartitions, {});
    bob_ = UserIn(0, kPartitions, {alice_});  // alice's partition: only filtering keeps them apart
    carol_ = UserIn(1, kPartitions, {});
    // Two threads of alice interleaved, and bob's events in a thread of the same name.
    for (uint32_t i = 1; i <= 25; ++i) {
      alice_a_.push_back(harness_->Publish(alice_, "run-a", i, "t-a"));
      alice_b_.push_back(harness_->Publish(alice_, "run-b", i, "t-b"));
      bob_a_.push_back(harness_->Publish(bob_, "run-bob", i, "t-a"));
    }
    harness_->Publish(carol_, "run-carol", 1, "t-a");
    harness_->Flush();
  }

  /// `archive_dsn`: "" for none.
  void StartGateway(size_t cache_bytes, const std::string& archive_dsn = {}) {
    harness_->StartGateway([cache_bytes, archive_dsn](gateway::GatewayConfig& config) {
      config.cache_bytes = cache_bytes;
      config.allowed_origins = {kOrigin};
      config.archive.dsn = archive_dsn;
    });
  }

  std::function<Answer(const std::string&)> Getter(const std::string& user,
                                                   const std::string& thread) {
    return [this, user, thread](const std::string& query) {
      return Request(harness_->Port(), http::verb::get,
                     "/v1/threads/" + thread + "/events?" + query, harness_->Token(user));
    };
  }

  std::unique_ptr<GatewayHarness> harness_;
  std::string alice_;
  std::string bob_;
  std::string carol_;
  std::vector<std::string> alice_a_;
  std::vector<std::string> alice_b_;
  std::vector<std::string> bob_a_;
};

TEST_F(GatewayThreadHistory, PagesHoldExactlyTheThreadsEventsInOrderFromCacheAndKafka) {
  // The recent-log cache, then no cache at all (every page read from Kafka).
  for (const size_t cache_bytes : {size_t{64} << 20, size_t{0}}) {
    SCOPED_TRACE("cache_bytes=" + std::to_string(cache_bytes));
    StartGateway(cache_bytes);
    const auto thread_a = Getter(alice_, "t-a");

    std::string newest_end;
    EXPECT_EQ(PageBackward(thread_a, 10, &newest_end), alice_a_);
    EXPECT_EQ(PageBackward(thread_a, 1000), alice_a_);
    EXPECT_EQ(PageBackward(Getter(alice_, "t-b"), 7), alice_b_);

    const Page newest = ReadPage(thread_a("limit=10"));
    EXPECT_EQ(newest.ids, Slice(alice_a_, 15, 25));
    EXPECT_TRUE(newest.has_more_before);
    EXPECT_EQ(newest.users, std::vector<std::string>(10, alice_));
    EXPECT_EQ(newest.threads, std::vector<std::string>(10, "t-a"));

    // Forward from the first event's cursor: the rest, and the log's end as end_cursor.
    const Page first = ReadPage(thread_a("limit=1&before=" + newest.cursors.front()));
    ASSERT_EQ(first.ids, Slice(alice_a_, 14, 15));
    const Page oldest = ReadPage(thread_a("limit=100&before=" + first.cursors.front()));
    ASSERT_EQ(oldest.ids.size(), 14U);
    EXPECT_FALSE(oldest.has_more_before);
    std::string end_cursor;
    EXPECT_EQ(PageForward(thread_a, oldest.cursors.front(), 7, &end_cursor),
              Slice(alice_a_, 1, 25));
    EXPECT_EQ(end_cursor, newest_end);
  }

  // The frames are the ones /v1/events sends for the same events, byte for byte as JSON.
  WsClient client;
  ASSERT_EQ(client.Connect(harness_->ClientOptions(alice_, "cursor=earliest&thread_id=t-a")).status,
            101);
  const auto frames = ReadUntil(
      client, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s);
  const Page all = ReadPage(Getter(alice_, "t-a")("limit=1000"));
  ASSERT_EQ(frames.size(), all.events.size() + 1);
  for (size_t i = 0; i < all.events.size(); ++i) EXPECT_EQ(frames[i].json, all.events[i]);
}

TEST_F(GatewayThreadHistory, EndCursorGoesLiveWithNoGapAndNoDuplicate) {
  StartGateway(64u << 20);
  const Page newest = ReadPage(Getter(alice_, "t-a")("limit=5"));
  ASSERT_EQ(newest.ids, Slice(alice_a_, 20, 25));
  EXPECT_FALSE(newest.has_more_after);

  // Published between the page and the subscription (caught up, or live if the replica reads it
  // after the subscription started), then after `ready`.
  const std::string between = harness_->Publish(alice_, "run-a", 26, "t-a");
  harness_->Publish(alice_, "run-b", 26, "t-b");
  harness_->Publish(bob_, "run-bob", 26, "t-a");
  harness_->Flush();
  std::string live;
  auto [received, live_ids] = GoLive(*harness_, alice_, "t-a", newest.end_cursor, 2, [&] {
    live = harness_->Publish(alice_, "run-a", 27, "t-a");
    harness_->Flush();
  });
  received.insert(received.end(), live_ids.begin(), live_ids.end());
  EXPECT_EQ(received, (std::vector<std::string>{between, live}));

  // A page of an empty thread still names where to go live from.
  const Page empty = ReadPage(Getter(alice_, "t-none")(""));
  EXPECT_TRUE(empty.ids.empty());
  EXPECT_FALSE(empty.has_more_before);
  EXPECT_FALSE(empty.has_more_after);
  EXPECT_EQ(empty.missing, nlohmann::json::array());
}

TEST_F(GatewayThreadHistory, AnotherUsersTokenGetsNothingOfThisUsersThread) {
  StartGateway(64u << 20);
  // bob (alice's partition) and carol (another) ask for alice's thread ids.
  const Page bob_a = ReadPage(Getter(bob_, "t-a")("limit=1000"));
  EXPECT_EQ(bob_a.ids, bob_a_) << "bob's own t-a, none of alice's";
  EXPECT_EQ(bob_a.users, std::vector<std::string>(bob_a_.size(), bob_));
  EXPECT_TRUE(ReadPage(Getter(bob_, "t-b")("")).ids.empty());
  const Page carol_a = ReadPage(Getter(carol_, "t-a")(""));
  EXPECT_EQ(carol_a.users, std::vector<std::string>{carol_});

  // bob with a cursor taken from alice's page (valid for the partition they share): still bob's.
  const Page alice_page = ReadPage(Getter(alice_, "t-a")("limit=3"));
  const Page bob_before = ReadPage(Getter(bob_, "t-a")("before=" + alice_page.cursors.back()));
  EXPECT_EQ(bob_before.users, std::vector<std::string>(bob_before.ids.size(), bob_));
  EXPECT_FALSE(bob_before.ids.empty());
}

TEST_F(GatewayThreadHistory, HostileRequestsAreRefusedBeforeAnyRead) {
  // An archive nobody listens on: a hostile request that reached it would get 503, not 400/204.
  StartGateway(64u << 20, "host=127.0.0.1 port=1 connect_timeout=1");
  const auto alice = Getter(alice_, "t-a");
  const Page page = ReadPage(alice("limit=2"));
  ASSERT_EQ(page.cursors.size(), 2U);
  const std::string good = page.cursors.front();
  const auto identity = TopicIdentity::Of(harness_->Topic(), 1, kPartitions);
  const std::string carols = EncodeCursor(identity.CursorAt(1, 3));
  const std::string other_topic =
      EncodeCursor(TopicIdentity::Of("other.topic", 1, kPartitions).CursorAt(0, 3));
  const std::string other_epoch =
      EncodeCursor(TopicIdentity::Of(harness_->Topic(), 2, kPartitions).CursorAt(0, 3));

  const std::vector<std::pair<std::string, std::string>> refused = {
      {"limit=abc", "bad_limit"},
      {"limit=-1", "bad_limit"},
      {"limit=0", "bad_limit"},
      {"limit=1001", "bad_limit"},
      {"limit=", "bad_limit"},
      {"limit=18446744073709551617", "bad_limit"},
      {"before=garbage", "bad_cursor"},
      {"after=garbage", "bad_cursor"},
      {"before=", "bad_cursor"},
      {"after=earliest", "bad_cursor"},
      {"before=-1", "bad_cursor"},
      {"before=" + good + "&after=" + good, "bad_request"},
      {"after=" + good + "&before=garbage", "bad_request"},
      {"before=" + carols, "bad_cursor"},
      {"after=" + carols, "bad_cursor"},
      {"before=" + other_topic, "bad_cursor"},
      {"after=" + other_epoch, "bad_cursor"},
  };
  for (const auto& [query, code] : refused) {
    const auto answer = alice(query);
    EXPECT_EQ(answer.status, 400) << query << ": " << answer.body;
    EXPECT_EQ(answer.json.value("error", ""), code) << query << ": " << answer.body;
  }
  const auto port = harness_->Port();
  const auto token = harness_->Token(alice_);
  auto get = [&](const std::string& target, const std::string& with_token) {
    return Request(port, http::verb::get, target, with_token);
  };
  EXPECT_EQ(get("/v1/threads/" + std::string(257, 't') + "/events", token).json.value("error", ""),
            "bad_thread_id");
  EXPECT_EQ(get("/v1/threads//events", token).json.value("error", ""), "bad_thread_id");
  // NUL, a newline, bytes that are not UTF-8 (an overlong '/', a lone 0xFF): refused before any
  // lookup (PostgreSQL would refuse them in text, a 503 that blames the archive).
  for (const std::string hostile : {"a%00b", "a%0Ab", "%C0%AF", "%FF", "%ED%A0%80"}) {
    const auto answer = get("/v1/threads/" + hostile + "/events", token);
    EXPECT_EQ(answer.status, 400) << hostile << ": " << answer.body;
    EXPECT_EQ(answer.json.value("error", ""), "bad_thread_id") << hostile;
    // The AI SDK stream answers such a thread "no run" (204) without asking the archive.
    const auto ai_sdk = get("/v1/ai-sdk/chats/" + hostile + "/stream", token);
    EXPECT_EQ(ai_sdk.status, 204) << "AI SDK " << hostile << ": " << ai_sdk.body;
  }
  EXPECT_EQ(get("/v1/threads/%74-a/events?limit=2", token).status, 200) << "percent-decoded";

  const auto missing = get("/v1/threads/t-a/events", "");
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(missing.json.value("error", ""), "token_missing");
  EXPECT_EQ(get("/v1/threads/t-a/events", "not.a.jwt").status, 401);
  EXPECT_EQ(get("/v1/threads/t-a/events?limit=abc", "").status, 401) << "the token comes first";

  // CORS, like the cancel route.
  const auto preflight = Request(port, http::verb::options, "/v1/threads/t-a/events", "", kOrigin);
  EXPECT_EQ(preflight.status, 204);
  EXPECT_EQ(preflight.allow_origin, kOrigin);
  const auto cross = Request(port, http::verb::get, "/v1/threads/t-a/events", token, kOrigin);
  EXPECT_EQ(cross.status, 200);
  EXPECT_EQ(cross.allow_origin, kOrigin);
  const auto foreign =
      Request(port, http::verb::get, "/v1/threads/t-a/events", token, "https://evil.example");
  EXPECT_EQ(foreign.status, 403);
  EXPECT_TRUE(foreign.allow_origin.empty());
  EXPECT_EQ(Request(port, http::verb::post, "/v1/threads/t-a/events", token).status, 405);
}

/// The archive as the cold tier: one partition, so other users' filler pushes alice's early
/// events out of Kafka.
class GatewayThreadHistoryArchive : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<GatewayHarness>(1, 1, "thread.archive.v1");
    dsn_ = SharedPostgres().CreateDatabase("thread_history");
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness_->Kafka().BootstrapServers()},
                                {"linger.ms", "5"}};
    config.topic = harness_->Topic();
    publisher_ = std::make_unique<producers::EventPublisher>(config);
    archive_ = std::make_unique<Subprocess>(
        ConsumerCommand("archive", harness_->Kafka().BootstrapServers(), dsn_,
                        {"--topic", harness_->Topic(), "--writers", "1", "--batch-ms", "20"}));
  }
  void TearDown() override {
    if (!SharedPostgres().Running()) SharedPostgres().Start();
    if (archive_) archive_->Signal(SIGCONT);
    archive_.reset();
    harness_->StopGateway();
  }

  /// The archive's committed position (-1 before its first batch, or before it has migrated).
  int64_t Archived() {
    try {
      const auto rows = SharedPostgres().QueryRows(
          dsn_,
          "SELECT coalesce(max(next_offset), -1) FROM consumer_offsets WHERE group_id = "
          "'agentwire-archive'");
      return rows.empty() ? -1 : std::stoll(rows[0][0]);
    } catch (const std::runtime_error&) {
      return -1;  // no consumer_offsets table yet
    }
  }
  PartitionWatermarks Marks() {
    return Watermarks(harness_->Kafka().BootstrapServers(), harness_->Topic(), 10s).at(0);
  }
  void WaitArchivedToEnd() {
    const int64_t high = Marks().high;
    const auto deadline = Clock::now() + 60s;
    while (Archived() < high) {
      ASSERT_LT(Clock::now(), deadline) << archive_->Describe();
      ASSERT_TRUE(archive_->Running()) << archive_->Describe();
      std::this_thread::sleep_for(100ms);
    }
  }
  std::string Publish(const std::string& user, const std::string& thread, size_t text_bytes = 16) {
    v1::AgentEvent event;
    event.set_event_id(user + "-" + thread + "-" + std::to_string(++seq_));
    event.set_user_id(user);
    event.set_thread_id(thread);
    event.set_run_id("r-" + thread);
    event.set_run_seq(static_cast<uint32_t>(seq_));
    event.mutable_agent_thinking()->set_text(IncompressibleText(text_bytes));
    EXPECT_EQ(publisher_->Publish(event, {}, 30s), producers::PublishStatus::kAccepted);
    return event.event_id();
  }
  void Flush() { ASSERT_EQ(publisher_->Flush(60s), 0U); }
  int64_t OffsetOf(const std::string& id) {
    return SharedPostgres().QueryInt(
        dsn_, "SELECT \"offset\" FROM agent_events WHERE event_id = '" + id + "'");
  }
  void StartGateway(bool with_archive) {
    harness_->StopGateway();
    harness_->StartGateway([&](gateway::GatewayConfig& config) {
      if (with_archive) config.archive.dsn = dsn_;
    });
  }
  std::function<Answer(const std::string&)> Alice() {
    return [this](const std::string& query) {
      return Request(harness_->Port(), http::verb::get, "/v1/threads/t-a/events?" + query,
                     harness_->Token("alice"));
    };
  }

  std::unique_ptr<GatewayHarness> harness_;
  std::string dsn_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  std::unique_ptr<Subprocess> archive_;
  int seq_ = 0;
};

TEST_F(GatewayThreadHistoryArchive, PagesPastKafkasRetentionComeFromTheArchive) {
  // alice's early events of two threads, archived, then deleted from Kafka by filler.
  std::vector<std::string> a;
  for (int i = 0; i < 20; ++i) {
    a.push_back(Publish("alice", "t-a"));
    Publish("alice", "t-b");
  }
  Flush();
  WaitArchivedToEnd();
  for (int round = 0; Marks().low <= OffsetOf(a.back()); ++round) {
    ASSERT_LT(round, 6) << "the filler did not move the log start";
    for (int i = 0; i < 4'000; ++i) Publish("filler", "t-a", 700);
    Flush();
  }
  for (int i = 0; i < 5; ++i) {
    a.push_back(Publish("alice", "t-a"));
    Publish("alice", "t-b");
  }
  Flush();
  WaitArchivedToEnd();

  // A fresh replica with the archive: the pages cross the seam at Kafka's log start.
  StartGateway(/*with_archive=*/true);
  const auto alice = Alice();
  std::string newest_end;
  EXPECT_EQ(PageBackward(alice, 8, &newest_end), a);
  const Page newest = ReadPage(alice("limit=8"));
  EXPECT_EQ(newest.ids, Slice(a, 17, 25)) << "5 from Kafka, 3 from the archive";
  EXPECT_EQ(newest.missing, nlohmann::json::array());
  const Page oldest = ReadPage(alice("limit=1&before=" + ReadPage(alice("limit=24")).cursors[0]));
  ASSERT_EQ(oldest.ids, Slice(a, 0, 1));
  EXPECT_FALSE(oldest.has_more_before);
  std::string end_cursor;
  EXPECT_EQ(PageForward(alice, oldest.cursors[0], 8, &end_cursor), Slice(a, 1, 25));
  EXPECT_EQ(end_cursor, newest_end);

  std::string live;
  const auto [caught_up, live_ids] = GoLive(*harness_, "alice", "t-a", end_cursor, 1, [&] {
    live = Publish("alice", "t-a");
    Flush();
  });
  EXPECT_TRUE(caught_up.empty());
  EXPECT_EQ(live_ids, std::vector<std::string>{live});
  a.push_back(live);

  // PostgreSQL down: a page Kafka holds is served, one that needs the archive gets 503.
  archive_->Signal(SIGSTOP);
  SharedPostgres().Stop();
  EXPECT_EQ(ReadPage(alice("limit=3")).ids, Slice(a, 23, 26));
  const auto down = alice("limit=3&before=" + newest.cursors[0]);
  EXPECT_EQ(down.status, 503) << down.body;
  EXPECT_EQ(down.json.value("error", ""), "history_unavailable");
  EXPECT_EQ(down.retry_after, "1");
  SharedPostgres().Start();

  // Without an archive the page holds what Kafka has and names the hole.
  StartGateway(/*with_archive=*/false);
  const int64_t low = Marks().low;
  const Page kafka_only = ReadPage(alice("limit=100"));
  EXPECT_EQ(kafka_only.ids, Slice(a, 20, 26));
  EXPECT_FALSE(kafka_only.has_more_before);
  EXPECT_EQ(kafka_only.missing,
            (nlohmann::json::array({{{"partition", 0}, {"from_offset", 0}, {"to_offset", low}}})));
}

}  // namespace
}  // namespace agentwire::testing
