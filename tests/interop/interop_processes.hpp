#pragma once

// Real processes for the interop tests: `agentwire broker`, `agentwire gateway`, and the
// external tools (kcat, protoc, Debian's python3) whose paths CMake passes in.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/subprocess.hpp"
#include "support/test_paths.hpp"
#include "support/ws_client.hpp"

namespace agentwire::testing::interop {

inline constexpr const char* kTopic = "agent.lifecycle.v1";
inline constexpr int kPartitions = 12;
inline constexpr const char* kJwtSecret = "agentwire-interop-secret-0123456789abcdef";

/// Empty when `path` names an executable file; otherwise one line saying what is missing and
/// how to get it.
inline std::string MissingTool(const std::string& path, const std::string& what,
                               const std::string& package) {
  std::error_code ec;
  if (!path.empty() && path.find("NOTFOUND") == std::string::npos &&
      std::filesystem::is_regular_file(path, ec) &&
      (std::filesystem::status(path, ec).permissions() & std::filesystem::perms::owner_exec) !=
          std::filesystem::perms::none) {
    return {};
  }
  return what + " not found at '" + path + "': install the Debian package " + package +
         " (scripts/bootstrap.sh) and re-run cmake";
}

/// `agentwire broker --brokers 1 --topic agent.lifecycle.v1:12`, its bootstrap list read back
/// from --bootstrap-file. `bootstrap` stays empty when it did not come up within 30 s.
struct BrokerProcess {
  std::string directory = MakeTempDirectory("agentwire-interop-broker");
  std::unique_ptr<Subprocess> process;
  std::string bootstrap;

  BrokerProcess() {
    const std::string file = directory + "/bootstrap";
    Subprocess::Options options;
    options.unset_env = {"AGENTWIRE_BOOTSTRAP_FILE", "AGENTWIRE_LOG_FORMAT", "AGENTWIRE_BROKERS"};
    process = std::make_unique<Subprocess>(
        std::vector<std::string>{AgentwireBinary(), "broker", "--brokers", "1", "--topic",
                                 std::string(kTopic) + ":" + std::to_string(kPartitions),
                                 "--bootstrap-file", file},
        options);
    if (WaitForFile(file, std::chrono::seconds(30))) bootstrap = ReadFirstLine(file);
  }
  ~BrokerProcess() {
    process.reset();
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;
};

/// One `agentwire gateway` replica on a free port. `port` stays 0 when it did not bind within
/// 30 s; `ready` says whether /readyz answered 200 within 30 s after that.
struct GatewayProcess {
  std::string directory = MakeTempDirectory("agentwire-interop-gateway");
  std::unique_ptr<Subprocess> process;
  uint16_t port = 0;
  bool ready = false;

  explicit GatewayProcess(const std::string& bootstrap) {
    const std::string file = directory + "/port";
    Subprocess::Options options;
    options.unset_env = {"AGENTWIRE_JWKS_FILE", "AGENTWIRE_JWT_ISSUER", "AGENTWIRE_JWT_AUDIENCE",
                         "AGENTWIRE_LOG_FORMAT", "AGENTWIRE_TOPIC"};
    options.env = {{"AGENTWIRE_JWT_SECRET", kJwtSecret}};  // not a flag: keep it out of ps
    process = std::make_unique<Subprocess>(
        std::vector<std::string>{AgentwireBinary(), "gateway", "--brokers", bootstrap, "--port",
                                 "0", "--port-file", file, "--threads", "2"},
        options);
    if (!WaitForFile(file, std::chrono::seconds(30))) return;
    port = static_cast<uint16_t>(std::stoi(ReadFirstLine(file)));
    // Readiness (Kafka assigned and caught up) is what a load balancer waits for too.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline && process->Running()) {
      if (HttpGet(port, "/readyz").status == 200) {
        ready = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~GatewayProcess() {
    process.reset();
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
  GatewayProcess(const GatewayProcess&) = delete;
  GatewayProcess& operator=(const GatewayProcess&) = delete;
};

}  // namespace agentwire::testing::interop
