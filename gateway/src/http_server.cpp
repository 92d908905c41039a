#include "http_server.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/listen.hpp"
#include "agentwire/core/logging.hpp"
#include "ai_sdk_transport.hpp"
#include "frames.hpp"
#include "session.hpp"
#include "sse_transport.hpp"
#include "thread_history.hpp"
#include "url.hpp"
#include "web_assets.hpp"
#include "websocket_transport.hpp"

namespace agentwire::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

std::atomic<uint64_t> g_next_session_id{1};

/// Retry-After of a 503 from a full replica. Clients add their own jitter on top, so a
/// reconnect storm spreads out instead of coming back together.
constexpr int kRetryAfterFullSeconds = 5;
// A user at --max-connections-per-user: the tabs they have open are working.
constexpr int kRetryTooManySeconds = 10;

// Boost 1.74's beast::string_view is boost::string_view.
std::string_view Sv(beast::string_view text) { return {text.data(), text.size()}; }

// EventSource sends `Accept: text/event-stream`; a plain GET (the reference client's probe)
// does not.
bool AcceptsEventStream(std::string_view accept) {
  return accept.find("text/event-stream") != std::string_view::npos;
}

enum class Wire { kWebSocket, kSse, kAiSdk };

// GET /v1/ai-sdk/chats/{thread_id}/stream: the thread id, or "" for any other path.
std::string AiSdkThread(std::string_view path) {
  return SegmentBetween(path, "/v1/ai-sdk/chats/", "/stream").value_or("");
}

// POST /v1/runs/{run_id}/cancel: the run id (percent-decoded), or nullopt for any other path.
std::optional<std::string> CancelRunId(std::string_view path) {
  return SegmentBetween(path, "/v1/runs/", "/cancel");
}

/// Keeps a partition tailed while an AI SDK request waits for its runs to be known (--tail
/// auto); the events themselves go to the session that may follow.
class TailWaiter final : public LiveListener {
 public:
  void OnLive(const LogEntryPtr& /*entry*/) override {}
  void OnTailStarted(int64_t /*start_offset*/) override {}
};

/// How long an AI SDK request waits for a partition's tail to reach the log's end before it
/// looks for the run with what the replica has read by then.
constexpr auto kRunLookupWait = std::chrono::seconds(2);

