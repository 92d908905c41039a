// An agent worker written in Python (confluent-kafka + protoc-generated classes,
// tests/interop/python_worker.py) publishes to an `agentwire broker`; an `agentwire gateway`
// process delivers to WebSocket clients. Proves that a producer outside the C++ code base,
// following docs/schema.md, reaches its users unchanged, in order, and in the partition the C++
// side computes (murmur2 agreement), so gateway cursors and replay find its events.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agentwire/core/hashing.hpp"
#include "agentwire/v1/events.pb.h"
#include "interop/interop_processes.hpp"
#include "support/gateway_harness.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"
#include "support/ws_client.hpp"

namespace agentwire::testing::interop {
namespace {

using namespace std::chrono_literals;

/// One event as the Python worker reported it.
struct SentEvent {
  std::string event_id;
  std::string user_id;
  int32_t partition = -1;  // from confluent-kafka's delivery report
  int64_t offset = -1;
  nlohmann::json event;  // the JSON a WebSocket client must receive
};

std::string JoinUsers(const std::vector<std::string>& users) {
  std::string out;
  for (const auto& user : users) out += (out.empty() ? "" : ",") + user;
  return out;
}

class PythonWorker : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    broker_ = new BrokerProcess();
    if (!broker_->bootstrap.empty()) gateway_ = new GatewayProcess(broker_->bootstrap);
  }
  static void TearDownTestSuite() {
    delete gateway_;
    gateway_ = nullptr;
    delete broker_;
    broker_ = nullptr;
  }

  void SetUp() override {
    const auto python = MissingTool(AGENTWIRE_INTEROP_PYTHON, "Debian's python3",
                                    "python3 python3-confluent-kafka python3-protobuf");
    ASSERT_TRUE(python.empty()) << python;
    ASSERT_FALSE(broker_->bootstrap.empty()) << "agentwire broker did not start\n"
                                             << broker_->process->Describe();
    ASSERT_NE(gateway_, nullptr);
    ASSERT_TRUE(gateway_->ready) << "agentwire gateway did not become ready (port "
                                 << gateway_->port << ")\n"
                                 << gateway_->process->Describe();
    work_dir_ = MakeTempDirectory("agentwire-interop-python");
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(work_dir_, ignored);
  }

  /// Runs python_worker.py for `users`; returns its report in publish order.
  std::vector<SentEvent> RunWorker(const std::vector<std::string>& users, int runs_per_user,
                                   bool short_runs) {
    const std::string report = work_dir_ + "/report.jsonl";
    std::vector<std::string> argv = {AGENTWIRE_INTEROP_PYTHON,
                                     AGENTWIRE_INTEROP_WORKER,
                                     "--brokers",
                                     broker_->bootstrap,
                                     "--topic",
                                     kTopic,
                                     "--users",
                                     JoinUsers(users),
                                     "--runs-per-user",
                                     std::to_string(runs_per_user),
                                     "--report",
                                     report,
                                     "--proto-dir",
                                     AGENTWIRE_INTEROP_PROTO_PYTHON_DIR};
    if (short_runs) argv.emplace_back("--short-runs");
    Subprocess::Options options;
    // Debian's interpreter with Debian's modules only: no pyenv/virtualenv paths leaking in.
    options.unset_env = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"};
    const auto result = agentwire::testing::Run(argv, options, 120s);
    std::cout << result.stderr_text;
    EXPECT_EQ(result.exit_code, 0) << "python_worker.py failed:\n" << result.stderr_text;

    std::vector<SentEvent> sent;
    std::ifstream in(report);
    for (std::string line; std::getline(in, line);) {
      const auto json = nlohmann::json::parse(line, nullptr, false);
      if (json.is_discarded()) {
        ADD_FAILURE() << "bad report line: " << line;
        continue;
      }
      sent.push_back({json.at("event_id").get<std::string>(), json.at("user_id").get<std::string>(),
                      json.at("partition").get<int32_t>(), json.at("offset").get<int64_t>(),
                      json.at("event")});
    }
    return sent;
  }

