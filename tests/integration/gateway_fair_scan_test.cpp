// Scans take turns (issue 25, item 3): one client's deep resume (a cursor at the start of a
// long partition, e.g. edited back to offset 0) must not hold every other partition's
// resumes until it has read its whole partition. The replica's history reader serves one
// partition scan at a time; a deep one yields after a slice when others wait.
//
// Checked on the reader itself with the embedded Kafka, by order rather than time: the deep
// request is queued first, 100 shallow ones on other partitions right after it. Without turns
// the deep scan finishes first (the reader takes it first and reads it to the end); with turns
// every shallow resume finishes while the deep scan is still reading.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/hashing.hpp"
#include "history.hpp"
#include "kafka_tail.hpp"
#include "support/gateway_harness.hpp"
#include "support/kafka_test_utils.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kPartitions = 8;
constexpr int kShallowUsers = 100;
// Records of the deep partition behind the deep cursor: several of the reader's 20,000-message
// slices, and within the embedded Kafka's ~5 MiB per partition.
constexpr int kDeepRecords = 120'000;

/// Collects one request's chunks and notes when it finished, in finishing order.
class OrderedSink final : public gateway::HistorySink {
 public:
  OrderedSink(std::string user, gateway::CatchupBudget& budget, std::mutex& mutex,
              std::condition_variable& done, int& finished_count)
      : user_(std::move(user)),
        budget_(budget),
        mutex_(mutex),
        done_(done),
        finished_count_(finished_count) {}

  void OnHistory(gateway::HistoryChunk chunk) override {
    budget_.Release(user_, chunk.charged_bytes);
    std::lock_guard lock(mutex_);
    events_ += chunk.entries.size();
    if (chunk.status == gateway::HistoryChunk::Status::kMore) return;
    status_ = chunk.status;
    finished_at_ = ++finished_count_;
    done_.notify_all();
  }
  size_t PendingCatchupBytes() const override { return 0; }

  int FinishedAt() const { return finished_at_; }  // 0 while running; read under the mutex
  size_t Events() const { return events_; }
  gateway::HistoryChunk::Status Status() const { return status_; }

 private:
  std::string user_;
  gateway::CatchupBudget& budget_;
  std::mutex& mutex_;
  std::condition_variable& done_;
  int& finished_count_;
  size_t events_ = 0;
  int finished_at_ = 0;
  gateway::HistoryChunk::Status status_ = gateway::HistoryChunk::Status::kMore;
};

std::string UserOf(int partition, int n) {
  for (int i = 0;; ++i) {
    std::string candidate =
        "u" + std::to_string(partition) + "-" + std::to_string(n) + "-" + std::to_string(i);
    if (PartitionForKey(candidate, kPartitions) == partition) return candidate;
  }
}