/// One plain HTTP connection; hands itself over to a Session on a valid upgrade.
class HttpConnection final : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(tcp::socket&& socket, std::shared_ptr<GatewayContext> context)
      : stream_(std::move(socket)),
        context_(std::move(context)),
        wait_timer_(stream_.get_executor()) {}

  void Start() { Read(); }

 private:
  void Read() {
    head_ = false;
    retry_after_ = 0;
    waited_for_runs_ = false;
    looked_in_archive_ = false;
    archived_run_.reset();
    wire_ = Wire::kWebSocket;
    parser_.emplace();
    parser_->header_limit(16 * 1024);
    parser_->body_limit(16 * 1024);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&HttpConnection::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t /*bytes*/) {
    if (ec) {
      // Garbage, timeouts and disconnects all end here: drop the connection, nothing else.
      if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
          ec != beast::error::timeout) {
        log::Debug("http request rejected", {{"error", ec.message()}});
        if (ec != asio::error::eof && ec != asio::error::connection_reset) {
          SendError(http::status::bad_request, "bad_request", "malformed HTTP request", false);
          return;
        }
      }
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    Route(parser_->release());
  }

  void Route(const http::request<http::string_body>& request) {
    const auto target = ParseTarget(Sv(request.target()));
    if (target.path.empty() || target.path.front() != '/') {
      // `GET ?x`, `GET x`, `OPTIONS *`: nothing here is served at such a target.
      SendError(http::status::bad_request, "bad_request",
                "the request target must be a path starting with /", false);
      return;
    }
    if (beast::websocket::is_upgrade(request)) {
      if (target.path == "/v1/events") {
        Subscribe(request, target, Wire::kWebSocket);
      } else {
        SendError(http::status::not_found, "not_found", "WebSocket endpoint is /v1/events", false);
      }
      return;
    }
    keep_alive_ = request.keep_alive();
    head_ = request.method() == http::verb::head;
    cors_origin_.clear();
    const std::string ai_sdk_thread = AiSdkThread(target.path);
    if (!ai_sdk_thread.empty()) {
      // The AI SDK fetches this from the chat page's origin with an Authorization header:
      // a CORS preflight (OPTIONS) first when the gateway is on another origin.
      const auto origin = Sv(request[http::field::origin]);
      if (!origin.empty() && OriginAllowed(origin)) cors_origin_ = std::string(origin);
      if (request.method() == http::verb::options) {
        Send(http::status::no_content, "text/plain", "");
        return;
      }
      if (request.method() == http::verb::get) {
        Subscribe(request, target, Wire::kAiSdk, ai_sdk_thread);
        return;
      }
    }
    if (const auto run_id = CancelRunId(target.path)) {
      const auto origin = Sv(request[http::field::origin]);
      if (!origin.empty() && OriginAllowed(origin)) cors_origin_ = std::string(origin);
      if (request.method() == http::verb::options) {
        Send(http::status::no_content, "text/plain", "");
      } else if (request.method() == http::verb::post) {
        CancelRun(request, *run_id);
      } else {
        SendError(http::status::method_not_allowed, "method_not_allowed",
                  "POST /v1/runs/{run_id}/cancel stops a run", keep_alive_);
      }
      return;
    }
    if (auto thread = ThreadEventsPath(target.path)) {
      // A thread's history for a page (thread_history.hpp); CORS as for the cancel route.
      const auto origin = Sv(request[http::field::origin]);
      if (!origin.empty() && OriginAllowed(origin)) cors_origin_ = std::string(origin);
      if (request.method() == http::verb::options) {
        Send(http::status::no_content, "text/plain", "");
        return;
      }
      ThreadHistoryReader::Serve(
          context_, stream_.get_executor(), request, target, std::move(*thread),
          OriginAllowed(origin), [self = shared_from_this()](ThreadPageAnswer answer) {
            self->retry_after_ = answer.retry_after_seconds;
            self->Send(answer.status, "application/json", std::move(answer.body));
          });
      return;
    }
    if (request.method() != http::verb::get && !head_) {
      SendError(http::status::method_not_allowed, "method_not_allowed", "only GET is served",
                keep_alive_);
      return;
    }
    if (target.path == "/healthz") {
      Send(http::status::ok, "application/json", R"({"status":"ok"})");
    } else if (target.path == "/readyz") {
      const std::string_view status = ReadinessStatus();
      Send(status == "ready" ? http::status::ok : http::status::service_unavailable,
           "application/json", fmt::format(R"({{"status":"{}"}})", status));
    } else if (target.path == "/metrics") {
      Send(http::status::ok, "text/plain; version=0.0.4", context_->registry.RenderPrometheus());
    } else if (target.path == "/v1/events" && !head_ &&
               AcceptsEventStream(Sv(request[http::field::accept]))) {
      Subscribe(request, target, Wire::kSse);
    } else if (target.path == "/v1/events") {
      // Browsers cannot read why a WebSocket handshake failed, so the reference client
      // probes with a plain GET: the same capacity, Origin and token checks, then 426.
      if (context_->AtConnectionLimit()) {
        RejectFull();
        return;
      }
      if (!OriginAllowed(Sv(request[http::field::origin]))) {
        SendError(http::status::forbidden, "origin_not_allowed",
                  "this Origin is not in AGENTWIRE_ALLOWED_ORIGINS", keep_alive_);
        return;
      }
      const auto auth = context_->verifier.Verify(
          ExtractToken(Sv(request[http::field::authorization]), Sv(request.target()),
                       Sv(request[http::field::sec_websocket_protocol])));
      if (!auth.ok) {
        SendError(http::status::unauthorized, auth.error_code, auth.message, keep_alive_);
        return;
      }
      SendError(http::status::upgrade_required, "upgrade_required",
                "connect with a WebSocket client (Upgrade: websocket)", keep_alive_);
    } else if (const auto asset = FindWebAsset(target.path, context_->config.web_dir)) {
      Send(http::status::ok, asset->content_type, asset->body);
    } else {
      SendError(http::status::not_found, "not_found", "no such page", keep_alive_);
    }
  }

  /// "ready", or why not: "draining", "starting" (Kafka not caught up), "full" (at the
  /// --max-connections high-water mark), "overloaded" (accepting paused on EMFILE & co).
  std::string_view ReadinessStatus() const {
    if (context_->draining.load()) return "draining";
    if (!context_->kafka_ready || !context_->kafka_ready()) return "starting";
    if (context_->AboveHighWater()) return "full";
    if (context_->accept_throttle && context_->accept_throttle->Overloaded()) return "overloaded";
    return "ready";
  }

  bool OriginAllowed(std::string_view origin) const {
    if (origin.empty()) return true;  // not a browser: the token decides
    const auto& allowed = context_->config.allowed_origins;
    return std::any_of(allowed.begin(), allowed.end(),
                       [&](const std::string& a) { return a == "*" || a == origin; });
  }

  /// A WebSocket upgrade or an SSE request of /v1/events, or the AI SDK resume stream of
  /// `ai_sdk_thread`: the same checks, cursor rules and session; only the transport differs.
  void Subscribe(const http::request<http::string_body>& request, const ParsedTarget& target,
                 Wire wire, const std::string& ai_sdk_thread = {}) {
    const std::string redacted = RedactTarget(Sv(request.target()));
    wire_ = wire;
    request_origin_ = std::string(Sv(request[http::field::origin]));
    if (context_->draining.load()) {
      RefuseForNow(http::status::service_unavailable, "draining",
                   "this replica is shutting down; reconnect (any replica serves any user)", 1);
      return;
    }
    // Before any work (token checks cost CPU): a full replica says so and when to come back.
    if (context_->AtConnectionLimit()) {
      RejectFull();
      return;
    }
    if (!OriginAllowed(Sv(request[http::field::origin]))) {
      context_->metrics.rejected_forbidden.Inc();
      static log::RateLimited limit;
      limit.Write(
          log::Level::kInfo, "upgrade rejected: origin not allowed",
          {{"origin", std::string(Sv(request[http::field::origin]))}, {"target", redacted}});
      SendError(http::status::forbidden, "origin_not_allowed",
                "this Origin is not in AGENTWIRE_ALLOWED_ORIGINS", false);
      return;
    }
    const auto token = ExtractToken(Sv(request[http::field::authorization]), Sv(request.target()),
                                    Sv(request[http::field::sec_websocket_protocol]));
    const auto auth = context_->verifier.Verify(token);
    if (!auth.ok) {
      context_->metrics.rejected_unauthorized.Inc();
      static log::RateLimited limit;
      limit.Write(log::Level::kInfo, "upgrade rejected: unauthorized",
                  {{"error", auth.error_code}, {"target", redacted}});
      SendError(http::status::unauthorized, auth.error_code, auth.message, false);
      return;
    }
    const std::string& user = auth.user_id;
    const auto& identity = context_->identity;
    const int partition = PartitionForKey(user, identity.partition_count);

    StartPosition start;
    std::optional<RunInProgress> run;
    if (wire == Wire::kAiSdk) {
      // --tail auto: a replica that was not reading this user's partition knows none of its
      // runs. Start reading it (its tail starts a warm start's worth back) and wait until it
      // has read up to the log's end, then look.
      if (!waited_for_runs_ && !context_->hub.CaughtUp(partition)) {
        WaitForRuns(request, partition, user, ai_sdk_thread);
        return;
      }
      // The run of this thread in progress, replayed from its agent_started: none, 204.
      run = context_->hub.RunOf(partition, user, ai_sdk_thread);
      if (!run && archived_run_ && archived_run_->thread == ai_sdk_thread) {
        run = archived_run_->run;
      } else if (!run && context_->archive.Enabled() && !looked_in_archive_ &&
                 IsTextId(ai_sdk_thread)) {
        // A run whose agent_started retention deleted before this replica read it (a long
        // run, a fresh replica): the archive knows it. (A thread id that is not UTF-8 text
        // names no run, here as in the hub: 204 without asking PostgreSQL, which would refuse
        // it.)
        LookUpRunInArchive(request, partition, user, ai_sdk_thread);
        return;
      }
      if (!run) {
        keep_alive_ = false;
        Send(http::status::no_content, "text/plain", "");
        return;
      }
      start.kind = StartPosition::Kind::kCursor;
      start.next_offset = run->started_at;
    }
    // EventSource resends the last `id:` it saw as Last-Event-ID when it reconnects; that
    // wins over the cursor= of the URL it was opened with (docs/protocol.md "Server-Sent
    // Events").
    const auto last_event_id = Sv(request["Last-Event-ID"]);
    std::string cursor_text = wire == Wire::kAiSdk ? std::string() : target.Param("cursor");
    if (wire == Wire::kSse && !last_event_id.empty()) cursor_text = std::string(last_event_id);
    if (!cursor_text.empty()) {
      const std::string& text = cursor_text;
      if (text == "earliest") {
        start.kind = StartPosition::Kind::kEarliest;
      } else {
        const auto cursor = DecodeCursor(text);
        if (!cursor) {
          context_->metrics.rejected_bad_request.Inc();
          SendError(http::status::bad_request, "bad_cursor",
                    "cursor is not a cursor this service issued; reconnect without one (or "
                    "with cursor=earliest)",
                    false);
          return;
        }
        if (!identity.Issued(*cursor)) {
          start.reset = true;  // another topic, epoch or partition layout: history unavailable
        } else if (cursor->partition != static_cast<uint32_t>(partition)) {
          context_->metrics.rejected_bad_request.Inc();
          SendError(http::status::bad_request, "bad_cursor",
                    "cursor belongs to another user's stream", false);
          return;
        } else {
          start.kind = StartPosition::Kind::kCursor;
          start.next_offset = cursor->next_offset;
        }
      }
    }
    if (!cursor_text.empty() && start.kind == StartPosition::Kind::kCursor &&
        IsDeepResume(partition, start.next_offset) && !context_->AllowDeepResume(user)) {
      context_->metrics.rejected_deep_resumes.Inc();
      RefuseForNow(http::status::too_many_requests, "too_many_deep_resumes",
                   "this user resumed from far back too often; retry later with the same cursor",
                   kRetryTooManySeconds);
      return;
    }
    if (!context_->AcquireConnection(user)) {
      if (context_->AtConnectionLimit()) {
        RejectFull();
        return;
      }
      context_->metrics.rejected_too_many.Inc();
      RefuseForNow(
          http::status::too_many_requests, "too_many_connections",
          fmt::format("at most {} connections per user", context_->config.max_connections_per_user),
          kRetryTooManySeconds);
      return;
    }
    SessionFilters filters{target.Param("thread_id"), target.Param("run_id")};
    if (run) filters = SessionFilters{ai_sdk_thread, run->run_id};
    const uint64_t id = g_next_session_id.fetch_add(1);
    std::unique_ptr<Transport> transport;
    if (wire == Wire::kAiSdk) {
      auto ai_sdk = std::make_unique<AiSdkTransport>(stream_.release_socket(), cors_origin_);
      ai_sdk->SetKeepAliveInterval(context_->config.event_stream_keep_alive);
      transport = std::move(ai_sdk);
    } else if (wire == Wire::kSse) {
      // Allowed (checked above): name it for CORS, so a page of another origin may read.
      auto sse = std::make_unique<SseTransport>(stream_.release_socket(),
                                                std::string(Sv(request[http::field::origin])));
      sse->SetKeepAliveInterval(context_->config.event_stream_keep_alive);
      transport = std::move(sse);
    } else {
      transport = std::make_unique<WebSocketTransport>(stream_.release_socket(),
                                                       context_->config.idle_timeout,
                                                       context_->config.max_inbound_frame_bytes);
    }
    log::Debug(wire == Wire::kSse ? "sse subscribe" : "websocket upgrade",
               {{"session", id},
                {"user", user},
                {"partition", partition},
                {"transport", std::string(transport->Name())}});
    auto session = std::make_shared<Session>(std::move(transport), context_, user, partition, start,
                                             std::move(filters), id);
    session->SetTokenExpiry(auth.expires_at);
    context_->AddSession(session);
    session->Run(request);
  }

  /// The cursor lies more than --max-catchup-events records behind the partition's end as this
  /// replica has read it (unknown while the partition is not tailed: not deep).
  bool IsDeepResume(int partition, int64_t next_offset) const {
    const int64_t limit = context_->config.max_catchup_events;
    const int64_t end = context_->hub.DispatchedEnd(partition);
    return limit > 0 && end > 0 && end - next_offset > limit;
  }

  /// Stop (docs/runs.md): the token's user asks to cancel `run_id`. Answered once the request
  /// is stored in Kafka (202), or at once (400, 401, 403, 404, 409).
  void CancelRun(const http::request<http::string_body>& request, const std::string& run_id) {
    if (!OriginAllowed(Sv(request[http::field::origin]))) {
      SendError(http::status::forbidden, "origin_not_allowed",
                "this Origin is not in AGENTWIRE_ALLOWED_ORIGINS", keep_alive_);
      return;
    }
    const auto auth = context_->verifier.Verify(
        ExtractToken(Sv(request[http::field::authorization]), Sv(request.target()), {}));
    if (!auth.ok) {
      context_->metrics.rejected_unauthorized.Inc();
      SendError(http::status::unauthorized, auth.error_code, auth.message, keep_alive_);
      return;
    }
    const int partition = PartitionForKey(auth.user_id, context_->identity.partition_count);
    // --tail auto: a replica that does not read the user's partition starts reading it for the
    // time of the request, so the run index learns the run (RunCanceller waits for it).
    auto waiter = std::make_shared<TailWaiter>();
    context_->hub.Attach(partition, auth.user_id, waiter);
    context_->canceller.Cancel(stream_.get_executor(), auth.user_id, partition, run_id,
                               [self = shared_from_this(), waiter, partition, user = auth.user_id,
                                run_id](const RunCanceller::Outcome& outcome) {
                                 asio::post(self->stream_.get_executor(), [self, waiter, partition,
                                                                           user, run_id, outcome] {
                                   self->context_->hub.Detach(partition, user, waiter.get());
                                   self->AnswerCancel(run_id, outcome);
                                 });
                               });
  }

  void AnswerCancel(const std::string& run_id, const RunCanceller::Outcome& outcome) {
    using Result = RunCanceller::Result;
    const auto name = RunCanceller::ResultName(outcome.result);
    switch (outcome.result) {
      case Result::kRequested:
        Send(http::status::accepted, "application/json",
             nlohmann::json{{"status", "cancel_requested"}, {"run_id", run_id}}.dump(
                 -1, ' ', false, nlohmann::json::error_handler_t::replace));
        return;
      case Result::kUnknownRun:
        SendError(http::status::not_found, name,
                  "no run of this id for this user on this replica (runs started within its "
                  "warm start are known)",
                  keep_alive_);
        return;
      case Result::kRunEnded:
        Send(http::status::conflict, "application/json",
             fmt::format(R"({{"error":"run_ended","message":"the run has ended","end":{}}})",
                         RunCanceller::EndJson(outcome.run)));
        return;
      case Result::kBadRunId:
        SendError(http::status::bad_request, name,
                  "run_id must be 1-256 bytes without control characters", keep_alive_);
        return;
      case Result::kUnavailable:
        retry_after_ = 1;
        SendError(http::status::service_unavailable, name,
                  "the cancel request could not be stored in Kafka; retry", keep_alive_);
        return;
    }
  }

  void WaitForRuns(const http::request<http::string_body>& request, int partition,
                   const std::string& user, const std::string& thread) {
    waiting_request_ = request;
    tail_waiter_ = std::make_shared<TailWaiter>();
    context_->hub.Attach(partition, user, tail_waiter_);  // asks for the tail when nobody reads
    PollRuns(partition, user, thread, std::chrono::steady_clock::now() + kRunLookupWait);
  }

  void LookUpRunInArchive(const http::request<http::string_body>& request, int partition,
                          const std::string& user, const std::string& thread) {
    looked_in_archive_ = true;
    waiting_request_ = request;
    auto self = shared_from_this();
    auto resume = [self, partition, user, thread](std::optional<RunInProgress> found,
                                                  std::string error) {
      asio::post(
          self->stream_.get_executor(), [self, partition, user, thread, found = std::move(found),
                                         error = std::move(error)]() mutable {
            const auto request = std::move(*self->waiting_request_);
            self->waiting_request_.reset();
            if (!error.empty()) {
              self->RefuseForNow(http::status::service_unavailable, "history_unavailable",
                                 "the archive cannot be read now: " + error, 1);
              return;
            }
            // Ended after the archive's position, in the part of the log this replica has read?
            if (found) {
              const auto state = self->context_->hub.RunById(partition, user, found->run_id);
              if (state && state->ended_at >= 0) found.reset();
            }
            if (found) self->archived_run_ = ArchivedRun{thread, std::move(*found)};
            self->Subscribe(request, ParseTarget(Sv(request.target())), Wire::kAiSdk, thread);
          });
    };
    context_->archive.Execute(
        [context = context_, partition, user, thread, resume](pqxx::connection_base& connection) {
          resume(context->archive.OpenRunOfThread(connection, partition, user, thread), {});
        },
        [resume](const std::string& error) { resume(std::nullopt, error); });
  }

  void PollRuns(int partition, const std::string& user, const std::string& thread,
                std::chrono::steady_clock::time_point deadline) {
    if (!context_->hub.CaughtUp(partition) && std::chrono::steady_clock::now() < deadline) {
      wait_timer_.expires_after(std::chrono::milliseconds(10));
      wait_timer_.async_wait(
          [self = shared_from_this(), partition, user, thread, deadline](beast::error_code ec) {
            if (!ec) self->PollRuns(partition, user, thread, deadline);
          });
      return;
    }
    context_->hub.Detach(partition, user, tail_waiter_.get());
    tail_waiter_.reset();
    waited_for_runs_ = true;
    const auto request = std::move(*waiting_request_);
    waiting_request_.reset();
    Subscribe(request, ParseTarget(Sv(request.target())), Wire::kAiSdk, thread);
  }

  void RejectFull() {
    context_->metrics.rejected_full.Inc();
    static log::RateLimited limit;
    limit.Warn("upgrade rejected: replica at --max-connections",
               {{"count", static_cast<int64_t>(context_->Connections())},
                {"limit", static_cast<int64_t>(context_->max_connections)}});
    RefuseForNow(http::status::service_unavailable, "replica_full",
                 fmt::format("this replica holds its limit of {} connections; retry after {} s "
                             "(any replica serves any user)",
                             context_->max_connections, kRetryAfterFullSeconds),
                 kRetryAfterFullSeconds);
  }

  /// A refusal that passes: draining, full, too many connections of one user. HTTP clients and
  /// WebSocket upgrades get `status` with Retry-After. EventSource, though, never retries a
  /// response that is not 200 (the spec fails the connection for good), so a browser sent to a
  /// draining replica during a deploy would stop for good: an SSE request gets a 200 stream
  /// that says `retry:` and one `refused` event (the same JSON body) and ends, and EventSource
  /// comes back after `retry_seconds` with its Last-Event-ID.
  void RefuseForNow(http::status status, std::string_view code, std::string_view message,
                    int retry_seconds) {
    if (wire_ != Wire::kSse) {
      retry_after_ = retry_seconds;
      SendError(status, code, message, false);
      return;
    }
    keep_alive_ = false;
    if (OriginAllowed(request_origin_)) cors_origin_ = request_origin_;
    Send(http::status::ok, "text/event-stream; charset=utf-8",
         fmt::format("retry: {}\n\nevent: refused\ndata: {}\n\n", retry_seconds * 1000,
                     ErrorBody(code, message)));
  }

  void Send(http::status status, std::string_view content_type, std::string body) {
    auto response = std::make_shared<http::response<http::string_body>>(status, 11);
    response->set(http::field::server, "agentwire-gateway");
    response->set(http::field::content_type,
                  beast::string_view(content_type.data(), content_type.size()));
    response->set(http::field::cache_control, "no-store");
    if (retry_after_ > 0) response->set(http::field::retry_after, std::to_string(retry_after_));
    if (!cors_origin_.empty()) {
      response->set(http::field::access_control_allow_origin, cors_origin_);
      response->set(http::field::access_control_allow_methods, "GET, POST, OPTIONS");
      response->set(http::field::access_control_allow_headers, "Authorization, Content-Type");
      response->set(http::field::access_control_max_age, "600");
      response->set(http::field::vary, "Origin");
    }
    response->keep_alive(keep_alive_);
    if (head_) {
      // HEAD: the headers GET would send, Content-Length included, and no body: a body here
      // would be read as the start of the next response on a kept-alive connection.
      response->content_length(body.size());
    } else {
      response->body() = std::move(body);
      response->prepare_payload();
    }
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code ec, std::size_t) {
                        if (ec) return;
                        if (response->keep_alive()) {
                          self->Read();
                        } else {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                        }
                      });
  }

  void SendError(http::status status, std::string_view code, std::string_view message,
                 bool keep_alive) {
    keep_alive_ = keep_alive;
    Send(status, "application/json", ErrorBody(code, message));
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<GatewayContext> context_;
  bool keep_alive_ = false;
  bool head_ = false;        // the request being answered is a HEAD
  int retry_after_ = 0;      // seconds; a Retry-After header when positive
  std::string cors_origin_;  // the AI SDK endpoint's allowed Origin: CORS headers when set
  // An AI SDK request waiting for its partition's tail (WaitForRuns).
  boost::asio::steady_timer wait_timer_;
  std::optional<http::request<http::string_body>> waiting_request_;
  std::shared_ptr<TailWaiter> tail_waiter_;
  bool waited_for_runs_ = false;
  // An AI SDK request whose thread's run in progress the archive was asked for.
  struct ArchivedRun {
    std::string thread;
    RunInProgress run;
  };
  bool looked_in_archive_ = false;
  std::optional<ArchivedRun> archived_run_;
  Wire wire_ = Wire::kWebSocket;  // of the request being answered (RefuseForNow)
  std::string request_origin_;
};

}  // namespace

