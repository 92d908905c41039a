// libprotobuf's own messages go through agentwire's structured logger, rate-limited: a stream of
// records with invalid UTF-8 (seen in archive, analytics and replay) gives a few `libprotobuf`
// lines, not one raw "[libprotobuf ERROR ...]" line per record.
#include <agentwire/v1/events.pb.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;
constexpr const char* kTopic = "agent.lifecycle.v1";
constexpr int kPoisonRecords = 200;

std::string Serialized(const std::string& user, const std::string& id) {
  v1::AgentEvent event;
  event.set_event_id(id);
  event.set_user_id(user);
  event.set_run_id("r1");
  event.set_run_seq(1);
  event.mutable_emitted_at()->set_seconds(1'790'000'000);
  event.mutable_agent_thinking()->set_text("thinking");
  return event.SerializeAsString();
}

void Produce(rd_kafka_t* producer, const std::string& key, const std::string& value) {
  ASSERT_EQ(agentwire::testing::ProduceRaw(producer, kTopic, key, value),
            RD_KAFKA_RESP_ERR_NO_ERROR);
}

TEST(ProtobufLogs, InvalidUtf8RecordsGiveFewStructuredLines) {
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({kTopic, 1});
  auto producer = kafka::MakeClient(
      RD_KAFKA_PRODUCER, kafka::MakeConf({{"bootstrap.servers", kafka.BootstrapServers()}}));
  // user_id "u1" on the wire, then its two bytes replaced by invalid UTF-8 (same length).
  for (int i = 0; i < kPoisonRecords; ++i) {
    std::string value = Serialized("u1", "poison-" + std::to_string(i));
    const auto at = value.find("u1");
    ASSERT_NE(at, std::string::npos);
    value[at] = '\xff';
    value[at + 1] = '\xfe';
    Produce(producer.get(), "u1", value);
  }
  Produce(producer.get(), "u1", Serialized("u1", "good-1"));
  ASSERT_EQ(rd_kafka_flush(producer.get(), 10000), RD_KAFKA_RESP_ERR_NO_ERROR);

  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC", "AGENTWIRE_PG_DSN",
                       "AGENTWIRE_TOPIC_EPOCH", "AGENTWIRE_LOG_FORMAT"};
  const auto result =
      agentwire::testing::Run({AgentwireBinary(), "replay", "--brokers", kafka.BootstrapServers(),
                               "--user", "u1", "--log-format", "json"},
                              options, 120s);
  ASSERT_EQ(result.exit_code, std::optional<int>(0)) << result.stderr_text;
  EXPECT_NE(result.stdout_text.find("good-1"), std::string::npos) << result.stdout_text;

  // Every stderr line is agentwire's JSON; the libprotobuf ones are few.
  std::istringstream lines(result.stderr_text);
  int protobuf_lines = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const auto json = nlohmann::json::parse(line, nullptr, false);
    if (!json.is_object()) continue;  // replay's own progress / summary text
    if (json.value("msg", "") != "libprotobuf") continue;
    ++protobuf_lines;
    EXPECT_EQ(json.value("level", ""), "error") << line;
    EXPECT_NE(json.value("error", "").find("UTF-8"), std::string::npos) << line;
  }
  EXPECT_EQ(result.stderr_text.find("[libprotobuf"), std::string::npos) << result.stderr_text;
  EXPECT_GE(protobuf_lines, 1) << result.stderr_text;
  EXPECT_LE(protobuf_lines, 5) << result.stderr_text;
}

}  // namespace
}  // namespace agentwire::testing
