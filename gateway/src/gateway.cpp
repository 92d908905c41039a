#include "agentwire/gateway/gateway.hpp"

#include <fmt/format.h>

#include <boost/asio/io_context.hpp>
#include <thread>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/topic_reader.hpp"
#include "gateway_context.hpp"
#include "http_server.hpp"
#include "kafka_tail.hpp"
#include "session.hpp"

namespace agentwire::gateway {

void GatewayConfig::Validate() const {
  kafka::ValidateTopicName(topic, "--topic / AGENTWIRE_TOPIC");
  if (!client_properties.contains("bootstrap.servers")) {
    throw ConfigError("--brokers / AGENTWIRE_BROKERS is not set");
  }
  if (io_threads < 0 || io_threads > 256)
    throw ConfigError("--threads: expected 0-256 (0 = cores)");
  if (max_inbound_frame_bytes < 125) throw ConfigError("--max-frame-bytes: at least 125");
  if (send_queue_max_frames == 0 || send_queue_max_bytes == 0) {
    throw ConfigError("--send-queue-frames / --send-queue-bytes: must be positive");
  }
  if (max_connections_per_user < 1) throw ConfigError("--max-connections-per-user: at least 1");
  if (idle_timeout.count() < 1) throw ConfigError("--idle-timeout: at least 1s");
  if (catchup_session_bytes < 64 * 1024 || catchup_buffer_bytes < catchup_session_bytes) {
    throw ConfigError(
        "--catchup-session-bytes: at least 65536, and --catchup-buffer-bytes at least as large");
  }
  if (catchup_stall_timeout.count() < 0) {
    throw ConfigError("--catchup-stall-timeout: must not be negative (0 = never)");
  }
  if (event_stream_keep_alive.count() < 1) {
    throw ConfigError("event stream keep-alive interval: must be positive");
  }
  if (max_catchup_events < 0) {
    throw ConfigError("--max-catchup-events: expected 0 (no limit) or a positive number");
  }
  if (deep_resumes_per_minute < 0) {
    throw ConfigError("--deep-resumes-per-minute: expected 0 (no limit) or a positive number");
  }
  if (archive.connections < 1 || archive.connections > 64) {
    throw ConfigError("--archive-connections: expected 1-64");
  }
  if (archive.statement_timeout.count() < 100) {
    throw ConfigError("--archive-statement-timeout: at least 100ms");
  }
  if (archive.chunk_rows < 1) throw ConfigError("archive chunk rows: at least 1");
  if (allowed_origins.empty()) {
    throw ConfigError("--allowed-origins / AGENTWIRE_ALLOWED_ORIGINS: empty; use * to allow any");
  }
  if (auth.hs256_secret.empty() && auth.jwks_file.empty()) {
    throw ConfigError(
        "no token keys: set AGENTWIRE_JWT_SECRET (--jwt-secret) or AGENTWIRE_JWKS_FILE "
        "(--jwks-file)");
  }
  auth.Validate();
  if (tail_warm_window.count() < 0) throw ConfigError("--tail-warm-window: must not be negative");
  if (max_connections < 0) {
    throw ConfigError(
        "--max-connections / AGENTWIRE_MAX_CONNECTIONS: expected a positive number, or 0 for "
        "the default derived from the descriptor limit");
  }
}

class Gateway::Impl {
 public:
  explicit Impl(GatewayConfig config) : config_(std::move(config)) { config_.Validate(); }

  ~Impl() { Stop(); }

