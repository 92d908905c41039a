#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>

namespace CLI {
class App;
}

namespace agentwire::metrics {
class Registry;
}

namespace agentwire::consumers {

/// Flags archive and analytics share (besides the Kafka and log flags).
struct ServiceOptions {
  std::string dsn;                          // --pg, AGENTWIRE_PG_DSN (required)
  std::string group;                        // --group
  bool migrate = false;                     // --migrate
  size_t batch_size = 5000;                 // --batch-size
  std::string batch_time = "200";           // --batch-ms (milliseconds, or a duration like 1s)
  int metrics_port = 0;                     // --metrics-port, AGENTWIRE_METRICS_PORT (0 = off)
  std::string metrics_address = "0.0.0.0";  // --metrics-address
  /// --instance-id, AGENTWIRE_INSTANCE_ID: the name the group members' group.instance.id is
  /// made of (static membership). Unset: this host's name; "": dynamic membership.
  std::optional<std::string> instance_id;

  /// Throws ConfigError naming the flag.
  void Validate() const;
  std::chrono::milliseconds BatchTime() const;
};

/// The instance name of this process in one consumer group (--instance-id), held for as long
/// as the process lives: the group.instance.id of its members is made of it, so a process
/// restarted on the same host (a crash, kill -9, a container restart) takes its members' places
/// back without a rebalance. Two processes of one group on one host must not share a name
/// (the broker would fence one of them for good): each name is claimed with an abstract Unix
/// socket, which the kernel releases when the process dies, however it dies.
class InstanceClaim final {
 public:
  /// `requested`: std::nullopt = this host's name, or the first of "<host>-2", "<host>-3", ...
  /// that no other process of `group` on this host holds (so a second process on one host
  /// gets its own name, and each gets the same one back after a restart); "" = no name (dynamic
  /// membership); a name = that one. Throws ConfigError for a name with characters Kafka does
  /// not accept, or one another process of `group` on this host holds.
  static InstanceClaim Acquire(const std::string& group,
                               const std::optional<std::string>& requested);
  InstanceClaim(InstanceClaim&& other) noexcept;
  InstanceClaim& operator=(InstanceClaim&& other) noexcept;
  InstanceClaim(const InstanceClaim&) = delete;
  InstanceClaim& operator=(const InstanceClaim&) = delete;
  ~InstanceClaim();

  /// The claimed name; "" for dynamic membership.
  const std::string& Id() const noexcept { return id_; }

 private:
  InstanceClaim(std::string id, int fd) : id_(std::move(id)), fd_(fd) {}
  std::string id_;
  int fd_ = -1;
};

/// Default --metrics-port of each service: distinct, so archive and analytics can run on one
/// host with their defaults.
inline constexpr int kArchiveMetricsPort = 9464;
inline constexpr int kAnalyticsMetricsPort = 9465;

/// Registers the flags above on `app`; `group_env` is the group's variable name.
void AddServiceOptions(CLI::App& app, ServiceOptions& options, const std::string& default_group,
                       const std::string& group_env, int default_metrics_port);

/// --migrate: applies pending migrations; otherwise checks that the schema is current.
/// Throws ConfigError.
void PrepareDatabase(const ServiceOptions& options);

/// Runs `run` until SIGINT/SIGTERM, serving /metrics, /healthz and /readyz (with `ready`) on
/// --metrics-port meanwhile. BlockTerminationSignals() must have been called before any thread
/// started. Returns the exit code (0 after a clean stop).
int RunService(const ServiceOptions& options, metrics::Registry& registry,
               const std::function<bool()>& ready, const std::function<void(std::stop_token)>& run);

}  // namespace agentwire::consumers
