#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "agentwire/core/listen.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/gateway/auth.hpp"
#include "agentwire/gateway/gateway.hpp"
#include "archive_reader.hpp"
#include "history.hpp"
#include "kafka_tail.hpp"
#include "partition_hub.hpp"
#include "run_cancel.hpp"

namespace agentwire::gateway {

class Session;

/// Per-replica counters, looked up once.
struct GatewayMetrics {
  explicit GatewayMetrics(metrics::Registry& registry);

  metrics::Gauge& connections;
  metrics::Counter& connections_total;
  metrics::Counter& events_delivered;
  metrics::Counter& resumes_cache;
  metrics::Counter& resumes_kafka;
  metrics::Counter& resumes_archive;
  metrics::Counter& missing_offsets;  // offsets named by `reset` frames' missing ranges
  metrics::Counter& resets;
  metrics::Counter& catchup_limited;  // `reset` catchup_limit (also counted in resets)
  metrics::Counter& token_expired_closes;
  metrics::Counter& refreshes_accepted;
  metrics::Counter& refreshes_refused;
  metrics::Counter& slow_closes;
  metrics::Counter& catchup_stalled_closes;  // --catchup-stall-timeout: 1013
  metrics::Counter& catchup_share_waits;     // history paused: the user holds its fair share
  metrics::Counter& rejected_unauthorized;
  metrics::Counter& rejected_forbidden;
  metrics::Counter& rejected_bad_request;
  metrics::Counter& rejected_too_many;
  metrics::Counter& rejected_deep_resumes;
  metrics::Histogram& delivery_latency;  // Kafka message time -> frame written
  metrics::Histogram& time_to_ready;     // upgrade accepted -> `ready` queued
  metrics::Counter& catchup_extended;    // live buffer overflowed during catch-up
  metrics::Gauge& catchup_buffered;      // CatchupBudget: bytes now
  metrics::Gauge& catchup_buffered_peak;
  metrics::Counter& rejected_full;  // --max-connections reached: 503
  metrics::Gauge& max_connections;  // the effective --max-connections
};

/// Everything sessions and HTTP connections share inside one replica. Lives as long as the
/// Gateway; sessions hold a shared_ptr to it.
struct GatewayContext {
  GatewayContext(GatewayConfig config, TopicIdentity identity, metrics::Registry& registry);

  GatewayConfig config;
  TopicIdentity identity;
  metrics::Registry& registry;
  GatewayMetrics metrics;
  PartitionHub hub;
  CatchupBudget catchup_budget;
  HistoryService history;  // Kafka reads for cursors older than the cache (its own thread)
  ArchiveReader archive;   // PostgreSQL reads for cursors older than Kafka's log start
  TokenVerifier verifier;
  RunCanceller canceller;  // Stop: cancel requests to the control topic (docs/runs.md)
  std::function<bool()> kafka_ready;
  std::atomic<bool> draining{false};

  /// Per-user connection cap and the replica's --max-connections. Returns false when `user`
  /// is at its limit or the replica is full (AtConnectionLimit tells which).
  bool AcquireConnection(const std::string& user);
  void ReleaseConnection(const std::string& user);
  /// A resume from a cursor far behind the log's end (a scan of much of the partition, or an
  /// archive read): true while `user` has not used up --deep-resumes-per-minute (a bucket of
  /// 3 that refills at that rate). A client that keeps editing its cursor back to offset 0
  /// and reconnecting gets 429 instead of a scan each time.
  bool AllowDeepResume(const std::string& user);

  void AddSession(const std::shared_ptr<Session>& session);
  void RemoveSession(const Session* session);
  /// Snapshot of live sessions (for drain).
  std::vector<std::shared_ptr<Session>> Sessions();
  size_t SessionCount();

 private:
  std::mutex mutex_;
  std::map<std::string, int> per_user_;
  struct DeepResumeBucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled_at;
  };
  std::map<std::string, DeepResumeBucket> deep_resumes_;
  std::map<const Session*, std::weak_ptr<Session>> sessions_;

 public:
  /// The effective --max-connections (the config's, or DefaultMaxConnections).
  const int max_connections;
  /// The gateway's accept loop (set by HttpListener): readiness reads its Overloaded().
  std::shared_ptr<const AcceptThrottle> accept_throttle;
  /// Sessions admitted by AcquireConnection and not yet released. Thread-safe.
  int Connections() const { return total_.load(std::memory_order_relaxed); }
  /// True when the next upgrade would exceed max_connections. Thread-safe.
  bool AtConnectionLimit() const { return Connections() >= max_connections; }
  /// Readiness hysteresis: true from 95 % of max_connections until the count falls below 90 %.
  bool AboveHighWater() const { return above_high_water_.load(std::memory_order_relaxed); }

 private:
  void UpdateHighWaterLocked();
  std::atomic<int> total_{0};
  std::atomic<bool> above_high_water_{false};
};

}  // namespace agentwire::gateway
