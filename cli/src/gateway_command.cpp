#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <sstream>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/listen.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "agentwire/gateway/gateway.hpp"
#include "commands.hpp"
#include "embedded_setup.hpp"
#include "gateway_options.hpp"

namespace agentwire::cli {

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto first = item.find_first_not_of(' ');
    const auto last = item.find_last_not_of(' ');
    if (first != std::string::npos) out.push_back(item.substr(first, last - first + 1));
  }
  return out;
}

void AddGatewayOptions(CLI::App& cmd, GatewayOptions& o) {
  cmd.add_option("--listen", o.listen, "Listen address")
      ->envname("AGENTWIRE_LISTEN")
      ->capture_default_str();
  cmd.add_option("--port", o.port, "Listen port (0 = any free port)")
      ->envname("PORT")
      ->capture_default_str();
  cmd.add_option("--port-file", o.port_file, "Write the bound port to this file once listening");
  cmd.add_option("--threads", o.config.io_threads, "I/O threads (0 = one per core)")
      ->envname("AGENTWIRE_THREADS")
      ->capture_default_str();
  cmd.add_option("--jwt-secret", o.config.auth.hs256_secret, "HS256 secret (>= 32 bytes)")
      ->envname("AGENTWIRE_JWT_SECRET");
  cmd.add_option("--jwks-file", o.config.auth.jwks_file, "RS256/ES256 public keys (JWKS JSON)")
      ->envname("AGENTWIRE_JWKS_FILE");
  cmd.add_option("--jwt-issuer", o.config.auth.issuer, "Required iss claim")
      ->envname("AGENTWIRE_JWT_ISSUER");
  cmd.add_option("--jwt-audience", o.config.auth.audience, "Required aud claim")
      ->envname("AGENTWIRE_JWT_AUDIENCE");
  cmd.add_option("--jwt-leeway", o.jwt_leeway,
                 "Clock skew allowed for exp/nbf/iat; a connection ends at its token's exp + this "
                 "(0s-1h)")
      ->envname("AGENTWIRE_JWT_LEEWAY")
      ->capture_default_str();
  cmd.add_option("--allowed-origins", o.allowed_origins,
                 "Comma-separated browser Origins allowed to connect (* = any)")
      ->envname("AGENTWIRE_ALLOWED_ORIGINS")
      ->capture_default_str();
  cmd.add_option("--topic-epoch", o.config.topic_epoch,
                 "Bump when the topic is recreated: older cursors get `reset`")
      ->envname("AGENTWIRE_TOPIC_EPOCH")
      ->capture_default_str();
  cmd.add_option("--cache-bytes", o.config.cache_bytes, "Recent-log cache size (0 = off)")
      ->envname("AGENTWIRE_CACHE_BYTES")
      ->capture_default_str();
  cmd.add_option("--warm-start", o.config.warm_start,
                 "Fill the cache from Kafka before /readyz says ready (see docs/operations.md)")
      ->envname("AGENTWIRE_WARM_START")
      ->capture_default_str();
  cmd.add_option("--warm-start-timeout", o.warm_start_timeout,
                 "Ready after this long even if the warm start has not finished")
      ->envname("AGENTWIRE_WARM_START_TIMEOUT")
      ->capture_default_str();
  cmd.add_option("--tail", o.tail,
                 "Partitions to read: all (any replica serves any user at once), or auto (only "
                 "those of connected users, behind a load balancer that routes by user; see "
                 "docs/operations.md)")
      ->envname("AGENTWIRE_TAIL")
      ->capture_default_str();
  cmd.add_option("--tail-warm-window", o.tail_warm_window,
                 "--tail auto: keep reading a partition this long after its last session left")
      ->envname("AGENTWIRE_TAIL_WARM_WINDOW")
      ->capture_default_str();
  cmd.add_option("--catchup-buffer-bytes", o.config.catchup_buffer_bytes,
                 "Catch-up frames read from Kafka and not yet written, all sessions together")
      ->envname("AGENTWIRE_CATCHUP_BUFFER_BYTES")
      ->capture_default_str();
  cmd.add_option("--catchup-session-bytes", o.config.catchup_session_bytes,
                 "The same for one session (it is paused until its client has read)")
      ->capture_default_str();
  cmd.add_option("--catchup-stall-timeout", o.catchup_stall_timeout,
                 "A session holding catch-up bytes whose client took no write for this long is "
                 "closed with 1013, so it cannot stall other resumes (0 = never)")
      ->envname("AGENTWIRE_CATCHUP_STALL_TIMEOUT")
      ->capture_default_str();
  cmd.add_option("--max-catchup-events", o.config.max_catchup_events,
                 "A client without a cursor (cursor=earliest) is caught up from at most this many "
                 "of its partition's newest records; older ones get `reset` catchup_limit "
                 "(0 = no limit)")
      ->envname("AGENTWIRE_MAX_CATCHUP_EVENTS")
      ->capture_default_str();
  cmd.add_option("--deep-resumes-per-minute", o.config.deep_resumes_per_minute,
                 "Resumes from cursors more than --max-catchup-events records back, per user and "
                 "minute (burst 3); more get HTTP 429 (0 = no limit)")
      ->envname("AGENTWIRE_DEEP_RESUMES_PER_MINUTE")
      ->capture_default_str();
  cmd.add_option("--archive-dsn", o.config.archive.dsn,
                 "PostgreSQL of `agentwire archive` (a read-only role is enough): cursors older "
                 "than Kafka's log start are served from it, then from Kafka. Unset: such a "
                 "cursor gets `reset`")
      ->envname("AGENTWIRE_ARCHIVE_DSN");
  cmd.add_option("--archive-group", o.config.archive.group,
                 "The archive's consumer group (whose committed positions mark where Kafka takes "
                 "over)")
      ->envname("AGENTWIRE_ARCHIVE_GROUP")
      ->capture_default_str();
  cmd.add_option("--archive-connections", o.config.archive.connections,
                 "Archive reads in parallel at most (one PostgreSQL connection each)")
      ->capture_default_str();
  cmd.add_option("--archive-statement-timeout", o.archive_statement_timeout,
                 "An archive read taking longer fails (the client is closed with 1013 and "
                 "resumes later)")
      ->capture_default_str();
  cmd.add_option("--fetch-wait-ms", o.fetch_wait_ms, "Kafka fetch wait of the tailer")
      ->capture_default_str();
  cmd.add_option("--max-frame-bytes", o.config.max_inbound_frame_bytes,
                 "Largest inbound client frame (larger: close 1009)")
      ->capture_default_str();
  cmd.add_option("--send-queue-frames", o.config.send_queue_max_frames,
                 "Per-session send queue cap in frames (overflow: close 1013)")
      ->capture_default_str();
  cmd.add_option("--send-queue-bytes", o.config.send_queue_max_bytes,
                 "Per-session send queue cap in bytes (overflow: close 1013)")
      ->capture_default_str();
  cmd.add_option("--max-connections-per-user", o.config.max_connections_per_user,
                 "More connections for one user get HTTP 429")
      ->capture_default_str();
  cmd.add_option("--max-connections", o.config.max_connections,
                 "WebSocket sessions this replica holds at most; more get HTTP 503 + Retry-After "
                 "(0 = derived from the descriptor limit, logged at start)")
      ->envname("AGENTWIRE_MAX_CONNECTIONS")
      ->capture_default_str();
  cmd.add_option("--idle-timeout", o.idle_timeout,
                 "Close connections silent this long (pings at half)")
      ->capture_default_str();
  cmd.add_option("--drain-grace", o.drain_grace, "SIGTERM: time to close sessions with 1012")
      ->envname("AGENTWIRE_DRAIN_GRACE")
      ->capture_default_str();
  cmd.add_option("--web-dir", o.config.web_dir,
                 "Serve the demo page from this directory instead of the built-in copy");
}

