#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agentwire/core/kafka_handles.hpp"

struct rd_kafka_mock_cluster_s;

namespace agentwire::kafka {

struct TopicSpec {
  std::string name;
  int partitions = 12;
};

/// Parses `NAME:PARTITIONS` (the `--topic` flag of `agentwire broker`). Throws ConfigError.
TopicSpec ParseTopicSpec(std::string_view text);

/// The default topics: agent.lifecycle.v1 with 12 partitions, its .dlq, and the run-control
/// topics .control and .heartbeat (docs/runs.md), all with the same partition count.
std::vector<TopicSpec> DefaultTopics(const std::string& topic = "agent.lifecycle.v1",
                                     int partitions = 12);

/// librdkafka's mock cluster: a real Kafka wire-protocol server on random 127.0.0.1
/// ports, living inside this process. Any client in any process can connect to
/// BootstrapServers(). Broker ids are 1..broker_count.
///
/// Limits worth knowing (librdkafka 2.0.2): ~5 MiB retained per partition (older batches
/// are dropped on append), no CreateTopics admin API (use CreateTopic), offsetsForTimes
/// answers -1. Thread-safe: the fault injection calls may come from any thread.
class EmbeddedKafka final {
 public:
  /// Throws KafkaError when the cluster cannot be started.
  explicit EmbeddedKafka(int broker_count);
  ~EmbeddedKafka();
  EmbeddedKafka(const EmbeddedKafka&) = delete;
  EmbeddedKafka& operator=(const EmbeddedKafka&) = delete;

  const std::string& BootstrapServers() const noexcept { return bootstrap_servers_; }
  int BrokerCount() const noexcept { return broker_count_; }

  /// Replication factor defaults to min(3, broker count).
  void CreateTopic(const TopicSpec& spec);

  // Fault injection, used by tests and by `agentwire broker` never.
  void SetBrokerDown(int32_t broker_id);
  void SetBrokerUp(int32_t broker_id);
  void SetBrokerRtt(int32_t broker_id, int rtt_ms);
  void SetPartitionLeader(const std::string& topic, int32_t partition, int32_t broker_id);
  /// The next requests of `api_key` (e.g. RD_KAFKAP_Produce = 0) fail with `errors`, in order.
  void PushRequestErrors(int16_t api_key, const std::vector<rd_kafka_resp_err_t>& errors);

  rd_kafka_mock_cluster_s* Cluster() const noexcept { return cluster_; }

 private:
  int broker_count_;
  HandlePtr owner_;  // the mock cluster lives inside this client handle's threads
  rd_kafka_mock_cluster_s* cluster_ = nullptr;
  std::string bootstrap_servers_;
};

}  // namespace agentwire::kafka
