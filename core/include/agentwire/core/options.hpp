#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/logging.hpp"

namespace CLI {
class App;
}

namespace agentwire {

inline constexpr const char* kDefaultBrokers = "127.0.0.1:9092";
inline constexpr const char* kDefaultTopic = "agent.lifecycle.v1";

/// The run-control topics beside an event topic (docs/runs.md): cancel requests (gateway ->
/// workers and supervisor) and heartbeats (workers -> supervisor). Same partition count and
/// key (user_id) as the event topic.
inline std::string ControlTopicFor(const std::string& topic) { return topic + ".control"; }
inline std::string HeartbeatTopicFor(const std::string& topic) { return topic + ".heartbeat"; }

/// Flags every Kafka-facing subcommand shares. Each flag has an AGENTWIRE_* variable;
/// the flag wins over the variable (CLI11 semantics).
struct KafkaOptions {
  std::string brokers = kDefaultBrokers;      // --brokers, AGENTWIRE_BROKERS
  std::string topic = kDefaultTopic;          // --topic, AGENTWIRE_TOPIC
  std::vector<std::string> extra_properties;  // --kafka key=value (repeatable)

  /// DLQ topic name: `<topic>.dlq`.
  std::string DeadLetterTopic() const { return topic + ".dlq"; }
  /// Throws ConfigError with one line naming the flag.
  void Validate() const;
  /// bootstrap.servers plus the --kafka extras (extras win).
  kafka::Properties ClientProperties() const;
};

struct LogOptions {
  std::string format = "text";  // --log-format, AGENTWIRE_LOG_FORMAT
  std::string level = "info";   // --log-level, AGENTWIRE_LOG_LEVEL
  /// Validates and installs the logger. Throws ConfigError.
  void Apply() const;
};

void AddKafkaOptions(CLI::App& app, KafkaOptions& options);

/// "250ms", "10s", "15m", "2h" or a plain number of seconds ("1.5"). Throws ConfigError
/// naming `what` (the flag).
std::chrono::milliseconds ParseDuration(std::string_view text, std::string_view what);
void AddLogOptions(CLI::App& app, LogOptions& options);

}  // namespace agentwire
