#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/options.hpp"

namespace agentwire::producers {

struct RunControlConfig {
  /// bootstrap.servers and any librdkafka overrides.
  kafka::Properties client_properties;
  /// The event topic; the control and heartbeat topics are derived from it (docs/runs.md).
  std::string topic = kDefaultTopic;
  /// How often each open run's heartbeat is published. Keep it at most a third of the lease.
  std::chrono::milliseconds heartbeat_interval{5'000};
  /// The lease runs declare in agent_started unless they set their own (RunIdentity::lease).
  std::chrono::milliseconds lease{15'000};
  /// Names this process in heartbeats (host name and pid when empty).
  std::string worker_id;
};

struct RunControlStats {
  uint64_t open_runs = 0;
  uint64_t heartbeats_sent = 0;     // acknowledged by Kafka
  uint64_t heartbeat_failures = 0;  // refused or not acknowledged
  uint64_t cancels_honoured = 0;    // a Stop for one of this process's runs
  uint64_t forged_cancels = 0;      // a Stop for one of our runs naming another user: ignored
  uint64_t cancels_for_others = 0;  // Stops for runs this process does not hold
};

/// What a run learns when its user presses Stop.
struct CancelNotice {
  std::string request_id;
  std::string requested_by;
};

/// The worker side of run control, one per worker process (docs/runs.md): keeps every open
/// run alive with a heartbeat on `<topic>.heartbeat` while the process lives, and delivers the
/// user's Stop (a cancel request on `<topic>.control`) to the run it names. RunEmitter
/// registers its run here when it is given a RunControl; nothing else needs to call it.
///
/// One thread: it reads the control topic (every partition, from where the log ended when
/// this object was made, at a 10 ms fetch wait so a Stop reaches the agent in milliseconds)
/// and publishes the heartbeats. A cancel is honoured only when its user_id is the run's user:
/// a record naming another user is ignored and counted (forged_cancels). Thread-safe.
class RunControl final {
 public:
  /// Connects and positions the control reader at the log's end. Throws ConfigError (bad
  /// properties, a missing control or heartbeat topic: create them, see docs/runs.md) or
  /// KafkaError (the cluster did not answer).
  explicit RunControl(RunControlConfig config);
  /// Stops the thread and flushes the last heartbeats (up to 2 s).
  ~RunControl();
  RunControl(const RunControl&) = delete;
  RunControl& operator=(const RunControl&) = delete;

  std::chrono::milliseconds DefaultLease() const;
  RunControlStats Stats() const;

  /// Called when the run's Stop arrives, on the control thread; at most once per registration.
  using CancelHandler = std::function<void(const CancelNotice&)>;
  /// Heartbeats `run_id` (of `user_id`) from now on, and routes its Stop to `on_cancel`.
  /// Returns a registration id for Unregister. Used by RunEmitter.
  uint64_t Register(const std::string& user_id, const std::string& thread_id,
                    const std::string& run_id, std::chrono::milliseconds lease,
                    CancelHandler on_cancel);
  /// No more heartbeats or Stops for this registration; after it returns, its handler is not
  /// running and will not run.
  void Unregister(uint64_t registration);

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace agentwire::producers