gateway::GatewayConfig GatewayOptions::Build(const KafkaOptions& kafka) {
  kafka.Validate();
  config.client_properties = kafka.ClientProperties();
  config.topic = kafka.topic;
  config.listen_address = listen;
  if (port < 0 || port > 65535)
    throw ConfigError(fmt::format("--port / PORT {}: expected 0-65535", port));
  config.port = static_cast<uint16_t>(port);
  config.allowed_origins = SplitList(allowed_origins);
  config.fetch_wait = std::chrono::milliseconds(fetch_wait_ms);
  config.idle_timeout = std::chrono::duration_cast<std::chrono::seconds>(
      ParseDuration(idle_timeout, "--idle-timeout"));
  config.drain_grace = ParseDuration(drain_grace, "--drain-grace / AGENTWIRE_DRAIN_GRACE");
  config.auth.leeway = std::chrono::duration_cast<std::chrono::seconds>(
      ParseDuration(jwt_leeway, "--jwt-leeway / AGENTWIRE_JWT_LEEWAY"));
  config.warm_start_timeout =
      ParseDuration(warm_start_timeout, "--warm-start-timeout / AGENTWIRE_WARM_START_TIMEOUT");
  if (tail == "all") {
    config.tail = gateway::TailMode::kAll;
  } else if (tail == "auto") {
    config.tail = gateway::TailMode::kAuto;
  } else {
    throw ConfigError(fmt::format("--tail / AGENTWIRE_TAIL '{}': expected all or auto", tail));
  }
  config.tail_warm_window =
      ParseDuration(tail_warm_window, "--tail-warm-window / AGENTWIRE_TAIL_WARM_WINDOW");
  config.archive.statement_timeout =
      ParseDuration(archive_statement_timeout, "--archive-statement-timeout");
  config.catchup_stall_timeout = ParseDuration(
      catchup_stall_timeout, "--catchup-stall-timeout / AGENTWIRE_CATCHUP_STALL_TIMEOUT");
  config.Validate();
  return config;
}

void AnnounceGateway(const std::string& listen, uint16_t port, const std::string& port_file) {
  const std::string host = listen == "0.0.0.0" ? "127.0.0.1" : listen;
  std::cout << fmt::format("http://{}:{}", host, port) << std::endl;
  WriteBootstrapFile(port_file, std::to_string(port));
}

CommandAction RegisterGatewayCommand(CLI::App& app) {
  struct Options {
    KafkaOptions kafka;
    LogOptions log;
    GatewayOptions gateway;
  };
  auto options = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "gateway",
      "One stateless WebSocket gateway replica: tails the topic (--tail) and serves each user's "
      "events with gapless resume. Prints its URL on stdout once listening; SIGTERM drains.");
  AddKafkaOptions(*cmd, options->kafka);
  AddLogOptions(*cmd, options->log);
  AddGatewayOptions(*cmd, options->gateway);

  return [options]() -> int {
    options->log.Apply();
    auto config = options->gateway.Build(options->kafka);
    LogFileLimit(StartupFileLimit());
    BlockTerminationSignals();
    gateway::Gateway gateway(config);
    gateway.Start();
    AnnounceGateway(config.listen_address, gateway.Port(), options->gateway.port_file);
    const int signal = *WaitForTerminationSignal();
    log::Info("signal received; draining", {{"signal", signal}});
    gateway.Drain();
    return kExitOk;
  };
}

}  // namespace agentwire::cli
