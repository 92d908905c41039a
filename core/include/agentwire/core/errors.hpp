#pragma once

#include <stdexcept>
#include <string>

namespace agentwire {

/// Bad configuration: thrown at start-up only. The CLI prints what() as one line and
/// exits with code 2, so the message must name the flag or variable and what to change.
class ConfigError final : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Exit codes shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // ran, but some work failed (e.g. bad input lines)
inline constexpr int kExitConfig = 2;   // bad flags or configuration; nothing was done

/// A Kafka error seen outside the data path (start-up, admin). The message carries the
/// librdkafka error name and a hint.
class KafkaError final : public std::runtime_error {
 public:
  KafkaError(const std::string& what, bool retryable)
      : std::runtime_error(what), retryable_(retryable) {}
  bool IsRetryable() const noexcept { return retryable_; }

 private:
  bool retryable_;
};

}  // namespace agentwire
