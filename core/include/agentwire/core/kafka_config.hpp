#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentwire/core/kafka_handles.hpp"

namespace agentwire::kafka {

/// librdkafka properties, e.g. {"bootstrap.servers", "127.0.0.1:9092"}.
using Properties = std::map<std::string, std::string>;

/// Parses repeated `key=value` strings (the `--kafka` flag). Throws ConfigError naming
/// the offending entry.
Properties ParseProperties(const std::vector<std::string>& entries);

/// Builds a librdkafka configuration. Throws ConfigError naming the property and
/// librdkafka's reason when a key is unknown or a value invalid. librdkafka's own log
/// lines are routed to agentwire's logger (facility and message as fields).
ConfPtr MakeConf(const Properties& properties);

/// Creates a client, taking over `conf` only on success. Throws ConfigError.
HandlePtr MakeClient(rd_kafka_type_t type, ConfPtr conf);

/// "Broker: Not leader for partition (NOT_LEADER_FOR_PARTITION)".
std::string ErrorText(rd_kafka_resp_err_t err);

/// Number of partitions of `topic`, nullopt when the cluster has no such topic. Never creates
/// the topic (it asks for the whole cluster's metadata). Throws KafkaError (retryable) when the
/// cluster does not answer in time or reports the topic in error.
std::optional<int> FindPartitionCount(rd_kafka_t* client, const std::string& topic,
                                      std::chrono::milliseconds timeout);

/// "no such topic on the cluster. Hint: ..." for callers of FindPartitionCount.
std::string MissingTopicText(const std::string& topic);

/// FindPartitionCount, throwing KafkaError (fatal) when the topic does not exist.
int PartitionCount(rd_kafka_t* client, const std::string& topic, std::chrono::milliseconds timeout);

/// A topic name Kafka accepts: 1-249 chars of [a-zA-Z0-9._-]. Throws ConfigError
/// mentioning `what` (e.g. "--topic").
void ValidateTopicName(std::string_view name, std::string_view what);

}  // namespace agentwire::kafka
