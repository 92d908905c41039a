// A client without a cursor (`cursor=earliest`: the demo, a fresh browser tab, the reference
// client after a `reset`) used to make the replica scan its user's whole partition on every
// connection. --max-catchup-events bounds that: such a client is caught up from the newest N
// records of the partition only, told so first with `reset` reason `catchup_limit`, and stays
// connected. Clients with a cursor are never cut: the guarantee is theirs.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "support/gateway_harness.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kLimit = 50;

struct Published {
  std::string event_id;
  std::string user;
  int64_t offset = 0;
};

class GatewayCatchupLimit : public ::testing::Test {
 protected:
  // One partition, so every record's offset is its publish index.
  GatewayCatchupLimit() : harness_(1) {}

  void StartGateway(int64_t limit, bool cache) {
    harness_.StartGateway([&](gateway::GatewayConfig& config) {
      config.max_catchup_events = limit;
      if (!cache) config.cache_bytes = 0;
    });
  }

  // Publishes `count` records, three of four for alice and one for bob (the limit counts the
  // partition's records, whoever they are for). The last one is alice's.
  void Publish(int count) {
    for (int i = 0; i < count; ++i) {
      const auto offset = static_cast<int64_t>(log_.size());
      const std::string user = offset % 4 == 1 ? "bob" : "alice";
      const uint32_t seq = ++seq_[user];
      log_.push_back({harness_.Publish(user, "run-" + user, seq), user, offset});
    }
    harness_.Flush();
  }

  // alice's event ids at offsets >= from, in order.
  std::vector<std::string> AliceFrom(int64_t from) const {
    std::vector<std::string> ids;
    for (const auto& record : log_) {
      if (record.user == "alice" && record.offset >= from) ids.push_back(record.event_id);
    }
    return ids;
  }

  // Connects as alice with `query` and reads up to `ready`.
  std::vector<Frame> CatchUp(WsClient& client, const std::string& query) {
    const auto handshake = client.Connect(harness_.ClientOptions("alice", query));
    EXPECT_EQ(handshake.status, 101) << handshake.body;
    return ReadUntil(
        client, [](const auto& frames) { return !frames.empty() && frames.back().type == "ready"; },
        30s);
  }

  static std::vector<std::string> EventIds(const std::vector<Frame>& frames) {
    std::vector<std::string> ids;
    for (const auto& frame : frames) {
      if (frame.type == "event") ids.push_back(frame.event_id);
    }
    return ids;
  }

  // Waits until a live client of alice has every one of her events: the replica has read the
  // whole log, so the bound is computed from its real end.
  void WaitUntilReplicaHasRead() {
    WsClient client;
    const auto frames = CatchUp(client, "cursor=" + start_cursor_);
    const auto want = AliceFrom(0).size();
    auto ids = EventIds(frames);
    if (ids.size() < want) {
      const auto more = ReadUntil(
          client, [&](const auto& f) { return ids.size() + EventIds(f).size() >= want; }, 30s);
      for (auto& id : EventIds(more)) ids.push_back(std::move(id));
    }
    ASSERT_EQ(ids, AliceFrom(0));
  }

  GatewayHarness harness_;
  std::vector<Published> log_;
  std::map<std::string, uint32_t> seq_;
  std::string start_cursor_;  // alice's cursor at offset 0 (a `ready` before anything was sent)
};

TEST_F(GatewayCatchupLimit, WithoutACursorTheNewestRecordsFollowAResetAndTheStreamGoesOnLive) {
  for (const bool cache : {true, false}) {
    SCOPED_TRACE(cache ? "catch-up from the replica's cache" : "catch-up from Kafka (no cache)");
    StartGateway(kLimit, cache);
    if (start_cursor_.empty()) {
      WsClient first;
      const auto ready = CatchUp(first, "");
      ASSERT_EQ(ready.size(), 1u);
      start_cursor_ = ready[0].cursor;
      Publish(120);
    }
    WaitUntilReplicaHasRead();

    WsClient client;
    const auto frames = CatchUp(client, "cursor=earliest");
    ASSERT_GE(frames.size(), 2u);
    ASSERT_EQ(frames.front().type, "reset") << "told first that older events are not sent";
    EXPECT_EQ(frames.front().json["reason"], "catchup_limit");
    const auto bound = static_cast<int64_t>(log_.size()) - kLimit;
    EXPECT_EQ(EventIds(frames), AliceFrom(bound))
        << "exactly alice's events among the newest " << kLimit << " records, in order";
    EXPECT_EQ(frames.back().replayed, AliceFrom(bound).size());

    // The same connection goes on live: no reconnect, nothing twice.
    const auto live_from = static_cast<int64_t>(log_.size());
    Publish(8);
    const auto want = AliceFrom(live_from).size();
    const auto live = ReadUntil(
        client, [&](const auto& f) { return EventIds(f).size() >= want; }, 30s);
    EXPECT_EQ(EventIds(live), AliceFrom(live_from));
    for (const auto& frame : live) EXPECT_NE(frame.type, "reset");

    // A client with a cursor is never cut, however far back it is.
    WsClient resumed;
    const auto all = CatchUp(resumed, "cursor=" + start_cursor_);
    ASSERT_FALSE(all.empty());
    EXPECT_NE(all.front().type, "reset");
    EXPECT_EQ(EventIds(all), AliceFrom(0));
    harness_.StopGateway();
  }
}

TEST_F(GatewayCatchupLimit, ALogWithinTheLimitOrNoLimitSendsEverythingWithoutReset) {
  StartGateway(0, true);  // 0: no limit
  WsClient first;
  const auto ready = CatchUp(first, "");
  ASSERT_EQ(ready.size(), 1u);
  start_cursor_ = ready[0].cursor;
  Publish(120);
  WaitUntilReplicaHasRead();
  {
    WsClient client;
    const auto frames = CatchUp(client, "cursor=earliest");
    ASSERT_FALSE(frames.empty());
    EXPECT_EQ(frames.front().type, "event");
    EXPECT_EQ(EventIds(frames), AliceFrom(0));
  }
  harness_.StopGateway();

  StartGateway(200, true);  // the log (120 records) is within the limit
  WaitUntilReplicaHasRead();
  WsClient client;
  const auto frames = CatchUp(client, "cursor=earliest");
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.front().type, "event");
  EXPECT_EQ(EventIds(frames), AliceFrom(0));
}

}  // namespace
}  // namespace agentwire::testing
