#include "agentwire/core/embedded_kafka.hpp"

#include <fmt/format.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <charconv>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/options.hpp"

namespace agentwire::kafka {

TopicSpec ParseTopicSpec(std::string_view text) {
  const auto colon = text.rfind(':');
  TopicSpec spec;
  if (colon == std::string_view::npos) {
    spec.name = std::string(text);
  } else {
    spec.name = std::string(text.substr(0, colon));
    const auto digits = text.substr(colon + 1);
    const auto [ptr, ec] =
        std::from_chars(digits.data(), digits.data() + digits.size(), spec.partitions);
    if (ec != std::errc() || ptr != digits.data() + digits.size() || spec.partitions < 1 ||
        spec.partitions > 10000) {
      throw ConfigError(
          fmt::format("--topic '{}': expected NAME:PARTITIONS with 1-10000 partitions, e.g. "
                      "agent.lifecycle.v1:12",
                      text));
    }
  }
  ValidateTopicName(spec.name, "--topic");
  return spec;
}

std::vector<TopicSpec> DefaultTopics(const std::string& topic, int partitions) {
  return {{topic, partitions},
          {topic + ".dlq", partitions},
          {ControlTopicFor(topic), partitions},
          {HeartbeatTopicFor(topic), partitions}};
}

EmbeddedKafka::EmbeddedKafka(int broker_count) : broker_count_(broker_count) {
  if (broker_count < 1 || broker_count > 32) {
    throw ConfigError(
        fmt::format("--brokers {}: the embedded Kafka runs 1-32 brokers", broker_count));
  }
  // The mock cluster needs a client handle to run in; this one never produces.
  auto conf = MakeConf({{"client.id", "agentwire-embedded-kafka"}, {"log_level", "3"}});
  owner_ = MakeClient(RD_KAFKA_PRODUCER, std::move(conf));
  cluster_ = rd_kafka_mock_cluster_new(owner_.get(), broker_count);
  if (cluster_ == nullptr) {
    throw KafkaError("could not start the embedded Kafka (rd_kafka_mock_cluster_new failed)",
                     false);
  }
  bootstrap_servers_ = rd_kafka_mock_cluster_bootstraps(cluster_);
}

EmbeddedKafka::~EmbeddedKafka() {
  if (cluster_ != nullptr) rd_kafka_mock_cluster_destroy(cluster_);
}

void EmbeddedKafka::CreateTopic(const TopicSpec& spec) {
  const int replication = std::min(3, broker_count_);
  const auto err =
      rd_kafka_mock_topic_create(cluster_, spec.name.c_str(), spec.partitions, replication);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw KafkaError(fmt::format("create topic {}: {}", spec.name, ErrorText(err)), false);
  }
}

void EmbeddedKafka::SetBrokerDown(int32_t broker_id) {
  rd_kafka_mock_broker_set_down(cluster_, broker_id);
}

void EmbeddedKafka::SetBrokerUp(int32_t broker_id) {
  rd_kafka_mock_broker_set_up(cluster_, broker_id);
}

void EmbeddedKafka::SetBrokerRtt(int32_t broker_id, int rtt_ms) {
  rd_kafka_mock_broker_set_rtt(cluster_, broker_id, rtt_ms);
}

void EmbeddedKafka::SetPartitionLeader(const std::string& topic, int32_t partition,
                                       int32_t broker_id) {
  rd_kafka_mock_partition_set_leader(cluster_, topic.c_str(), partition, broker_id);
}

void EmbeddedKafka::PushRequestErrors(int16_t api_key,
                                      const std::vector<rd_kafka_resp_err_t>& errors) {
  rd_kafka_mock_push_request_errors_array(cluster_, api_key, errors.size(), errors.data());
}

}  // namespace agentwire::kafka