TEST(GatewayFairScan, ADeepScanYieldsToResumesOfOtherPartitions) {
  GatewayHarness harness(kPartitions, 1, "fair.scan.v1");
  const std::string deep_user = UserOf(0, 0);
  // The deep partition: other users' records, then the deep user's own events at the end.
  for (int i = 0; i < kDeepRecords; ++i) harness.Publish(UserOf(0, 1 + i % 8), "r-noise", i + 1);
  for (int i = 0; i < 3; ++i) harness.Publish(deep_user, "r-deep", i + 1);
  std::vector<std::string> shallow_users;
  for (int n = 0; n < kShallowUsers; ++n) {
    shallow_users.push_back(UserOf(1 + n % (kPartitions - 1), n));
    for (int i = 0; i < 5; ++i) harness.Publish(shallow_users.back(), "r-shallow", i + 1);
  }
  harness.Flush();
  const auto marks = Watermarks(harness.Kafka().BootstrapServers(), harness.Topic(), 10s);
  ASSERT_GT(marks.at(0).high - marks.at(0).low, 60'000)
      << "retention left too little of the deep partition for several slices";

  metrics::Registry registry;
  gateway::CatchupBudget budget(64u << 20, 1u << 20, registry.GetGauge("buffered", ""),
                                registry.GetGauge("peak", ""));
  const auto identity = TopicIdentity::Of(harness.Topic(), 1, kPartitions);
  gateway::HistoryService history(
      gateway::TailConsumerProperties({{"bootstrap.servers", harness.Kafka().BootstrapServers()}},
                                      5ms),
      identity, {}, budget, registry);
  history.Start();

  std::mutex mutex;
  std::condition_variable done;
  int finished = 0;
  auto submit = [&](const std::string& user, int partition) {
    auto sink = std::make_shared<OrderedSink>(user, budget, mutex, done, finished);
    gateway::HistoryRequest request;
    request.partition = partition;
    request.user_id = user;
    request.from = marks.at(partition).low;
    request.to = marks.at(partition).high;
    request.sink = sink;
    history.Submit(std::move(request));
    return sink;
  };
  const auto deep = submit(deep_user, 0);
  std::vector<std::shared_ptr<OrderedSink>> shallow;
  for (const auto& user : shallow_users) {
    shallow.push_back(submit(user, PartitionForKey(user, kPartitions)));
  }

  std::unique_lock lock(mutex);
  ASSERT_TRUE(done.wait_for(lock, 120s, [&] { return finished == kShallowUsers + 1; }))
      << finished << " of " << kShallowUsers + 1 << " reads finished";
  EXPECT_EQ(deep->Status(), gateway::HistoryChunk::Status::kDone);
  EXPECT_EQ(deep->Events(), 3U);
  int before_deep = 0;
  for (const auto& sink : shallow) {
    EXPECT_EQ(sink->Status(), gateway::HistoryChunk::Status::kDone);
    EXPECT_EQ(sink->Events(), 5U);
    if (sink->FinishedAt() < deep->FinishedAt()) ++before_deep;
  }
  EXPECT_EQ(before_deep, kShallowUsers)
      << "every shallow resume must finish while the deep scan is still reading; the deep one "
         "finished "
      << deep->FinishedAt() << "th";
  lock.unlock();
  history.Stop();
  EXPECT_NE(registry.RenderPrometheus().find("agentwire_gateway_history_scan_yields_total"),
            std::string::npos);
}

// The other half of item 3: a client that keeps editing its cursor back to the start of the
// partition and reconnecting gets 429 after a burst, instead of a scan each time. Shallow
// resumes and other users are not affected.
TEST(GatewayFairScan, RepeatedDeepResumesOfOneUserGet429) {
  GatewayHarness harness(2, 1, "deep.resume.v1");
  harness.StartGateway([](gateway::GatewayConfig& config) {
    config.max_catchup_events = 100;  // "deep": more than 100 records behind the end
    config.deep_resumes_per_minute = 1;
  });
  const std::string user = "mallory";
  const int partition = PartitionForKey(user, 2);
  for (int i = 0; i < 300; ++i) harness.Publish(user, "r-1", i + 1);
  harness.Flush();
  const auto identity = TopicIdentity::Of(harness.Topic(), 1, 2);
  const auto marks = Watermarks(harness.Kafka().BootstrapServers(), harness.Topic(), 10s);
  ASSERT_TRUE(WaitForMetric(harness.Port(), "agentwire_gateway_kafka_messages_total", 300, 30s));
  auto connect = [&](const std::string& who, int64_t offset) {
    WsClient client;
    const auto cursor = EncodeCursor(identity.CursorAt(PartitionForKey(who, 2), offset));
    return client.Connect(harness.ClientOptions(who, "cursor=" + cursor));
  };

  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(connect(user, marks.at(partition).low).status, 101) << "the burst allows 3";
  }
  const auto refused = connect(user, marks.at(partition).low);
  EXPECT_EQ(refused.status, 429);
  EXPECT_NE(refused.body.find("too_many_deep_resumes"), std::string::npos) << refused.body;
  EXPECT_FALSE(refused.retry_after.empty());
  // A resume near the end is not deep; nor is anyone else limited by mallory.
  EXPECT_EQ(connect(user, marks.at(partition).high - 10).status, 101);
  EXPECT_EQ(connect("trudy", 0).status, 101);
  // At least once: the test client asks a refused handshake again as plain HTTP for its body.
  EXPECT_GE(
      MetricValue(harness.Port(),
                  R"(agentwire_gateway_upgrades_rejected_total{reason="too_many_deep_resumes"})"),
      1);
}

}  // namespace
}  // namespace agentwire::testing
