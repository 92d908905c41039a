#include "gateway_context.hpp"

#include <algorithm>

namespace agentwire::gateway {

GatewayMetrics::GatewayMetrics(metrics::Registry& r)
    : connections(r.GetGauge("agentwire_gateway_connections",
                             "Open sessions (WebSocket, SSE and AI SDK streams)")),
      connections_total(r.GetCounter("agentwire_gateway_connections_total",
                                     "Sessions accepted (WebSocket, SSE and AI SDK streams)")),
      events_delivered(r.GetCounter("agentwire_gateway_events_delivered_total",
                                    "Event frames written to clients (catch-up and live)")),
      resumes_cache(r.GetCounter("agentwire_gateway_resumes_total", "Resumes by source",
                                 {{"source", "cache"}})),
      resumes_kafka(r.GetCounter("agentwire_gateway_resumes_total", "Resumes by source",
                                 {{"source", "kafka"}})),
      resumes_archive(r.GetCounter("agentwire_gateway_resumes_total", "Resumes by source",
                                   {{"source", "archive"}})),
      missing_offsets(r.GetCounter(
          "agentwire_gateway_history_missing_offsets_total",
          "Offsets named by reset frames as missing: deleted by retention and not in the "
          "archive (all users' offsets of the range, once per session told)")),
      resets(r.GetCounter("agentwire_gateway_resets_total",
                          "reset frames sent (cursor beyond retention or from another topic, "
                          "or a catch-up without a cursor cut at --max-catchup-events)")),
      catchup_limited(r.GetCounter(
          "agentwire_gateway_catchup_limited_total",
          "Catch-ups without a cursor started at --max-catchup-events (reset catchup_limit)")),
      token_expired_closes(r.GetCounter("agentwire_gateway_token_expired_closes_total",
                                        "Sessions ended at their token's exp + leeway (WebSocket "
                                        "4001, SSE event: token_expired)")),
      refreshes_accepted(r.GetCounter("agentwire_gateway_token_refreshes_total",
                                      "In-band token refreshes", {{"result", "accepted"}})),
      refreshes_refused(r.GetCounter("agentwire_gateway_token_refreshes_total",
                                     "In-band token refreshes", {{"result", "refused"}})),
      slow_closes(r.GetCounter("agentwire_gateway_slow_client_closes_total",
                               "Sessions closed with 1013 because the client fell behind")),
      catchup_stalled_closes(
          r.GetCounter("agentwire_gateway_catchup_stalled_closes_total",
                       "Sessions closed with 1013 because their client took no catch-up write for "
                       "--catchup-stall-timeout while holding catch-up budget")),
      catchup_share_waits(r.GetCounter(
          "agentwire_gateway_catchup_share_waits_total",
          "Kafka catch-up reads paused because the user's other sessions hold its fair share of "
          "--catchup-buffer-bytes")),
      rejected_unauthorized(r.GetCounter("agentwire_gateway_upgrades_rejected_total",
                                         "Upgrades refused before the handshake",
                                         {{"reason", "unauthorized"}})),
      rejected_forbidden(r.GetCounter("agentwire_gateway_upgrades_rejected_total",
                                      "Upgrades refused before the handshake",
                                      {{"reason", "origin"}})),
      rejected_bad_request(r.GetCounter("agentwire_gateway_upgrades_rejected_total",
                                        "Upgrades refused before the handshake",
                                        {{"reason", "bad_request"}})),
      rejected_too_many(r.GetCounter("agentwire_gateway_upgrades_rejected_total",
                                     "Upgrades refused before the handshake",
                                     {{"reason", "too_many_connections"}})),
      rejected_deep_resumes(r.GetCounter("agentwire_gateway_upgrades_rejected_total",
                                         "Upgrades refused before the handshake",
                                         {{"reason", "too_many_deep_resumes"}})),
      delivery_latency(r.GetHistogram("agentwire_gateway_delivery_latency_seconds",
                                      "Kafka message time to live frame written",
                                      metrics::LatencyBuckets())),
      time_to_ready(r.GetHistogram("agentwire_gateway_time_to_ready_seconds",
                                   "Session accepted to ready frame queued (catch-up time)",
                                   metrics::LatencyBuckets())),
      catchup_extended(r.GetCounter(
          "agentwire_gateway_catchup_extended_total",
          "Catch-ups extended to the log's end because live events outran the client")),
      catchup_buffered(r.GetGauge("agentwire_gateway_catchup_buffered_bytes",
                                  "Catch-up frames read from Kafka, not yet written")),
      catchup_buffered_peak(r.GetGauge("agentwire_gateway_catchup_buffered_bytes_peak",
                                       "Highest agentwire_gateway_catchup_buffered_bytes so far")),
      rejected_full(r.GetCounter("agentwire_gateway_upgrades_rejected_total",
                                 "Upgrades refused before the handshake",
                                 {{"reason", "max_connections"}})),
      max_connections(
          r.GetGauge("agentwire_gateway_max_connections",
                     "--max-connections: sessions (all transports) this replica accepts")) {}

namespace {

HistoryService::Limits HistoryLimits(const GatewayConfig& config) {
  HistoryService::Limits limits;
  limits.per_session_bytes = config.catchup_session_bytes;
  return limits;
}

}  // namespace

GatewayContext::GatewayContext(GatewayConfig config_in, TopicIdentity identity_in,
                               metrics::Registry& registry_in)
    : config(std::move(config_in)),
      identity(std::move(identity_in)),
      registry(registry_in),
      metrics(registry_in),
      hub(identity.partition_count, config.cache_bytes),
      catchup_budget(config.catchup_buffer_bytes, config.catchup_session_bytes,
                     metrics.catchup_buffered, metrics.catchup_buffered_peak),
      history(TailConsumerProperties(config.client_properties, config.fetch_wait), identity,
              HistoryLimits(config), catchup_budget, registry_in),
      archive(config.archive, identity, catchup_budget, registry_in),
      verifier(config.auth),
      canceller(config.client_properties, config.topic, hub, registry_in),
      max_connections(config.max_connections > 0 ? config.max_connections
                                                 : DefaultMaxConnections(CurrentFileLimit().soft)) {
  metrics.max_connections.Set(max_connections);
  hub.SetLateEventCounter(&registry_in.GetCounter(
      "agentwire_gateway_late_events_total",
      "Events of runs that had ended (a zombie worker's; docs/runs.md): read, never delivered"));
}

bool GatewayContext::AcquireConnection(const std::string& user) {
  std::lock_guard lock(mutex_);
  if (total_.load(std::memory_order_relaxed) >= max_connections) return false;
  int& count = per_user_[user];
  if (count >= config.max_connections_per_user) return false;
  ++count;
  total_.fetch_add(1, std::memory_order_relaxed);
  UpdateHighWaterLocked();
  return true;
}

bool GatewayContext::AllowDeepResume(const std::string& user) {
  const int per_minute = config.deep_resumes_per_minute;
  if (per_minute <= 0) return true;
  constexpr double kBurst = 3;
  const auto now = std::chrono::steady_clock::now();
  const double per_second = per_minute / 60.0;
  auto refill = [&](DeepResumeBucket& bucket) {
    const double elapsed = std::chrono::duration<double>(now - bucket.refilled_at).count();
    bucket.tokens = std::min(kBurst, bucket.tokens + elapsed * per_second);
    bucket.refilled_at = now;
  };
  std::lock_guard lock(mutex_);
  // Users whose bucket is full again need no entry: forget them when the map grows.
  if (deep_resumes_.size() > 10'000) {
    for (auto it = deep_resumes_.begin(); it != deep_resumes_.end();) {
      refill(it->second);
      it = it->second.tokens >= kBurst ? deep_resumes_.erase(it) : std::next(it);
    }
  }
  auto [it, inserted] = deep_resumes_.try_emplace(user, DeepResumeBucket{kBurst, now});
  if (!inserted) refill(it->second);
  if (it->second.tokens < 1) return false;
  it->second.tokens -= 1;
  return true;
}

void GatewayContext::ReleaseConnection(const std::string& user) {
  std::lock_guard lock(mutex_);
  const auto it = per_user_.find(user);
  if (it == per_user_.end()) return;
  if (--it->second <= 0) per_user_.erase(it);
  total_.fetch_sub(1, std::memory_order_relaxed);
  UpdateHighWaterLocked();
}

void GatewayContext::UpdateHighWaterLocked() {
  // 95 % / 90 % of the limit, with at least one connection between them, so /readyz does not
  // flap while clients come and go around one value.
  const int count = total_.load(std::memory_order_relaxed);
  const int high = std::max(1, (max_connections * 95 + 99) / 100);
  const int low = std::min(high - 1, max_connections * 90 / 100);
  if (count >= high) {
    above_high_water_.store(true, std::memory_order_relaxed);
  } else if (count <= low) {
    above_high_water_.store(false, std::memory_order_relaxed);
  }
}

int DefaultMaxConnections(uint64_t descriptor_limit) {
  constexpr uint64_t kCap = 1'000'000;
  const uint64_t limit = std::min(descriptor_limit, kCap + kCap / 5);
  const uint64_t reserve = 64 + limit / 10;
  if (limit <= reserve) return 1;
  return static_cast<int>(std::min(limit - reserve, kCap));
}

void GatewayContext::AddSession(const std::shared_ptr<Session>& session) {
  std::lock_guard lock(mutex_);
  sessions_[session.get()] = session;
}

void GatewayContext::RemoveSession(const Session* session) {
  std::lock_guard lock(mutex_);
  sessions_.erase(session);
}

std::vector<std::shared_ptr<Session>> GatewayContext::Sessions() {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Session>> out;
  for (const auto& [raw, weak] : sessions_) {
    if (auto strong = weak.lock()) out.push_back(std::move(strong));
  }
  return out;
}

size_t GatewayContext::SessionCount() {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

}  // namespace agentwire::gateway
