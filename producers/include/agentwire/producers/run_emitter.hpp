#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <vector>

#include "agentwire/producers/event_sink.hpp"

namespace agentwire::producers {

/// Who a run belongs to; copied into every event of the run.
struct RunIdentity {
  std::string user_id;
  std::string thread_id;
  std::string run_id;  // generated (ULID) when empty
  std::string agent_name;
  std::string trace_id;
  std::map<std::string, std::string> attributes;
  /// The run's lease (docs/runs.md): how long the supervisor waits after its last sign of life
  /// before it ends it as worker_lost. 0 = the RunControl's default. Ignored without one.
  std::chrono::milliseconds lease{0};
};

class RunControl;

/// One per agent run. Assigns run_seq 1, 2, 3, ... in call order, stamps event_id and
/// emitted_at (the wall clock to the nanosecond, never decreasing within the run), and
/// guarantees a terminal event: destroyed without Completed() or Failed() it emits
/// agent_failed with error_code "run_abandoned" — the bug class where users saw runs that
/// started and never ended.
///
/// Size policy: an event larger than `max_event_bytes` (0 = the sink's MaxEventBytes(),
/// 900,000 bytes for an EventPublisher with default settings) has its large text fields cut
/// to fit and is marked in `truncated` (FitToSize); it is never dropped for its size.
///
/// Each call waits up to `wait_for_space` when the sink is full; a call that returns
/// anything but kAccepted did not consume a run_seq, so the sequence never has holes.
/// After the terminal event further calls return kClosed. Thread-safe (calls are
/// serialized so run_seq order equals publish order).
///
/// With a RunControl (docs/runs.md), the run is supervised: agent_started declares its lease,
/// the RunControl heartbeats it until its terminal event, and the user's Stop reaches the
/// agent's code through StopToken() / OnCancel(); the agent aborts its work and calls
/// Cancelled(). A run destroyed after a Stop without a terminal event ends as cancelled.
class RunEmitter final {
 public:
  RunEmitter(EventSink& sink, RunIdentity identity,
             std::chrono::milliseconds wait_for_space = std::chrono::seconds(5),
             DeliveryCallback on_delivery = {}, size_t max_event_bytes = 0,
             RunControl* control = nullptr);
  ~RunEmitter();
  RunEmitter(const RunEmitter&) = delete;
  RunEmitter& operator=(const RunEmitter&) = delete;

  PublishStatus Started(std::string input, std::string model = {});
  PublishStatus Thinking(std::string text);
  PublishStatus ToolExecuting(std::string tool_name, std::string input,
                              std::string tool_call_id = {});
  PublishStatus ToolCompleted(std::string tool_name, std::string output, uint32_t duration_ms,
                              std::string error = {}, std::string tool_call_id = {});
  PublishStatus MessageDelta(std::string text);
  PublishStatus Completed(std::string result, uint32_t duration_ms = 0);
  PublishStatus Failed(std::string error_code, std::string message);
  /// The user's Stop, confirmed: agent_failed with error_code "cancelled" (docs/runs.md).
  PublishStatus Cancelled(std::string message = "stopped by the user");

  /// Requested when the user pressed Stop (never without a RunControl). Thread-safe.
  std::stop_token StopToken() const { return stop_->source.get_token(); }
  bool CancelRequested() const { return stop_->source.stop_requested(); }
  /// `handler` runs once when the user presses Stop (on RunControl's thread: keep it short,
  /// e.g. abort the LLM call), or at once if Stop came already.
  void OnCancel(std::function<void()> handler);

  const RunIdentity& Identity() const noexcept { return identity_; }
  bool Finished() const;
  /// The run_seq the next event will get.
  uint32_t NextSeq() const;

 private:
  PublishStatus Emit(v1::AgentEvent event);
  /// The Stop state, shared with RunControl's handler (which may outlive a call into us).
  struct StopState {
    std::stop_source source;
    std::mutex mutex;
    std::vector<std::function<void()>> handlers;
    void Fire();
  };

  EventSink& sink_;
  RunIdentity identity_;
  std::chrono::milliseconds wait_for_space_;
  DeliveryCallback on_delivery_;
  size_t max_event_bytes_;
  mutable std::mutex mutex_;
  uint32_t next_seq_ = 1;
  google::protobuf::Timestamp last_emitted_at_;  // the run's clock never goes back
  bool finished_ = false;
  RunControl* control_ = nullptr;
  uint64_t registration_ = 0;  // in control_, while the run is open
  std::shared_ptr<StopState> stop_ = std::make_shared<StopState>();
};

}  // namespace agentwire::producers
