#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/gateway/auth.hpp"

namespace agentwire::gateway {

/// Which partitions a replica reads: every one (`all`, the default), or only those its
/// sessions need (`auto`, behind a load balancer that routes by user).
enum class TailMode { kAll, kAuto };

/// The archive as the log's cold tier (docs/architecture.md, "History past retention"): a
/// cursor older than Kafka's log start is served from `agentwire archive`'s PostgreSQL up to
/// the archive's committed position, then from Kafka. Without a DSN such a cursor gets `reset`.
struct ArchiveSettings {
  std::string dsn;  // --archive-dsn / AGENTWIRE_ARCHIVE_DSN; meant for a read-only role
  std::string group = "agentwire-archive";  // the archive's consumer group (its positions)
  int connections = 2;                      // the pool: reads in parallel, at most
  std::chrono::milliseconds statement_timeout{5'000};
  size_t chunk_rows = 500;  // rows per read: a session holds one chunk at a time
};

struct GatewayConfig {
  std::string listen_address = "127.0.0.1";
  uint16_t port = 8080;  // 0 = any free port (see Gateway::Port)
  int io_threads = 0;    // 0 = one per core

  kafka::Properties client_properties;  // bootstrap.servers + --kafka extras
  std::string topic = "agent.lifecycle.v1";
  /// Bumped by operators when the topic is recreated: cursors of another epoch get `reset`.
  uint32_t topic_epoch = 1;
  /// Tailer fetch wait: the embedded Kafka holds an empty fetch this long, so it bounds
  /// delivery latency when traffic is sparse.
  std::chrono::milliseconds fetch_wait{5};

  /// --tail auto: a partition is read while a session of one of its users is connected, and
  /// for tail_warm_window after the last one left (a reconnect within it finds the cache).
  /// The first session of a partition starts its tail and catches up from its cursor.
  TailMode tail = TailMode::kAll;
  std::chrono::milliseconds tail_warm_window{300'000};

  /// Recent-log cache across all partitions; 0 disables it (every resume reads Kafka).
  size_t cache_bytes = 64u << 20;
  /// Warm start: before /readyz says ready, the tailer reads back the newest part of every
  /// partition into the cache, so the cursors of clients arriving from a replica that died are
  /// served from memory. Bounded by this timeout (then ready anyway; resumes read Kafka).
  bool warm_start = true;
  std::chrono::milliseconds warm_start_timeout{30'000};
  /// Catch-up frames read from Kafka and not yet written, across all sessions: the history
  /// reader waits while this much is buffered. Per session: at most this much before the
  /// session is paused until its client has read it.
  size_t catchup_buffer_bytes = 64u << 20;
  size_t catchup_session_bytes = 1u << 20;
  /// A session that holds catch-up bytes of that budget and whose client has not taken a write
  /// for this long is closed with 1013 (it resumes from its cursor later), so clients that stop
  /// reading cannot stall every other Kafka-backed resume. 0 = never.
  std::chrono::milliseconds catchup_stall_timeout{15'000};
  /// A client without a cursor (`cursor=earliest`) is caught up from at most this many of its
  /// partition's newest records (all users' records: what a catch-up costs is the scan). When
  /// the log holds more, it gets `reset` with reason `catchup_limit` first. Clients with a
  /// cursor are never cut. 0 = no limit.
  int64_t max_catchup_events = 100'000;
  /// A resume from a cursor more than max_catchup_events records behind the partition's end is
  /// "deep" (it scans much of the partition): at most this many per user and minute (a burst
  /// of 3), more get HTTP 429 too_many_deep_resumes. 0 = no limit.
  int deep_resumes_per_minute = 6;
  ArchiveSettings archive;

  AuthConfig auth;
  /// Browser Origins allowed to connect; {"*"} = any. Requests without Origin are judged by
  /// their token alone.
  std::vector<std::string> allowed_origins{"*"};

  size_t max_inbound_frame_bytes = 64 * 1024;  // larger client frames: close 1009
  size_t send_queue_max_frames = 8192;         // per session; overflow: close 1013
  size_t send_queue_max_bytes = 8u << 20;
  int max_connections_per_user = 32;      // more: HTTP 429 before the upgrade
  std::chrono::seconds idle_timeout{60};  // pings at half of it; no pong: closed
  std::chrono::milliseconds drain_grace{10'000};
  /// SSE and AI SDK streams: a comment line when nothing else was written for this long
  /// (docs/protocol.md promises one at least every 15 s).
  std::chrono::milliseconds event_stream_keep_alive{10'000};

  /// Serve the demo page from this directory instead of the copy built into the binary.
  std::string web_dir;

  /// WebSocket sessions this replica holds at most (--max-connections); past it an upgrade
  /// gets HTTP 503 with Retry-After, and /readyz answers 503 from 95 % of it until the count
  /// drops below 90 %. 0 = derived from the descriptor limit (DefaultMaxConnections).
  int max_connections = 0;

  /// Throws ConfigError with one line naming the flag.
  void Validate() const;
};

/// The --max-connections default for a process allowed `descriptor_limit` open files: one
/// descriptor per session, minus a reserve for Kafka, the metrics endpoint, HTTP requests not
/// yet upgraded and the process itself (64 + 10 % of the limit); at least 1, at most 1,000,000.
int DefaultMaxConnections(uint64_t descriptor_limit);

/// One stateless gateway replica: tails every partition of the topic (no consumer group; with
/// TailMode::kAuto only those of its sessions' users), keeps a recent-log cache, and serves
/// WebSocket clients their own user's events with gapless, duplicate-free resume from any
/// replica's cursor.
///
/// Start() binds and starts the I/O threads and the Kafka tailer; Drain() (e.g. on SIGTERM)
/// turns readiness off, stops accepting, closes every session with 1012 and returns within
/// the grace period. Thread-safe.
class Gateway final {
 public:
  explicit Gateway(GatewayConfig config);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  /// Throws ConfigError (bad config, port in use) or KafkaError (topic missing).
  void Start();
  /// The bound port (useful with port 0).
  uint16_t Port() const;
  /// Graceful stop: readiness false, no new upgrades, close 1012 to every session, wait for
  /// them up to the grace period, stop. Idempotent.
  void Drain();

  metrics::Registry& Metrics();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentwire::gateway