  std::string Token(const std::string& user) {
    Subprocess::Options options;
    options.env = {{"AGENTWIRE_JWT_SECRET", kJwtSecret}};
    options.unset_env = {"AGENTWIRE_JWT_ISSUER", "AGENTWIRE_JWT_AUDIENCE"};
    const auto result = agentwire::testing::Run(
        {AgentwireBinary(), "token", "--user", user, "--ttl", "1h"}, options, 30s);
    EXPECT_EQ(result.exit_code, 0) << result.stderr_text;
    auto token = result.stdout_text;
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
    return token;
  }

  std::unique_ptr<WsClient> Connect(const std::string& user, const std::string& query = {}) {
    auto client = std::make_unique<WsClient>();
    WsClient::Options options;
    options.port = gateway_->port;
    options.target = query.empty() ? "/v1/events" : "/v1/events?" + query;
    options.bearer = Token(user);
    const auto handshake = client->Connect(options);
    EXPECT_EQ(handshake.status, 101) << user << ": " << handshake.body << handshake.error;
    return client;
  }

  static BrokerProcess* broker_;
  static GatewayProcess* gateway_;
  std::string work_dir_;
};

BrokerProcess* PythonWorker::broker_ = nullptr;
GatewayProcess* PythonWorker::gateway_ = nullptr;

/// What one WebSocket client of `user` got, compared with what the worker sent for `user`.
struct ClientAudit {
  size_t expected = 0;
  size_t received = 0;    // event frames
  size_t lost = 0;        // sent for this user, never received
  size_t duplicated = 0;  // extra copies of an event_id
  size_t foreign = 0;     // events of another user (or that nobody sent)
  size_t reordered = 0;   // first copies received after a later-sent event
  size_t changed = 0;     // received JSON differs from what the worker sent
  size_t ready_frames = 0;
  std::string first_change;

  bool Clean() const {
    return lost == 0 && duplicated == 0 && foreign == 0 && reordered == 0 && changed == 0 &&
           ready_frames == 1;
  }
  std::string Summary() const {
    std::ostringstream out;
    out << "expected=" << expected << " received=" << received << " lost=" << lost
        << " duplicated=" << duplicated << " foreign=" << foreign << " reordered=" << reordered
        << " changed=" << changed << " ready_frames=" << ready_frames;
    if (!first_change.empty()) out << "\n  first change: " << first_change;
    return out.str();
  }
};

ClientAudit AuditFrames(const std::string& user, const std::vector<SentEvent>& sent,
                        const std::vector<Frame>& frames) {
  ClientAudit audit;
  std::map<std::string, size_t> index;  // event_id -> position in this user's sent order
  std::vector<const SentEvent*> mine;
  for (const auto& event : sent) {
    if (event.user_id != user) continue;
    index[event.event_id] = mine.size();
    mine.push_back(&event);
  }
  audit.expected = mine.size();
  std::map<std::string, int> copies;
  size_t highest = 0;
  bool any = false;
  for (const auto& frame : frames) {
    if (frame.type == "ready") ++audit.ready_frames;
    if (frame.type != "event") continue;
    ++audit.received;
    const auto it = index.find(frame.event_id);
    if (frame.user_id != user || it == index.end()) {
      ++audit.foreign;
      continue;
    }
    if (++copies[frame.event_id] > 1) {
      ++audit.duplicated;
      continue;
    }
    if (any && it->second < highest) ++audit.reordered;
    highest = any ? std::max(highest, it->second) : it->second;
    any = true;
    const auto& received = frame.json.at("event");
    if (received != mine[it->second]->event) {
      if (audit.changed++ == 0) {
        audit.first_change =
            "sent " + mine[it->second]->event.dump() + "\n  got  " + received.dump();
      }
    }
  }
  for (const auto* event : mine) audit.lost += copies.contains(event->event_id) ? 0 : 1;
  return audit;
}

