#pragma once

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/metrics.hpp"
#include "partition_hub.hpp"

namespace agentwire::producers {
class ControlPublisher;
}

namespace agentwire::gateway {

/// Stop from a chat window (docs/runs.md): `POST /v1/runs/{run_id}/cancel` and the WebSocket
/// frame `{"type":"cancel","run_id":…}` both end here. Looks the run up for the token's user in
/// the replica's run index and, for an open run, publishes a cancel request (keyed by that user)
/// to `<topic>.control`; the answer comes once Kafka has stored it. A user can only reach their
/// own runs: another user's run is unknown to them. At most one request per run per second is
/// published (a flood of Stops is one Stop; every caller still hears `requested`).
/// One per replica. Thread-safe.
class RunCanceller final {
 public:
  enum class Result { kRequested, kUnknownRun, kRunEnded, kBadRunId, kUnavailable };
  struct Outcome {
    Result result = Result::kUnknownRun;
    PartitionHub::RunState run;  // kRunEnded: how and where it ended
  };
  /// Called exactly once, from any thread (the Kafka producer's, or the caller's executor).
  using Done = std::function<void(const Outcome&)>;

  RunCanceller(kafka::Properties client_properties, const std::string& topic, PartitionHub& hub,
               metrics::Registry& registry);
  ~RunCanceller();
  RunCanceller(const RunCanceller&) = delete;
  RunCanceller& operator=(const RunCanceller&) = delete;

  /// `executor` waits (up to 2 s) for a partition whose tail has not read to the log's end yet
  /// (--tail auto), so that a run is not called unknown only because the replica has not read
  /// its start yet.
  void Cancel(const boost::asio::any_io_executor& executor, const std::string& user_id,
              int partition, const std::string& run_id, Done done);

  /// 1-256 bytes, no control characters (C0, DEL).
  static bool ValidRunId(std::string_view run_id);
  /// "requested", "unknown_run", "run_ended", "bad_run_id", "control_unavailable".
  static std::string_view ResultName(Result result);
  /// The JSON of a run's end: {"type":…,"error_code":…,"cursor":…} (error_code only for the
  /// ends docs/runs.md names).
  static std::string EndJson(const PartitionHub::RunState& run);

 private:
  struct Pending;
  void Decide(const std::shared_ptr<Pending>& pending);
  void Finish(const std::shared_ptr<Pending>& pending, Outcome outcome);
  producers::ControlPublisher* Publisher();

  const kafka::Properties client_properties_;
  const std::string control_topic_;
  PartitionHub& hub_;
  std::array<metrics::Counter*, 5> results_{};
  std::mutex mutex_;
  std::unique_ptr<producers::ControlPublisher> publisher_;  // made on the first Stop
  // user '\0' run -> when this replica last published a Stop for it.
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> recent_;
};

}  // namespace agentwire::gateway
