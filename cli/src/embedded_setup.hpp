#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agentwire/core/embedded_kafka.hpp"

namespace agentwire::cli {

/// Starts the embedded Kafka with `topics` created and logs its bootstrap list.
std::unique_ptr<kafka::EmbeddedKafka> StartEmbeddedKafka(
    int brokers, const std::vector<kafka::TopicSpec>& topics);

/// Writes `bootstrap` + newline to `path` atomically (no-op when path is empty).
void WriteBootstrapFile(const std::string& path, const std::string& bootstrap);

}  // namespace agentwire::cli