std::string ParsedTarget::Param(std::string_view name) const {
  for (const auto& [key, value] : params) {
    if (key == name) return value;
  }
  return {};
}

bool ParsedTarget::Has(std::string_view name) const {
  return std::any_of(params.begin(), params.end(),
                     [&](const auto& kv) { return kv.first == name; });
}

ParsedTarget ParseTarget(std::string_view target) {
  ParsedTarget parsed;
  const auto question = target.find('?');
  parsed.path = PercentDecode(target.substr(0, question), UrlPart::kPath);
  if (question == std::string_view::npos) return parsed;
  std::string_view query = target.substr(question + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    auto key = PercentDecode(pair.substr(0, eq), UrlPart::kQuery);
    auto value = eq == std::string_view::npos ? std::string()
                                              : PercentDecode(pair.substr(eq + 1), UrlPart::kQuery);
    if (!key.empty() && !parsed.Has(key))
      parsed.params.emplace_back(std::move(key), std::move(value));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return parsed;
}

HttpListener::HttpListener(asio::io_context& ioc, ConnectionExecutors connection_executors,
                           std::shared_ptr<GatewayContext> context)
    : connection_executors_(std::move(connection_executors)),
      acceptor_(asio::make_strand(ioc)),
      retry_timer_(acceptor_.get_executor()),
      context_(std::move(context)),
      throttle_(
          std::make_shared<AcceptThrottle>(context_->registry, "agentwire_gateway_", "gateway")) {
  context_->accept_throttle = throttle_;
}

void HttpListener::Open(const std::string& address, uint16_t port) {
  OpenListener(acceptor_, address, port, "--listen / AGENTWIRE_LISTEN",
               "pick another --port / PORT");
  port_ = acceptor_.local_endpoint().port();
}

void HttpListener::Start() { Accept(); }

void HttpListener::Stop() {
  asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
    beast::error_code ignored;
    self->acceptor_.close(ignored);
    self->retry_timer_.cancel();
  });
}

void HttpListener::Accept() {
  acceptor_.async_accept(connection_executors_(), [self = shared_from_this()](beast::error_code ec,
                                                                              tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !self->acceptor_.is_open()) return;
      // EMFILE & co: the connection stays in the backlog and accepting again at once fails
      // again, a hot loop. Pause (growing delay), then try again on our own.
      const auto delay = self->throttle_->OnError(ec);
      if (delay.count() > 0) {
        self->retry_timer_.expires_after(delay);
        self->retry_timer_.async_wait([self](beast::error_code wait_ec) {
          if (!wait_ec && self->acceptor_.is_open()) self->Accept();
        });
        return;
      }
    } else {
      self->throttle_->OnAccepted();
      socket.set_option(tcp::no_delay(true), ec);
      std::make_shared<HttpConnection>(std::move(socket), self->context_)->Start();
    }
    self->Accept();
  });
}

}  // namespace agentwire::gateway
