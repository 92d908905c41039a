#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>

#include "agentwire/producers/event_sink.hpp"

namespace agentwire::producers {

class RunControl;

struct SimulatorOptions {
  int users = 10;  // user ids: <user_prefix>0001 ...
  std::string user_prefix = "user-";
  double events_per_second = 100;              // total across users; <= 0 means as fast as possible
  std::chrono::milliseconds duration{10'000};  // 0 = until stopped
  uint64_t max_events = 0;                     // 0 = no limit
  double failure_ratio = 0.1;                  // share of runs that end in agent_failed
  uint64_t seed = 0;                           // 0 = random
  std::string agent_name = "researcher";
  /// With it, runs are supervised (lease, heartbeats) and honour the user's Stop like an agent
  /// would: the run stops playing its steps and ends cancelled (docs/runs.md).
  RunControl* control = nullptr;
};

struct SimulatorStats {
  uint64_t events = 0;  // accepted by the sink (abandoned-run terminals included)
  uint64_t runs_started = 0;
  uint64_t runs_completed = 0;
  uint64_t runs_failed = 0;
  uint64_t runs_abandoned = 0;  // still open at the end: closed with agent_failed run_abandoned
  uint64_t runs_cancelled = 0;  // stopped by their user (RunControl)
  uint64_t rejected = 0;        // sink answered other than kAccepted (after waiting)
};

/// Plays realistic agent runs through RunEmitters: each user has one active run at a time
/// (started, a few thinking steps, tool calls with their results — some failing —, streamed
/// answer deltas, then completed or failed), interleaved across users, paced to
/// `events_per_second`. Used by `agentwire emit simulate`, `agentwire dev` and benchmarks.
/// `on_progress` (optional) is called about once a second.
SimulatorStats RunSimulation(EventSink& sink, const SimulatorOptions& options,
                             const std::stop_token& stop = {},
                             const std::function<void(const SimulatorStats&)>& on_progress = {});

}  // namespace agentwire::producers
