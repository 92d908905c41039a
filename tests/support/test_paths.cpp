#include "support/test_paths.hpp"

namespace agentwire::testing {

std::string AgentwireBinary() { return AGENTWIRE_BINARY; }
std::string SourceDir() { return AGENTWIRE_SOURCE_DIR; }

namespace {

// A consumer group of agentwire's as the tests run it: no metrics port, and Kafka timeouts short
// enough for a rebalance or a restart to settle in seconds.
std::vector<std::string> GroupCommand(std::vector<std::string> argv,
                                      const std::vector<std::string>& extra) {
  for (const char* flag : {"--metrics-port", "0", "--kafka", "session.timeout.ms=6000", "--kafka",
                           "heartbeat.interval.ms=1000", "--kafka", "fetch.wait.max.ms=10"}) {
    argv.emplace_back(flag);
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

}  // namespace

std::vector<std::string> ConsumerCommand(const std::string& command, const std::string& brokers,
                                         const std::string& dsn,
                                         const std::vector<std::string>& extra) {
  return GroupCommand({AgentwireBinary(), command, "--brokers", brokers, "--pg", dsn, "--migrate"},
                      extra);
}

std::vector<std::string> SupervisorCommand(const std::string& brokers, const std::string& topic,
                                           const std::vector<std::string>& extra) {
  return GroupCommand({AgentwireBinary(), "supervisor", "--brokers", brokers, "--topic", topic},
                      extra);
}

}  // namespace agentwire::testing
