#include "run_cancel.hpp"

#include <agentwire/v1/control.pb.h>

#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/producers/control_channel.hpp"
#include "agentwire/schemas/event_json.hpp"

namespace agentwire::gateway {

namespace asio = boost::asio;

namespace {
constexpr auto kTailWait = std::chrono::seconds(2);
constexpr auto kRepeatWindow = std::chrono::seconds(1);
constexpr size_t kRunIdMaxBytes = 256;
constexpr std::array<RunCanceller::Result, 5> kResults = {
    RunCanceller::Result::kRequested, RunCanceller::Result::kUnknownRun,
    RunCanceller::Result::kRunEnded, RunCanceller::Result::kBadRunId,
    RunCanceller::Result::kUnavailable};
}  // namespace

struct RunCanceller::Pending {
  std::string user_id;
  std::string run_id;
  int partition = 0;
  Done done;
  std::chrono::steady_clock::time_point deadline;
  std::unique_ptr<asio::steady_timer> timer;
};

RunCanceller::RunCanceller(kafka::Properties client_properties, const std::string& topic,
                           PartitionHub& hub, metrics::Registry& registry)
    : client_properties_(std::move(client_properties)),
      control_topic_(ControlTopicFor(topic)),
      hub_(hub) {
  for (size_t i = 0; i < kResults.size(); ++i) {
    results_[i] = &registry.GetCounter("agentwire_gateway_cancel_requests_total",
                                       "Stop requests (POST /v1/runs/{id}/cancel and cancel "
                                       "frames), by answer",
                                       {{"result", std::string(ResultName(kResults[i]))}});
  }
}

RunCanceller::~RunCanceller() = default;

bool RunCanceller::ValidRunId(std::string_view run_id) {
  if (run_id.empty() || run_id.size() > kRunIdMaxBytes) return false;
  for (const char c : run_id) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return false;
  }
  return true;
}

std::string_view RunCanceller::ResultName(Result result) {
  switch (result) {
    case Result::kRequested:
      return "requested";
    case Result::kUnknownRun:
      return "unknown_run";
    case Result::kRunEnded:
      return "run_ended";
    case Result::kBadRunId:
      return "bad_run_id";
    case Result::kUnavailable:
      return "control_unavailable";
  }
  return "unknown_run";
}

std::string RunCanceller::EndJson(const PartitionHub::RunState& run) {
  nlohmann::json end = {{"type", RunEndType(run.end)}, {"cursor", EncodeCursor(run.end_cursor)}};
  if (const auto code = RunEndCode(run.end); !code.empty()) end["error_code"] = code;
  return end.dump();
}

void RunCanceller::Cancel(const asio::any_io_executor& executor, const std::string& user_id,
                          int partition, const std::string& run_id, Done done) {
  auto pending = std::make_shared<Pending>();
  pending->user_id = user_id;
  pending->run_id = run_id;
  pending->partition = partition;
  pending->done = std::move(done);
  if (!ValidRunId(run_id)) {
    Finish(pending, {Result::kBadRunId, {}});
    return;
  }
  if (hub_.CaughtUp(partition)) {
    Decide(pending);
    return;
  }
  // --tail auto, or a replica still starting: wait a little for the run index to be complete.
  pending->deadline = std::chrono::steady_clock::now() + kTailWait;
  pending->timer = std::make_unique<asio::steady_timer>(executor);
  auto poll = std::make_shared<std::function<void()>>();
  *poll = [this, pending, poll] {
    if (hub_.CaughtUp(pending->partition) ||
        std::chrono::steady_clock::now() >= pending->deadline) {
      Decide(pending);
      *poll = nullptr;  // breaks the cycle
      return;
    }
    pending->timer->expires_after(std::chrono::milliseconds(10));
    pending->timer->async_wait([poll](const boost::system::error_code& ec) {
      if (!ec && *poll) (*poll)();
    });
  };
  (*poll)();
}

void RunCanceller::Decide(const std::shared_ptr<Pending>& pending) {
  const auto run = hub_.RunById(pending->partition, pending->user_id, pending->run_id);
  if (!run) {
    Finish(pending, {Result::kUnknownRun, {}});
    return;
  }
  if (run->ended_at >= 0) {
    Finish(pending, {Result::kRunEnded, *run});
    return;
  }
  std::string key = pending->user_id;
  key.push_back('\0');
  key += pending->run_id;
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mutex_);
    if (recent_.size() > 10'000) {
      std::erase_if(recent_, [now](const auto& kv) { return now - kv.second >= kRepeatWindow; });
    }
    auto [it, inserted] = recent_.try_emplace(key, now);
    if (!inserted && now - it->second < kRepeatWindow) {
      Finish(pending, {Result::kRequested, {}});  // published a moment ago
      return;
    }
    it->second = now;
  }
  auto* publisher = Publisher();
  if (publisher == nullptr) {
    Finish(pending, {Result::kUnavailable, {}});
    return;
  }
  v1::ControlRecord record;
  record.set_user_id(pending->user_id);
  record.set_run_id(pending->run_id);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  record.mutable_sent_at()->set_seconds(micros / 1'000'000);
  record.mutable_sent_at()->set_nanos(static_cast<int32_t>((micros % 1'000'000) * 1000));
  auto* cancel = record.mutable_cancel();
  cancel->set_request_id(schemas::NewEventId());
  cancel->set_requested_by("gateway");
  std::string error;
  const bool queued = publisher->Publish(
      control_topic_, record,
      [this, pending, key](const std::string& delivery_error) {
        if (!delivery_error.empty()) {
          static log::RateLimited failed_log(std::chrono::seconds(10));
          failed_log.Warn("cancel request not stored in Kafka; answered control_unavailable",
                          {{"topic", control_topic_}, {"error", delivery_error}});
          std::lock_guard lock(mutex_);
          recent_.erase(key);  // the next Stop tries again
        }
        Finish(pending, {delivery_error.empty() ? Result::kRequested : Result::kUnavailable, {}});
      },
      &error);
  if (!queued) {
    static log::RateLimited refused_log(std::chrono::seconds(10));
    refused_log.Warn("cancel request refused by the producer; answered control_unavailable",
                     {{"topic", control_topic_}, {"error", error}});
    {
      std::lock_guard lock(mutex_);
      recent_.erase(key);
    }
    Finish(pending, {Result::kUnavailable, {}});
  }
}

void RunCanceller::Finish(const std::shared_ptr<Pending>& pending, Outcome outcome) {
  results_[static_cast<size_t>(outcome.result)]->Inc();
  if (outcome.result == Result::kRequested) {
    log::Info("cancel requested", {{"user", pending->user_id}, {"run", pending->run_id}});
  }
  auto done = std::move(pending->done);
  if (done) done(outcome);
}

producers::ControlPublisher* RunCanceller::Publisher() {
  std::lock_guard lock(mutex_);
  if (!publisher_) {
    auto properties = client_properties_;
    // A person waits for the answer: a Kafka outage answers 503 within seconds, not minutes.
    properties.emplace("message.timeout.ms", "5000");
    try {
      publisher_ = std::make_unique<producers::ControlPublisher>(properties, "agentwire-gateway");
    } catch (const std::exception& e) {
      static log::RateLimited make_log(std::chrono::seconds(10));
      make_log.Error("cannot create the control producer", {{"error", e.what()}});
      return nullptr;
    }
  }
  return publisher_.get();
}

}  // namespace agentwire::gateway