/// Reads until `user`'s last sent event arrived (a user's events are delivered in publish order,
/// so nothing legitimate comes after it) or `deadline` passed, then until the socket stays quiet
/// for a moment, so a late duplicate or foreign event is counted too. Returns every frame.
std::vector<Frame> ReadUntilLast(WsClient& client, const std::string& last_event_id,
                                 std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  auto frames = ReadUntil(
      client,
      [&](const std::vector<Frame>& got) {
        return std::any_of(got.begin(), got.end(),
                           [&](const Frame& f) { return f.event_id == last_event_id; });
      },
      std::max(left, std::chrono::milliseconds(0)));
  while (auto text = client.Read(300ms)) {
    if (auto frame = ParseFrame(*text)) frames.push_back(std::move(*frame));
  }
  return frames;
}

std::string LastEventOf(const std::string& user, const std::vector<SentEvent>& sent) {
  std::string last;
  for (const auto& event : sent) last = event.user_id == user ? event.event_id : last;
  return last;
}

TEST_F(PythonWorker, EveryEventReachesItsUserUnchangedInOrder) {
  const std::vector<std::string> users = {"py-alice", "py-bob", "py-carol", "py-dave-0123"};
  const std::string bystander = "py-mallory";  // publishes nothing, must receive nothing

  // Live clients, connected before the worker starts: the first frame is `ready`.
  std::map<std::string, std::unique_ptr<WsClient>> live;
  std::map<std::string, std::vector<Frame>> live_frames;
  for (const auto& user : users) live[user] = Connect(user);
  live[bystander] = Connect(bystander);
  for (auto& [user, client] : live) {
    live_frames[user] = ReadUntil(
        *client, [](const std::vector<Frame>& got) { return !got.empty(); }, 20s);
    ASSERT_EQ(live_frames[user].size(), 1U) << user << ": no ready frame";
    ASSERT_EQ(live_frames[user][0].type, "ready") << live_frames[user][0].json.dump();
  }

  const auto sent = RunWorker(users, 3, /*short_runs=*/false);
  ASSERT_EQ(sent.size(), users.size() * 3 * 6) << "the worker reported fewer events than it makes";

  // One deadline for all users: a broken run fails in a minute, not a minute per user.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  size_t total_received = 0;
  for (const auto& user : users) {
    auto frames = ReadUntilLast(*live[user], LastEventOf(user, sent), deadline);
    live_frames[user].insert(live_frames[user].end(), frames.begin(), frames.end());
    const auto audit = AuditFrames(user, sent, live_frames[user]);
    total_received += audit.received;
    std::cout << "live " << user << ": " << audit.Summary() << "\n";
    EXPECT_TRUE(audit.Clean()) << "live client of " << user << ": " << audit.Summary();
    EXPECT_EQ(audit.received, audit.expected) << user;
  }
  // The bystander's socket: whatever arrived while the others were read, plus a quiet period.
  while (auto text = live[bystander]->Read(300ms)) {
    if (auto frame = ParseFrame(*text)) live_frames[bystander].push_back(std::move(*frame));
  }
  const auto bystander_audit = AuditFrames(bystander, sent, live_frames[bystander]);
  std::cout << "live " << bystander << ": " << bystander_audit.Summary() << "\n";
  EXPECT_EQ(bystander_audit.received, 0U) << bystander_audit.Summary();
  EXPECT_TRUE(bystander_audit.Clean()) << bystander_audit.Summary();
  EXPECT_EQ(total_received, sent.size());

  // Late joiners replaying the retained log (catch-up path) get the same, exactly.
  deadline = std::chrono::steady_clock::now() + 60s;
  for (const auto& user : users) {
    auto client = Connect(user, "cursor=earliest");
    const auto frames = ReadUntilLast(*client, LastEventOf(user, sent), deadline);
    const auto audit = AuditFrames(user, sent, frames);
    std::cout << "earliest " << user << ": " << audit.Summary() << "\n";
    EXPECT_TRUE(audit.Clean()) << "cursor=earliest client of " << user << ": " << audit.Summary();
    EXPECT_EQ(audit.received, audit.expected) << user;
  }
}

