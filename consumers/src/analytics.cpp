#include "agentwire/consumers/analytics.hpp"

#include <agentwire/v1/events.pb.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <ostream>
#include <pqxx/pqxx>
#include <set>
#include <string_view>
#include <vector>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "dead_letter_queue.hpp"
#include "event_text.hpp"
#include "event_time.hpp"
#include "pg_batch_consumer.hpp"

namespace agentwire::consumers {
namespace {

using Micros = int64_t;  // microseconds since the Unix epoch

// emitted_at, or the message's Kafka timestamp when emitted_at is more than 24 h away from it
// (internal::EventTimeNanos): one worker with a broken clock must not move the watermark to
// year 9999 and abandon everyone's running runs.
std::optional<Micros> EventTime(const v1::AgentEvent& event, const rd_kafka_message_t* message,
                                bool* replaced) {
  rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  const auto nanos =
      internal::EventTimeNanos(event, rd_kafka_message_timestamp(message, &type), replaced);
  if (!nanos) return std::nullopt;
  return *nanos / 1000;
}

std::optional<std::string> TimeText(std::optional<Micros> micros) {
  if (!micros) return std::nullopt;
  Micros seconds = *micros / 1'000'000;
  Micros rest = *micros % 1'000'000;
  if (rest < 0) {
    rest += 1'000'000;
    --seconds;
  }
  return internal::TimestampText(seconds, static_cast<int32_t>(rest * 1000));
}

std::optional<Micros> Earliest(std::optional<Micros> a, std::optional<Micros> b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

std::optional<Micros> Latest(std::optional<Micros> a, std::optional<Micros> b) {
  if (!a) return b;
  if (!b) return a;
  return std::max(*a, *b);
}

/// What one batch says about one run; merged into agent_runs by kUpsertRun.
struct RunDelta {
  std::string user_id;
  std::string thread_id;
  std::string agent_name;
  // From the run's events up to its end (late events change none of these).
  std::optional<Micros> started_at;
  std::optional<Micros> first_thought_at;
  std::optional<Micros> last_event_at;
  int64_t last_seq = 0;
  // The batch's first terminal event of the run by offset, if any.
  std::optional<int64_t> terminal_offset;
  std::optional<int64_t> terminal_seq;
  std::string status = "running";
  std::optional<Micros> ended_at;
  std::optional<std::string> error_code;
  std::optional<std::string> error_message;
  // Offsets of the batch's late events not counted yet (above the stored late_offset).
  std::vector<int64_t> late_offsets;
};

/// What agent_runs already says about a run's end, read at the start of a batch.
struct StoredEnd {
  std::optional<int64_t> terminal_offset;  // unset while open, and for runs ended before 0007
  std::optional<int64_t> late_offset;
};

// Every SET is a merge that gives the same row when a batch is applied twice. The end is the
// terminal event with the lowest offset (a run's events all live in its user's partition):
// EXCLUDED's terminal wins only over a row that has no end yet, or whose end is later in the
// log. A row that ended before migration 0007 (terminal_seq without terminal_offset) keeps its
// end. Late events only add to late_events, each offset once (above the stored late_offset).
constexpr const char* kUpsertRun = R"sql(
INSERT INTO agent_runs AS r (run_id, user_id, thread_id, agent_name, started_at, first_thought_at,
                             ended_at, status, terminal_seq, terminal_offset, error_code,
                             error_message, last_seq, last_event_at, late_events, late_offset)
VALUES ($1, $2, $3, $4, $5::timestamptz, $6::timestamptz, $7::timestamptz, $8, $9, $10, $11, $12,
        $13, $14::timestamptz, cardinality($15::bigint[]),
        (SELECT max(o) FROM unnest($15::bigint[]) AS l(o)))
ON CONFLICT (run_id) DO UPDATE SET
  thread_id = COALESCE(NULLIF(r.thread_id, ''), EXCLUDED.thread_id),
  agent_name = COALESCE(NULLIF(r.agent_name, ''), EXCLUDED.agent_name),
  started_at = LEAST(r.started_at, EXCLUDED.started_at),
  first_thought_at = LEAST(r.first_thought_at, EXCLUDED.first_thought_at),
  status = CASE
    WHEN (r.terminal_seq IS NULL OR EXCLUDED.terminal_offset < r.terminal_offset)
         AND EXCLUDED.terminal_offset IS NOT NULL THEN EXCLUDED.status
    WHEN r.status = 'abandoned' AND EXCLUDED.last_event_at > r.last_event_at THEN 'running'
    ELSE r.status END,
  ended_at = CASE WHEN (r.terminal_seq IS NULL OR EXCLUDED.terminal_offset < r.terminal_offset)
                       AND EXCLUDED.terminal_offset IS NOT NULL
                  THEN EXCLUDED.ended_at ELSE r.ended_at END,
  error_code = CASE WHEN (r.terminal_seq IS NULL OR EXCLUDED.terminal_offset < r.terminal_offset)
                         AND EXCLUDED.terminal_offset IS NOT NULL
                    THEN EXCLUDED.error_code ELSE r.error_code END,
  error_message = CASE WHEN (r.terminal_seq IS NULL OR EXCLUDED.terminal_offset < r.terminal_offset)
                            AND EXCLUDED.terminal_offset IS NOT NULL
                       THEN EXCLUDED.error_message ELSE r.error_message END,
  terminal_seq = CASE WHEN (r.terminal_seq IS NULL OR EXCLUDED.terminal_offset < r.terminal_offset)
                           AND EXCLUDED.terminal_offset IS NOT NULL
                      THEN EXCLUDED.terminal_seq ELSE r.terminal_seq END,
  terminal_offset = CASE WHEN (r.terminal_seq IS NULL OR EXCLUDED.terminal_offset < r.terminal_offset)
                              AND EXCLUDED.terminal_offset IS NOT NULL
                         THEN EXCLUDED.terminal_offset ELSE r.terminal_offset END,
  last_seq = GREATEST(r.last_seq, EXCLUDED.last_seq),
  last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
  late_events = r.late_events + (SELECT count(*) FROM unnest($15::bigint[]) AS l(o)
                                 WHERE o > COALESCE(r.late_offset, -1)),
  late_offset = GREATEST(r.late_offset, EXCLUDED.late_offset),
  updated_at = now()
)sql";

// The stored ends of the batch's runs: which of their events are late.
constexpr const char* kStoredEnds = R"sql(
SELECT run_id, terminal_offset, late_offset FROM agent_runs
WHERE run_id = ANY($1::text[])
)sql";

constexpr const char* kToolStarted = R"sql(
INSERT INTO tool_calls AS t (run_id, call_key, tool_call_id, tool_name, user_id, start_seq,
                             started_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz)
ON CONFLICT (run_id, call_key) DO UPDATE SET
  tool_call_id = COALESCE(t.tool_call_id, EXCLUDED.tool_call_id),
  tool_name = COALESCE(NULLIF(t.tool_name, ''), EXCLUDED.tool_name),
  start_seq = LEAST(t.start_seq, EXCLUDED.start_seq),
  started_at = LEAST(t.started_at, EXCLUDED.started_at),
  duration_ms = COALESCE(t.duration_ms,
      (extract(epoch FROM (t.ended_at - LEAST(t.started_at, EXCLUDED.started_at))) * 1000)::bigint)
)sql";

