#include "agentwire/consumers/service.hpp"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

#include "agentwire/consumers/migrations.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/http_metrics_server.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"

namespace agentwire::consumers {

namespace {

// Kafka's rule for a group.instance.id (as for topic names); the writer suffix "-w<N>" is
// added to it, hence the length.
constexpr size_t kMaxInstanceIdLength = 200;

bool ValidInstanceId(const std::string& id) {
  return !id.empty() && id.size() <= kMaxInstanceIdLength &&
         std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
         });
}

/// Binds the abstract Unix socket that stands for (group, id) on this host; -1 when another
/// process holds it. Abstract names live in the network namespace, so containers do not see
/// each other's (and have their own host names anyway).
int Claim(const std::string& group, const std::string& id) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string name =
      fmt::format("agentwire-instance/{:08x}/{:.70}", Fnv1a32(group + '\n' + id), id);
  std::memcpy(address.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), length) == 0) return fd;
  const int error = errno;
  ::close(fd);
  if (error == EADDRINUSE) return -1;
  throw std::runtime_error(fmt::format("bind {}: {}", name, std::strerror(error)));
}

std::string HostName() {
  char name[256] = "";
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == 0) return "agentwire";
  std::string host(name);
  // Kafka accepts [A-Za-z0-9._-]; host names are that already, but be sure.
  for (char& c : host) {
    if (!ValidInstanceId(std::string(1, c))) c = '-';
  }
  return host.substr(0, kMaxInstanceIdLength - 4);
}

}  // namespace

InstanceClaim InstanceClaim::Acquire(const std::string& group,
                                     const std::optional<std::string>& requested) {
  if (requested && requested->empty()) return InstanceClaim("", -1);
  if (requested) {
    if (!ValidInstanceId(*requested)) {
      throw ConfigError(fmt::format(
          "--instance-id / AGENTWIRE_INSTANCE_ID '{}': expected 1-{} characters of A-Z a-z 0-9 "
          ". _ - (or '' for no static membership)",
          *requested, kMaxInstanceIdLength));
    }
    const int fd = Claim(group, *requested);
    if (fd < 0) {
      throw ConfigError(fmt::format(
          "--instance-id {}: another process of group {} on this host already uses it; give "
          "each process its own --instance-id (or leave it unset: each then gets its own)",
          *requested, group));
    }
    return InstanceClaim(*requested, fd);
  }
  const std::string host = HostName();
  constexpr int kMaxSlots = 64;
  for (int slot = 1; slot <= kMaxSlots; ++slot) {
    std::string id = slot == 1 ? host : fmt::format("{}-{}", host, slot);
    const int fd = Claim(group, id);
    if (fd >= 0) return InstanceClaim(std::move(id), fd);
  }
  throw ConfigError(fmt::format(
      "{} processes of group {} already run on this host: set --instance-id", kMaxSlots, group));
}

InstanceClaim::InstanceClaim(InstanceClaim&& other) noexcept
    : id_(std::move(other.id_)), fd_(std::exchange(other.fd_, -1)) {}

InstanceClaim& InstanceClaim::operator=(InstanceClaim&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    id_ = std::move(other.id_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

InstanceClaim::~InstanceClaim() {
  if (fd_ >= 0) ::close(fd_);
}

void ServiceOptions::Validate() const {
  if (dsn.empty()) {
    throw ConfigError(
        "--pg / AGENTWIRE_PG_DSN is required: a PostgreSQL connection string, e.g. "
        "'host=127.0.0.1 port=5432 user=agentwire dbname=agentwire' or postgresql://...");
  }
  if (group.empty()) throw ConfigError("--group: the consumer group id must not be empty");
  if (batch_size == 0 || batch_size > 1'000'000) {
    throw ConfigError(fmt::format("--batch-size {}: expected 1..1000000", batch_size));
  }
  if (metrics_port < 0 || metrics_port > 65535) {
    throw ConfigError(fmt::format("--metrics-port {}: expected 0..65535 (0 = off)", metrics_port));
  }
  (void)BatchTime();
}

std::chrono::milliseconds ServiceOptions::BatchTime() const {
  // A plain number is milliseconds here (the flag is --batch-ms).
  const bool plain =
      !batch_time.empty() && batch_time.find_first_not_of("0123456789") == std::string::npos;
  const auto value = plain ? std::chrono::milliseconds(std::stoll(batch_time))
                           : ParseDuration(batch_time, "--batch-ms");
  if (value.count() < 1) throw ConfigError("--batch-ms: must be at least 1 ms");
  return value;
}

void AddServiceOptions(CLI::App& app, ServiceOptions& options, const std::string& default_group,
                       const std::string& group_env, int default_metrics_port) {
  options.group = default_group;
  options.metrics_port = default_metrics_port;
  app.add_option("--pg", options.dsn, "PostgreSQL connection string")->envname("AGENTWIRE_PG_DSN");
  app.add_option("--group", options.group, "Consumer group id (offsets are kept per group)")
      ->envname(group_env)
      ->capture_default_str();
  app.add_flag("--migrate", options.migrate,
               "Apply pending infra/sql migrations (embedded in the binary) before starting");
  app.add_option("--batch-size", options.batch_size, "Most messages per PostgreSQL transaction")
      ->capture_default_str();
  app.add_option("--batch-ms", options.batch_time,
                 "Longest wait before a partial batch is written (milliseconds)")
      ->capture_default_str();
  app.add_option("--metrics-port", options.metrics_port,
                 "Port for /metrics, /healthz, /readyz (0 = off)")
      ->envname("AGENTWIRE_METRICS_PORT")
      ->capture_default_str();
  app.add_option("--metrics-address", options.metrics_address, "Address for --metrics-port")
      ->capture_default_str();
  app.add_option("--instance-id", options.instance_id,
                 "Stable name of this process in the group (static membership: a restarted "
                 "process takes its partitions back without a rebalance); default: the host "
                 "name, '<host>-2'... for more processes on one host; '' = dynamic membership")
      ->envname("AGENTWIRE_INSTANCE_ID");
}

void PrepareDatabase(const ServiceOptions& options) {
  if (options.migrate) {
    const int applied = ApplyMigrations(options.dsn);
    log::Info("database schema up to date", {{"count", applied}});
  } else {
    RequireSchema(options.dsn);
  }
}

int RunService(const ServiceOptions& options, metrics::Registry& registry,
               const std::function<bool()>& ready,
               const std::function<void(std::stop_token)>& run) {
  std::unique_ptr<metrics::HttpMetricsServer> server;
  if (options.metrics_port != 0) {
    server = std::make_unique<metrics::HttpMetricsServer>(
        registry, options.metrics_address, static_cast<uint16_t>(options.metrics_port), ready);
  }
  std::stop_source stop;
  std::thread signal_watcher([&stop] {
    while (!stop.stop_requested()) {
      if (const auto signal = WaitForTerminationSignal(std::chrono::milliseconds(200))) {
        log::Info("signal received: finishing the current batch", {{"signal", *signal}});
        stop.request_stop();
      }
    }
  });
  try {
    run(stop.get_token());
  } catch (...) {
    stop.request_stop();
    signal_watcher.join();
    throw;
  }
  stop.request_stop();
  signal_watcher.join();
  return kExitOk;
}

}  // namespace agentwire::consumers
