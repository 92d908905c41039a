#pragma once

// Creating librdkafka clients and asking the cluster about topics. Includes librdkafka's
// header: for the libraries' own sources, not for public headers (see kafka_properties.hpp).

#include <chrono>
#include <optional>
#include <string>

#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/kafka_properties.hpp"

namespace agentwire::kafka {

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

}  // namespace agentwire::kafka
