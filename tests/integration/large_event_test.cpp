// The largest event a worker can publish: RunEmitter cuts a 5 MB tool output to the size
// limit, the gateway delivers that event to the browser (a frame of several megabytes when
// the text is mostly characters JSON escapes), marked truncated, with the run intact, and the
// archive stores it.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/run_emitter.hpp"
#include "agentwire/producers/size_policy.hpp"
#include "support/gateway_harness.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"
#include "support/ws_client.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

size_t CountEvents(const std::vector<Frame>& frames) {
  return static_cast<size_t>(std::count_if(frames.begin(), frames.end(),
                                           [](const Frame& f) { return f.type == "event"; }));
}

TEST(LargeEvent, AFiveMegabyteToolOutputReachesTheBrowserCutAndMarked) {
  GatewayHarness harness(4);
  // 8 MiB of cache per partition: entries over 1 MiB are too large to cache (see below).
  harness.StartGateway([](gateway::GatewayConfig& config) { config.cache_bytes = 32u << 20; });
  WsClient client;
  ASSERT_EQ(client.Connect(harness.ClientOptions("big-user")).status, 101);
  const auto ready = ReadUntil(
      client, [](const auto& f) { return !f.empty(); }, 10s);
  ASSERT_EQ(ready.size(), 1U);
  ASSERT_EQ(ready[0].type, "ready");

  // An HTML page: '<' and '>' become \u003c / \u003e in JSON, six bytes each.
  std::string page;
  while (page.size() < 5'000'000) page += "<div class=\"row\">résultat é</div>\n";
  producers::EventPublisher publisher([&] {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", harness.Kafka().BootstrapServers()}};
    config.topic = harness.Topic();
    return config;
  }());
  {
    producers::RunEmitter run(publisher, {"big-user", "t-1", "r-big", "researcher", "", {}});
    ASSERT_EQ(run.Started("fetch the page"), producers::PublishStatus::kAccepted);
    ASSERT_EQ(run.ToolExecuting("fetch", R"({"url":"https://example.com"})", "c1"),
              producers::PublishStatus::kAccepted);
    ASSERT_EQ(run.ToolCompleted("fetch", page, 812, "", "c1"), producers::PublishStatus::kAccepted);
    ASSERT_EQ(run.Completed("done", 1500), producers::PublishStatus::kAccepted);
  }
  ASSERT_EQ(publisher.Flush(30s), 0U);

  const auto frames = ReadUntil(
      client, [](const auto& f) { return CountEvents(f) >= 4; }, 30s);
  ASSERT_EQ(CountEvents(frames), 4U) << "the gateway delivers the whole run";
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].run_seq, i + 1) << "no hole";
  }
  const auto& event = frames[2].json["event"];
  ASSERT_EQ(event["type"], "tool_completed");
  ASSERT_TRUE(event.contains("truncated")) << "marked in the JSON the browser gets";
  EXPECT_EQ(event["truncated"]["fields"], nlohmann::json::array({"output"}));
  EXPECT_GT(event["truncated"]["original_bytes"].get<uint64_t>(), 5'000'000U);
  EXPECT_EQ(event["truncated"]["limit_bytes"].get<uint64_t>(), producers::kDefaultMaxEventBytes);
  const auto output = event["tool_completed"]["output"].get<std::string>();
  EXPECT_GT(output.size(), 800'000U);
  EXPECT_EQ(page.compare(0, output.size(), output), 0) << "the first bytes, unchanged";
  EXPECT_EQ(frames[3].json["event"]["type"], "agent_completed") << "the terminal event arrives";
  EXPECT_FALSE(frames[3].json["event"].contains("truncated"));

  // The frame (~1.5 MB: '<', '>' and '"' grow in JSON) is too large for the recent-log cache
  // (over an eighth of the 8 MiB per partition), so the cache keeps the entry without it
  // instead of evicting the partition. A resume from the start reads that one record from
  // Kafka and the rest from memory: the same four events, the big one unchanged.
  WsClient resumed;
  ASSERT_EQ(resumed.Connect(harness.ClientOptions("big-user", "cursor=" + ready[0].cursor)).status,
            101);
  const auto replay = ReadUntil(
      resumed, [](const auto& f) { return !f.empty() && f.back().type == "ready"; }, 30s);
  ASSERT_EQ(CountEvents(replay), 4U);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(replay[i].json, frames[i].json) << "event " << i;
  const auto metrics = harness.Gateway().Metrics().RenderPrometheus();
  EXPECT_NE(metrics.find(R"(agentwire_gateway_resumes_total{source="kafka"} 1)"), std::string::npos)
      << "the big event came from Kafka\n"
      << metrics;

  // The archive stores the same event: raw bytes and the JSON payload, marker included.
  const std::string dsn = SharedPostgres().CreateDatabase("large_event");
  Subprocess archive(ConsumerCommand("archive", harness.Kafka().BootstrapServers(), dsn,
                                     {"--topic", harness.Topic(), "--batch-ms", "100"}));
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  int64_t rows = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    rows = SharedPostgres().QueryInt(
        dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'agent_events'");
    if (rows == 1) rows = SharedPostgres().QueryInt(dsn, "SELECT count(*) FROM agent_events");
    if (rows >= 4) break;
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(rows, 4) << archive.Describe();
  const std::string where = " FROM agent_events WHERE run_id = 'r-big' AND run_seq = 3";
  EXPECT_LE(SharedPostgres().QueryInt(dsn, "SELECT length(raw)" + where),
            static_cast<int64_t>(producers::kDefaultMaxEventBytes));
  EXPECT_EQ(SharedPostgres().Query(dsn, "SELECT payload->'truncated'->>'fields'" + where),
            R"(["output"])");
  EXPECT_EQ(SharedPostgres().QueryInt(
                dsn, "SELECT octet_length(payload->'tool_completed'->>'output')" + where),
            static_cast<int64_t>(output.size()))
      << "the stored text is the delivered text";

  // And an SRE reading the run sees which event was cut.
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC", "AGENTWIRE_PG_DSN",
                       "AGENTWIRE_TOPIC_EPOCH", "AGENTWIRE_LOG_FORMAT"};
  const auto table = agentwire::testing::Run(
      {AgentwireBinary(), "replay", "--brokers", harness.Kafka().BootstrapServers(), "--topic",
       harness.Topic(), "--run", "r-big", "--format", "table"},
      options, 120s);
  ASSERT_EQ(table.exit_code, 0) << table.stderr_text;
  size_t marked = 0;
  std::istringstream lines(table.stdout_text);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("[truncated]") == std::string::npos) continue;
    ++marked;
    EXPECT_NE(line.find("tool_completed"), std::string::npos) << line;
  }
  EXPECT_EQ(marked, 1U) << table.stdout_text.substr(0, 2000);
}

}  // namespace
}  // namespace agentwire::testing
