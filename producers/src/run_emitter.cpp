#include "agentwire/producers/run_emitter.hpp"

#include <utility>

#include "agentwire/core/logging.hpp"
#include "agentwire/producers/run_control.hpp"
#include "agentwire/schemas/event_json.hpp"

namespace agentwire::producers {

RunEmitter::RunEmitter(EventSink& sink, RunIdentity identity,
                       std::chrono::milliseconds wait_for_space, DeliveryCallback on_delivery,
                       size_t max_event_bytes, RunControl* control)
    : sink_(sink),
      identity_(std::move(identity)),
      wait_for_space_(wait_for_space),
      on_delivery_(std::move(on_delivery)),
      max_event_bytes_(max_event_bytes != 0 ? max_event_bytes : sink.MaxEventBytes()),
      control_(control) {
  if (identity_.run_id.empty()) identity_.run_id = schemas::NewEventId();
  if (control_ != nullptr && identity_.lease.count() <= 0)
    identity_.lease = control_->DefaultLease();
}

void RunEmitter::StopState::Fire() {
  std::vector<std::function<void()>> run;
  {
    std::lock_guard lock(mutex);
    if (!source.request_stop()) return;  // a Stop was fired already
    run.swap(handlers);
  }
  for (const auto& handler : run) handler();
}

void RunEmitter::OnCancel(std::function<void()> handler) {
  {
    std::lock_guard lock(stop_->mutex);
    if (!stop_->source.stop_requested()) {
      stop_->handlers.push_back(std::move(handler));
      return;
    }
  }
  handler();
}

RunEmitter::~RunEmitter() {
  if (Finished()) return;
  // The user pressed Stop and the agent let its run go without saying so: that is a Stop.
  if (CancelRequested() && Cancelled() == PublishStatus::kAccepted) return;
  // The run's owner forgot (or crashed before) the terminal event. Without this the
  // chat window would show a run that never ends.
  const auto status =
      Failed("run_abandoned", "run abandoned: the agent stopped without completing or failing");
  if (status != PublishStatus::kAccepted) {
    log::Error(
        "could not publish the abandoned-run event",
        {{"user", identity_.user_id}, {"run", identity_.run_id}, {"error", ToString(status)}});
  }
  // Not even the abandoned end got out: stop heartbeating, so the supervisor ends the run.
  uint64_t registration = 0;
  {
    std::lock_guard lock(mutex_);
    registration = std::exchange(registration_, 0);
  }
  if (registration != 0) control_->Unregister(registration);
}

bool RunEmitter::Finished() const {
  std::lock_guard lock(mutex_);
  return finished_;
}

uint32_t RunEmitter::NextSeq() const {
  std::lock_guard lock(mutex_);
  return next_seq_;
}

PublishStatus RunEmitter::Emit(v1::AgentEvent event) {
  std::unique_lock lock(mutex_);
  if (finished_) return PublishStatus::kClosed;
  event.set_user_id(identity_.user_id);
  event.set_thread_id(identity_.thread_id);
  event.set_run_id(identity_.run_id);
  event.set_agent_name(identity_.agent_name);
  event.set_trace_id(identity_.trace_id);
  for (const auto& [key, value] : identity_.attributes) (*event.mutable_attributes())[key] = value;
  event.set_run_seq(next_seq_);
  schemas::FillDefaults(event, last_emitted_at_);
  if (!FitToSize(event, max_event_bytes_)) {
    // Only an envelope (ids, attributes) over the limit gets here: the sink refuses it.
    log::Error("event envelope alone is over the size limit; not cut",
               {{"user", identity_.user_id},
                {"run", identity_.run_id},
                {"bytes", static_cast<uint64_t>(event.ByteSizeLong())},
                {"limit", static_cast<uint64_t>(max_event_bytes_)}});
  } else if (event.has_truncated()) {
    log::Warn("event over the size limit: large text fields cut to fit",
              {{"user", identity_.user_id},
               {"run", identity_.run_id},
               {"event_id", event.event_id()},
               {"bytes", event.truncated().original_bytes()},
               {"limit", static_cast<uint64_t>(max_event_bytes_)}});
  }
  auto status = sink_.Publish(event, on_delivery_, wait_for_space_);
  if (status == PublishStatus::kAccepted) {
    ++next_seq_;  // only an accepted event consumes a sequence number: no holes
    finished_ = schemas::IsTerminal(event);
    if (control_ != nullptr) {
      if (finished_ && registration_ != 0) {
        // Outside our lock: Unregister waits for a running Stop handler, which may be calling
        // into this emitter (Cancelled()).
        const uint64_t registration = std::exchange(registration_, 0);
        lock.unlock();
        control_->Unregister(registration);
        return status;
      }
      if (!finished_ && registration_ == 0 && event.has_agent_started()) {
        // Heartbeats from the moment the run exists in the log; the user's Stop from then on.
        registration_ = control_->Register(
            identity_.user_id, identity_.thread_id, identity_.run_id, identity_.lease,
            [stop = std::weak_ptr<StopState>(stop_)](const CancelNotice& /*notice*/) {
              if (auto state = stop.lock()) state->Fire();
            });
      }
    }
  }
  return status;
}

PublishStatus RunEmitter::Started(std::string input, std::string model) {
  v1::AgentEvent event;
  auto* body = event.mutable_agent_started();
  body->set_input(std::move(input));
  body->set_model(std::move(model));
  if (control_ != nullptr) body->set_lease_ms(static_cast<uint32_t>(identity_.lease.count()));
  return Emit(std::move(event));
}

PublishStatus RunEmitter::Thinking(std::string text) {
  v1::AgentEvent event;
  event.mutable_agent_thinking()->set_text(std::move(text));
  return Emit(std::move(event));
}

PublishStatus RunEmitter::ToolExecuting(std::string tool_name, std::string input,
                                        std::string tool_call_id) {
  v1::AgentEvent event;
  auto* body = event.mutable_tool_executing();
  body->set_tool_name(std::move(tool_name));
  body->set_input(std::move(input));
  body->set_tool_call_id(std::move(tool_call_id));
  return Emit(std::move(event));
}

PublishStatus RunEmitter::ToolCompleted(std::string tool_name, std::string output,
                                        uint32_t duration_ms, std::string error,
                                        std::string tool_call_id) {
  v1::AgentEvent event;
  auto* body = event.mutable_tool_completed();
  body->set_tool_name(std::move(tool_name));
  body->set_output(std::move(output));
  body->set_duration_ms(duration_ms);
  body->set_error(std::move(error));
  body->set_tool_call_id(std::move(tool_call_id));
  return Emit(std::move(event));
}

PublishStatus RunEmitter::MessageDelta(std::string text) {
  v1::AgentEvent event;
  event.mutable_message_delta()->set_text(std::move(text));
  return Emit(std::move(event));
}

PublishStatus RunEmitter::Completed(std::string result, uint32_t duration_ms) {
  v1::AgentEvent event;
  auto* body = event.mutable_agent_completed();
  body->set_result(std::move(result));
  body->set_duration_ms(duration_ms);
  return Emit(std::move(event));
}

PublishStatus RunEmitter::Cancelled(std::string message) {
  return Failed("cancelled", std::move(message));
}

PublishStatus RunEmitter::Failed(std::string error_code, std::string message) {
  v1::AgentEvent event;
  auto* body = event.mutable_agent_failed();
  body->set_error_code(std::move(error_code));
  body->set_message(std::move(message));
  return Emit(std::move(event));
}

}  // namespace agentwire::producers