constexpr const char* kToolCompleted = R"sql(
INSERT INTO tool_calls AS t (run_id, call_key, tool_call_id, tool_name, user_id, completed_seq,
                             ended_at, duration_ms, ok, error)
VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8, $9, $10)
ON CONFLICT (run_id, call_key) DO UPDATE SET
  tool_call_id = COALESCE(t.tool_call_id, EXCLUDED.tool_call_id),
  tool_name = COALESCE(NULLIF(t.tool_name, ''), EXCLUDED.tool_name),
  completed_seq = EXCLUDED.completed_seq,
  ended_at = EXCLUDED.ended_at,
  duration_ms = COALESCE(EXCLUDED.duration_ms,
      (extract(epoch FROM (EXCLUDED.ended_at - t.started_at)) * 1000)::bigint),
  ok = EXCLUDED.ok,
  error = EXCLUDED.error
)sql";

// A completion without tool_call_id pairs with the call it was paired with before (a replay), or
// else the earliest open call of the same tool that started before it.
constexpr const char* kFindOpenCall = R"sql(
SELECT call_key FROM tool_calls
WHERE run_id = $1 AND tool_call_id IS NULL AND tool_name = $2
  AND (completed_seq = $3 OR (completed_seq IS NULL AND start_seq < $3))
ORDER BY (completed_seq IS NOT DISTINCT FROM $3) DESC, start_seq
LIMIT 1
)sql";

