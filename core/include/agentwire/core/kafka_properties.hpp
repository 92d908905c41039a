#pragma once

// Kafka client settings as plain strings. Public headers take these, never librdkafka types, so
// an agent worker that embeds the publisher compiles without librdkafka's or CLI11's headers
// (tests/embedder builds such a program).

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace agentwire::kafka {

/// librdkafka properties, e.g. {"bootstrap.servers", "127.0.0.1:9092"}.
using Properties = std::map<std::string, std::string>;

/// Parses repeated `key=value` strings (the `--kafka` flag). Throws ConfigError naming
/// the offending entry.
Properties ParseProperties(const std::vector<std::string>& entries);

/// A topic name Kafka accepts: 1-249 chars of [a-zA-Z0-9._-]. Throws ConfigError
/// mentioning `what` (e.g. "--topic").
void ValidateTopicName(std::string_view name, std::string_view what);

}  // namespace agentwire::kafka
