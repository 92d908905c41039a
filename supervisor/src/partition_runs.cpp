#include "partition_runs.hpp"

#include <algorithm>

#include "agentwire/schemas/event_json.hpp"

namespace agentwire::supervisor::internal {

Outcome PartitionRuns::OnEvent(const v1::AgentEvent& event, int64_t offset, Clock::time_point now) {
  Outcome outcome;
  const std::string& run_id = event.run_id();
  const std::string key = Key(event.user_id(), run_id);
  if (ended_.contains(key)) {
    // First terminal wins: whatever follows it (a zombie worker, a racing end, a restarted
    // run id) does not reopen the run.
    outcome.late = true;
    outcome.user = event.user_id();
    return outcome;
  }
  auto found = open_.find(key);
  if (found == open_.end()) {
    if (!event.has_agent_started()) return outcome;  // started before what we read, or never
    OpenRun run;
    run.user = event.user_id();
    run.run = run_id;
    run.thread = event.thread_id();
    run.agent_name = event.agent_name();
    run.trace_id = event.trace_id();
    run.last_seq = event.run_seq();
    run.lease = std::chrono::milliseconds(event.agent_started().lease_ms());
    run.last_life = now;
    run.started_offset = offset;
    found = open_.emplace(key, std::move(run)).first;
    // Stops read before the run's start (the control partition ran ahead of this one).
    for (auto orphan = orphans_.begin(); orphan != orphans_.end();) {
      if (orphan->run != run_id) {
        ++orphan;
        continue;
      }
      if (orphan->user != found->second.user) {
        outcome.forged = true;
      } else if (!found->second.cancel) {
        found->second.cancel = orphan->cancel;
      }
      orphan = orphans_.erase(orphan);
    }
    outcome.user = found->second.user;
    return outcome;
  }
  OpenRun& run = found->second;
  outcome.user = run.user;
  run.last_seq = std::max(run.last_seq, event.run_seq());
  run.last_life = now;
  if (run.trace_id.empty()) run.trace_id = event.trace_id();
  if (schemas::IsTerminal(event)) {
    outcome.ended = true;
    if (run.cancel) outcome.cancel_to_end = now - run.cancel->read_at;
    open_.erase(found);
    RememberEnded(key);
  }
  return outcome;
}

void PartitionRuns::OnHeartbeat(const v1::ControlRecord& record, Clock::time_point now) {
  const auto found = open_.find(Key(record.user_id(), record.run_id()));
  if (found == open_.end()) return;
  found->second.last_life = now;
}

Outcome PartitionRuns::OnCancel(const v1::ControlRecord& record, int64_t offset,
                                Clock::time_point now) {
  Outcome outcome;
  outcome.user = record.user_id();
  PendingCancel cancel{now, record.cancel().request_id(), offset};
  const auto found = open_.find(Key(record.user_id(), record.run_id()));
  if (found == open_.end()) {
    if (OpenForAnotherUser(record.run_id(), record.user_id())) {
      outcome.forged = true;
      return outcome;
    }
    if (ended_.contains(Key(record.user_id(), record.run_id()))) return outcome;  // ended already
    // Keep the first of a flood only.
    const bool known = std::any_of(orphans_.begin(), orphans_.end(), [&](const OrphanCancel& o) {
      return o.run == record.run_id() && o.user == record.user_id();
    });
    if (!known) orphans_.push_back({record.user_id(), record.run_id(), std::move(cancel)});
    return outcome;
  }
  OpenRun& run = found->second;
  if (!run.cancel) run.cancel = std::move(cancel);  // the first request starts the bound
  return outcome;
}

std::vector<Due> PartitionRuns::DueRuns(Clock::time_point now,
                                        std::chrono::milliseconds cancel_timeout) const {
  std::vector<Due> due;
  for (const auto& [key, run] : open_) {
    if (run.ending) continue;
    if (run.cancel && now - run.cancel->read_at >= cancel_timeout) {
      due.push_back({run.user, run.run, EndReason::kCancelled, {}});
      continue;
    }
    const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(now - run.last_life);
    if (run.lease.count() > 0 && silent > run.lease) {
      due.push_back({run.user, run.run, EndReason::kWorkerLost, silent});
    }
  }
  return due;
}

void PartitionRuns::DropStaleOrphans(Clock::time_point now, std::chrono::milliseconds grace) {
  std::erase_if(orphans_, [&](const OrphanCancel& o) { return now - o.cancel.read_at >= grace; });
}

const OpenRun* PartitionRuns::Find(const std::string& user, const std::string& run) const {
  const auto found = open_.find(Key(user, run));
  return found == open_.end() ? nullptr : &found->second;
}

void PartitionRuns::MarkEnding(const std::string& user, const std::string& run, bool ending) {
  const auto found = open_.find(Key(user, run));
  if (found != open_.end()) found->second.ending = ending;
}

bool PartitionRuns::OpenForAnotherUser(const std::string& run, const std::string& user) const {
  // Linear: Stops are rare next to events, and this runs only for one naming no run of its user.
  return std::any_of(open_.begin(), open_.end(), [&](const auto& entry) {
    return entry.second.run == run && entry.second.user != user;
  });
}

std::optional<int64_t> PartitionRuns::OldestOpenStart() const {
  std::optional<int64_t> oldest;
  for (const auto& [id, run] : open_) {
    if (!oldest || run.started_offset < *oldest) oldest = run.started_offset;
  }
  return oldest;
}

std::optional<int64_t> PartitionRuns::OldestPendingCancel() const {
  std::optional<int64_t> oldest;
  const auto consider = [&](int64_t offset) {
    if (!oldest || offset < *oldest) oldest = offset;
  };
  for (const auto& [id, run] : open_) {
    if (run.cancel) consider(run.cancel->offset);
  }
  for (const auto& orphan : orphans_) consider(orphan.cancel.offset);
  return oldest;
}

bool PartitionRuns::AnyEnding() const {
  return std::any_of(open_.begin(), open_.end(),
                     [](const auto& entry) { return entry.second.ending; });
}

void PartitionRuns::RememberEnded(const std::string& key) {
  if (!ended_.insert(key).second) return;
  ended_order_.push_back(key);
  while (ended_order_.size() > ended_capacity_) {
    ended_.erase(ended_order_.front());
    ended_order_.pop_front();
  }
}

}  // namespace agentwire::supervisor::internal