constexpr const char* kRecountTools = R"sql(
UPDATE agent_runs r SET tool_count = c.n, tool_errors = c.e
FROM (SELECT run_id, count(*)::int AS n, (count(*) FILTER (WHERE ok = false))::int AS e
      FROM tool_calls WHERE run_id = ANY($1::text[]) GROUP BY run_id) c
WHERE r.run_id = c.run_id AND (r.tool_count, r.tool_errors) IS DISTINCT FROM (c.n, c.e)
)sql";

constexpr const char* kAbandon = R"sql(
UPDATE agent_runs SET status = 'abandoned', updated_at = now()
WHERE status = 'running' AND terminal_seq IS NULL
  AND last_event_at < $1::timestamptz - make_interval(secs => $2::double precision / 1000)
)sql";

// agent_failed.error_code of a run the user stopped (docs/runs.md): status 'cancelled'.
constexpr std::string_view kCancelled = "cancelled";

std::string Int64Array(const std::vector<int64_t>& values) {
  std::string out = "{";
  for (const int64_t value : values) {
    if (out.size() > 1) out += ',';
    out += std::to_string(value);
  }
  return out + "}";
}

std::string TextArray(const std::set<std::string>& values) {
  std::string out = "{";
  for (const auto& value : values) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (const char c : value) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

}  // namespace

class Analytics::Impl final : public internal::BatchWriter {
 public:
  Impl(AnalyticsConfig config, metrics::Registry& registry)
      : config_(std::move(config)),
        events_(registry.GetCounter("agentwire_analytics_events_total",
                                    "Events applied to agent_runs / tool_calls")),
        skipped_(registry.GetCounter("agentwire_analytics_skipped_total",
                                     "Messages skipped (undecodable, invalid, NUL in a text, "
                                     "refused by PostgreSQL) and copied to the DLQ topic")),
        abandoned_(
            registry.GetCounter("agentwire_analytics_abandoned_total", "Runs marked abandoned")),
        late_events_(registry.GetCounter(
            "agentwire_analytics_late_events_total",
            "Events of a run after its first terminal event (counted in agent_runs.late_events; "
            "they change nothing else)")),
        times_replaced_(registry.GetCounter(
            "agentwire_analytics_event_times_replaced_total",
            "Events whose emitted_at was more than 24 h from their Kafka timestamp (the Kafka "
            "timestamp was used)")),
        dlq_failures_(registry.GetCounter("agentwire_analytics_dlq_delivery_failures_total",
                                          "Skipped messages the DLQ topic did not acknowledge")),
        dlq_(config_.client_properties, config_.topic, config_.dead_letter_topic, config_.group_id,
             dlq_failures_),
        consumer_(internal::MakeBatchConsumerConfig(config_, registry, "agentwire_analytics"),
                  *this) {}

  void Run(const std::stop_token& stop) { consumer_.Run(stop); }
  bool Ready() const noexcept { return consumer_.Ready(); }