  void Start() {
    // Learn the topic's layout first: cursors carry the partition count.
    const auto identity = TopicIdentity::Of(
        config_.topic, config_.topic_epoch,
        kafka::TopicReader(TailConsumerProperties(config_.client_properties, config_.fetch_wait),
                           config_.topic)
            .PartitionCount(std::chrono::seconds(10)));

    context_ = std::make_shared<GatewayContext>(config_, identity, registry_);
    WarmStart warm;
    if (config_.warm_start && config_.cache_bytes > 0) {
      // Enough messages to fill the partition's share of the cache with entries of at least
      // kMinEntryBytes; the cache's byte bound then keeps exactly the newest share.
      constexpr size_t kMinEntryBytes = 256;
      warm.entries_per_partition = static_cast<int64_t>(
          config_.cache_bytes / static_cast<size_t>(identity.partition_count) / kMinEntryBytes);
      warm.timeout = config_.warm_start_timeout;
    }
    TailPolicy policy;
    policy.on_demand = config_.tail == TailMode::kAuto;
    policy.warm_window = config_.tail_warm_window;
    tailer_ = std::make_unique<KafkaTailer>(
        TailConsumerProperties(config_.client_properties, config_.fetch_wait), identity,
        context_->hub, registry_, warm, policy);
    context_->kafka_ready = [tailer = tailer_.get()] { return tailer->Ready(); };

    const int threads = config_.io_threads > 0
                            ? config_.io_threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    // One io_context per I/O thread, and each connection on one of them (round-robin): its
    // handlers are serialized by running on one thread, with no strand. A strand costs a lock
    // and a queue per handler, and every executor object that wraps one (each pending
    // operation holds several) a heap allocation: ~0.4 KiB per idle connection.
    for (int i = 0; i < threads; ++i) {
      contexts_.push_back(std::make_unique<boost::asio::io_context>(1));
      work_.emplace_back(contexts_.back()->get_executor());
    }
    listener_ = std::make_shared<HttpListener>(
        *contexts_.front(),
        // Called on the acceptor's strand only.
        [this]() -> boost::asio::any_io_executor {
          return contexts_[next_context_++ % contexts_.size()]->get_executor();
        },
        context_);
    listener_->Open(config_.listen_address, config_.port);
    context_->history.Start();
    context_->archive.Start();
    tailer_->Start();
    listener_->Start();
    for (auto& ioc : contexts_) threads_.emplace_back([this, &ioc = *ioc] { RunIo(ioc); });
    log::Info("gateway listening", {{"address", config_.listen_address},
                                    {"port", static_cast<uint32_t>(listener_->Port())},
                                    {"topic", config_.topic},
                                    {"partitions", identity.partition_count},
                                    {"threads", threads},
                                    {"auth", context_->verifier.Describe()},
                                    {"max_connections", context_->max_connections}});
  }

  uint16_t Port() const { return listener_ ? listener_->Port() : 0; }

  void Drain() {
    if (!context_ || drained_) return;
    drained_ = true;
    // The listener stays open until the sessions are gone: while draining, /readyz must answer
    // 503 (the contract; probes and load balancers read it) and new upgrades get a 503
    // "draining" body, which a closed listening socket (connection refused) could not say.
    context_->draining.store(true);
    auto sessions = context_->Sessions();
    log::Info("draining", {{"count", static_cast<uint64_t>(sessions.size())},
                           {"grace_ms", static_cast<int64_t>(config_.drain_grace.count())}});
    for (auto& session : sessions) {
      session->Close(boost::beast::websocket::close_code::service_restart,
                     "server draining; reconnect");
    }
    sessions.clear();
    const auto deadline = std::chrono::steady_clock::now() + config_.drain_grace;
    while (context_->SessionCount() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      // An upgrade that passed the draining check just before it was set registers its
      // session after the snapshot above: close those too (Close is idempotent).
      for (auto& session : context_->Sessions()) {
        session->Close(boost::beast::websocket::close_code::service_restart,
                       "server draining; reconnect");
      }
    }
    log::Info("drained", {{"count", static_cast<uint64_t>(context_->SessionCount())}});
    listener_->Stop();
    Stop();
  }

  metrics::Registry& Metrics() { return registry_; }

 private:
  /// An exception from a handler must not take the replica's other sessions down with it
  /// (std::terminate): log it and go on running the io_context, as Asio allows.
  void RunIo(boost::asio::io_context& ioc) {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        // Rate-limited like every per-request line: a request that throws can be repeated.
        static log::RateLimited escaped_log;
        escaped_log.Error("exception escaped an I/O handler; continuing", {{"error", e.what()}});
      }
    }
  }

  void Stop() {
    if (stopped_) return;
    stopped_ = true;
    // The history reader first: it stops within one poll and drops what it had not served,
    // so a drain during a resume storm never waits for queued reads.
    if (context_) context_->history.Stop();
    if (context_) context_->archive.Stop();
    work_.clear();
    for (auto& ioc : contexts_) ioc->stop();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
    if (tailer_) tailer_->Stop();
  }

  GatewayConfig config_;
  metrics::Registry registry_;
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;  // one per I/O thread
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  size_t next_context_ = 0;  // the next connection's io_context (round-robin)
  std::shared_ptr<GatewayContext> context_;
  std::unique_ptr<KafkaTailer> tailer_;
  std::shared_ptr<HttpListener> listener_;
  std::vector<std::thread> threads_;
  bool drained_ = false;
  bool stopped_ = false;
};

Gateway::Gateway(GatewayConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Gateway::~Gateway() = default;
void Gateway::Start() { impl_->Start(); }
uint16_t Gateway::Port() const { return impl_->Port(); }
void Gateway::Drain() { impl_->Drain(); }
metrics::Registry& Gateway::Metrics() { return impl_->Metrics(); }

}  // namespace agentwire::gateway
