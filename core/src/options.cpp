#include "agentwire/core/options.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cmath>

#include "agentwire/core/errors.hpp"

namespace agentwire {

void KafkaOptions::Validate() const {
  if (brokers.empty() || brokers.find(':') == std::string::npos) {
    throw ConfigError(
        fmt::format("--brokers / AGENTWIRE_BROKERS '{}': expected host:port[,host:port...], e.g. "
                    "127.0.0.1:9092 (agentwire broker prints its list)",
                    brokers));
  }
  kafka::ValidateTopicName(topic, "--topic / AGENTWIRE_TOPIC");
  (void)kafka::ParseProperties(extra_properties);
}

kafka::Properties KafkaOptions::ClientProperties() const {
  kafka::Properties properties{{"bootstrap.servers", brokers}};
  for (auto& [key, value] : kafka::ParseProperties(extra_properties)) {
    properties[key] = value;
  }
  return properties;
}

std::chrono::milliseconds ParseDuration(std::string_view text, std::string_view what) {
  const std::string value(text);
  size_t used = 0;
  double number = 0;
  try {
    number = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = value.substr(used);
  double millis_per_unit = 0;
  if (unit.empty() || unit == "s") {
    millis_per_unit = 1000;
  } else if (unit == "ms") {
    millis_per_unit = 1;
  } else if (unit == "m") {
    millis_per_unit = 60'000;
  } else if (unit == "h") {
    millis_per_unit = 3'600'000;
  } else if (unit == "d") {
    millis_per_unit = 86'400'000;
  } else if (unit == "w") {
    millis_per_unit = 7 * 86'400'000.0;
  }
  // stod also takes "inf", "nan", hex and leading spaces: only plain decimal numbers are
  // durations, and nothing beyond ~30 years (which would overflow int64 milliseconds later).
  const bool plain =
      !value.empty() && (std::isdigit(static_cast<unsigned char>(value[0])) || value[0] == '.');
  const bool in_range = std::isfinite(number) && number * millis_per_unit <= 1e12;
  if (!plain || used == 0 || millis_per_unit == 0 || number < 0 || !in_range ||
      value.find_first_of("xXpP") != std::string::npos) {
    throw ConfigError(fmt::format(
        "{} '{}': expected a duration like 250ms, 10s, 15m, 2h, 7d, 1w (a plain number is seconds)",
        what, text));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(number * millis_per_unit));
}

void LogOptions::Apply() const { log::Setup(log::ParseFormat(format), level); }

void AddKafkaOptions(CLI::App& app, KafkaOptions& options) {
  app.add_option("--brokers", options.brokers, "Kafka bootstrap servers (host:port,...)")
      ->envname("AGENTWIRE_BROKERS")
      ->capture_default_str();
  app.add_option("--topic", options.topic, "Event topic; the DLQ is <topic>.dlq")
      ->envname("AGENTWIRE_TOPIC")
      ->capture_default_str();
  app.add_option("--kafka", options.extra_properties,
                 "Extra librdkafka property key=value (repeatable)");
}

void AddLogOptions(CLI::App& app, LogOptions& options) {
  app.add_option("--log-format", options.format, "Log format: text or json")
      ->envname("AGENTWIRE_LOG_FORMAT")
      ->capture_default_str();
  app.add_option("--log-level", options.level, "trace, debug, info, warn, error")
      ->envname("AGENTWIRE_LOG_LEVEL")
      ->capture_default_str();
}

}  // namespace agentwire