  void OnConnect(pqxx::connection& connection) override {
    connection.prepare("upsert_run", kUpsertRun);
    connection.prepare("stored_ends", kStoredEnds);
    connection.prepare("tool_started", kToolStarted);
    connection.prepare("tool_completed", kToolCompleted);
    connection.prepare("find_open_call", kFindOpenCall);
    connection.prepare("recount_tools", kRecountTools);
    connection.prepare("abandon", kAbandon);
    // After a restart the newest event already applied still counts for abandonment.
    pqxx::nontransaction tx(connection);
    // (A time a day or more in the future, stored before times were checked against Kafka's,
    // is not a watermark.)
    const auto row = tx.exec(
        "SELECT (extract(epoch FROM max(last_event_at)) * 1000000)::bigint FROM agent_runs"
        " WHERE last_event_at < now() + interval '24 hours'");
    if (!row[0][0].is_null()) watermark_ = Latest(watermark_, row[0][0].as<int64_t>());
  }

  void Write(pqxx::transaction_base& tx,
             const std::vector<const rd_kafka_message_t*>& messages) override {
    size_t skipped = 0;
    size_t times_replaced = 0;
    std::vector<std::pair<const rd_kafka_message_t*, std::string>> dead;
    // Decode everything first: whether an event is late depends on the run's first terminal,
    // which may come later in the batch (or be stored already).
    if (events_buffer_.size() < messages.size()) events_buffer_.resize(messages.size());
    struct Decoded {
      const rd_kafka_message_t* message;
      const v1::AgentEvent* event;
      std::optional<Micros> time;
    };
    std::vector<Decoded> decoded;
    decoded.reserve(messages.size());
    std::map<std::string, int64_t> first_terminal;  // run -> lowest offset in the batch
    for (const auto* message : messages) {
      auto& event = events_buffer_[decoded.size()];
      event.Clear();
      // The archive's rule: undecodable or invalid messages, and text PostgreSQL cannot store
      // (a NUL would be cut off, or break the run_id array literal), are skipped and counted.
      std::string reason;
      if (message->payload == nullptr || message->len == 0) {
        reason = "empty message value";
      } else if (!event.ParseFromArray(message->payload, static_cast<int>(message->len))) {
        reason = "not a serialized agentwire.v1.AgentEvent (protobuf parse failed)";
      } else if (const auto invalid = schemas::Validate(event)) {
        reason = invalid->message;
      } else if (internal::HasNulCharacter(event)) {
        reason = "text contains a NUL character (PostgreSQL cannot store it)";
      }
      if (!reason.empty()) {
        ++skipped;
        dead.emplace_back(message, std::move(reason));
        continue;
      }
      bool replaced = false;
      const auto time = EventTime(event, message, &replaced);
      if (replaced) ++times_replaced;
      watermark_ = Latest(watermark_, time);
      if (schemas::IsTerminal(event)) {
        auto [it, inserted] = first_terminal.try_emplace(event.run_id(), message->offset);
        if (!inserted) it->second = std::min(it->second, message->offset);
      }
      decoded.push_back({message, &event, time});
    }

    std::set<std::string> touched;
    for (const auto& d : decoded) touched.insert(d.event->run_id());
    std::map<std::string, StoredEnd> stored;
    if (!touched.empty()) {
      for (const auto& row : tx.exec_prepared("stored_ends", TextArray(touched))) {
        auto& end = stored[row[0].as<std::string>()];
        if (!row[1].is_null()) end.terminal_offset = row[1].as<int64_t>();
        if (!row[2].is_null()) end.late_offset = row[2].as<int64_t>();
      }
    }

    std::map<std::string, RunDelta> runs;
    size_t late = 0;
    for (const auto& [message, event_ptr, time] : decoded) {
      const v1::AgentEvent& event = *event_ptr;
      const int64_t offset = message->offset;
      const int64_t seq = event.run_seq();
      auto& run = runs[event.run_id()];
      if (run.user_id.empty()) run.user_id = event.user_id();
      if (run.thread_id.empty()) run.thread_id = event.thread_id();
      if (run.agent_name.empty()) run.agent_name = event.agent_name();
      // The run's end: the lowest offset of a terminal, stored or in this batch.
      std::optional<int64_t> end;
      StoredEnd known;
      if (const auto found = stored.find(event.run_id()); found != stored.end()) {
        known = found->second;
        end = known.terminal_offset;
      }
      if (const auto found = first_terminal.find(event.run_id()); found != first_terminal.end()) {
        end = end ? std::min(*end, found->second) : found->second;
      }
      if (end && offset > *end) {
        // Late: after the run's first terminal. Counted once per offset, nothing else.
        if (!known.late_offset || offset > *known.late_offset) {
          run.late_offsets.push_back(offset);
          ++late;
        }
        continue;
      }
      run.started_at = Earliest(run.started_at, time);
      run.last_event_at = Latest(run.last_event_at, time);
      run.last_seq = std::max(run.last_seq, seq);
      switch (event.body_case()) {
        case v1::AgentEvent::kAgentThinking:
          run.first_thought_at = Earliest(run.first_thought_at, time);
          break;
        case v1::AgentEvent::kToolExecuting:
          ToolStarted(tx, event, time);
          break;
        case v1::AgentEvent::kToolCompleted:
          ToolCompleted(tx, event, time);
          break;
        case v1::AgentEvent::kAgentCompleted:
        case v1::AgentEvent::kAgentFailed:
          // offset == *end: this is the run's first terminal in the batch (kUpsertRun decides
          // against the stored one).
          run.terminal_offset = offset;
          run.terminal_seq = seq;
          run.ended_at = time;
          if (event.has_agent_failed()) {
            const auto& failed = event.agent_failed();
            run.status = failed.error_code() == kCancelled ? "cancelled" : "failed";
            run.error_code = failed.error_code();
            run.error_message = failed.message();
          } else {
            run.status = "completed";
            run.error_code.reset();
            run.error_message.reset();
          }
          break;
        default:
          break;
      }
    }
    for (const auto& [run_id, run] : runs) {
      tx.exec_prepared("upsert_run", run_id, run.user_id, run.thread_id, run.agent_name,
                       TimeText(run.started_at), TimeText(run.first_thought_at),
                       TimeText(run.ended_at), run.status, run.terminal_seq, run.terminal_offset,
                       run.error_code, run.error_message, run.last_seq, TimeText(run.last_event_at),
                       Int64Array(run.late_offsets));
    }
    if (!touched.empty()) tx.exec_prepared("recount_tools", TextArray(touched));
    size_t abandoned = 0;
    if (watermark_) {
      abandoned =
          static_cast<size_t>(tx.exec_prepared("abandon", TimeText(watermark_),
                                               static_cast<double>(config_.abandon_after.count()))
                                  .affected_rows());
    }
    pending_applied_ += decoded.size();
    pending_late_ += late;
    pending_skipped_ += skipped;
    pending_abandoned_ += abandoned;
    pending_times_replaced_ += times_replaced;
    for (auto& entry : dead) pending_dead_.push_back(std::move(entry));
  }

