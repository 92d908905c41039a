#include "support/test_paths.hpp"

namespace agentwire::testing {

std::string AgentwireBinary() { return AGENTWIRE_BINARY; }
std::string SourceDir() { return AGENTWIRE_SOURCE_DIR; }

std::vector<std::string> ConsumerCommand(const std::string& command, const std::string& brokers,
                                         const std::string& dsn,
                                         const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {AgentwireBinary(),
                                   command,
                                   "--brokers",
                                   brokers,
                                   "--pg",
                                   dsn,
                                   "--migrate",
                                   "--metrics-port",
                                   "0",
                                   "--kafka",
                                   "session.timeout.ms=6000",
                                   "--kafka",
                                   "heartbeat.interval.ms=1000",
                                   "--kafka",
                                   "fetch.wait.max.ms=10"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

}  // namespace agentwire::testing