TEST_F(PythonWorker, PartitionsAgreeWithTheCppMurmur2) {
  // Many keys, so every partition and every key-length remainder (murmur2 reads 4 bytes at a
  // time, then a 1-3 byte tail) is covered; non-ASCII keys check the signed-byte handling the
  // Java algorithm has.
  std::vector<std::string> users;
  users.reserve(150);
  for (int i = 0; i < 150; ++i) users.push_back("py-user-" + std::to_string(i));
  for (int i = 0; i < 20; ++i) {
    users.push_back("py-zo\u00eb-" + std::to_string(i));
    users.push_back("py-\u7528\u6237-" + std::to_string(i) +
                    std::string(static_cast<size_t>(i % 4), 'x'));
  }
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  const auto sent = RunWorker(users, 1, /*short_runs=*/true);
  ASSERT_EQ(sent.size(), users.size() * 2);

  // (1) confluent-kafka's delivery reports against PartitionForKey.
  size_t report_mismatches = 0;
  std::set<int32_t> partitions_used;
  for (const auto& event : sent) {
    const auto expected = PartitionForKey(event.user_id, kPartitions);
    partitions_used.insert(event.partition);
    if (event.partition != expected) {
      if (++report_mismatches <= 5) {
        ADD_FAILURE() << event.user_id << ": python put it in partition " << event.partition
                      << ", C++ murmur2 says " << expected;
      }
    }
  }
  EXPECT_EQ(report_mismatches, 0U);
  EXPECT_EQ(partitions_used.size(), static_cast<size_t>(kPartitions))
      << "too few keys to cover every partition";

  // (2) Read back with a plain consumer: what is actually stored where, with which headers.
  const auto all = ConsumeAll(broker_->bootstrap, kTopic, sent.size(), 60s);
  std::vector<ConsumedRecord> consumed;
  std::set<std::string> mine(users.begin(), users.end());
  for (const auto& record : all) {
    if (mine.contains(record.key)) consumed.push_back(record);
  }
  PublishedByUser published;
  for (const auto& event : sent) published[event.user_id].push_back(event.event_id);
  const auto audit = AuditDelivery(published, consumed, kPartitions);
  std::cout << "python worker, read back: " << audit.Summary() << "\n";
  EXPECT_TRUE(audit.Clean()) << audit.Summary();
  EXPECT_EQ(audit.consumed, sent.size()) << audit.Summary();

  size_t bad_headers = 0;
  size_t offset_mismatches = 0;
  std::map<std::string, std::pair<int32_t, int64_t>> where;  // event_id -> reported position
  for (const auto& event : sent) where[event.event_id] = {event.partition, event.offset};
  for (const auto& record : consumed) {
    const auto headers_ok = record.headers.size() == 2 && record.headers.contains("content-type") &&
                            record.headers.at("content-type") == "application/x-protobuf" &&
                            record.headers.contains("schema") &&
                            record.headers.at("schema") == "agentwire.v1.AgentEvent";
    bad_headers += headers_ok ? 0 : 1;
    v1::AgentEvent event;
    if (!event.ParseFromString(record.value)) continue;  // counted as unknown by the audit
    const auto it = where.find(event.event_id());
    if (it == where.end() || it->second != std::make_pair(record.partition, record.offset)) {
      ++offset_mismatches;
    }
  }
  EXPECT_EQ(bad_headers, 0U) << "records without exactly the two agentwire headers";
  EXPECT_EQ(offset_mismatches, 0U) << "delivery reports disagree with what a consumer reads";
}

}  // namespace
}  // namespace agentwire::testing::interop