  void WriteRejected(pqxx::transaction_base&, const rd_kafka_message_t* message,
                     const std::string& reason) override {
    ++pending_skipped_;
    pending_dead_.emplace_back(message, reason);
  }

  void BeforeCommit() override {
    // As the archive: the DLQ copies are acknowledged before the commit, or the batch is
    // retried.
    for (const auto& [message, reason] : pending_dead_) dlq_.Produce(message, reason);
    dlq_.FlushOrThrow();
  }

  void AfterCommit() override {
    events_.Inc(pending_applied_);
    skipped_.Inc(pending_skipped_);
    abandoned_.Inc(pending_abandoned_);
    late_events_.Inc(pending_late_);
    times_replaced_.Inc(pending_times_replaced_);
    if (pending_times_replaced_ > 0) {
      log::Warn(
          "emitted_at more than 24 h away from the Kafka timestamp (a worker's clock is off): "
          "used the Kafka timestamp instead",
          {{"topic", config_.topic}, {"count", static_cast<uint64_t>(pending_times_replaced_)}});
    }
    for (const auto& [message, reason] : pending_dead_) {
      log::Warn("analytics skipped a message it cannot apply (copied to the DLQ topic)",
                {{"topic", config_.topic},
                 {"partition", message->partition},
                 {"offset", message->offset},
                 {"error", reason}});
    }
    AfterAbort();
  }

