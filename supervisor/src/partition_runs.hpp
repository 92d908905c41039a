#pragma once

// The supervisor's state for one partition number N (the runs of the users whose events,
// Stops and heartbeats sit in partition N of the three topics): what is open, what is pending,
// what is due. No Kafka here: the driver (supervisor.cpp) feeds it records with their read
// time and asks it what to end. Private to agentwire_supervisor. Not thread-safe.

#include <agentwire/v1/control.pb.h>
#include <agentwire/v1/events.pb.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace agentwire::supervisor::internal {

using Clock = std::chrono::steady_clock;

struct PendingCancel {
  Clock::time_point read_at;
  std::string request_id;
  int64_t offset = -1;  // in the control partition
};

struct OpenRun {
  std::string user;
  std::string run;
  std::string thread;
  std::string agent_name;
  std::string trace_id;
  uint32_t last_seq = 0;
  std::chrono::milliseconds lease{0};  // 0: not supervised for liveness
  Clock::time_point last_life;
  int64_t started_offset = -1;  // its agent_started in the event partition
  std::optional<PendingCancel> cancel;
  /// The supervisor published an end for it and waits to read it back.
  bool ending = false;
};

/// A cancel naming a run this partition does not know (yet): its agent_started may still be
/// behind in the event partition (rebuild after a takeover, or fetch order across topics).
struct OrphanCancel {
  std::string user;
  std::string run;
  PendingCancel cancel;
};

enum class EndReason { kWorkerLost, kCancelled };

/// A run to end now.
struct Due {
  std::string user;
  std::string run;
  EndReason reason;
  std::chrono::milliseconds silent{0};  // for worker_lost
};

/// What reading one record did, for metrics and logs.
struct Outcome {
  bool late = false;    // an event of a run that had ended
  bool forged = false;  // a cancel whose user is not the run's user
  bool ended = false;   // the run's first terminal event
  std::optional<std::chrono::duration<double>> cancel_to_end;  // when ended with a Stop pending
  std::string user;                                            // the run's user, for logs
};

class PartitionRuns final {
 public:
  explicit PartitionRuns(size_t recently_ended_capacity = 10'000)
      : ended_capacity_(recently_ended_capacity) {}

  Outcome OnEvent(const v1::AgentEvent& event, int64_t offset, Clock::time_point now);
  void OnHeartbeat(const v1::ControlRecord& record, Clock::time_point now);
  /// A cancel request. A cancel for a run this partition does not know is kept as an orphan
  /// until the run's agent_started is read or DropStaleOrphans forgets it.
  Outcome OnCancel(const v1::ControlRecord& record, int64_t offset, Clock::time_point now);

  /// The runs to end at `now` (leases run out, Stops unconfirmed past `cancel_timeout`),
  /// skipping those already ending.
  std::vector<Due> DueRuns(Clock::time_point now, std::chrono::milliseconds cancel_timeout) const;
  /// Orphan cancels older than `grace` name no open run: forgotten (the event partition has
  /// been read to its end meanwhile; the caller checks that).
  void DropStaleOrphans(Clock::time_point now, std::chrono::milliseconds grace);

  /// Runs are keyed by (user, run id): two users' runs may share an id (run ids are chosen by
  /// workers), and neither may touch the other's.
  const OpenRun* Find(const std::string& user, const std::string& run) const;
  void MarkEnding(const std::string& user, const std::string& run, bool ending);
  /// An open run `run` of a user other than `user` (a Stop naming it is forged).
  bool OpenForAnotherUser(const std::string& run, const std::string& user) const;

  /// The offsets to commit: the oldest open run's agent_started (event partition) and the
  /// oldest pending cancel (control partition); nullopt when there is none (commit the read
  /// position).
  std::optional<int64_t> OldestOpenStart() const;
  std::optional<int64_t> OldestPendingCancel() const;

  size_t OpenCount() const { return open_.size(); }
  bool AnyEnding() const;
  bool RecentlyEnded(const std::string& user, const std::string& run) const {
    return ended_.contains(Key(user, run));
  }

 private:
  static std::string Key(const std::string& user, const std::string& run) {
    std::string key = user;
    key.push_back('\0');
    key += run;
    return key;
  }
  void RememberEnded(const std::string& key);

  std::unordered_map<std::string, OpenRun> open_;  // by Key(user, run_id)
  std::vector<OrphanCancel> orphans_;
  std::unordered_set<std::string> ended_;  // Key(user, run_id)
  std::deque<std::string> ended_order_;
  size_t ended_capacity_;
};

}  // namespace agentwire::supervisor::internal
