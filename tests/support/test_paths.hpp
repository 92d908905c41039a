#pragma once

#include <string>
#include <vector>

namespace agentwire::testing {

/// Absolute path of the built `agentwire` executable.
std::string AgentwireBinary();
/// The repository root.
std::string SourceDir();

/// argv for `agentwire <command>` (archive or analytics) as the consumer tests run it: against
/// `brokers` and `dsn`, migrating, no metrics port, and Kafka timeouts short enough for a
/// rebalance or a restart to settle in seconds; `extra` flags follow.
std::vector<std::string> ConsumerCommand(const std::string& command, const std::string& brokers,
                                         const std::string& dsn,
                                         const std::vector<std::string>& extra);

/// argv for `agentwire supervisor` against `brokers` and `topic` with the same short Kafka group
/// timings and no metrics port; `extra` flags follow (--group, --cancel-timeout, ...).
std::vector<std::string> SupervisorCommand(const std::string& brokers, const std::string& topic,
                                           const std::vector<std::string>& extra);

}  // namespace agentwire::testing