  void AfterAbort() override {
    pending_dead_.clear();
    pending_applied_ = 0;
    pending_skipped_ = 0;
    pending_abandoned_ = 0;
    pending_late_ = 0;
    pending_times_replaced_ = 0;
  }

 private:
  static void ToolStarted(pqxx::transaction_base& tx, const v1::AgentEvent& event,
                          std::optional<Micros> time) {
    const auto& tool = event.tool_executing();
    const bool has_id = !tool.tool_call_id().empty();
    const std::string key = has_id ? tool.tool_call_id() : fmt::format("seq:{}", event.run_seq());
    tx.exec_prepared("tool_started", event.run_id(), key,
                     has_id ? std::optional<std::string>(tool.tool_call_id()) : std::nullopt,
                     tool.tool_name(), event.user_id(), static_cast<int64_t>(event.run_seq()),
                     TimeText(time));
  }

  static void ToolCompleted(pqxx::transaction_base& tx, const v1::AgentEvent& event,
                            std::optional<Micros> time) {
    const auto& tool = event.tool_completed();
    const bool has_id = !tool.tool_call_id().empty();
    const auto seq = static_cast<int64_t>(event.run_seq());
    std::string key;
    if (has_id) {
      key = tool.tool_call_id();
    } else {
      const auto found = tx.exec_prepared("find_open_call", event.run_id(), tool.tool_name(), seq);
      key = found.empty() ? fmt::format("seq:{}", seq) : found[0][0].as<std::string>();
    }
    const std::optional<int64_t> duration =
        tool.duration_ms() > 0 ? std::optional<int64_t>(tool.duration_ms()) : std::nullopt;
    const std::optional<std::string> error =
        tool.error().empty() ? std::nullopt : std::optional<std::string>(tool.error());
    tx.exec_prepared("tool_completed", event.run_id(), key,
                     has_id ? std::optional<std::string>(tool.tool_call_id()) : std::nullopt,
                     tool.tool_name(), event.user_id(), seq, TimeText(time), duration,
                     tool.error().empty(), error);
  }

  AnalyticsConfig config_;
  metrics::Counter& events_;
  metrics::Counter& skipped_;
  metrics::Counter& abandoned_;
  metrics::Counter& late_events_;
  metrics::Counter& times_replaced_;
  metrics::Counter& dlq_failures_;
  internal::DeadLetterQueue dlq_;
  internal::PgBatchConsumer consumer_;
  std::optional<Micros> watermark_;
  std::vector<v1::AgentEvent> events_buffer_;  // reused from batch to batch
  std::vector<std::pair<const rd_kafka_message_t*, std::string>> pending_dead_;
  size_t pending_applied_ = 0;
  size_t pending_skipped_ = 0;
  size_t pending_abandoned_ = 0;
  size_t pending_late_ = 0;
  size_t pending_times_replaced_ = 0;
};

Analytics::Analytics(AnalyticsConfig config, metrics::Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(config), registry)) {}
Analytics::~Analytics() = default;
void Analytics::Run(const std::stop_token& stop) { impl_->Run(stop); }
bool Analytics::Ready() const noexcept { return impl_->Ready(); }

namespace {

/// Prints `rows` under `headers` with columns padded to their widest cell.
void PrintTable(std::ostream& out, const std::string& title,
                const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows) {
  out << title << '\n';
  std::vector<size_t> widths(headers.size());
  for (size_t i = 0; i < headers.size(); ++i) widths[i] = headers[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    out << "  ";
    for (size_t i = 0; i < cells.size(); ++i) {
      // First column left-aligned (names), numbers right-aligned.
      out << (i == 0 ? fmt::format("{:<{}}", cells[i], widths[i])
                     : fmt::format("  {:>{}}", cells[i], widths[i]));
    }
    out << '\n';
  };
  line(headers);
  std::vector<std::string> rule;
  rule.reserve(widths.size());
  for (const size_t w : widths) rule.emplace_back(w, '-');
  line(rule);
  if (rows.empty()) out << "  (none)\n";
  for (const auto& row : rows) line(row);
  out << '\n';
}

std::vector<std::vector<std::string>> Rows(pqxx::transaction_base& tx, const std::string& sql) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& row : tx.exec(sql)) {
    std::vector<std::string> cells;
    for (const auto& field : row) cells.emplace_back(field.is_null() ? "-" : field.c_str());
    rows.push_back(std::move(cells));
  }
  return rows;
}

}  // namespace

void PrintReport(const std::string& dsn, std::ostream& out) {
  try {
    pqxx::connection connection(dsn);
    pqxx::read_transaction tx(connection);
    const auto total = tx.exec("SELECT count(*) FROM agent_runs")[0][0].as<int64_t>();
    out << fmt::format("agentwire analytics report: {} runs\n", total);
    const auto late = tx.exec(
        "SELECT COALESCE(sum(late_events), 0)::bigint, count(*) FILTER (WHERE late_events > 0)"
        " FROM agent_runs")[0];
    out << fmt::format("late events (after a run's first end): {} in {} runs\n\n",
                       late[0].as<int64_t>(), late[1].as<int64_t>());
    PrintTable(out, "Runs by status", {"status", "runs", "share"},
               Rows(tx,
                    "SELECT status, count(*), round(100.0 * count(*) / sum(count(*)) OVER (), 1)"
                    " || '%' FROM agent_runs GROUP BY status ORDER BY count(*) DESC, status"));
    PrintTable(out, "Run duration (ended runs) and time to first thought (ms)",
               {"measure", "runs", "p50", "p95", "max"},
               Rows(tx,
                    "SELECT 'duration', count(duration_ms),"
                    " round(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms))::bigint,"
                    " round(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms))::bigint,"
                    " max(duration_ms) FROM agent_runs WHERE duration_ms IS NOT NULL"
                    " UNION ALL "
                    "SELECT 'first thought', count(time_to_first_thought_ms),"
                    " round(percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_first_thought_ms))"
                    "::bigint,"
                    " round(percentile_cont(0.95) WITHIN GROUP (ORDER BY "
                    "time_to_first_thought_ms))::bigint,"
                    " max(time_to_first_thought_ms) FROM agent_runs"
                    " WHERE time_to_first_thought_ms IS NOT NULL"));
    PrintTable(out, "Slowest tools by p95 (ms)", {"tool", "calls", "errors", "p50", "p95"},
               Rows(tx,
                    "SELECT tool_name, count(*), count(*) FILTER (WHERE ok = false),"
                    " round(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms))::bigint,"
                    " round(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms))::bigint"
                    " FROM tool_calls GROUP BY tool_name"
                    " ORDER BY 5 DESC NULLS LAST, tool_name LIMIT 10"));
    PrintTable(out, "Top failure reasons", {"error_code", "runs", "example message"},
               Rows(tx,
                    "SELECT COALESCE(NULLIF(error_code, ''), '(none)'), count(*),"
                    " left(min(error_message), 60) FROM agent_runs WHERE status = 'failed'"
                    " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"));
  } catch (const pqxx::broken_connection& e) {
    throw ConfigError(
        fmt::format("--pg / AGENTWIRE_PG_DSN: cannot connect to PostgreSQL: {}", e.what()));
  } catch (const pqxx::sql_error& e) {
    throw ConfigError(fmt::format(
        "analytics report: {} (was the schema migrated? run agentwire analytics --migrate)",
        e.what()));
  }
}

}  // namespace agentwire::consumers
