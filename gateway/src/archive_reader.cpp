#include "archive_reader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <pqxx/pqxx>

#include "agentwire/core/logging.hpp"
#include "kafka_tail.hpp"

namespace agentwire::gateway {
namespace {

using Clock = std::chrono::steady_clock;
/// A connection that failed is retried at most this often: during an outage every read fails
/// at once with the last error instead of each waiting for its own connect.
constexpr auto kReconnectSpacing = std::chrono::seconds(1);

/// libpq waits for a connect as long as the network lets it unless told otherwise: a replica's
/// reads must fail in seconds when PostgreSQL does not answer.
std::string WithConnectTimeout(const std::string& dsn) {
  if (dsn.find("connect_timeout") != std::string::npos) return dsn;
  if (dsn.rfind("postgres://", 0) == 0 || dsn.rfind("postgresql://", 0) == 0) {
    return dsn + (dsn.find('?') == std::string::npos ? "?" : "&") + "connect_timeout=3";
  }
  return dsn + " connect_timeout=3";
}

std::string OneLine(std::string text) {
  for (auto& c : text) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

}  // namespace

ArchiveReader::ArchiveReader(ArchiveSettings settings, TopicIdentity identity,
                             CatchupBudget& budget, metrics::Registry& metrics)
    : settings_(std::move(settings)),
      identity_(std::move(identity)),
      budget_(budget),
      queue_depth_(metrics.GetGauge("agentwire_gateway_archive_queue",
                                    "Archive reads queued or being served")),
      reads_(metrics.GetCounter("agentwire_gateway_archive_reads_total",
                                "Reads of the archive (each one chunk of one user's history)")),
      rows_(metrics.GetCounter("agentwire_gateway_archive_rows_total",
                               "Events read from the archive")),
      errors_(metrics.GetCounter("agentwire_gateway_archive_errors_total",
                                 "Archive reads that failed (PostgreSQL down, slow or refusing)")),
      read_seconds_(metrics.GetHistogram("agentwire_gateway_archive_read_seconds",
                                         "Time of one archive read", metrics::LatencyBuckets())) {}

ArchiveReader::~ArchiveReader() { Stop(); }

void ArchiveReader::Start() {
  if (!Enabled() || !threads_.empty()) return;
  for (int i = 0; i < std::max(1, settings_.connections); ++i) {
    threads_.emplace_back([this] { Worker(); });
  }
}

void ArchiveReader::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    queue_.clear();
  }
  wake_.notify_all();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
  UpdateDepth();
}

void ArchiveReader::UpdateDepth() {
  std::lock_guard lock(mutex_);
  queue_depth_.Set(static_cast<double>(queue_.size()));
}

void ArchiveReader::Execute(Job job, std::function<void(const std::string&)> on_error) {
  // Refused outside the lock: the callback may submit again.
  std::optional<Task> refused;
  std::string why;
  {
    std::lock_guard lock(mutex_);
    if (stop_ || !Enabled()) {
      why = stop_ ? "the gateway is stopping" : "no archive is configured (--archive-dsn)";
      refused.emplace(Task{std::move(job), std::move(on_error)});
    } else {
      queue_.push_back({std::move(job), std::move(on_error)});
      queue_depth_.Set(static_cast<double>(queue_.size()));
    }
  }
  if (refused) {
    refused->on_error(why);
    return;
  }
  wake_.notify_one();
}

void ArchiveReader::Submit(HistoryRequest request) {
  auto shared = std::make_shared<HistoryRequest>(std::move(request));
  Execute([this, shared](pqxx::connection_base& connection) { Serve(connection, *shared); },
          [this, shared](const std::string& error) {
            errors_.Inc();
            HistoryChunk chunk;
            chunk.source = HistoryChunk::Source::kArchive;
            chunk.status = HistoryChunk::Status::kError;
            chunk.next_offset = shared->from;
            chunk.error = error;
            if (auto sink = shared->sink.lock()) sink->OnHistory(std::move(chunk));
          });
}

void ArchiveReader::Worker() {
  std::unique_ptr<pqxx::connection> connection;
  Clock::time_point last_attempt{};
  std::string last_error;
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      queue_depth_.Set(static_cast<double>(queue_.size()));
    }
    if (!connection || !connection->is_open()) {
      connection.reset();
      if (Clock::now() - last_attempt < kReconnectSpacing && !last_error.empty()) {
        task.on_error(last_error);
        continue;
      }
      last_attempt = Clock::now();
      try {
        connection = std::make_unique<pqxx::connection>(WithConnectTimeout(settings_.dsn));
        pqxx::nontransaction setup(*connection);
        setup.exec(fmt::format("SET statement_timeout = {}", settings_.statement_timeout.count()));
        setup.exec("SET default_transaction_read_only = on");
        last_error.clear();
      } catch (const std::exception& e) {
        connection.reset();
        last_error = "archive unreachable: " + OneLine(e.what());
        static log::RateLimited unreachable_log(std::chrono::seconds(10));
        unreachable_log.Warn("archive unreachable: resumes older than the Kafka log wait",
                             {{"error", OneLine(e.what())}});
        task.on_error(last_error);
        continue;
      }
    }
    const auto started = Clock::now();
    try {
      task.job(*connection);
      read_seconds_.Observe(std::chrono::duration<double>(Clock::now() - started).count());
    } catch (const pqxx::broken_connection& e) {
      connection.reset();
      last_error = "archive connection lost: " + OneLine(e.what());
      task.on_error(last_error);
    } catch (const std::exception& e) {
      static log::RateLimited failed_log(std::chrono::seconds(10));
      failed_log.Warn("archive read failed", {{"error", OneLine(e.what())}});
      task.on_error("archive read failed: " + OneLine(e.what()));
    }
  }
}

ArchivedEvents ArchiveReader::Query(pqxx::connection_base& connection, int partition,
                                    const std::string& user_id, const std::string& thread_id,
                                    int64_t from, int64_t to, size_t limit,
                                    bool newest_first) const {
  ArchivedEvents result;
  // One snapshot for the position and the rows: the archive writes both in one transaction.
  pqxx::read_transaction tx(connection);
  const auto position = tx.exec_params(
      "SELECT next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2 AND "
      "partition = $3",
      settings_.group, identity_.topic, partition);
  if (position.empty()) return result;
  result.archived_to = position[0][0].as<int64_t>();
  const int64_t end = std::min(to, result.archived_to);
  if (from >= end || limit == 0) return result;
  const auto rows = tx.exec_params(
      fmt::format("SELECT \"offset\", raw FROM agent_events WHERE user_id = $1 AND topic = $2 AND "
                  "partition = $3 AND \"offset\" >= $4 AND \"offset\" < $5 AND ($6::text = '' OR "
                  "thread_id = $6::text) ORDER BY \"offset\" {} LIMIT $7",
                  newest_first ? "DESC" : "ASC"),
      user_id, identity_.topic, partition, from, end, thread_id, static_cast<int64_t>(limit));
  result.entries.reserve(rows.size());
  for (const auto& row : rows) {
    const auto offset = row[0].as<int64_t>();
    const pqxx::binarystring raw(row[1]);
    // The archive checked the record when it wrote the row; the gateway's own rule again (the
    // key is the payload's user_id), so a row that would not route is never delivered.
    auto entry = MakeLogEntry(identity_, partition, offset, 0, user_id,
                              {reinterpret_cast<const char*>(raw.data()), raw.size()});
    if (entry) result.entries.push_back(std::move(entry));
  }
  return result;
}

std::optional<RunInProgress> ArchiveReader::OpenRunOfThread(pqxx::connection_base& connection,
                                                            int partition,
                                                            const std::string& user_id,
                                                            const std::string& thread_id) const {
  pqxx::read_transaction tx(connection);
  const auto rows = tx.exec_params(
      "SELECT s.run_id, s.\"offset\" FROM agent_events s WHERE s.user_id = $1 AND s.topic = $2 "
      "AND s.partition = $3 AND s.thread_id = $4 AND s.type = 'agent_started' AND NOT EXISTS "
      "(SELECT 1 FROM agent_events e WHERE e.run_id = s.run_id AND e.user_id = s.user_id AND "
      "e.type IN ('agent_completed', 'agent_failed')) ORDER BY s.\"offset\" DESC LIMIT 1",
      user_id, identity_.topic, partition, thread_id);
  if (rows.empty()) return std::nullopt;
  return RunInProgress{rows[0][0].as<std::string>(), rows[0][1].as<int64_t>()};
}

void ArchiveReader::Serve(pqxx::connection_base& connection, const HistoryRequest& request) {
  auto sink = request.sink.lock();
  if (!sink) return;  // the session is gone
  HistoryChunk chunk;
  chunk.source = HistoryChunk::Source::kArchive;
  if (budget_.Exhausted() || budget_.UserOverShare(request.user_id)) {
    chunk.status = HistoryChunk::Status::kPaused;
    chunk.next_offset = request.from;
    sink->OnHistory(std::move(chunk));
    return;
  }
  reads_.Inc();
  auto archived = Query(connection, request.partition, request.user_id, {}, request.from,
                        request.to, settings_.chunk_rows, false);
  rows_.Inc(archived.entries.size());
  const int64_t end = std::min(request.to, std::max(archived.archived_to, request.from));
  if (archived.entries.size() == settings_.chunk_rows) {
    chunk.status = HistoryChunk::Status::kMore;
    chunk.next_offset = archived.entries.back()->offset + 1;
  } else if (end == request.to) {
    chunk.status = HistoryChunk::Status::kDone;
    chunk.next_offset = request.to;
  } else {
    chunk.status = HistoryChunk::Status::kOutOfRange;  // [end, to) was never archived
    chunk.next_offset = end;
  }
  for (const auto& entry : archived.entries) {
    const size_t bytes = entry->Bytes();
    budget_.Charge(request.user_id, bytes);
    chunk.charged_bytes += bytes;
  }
  chunk.entries = std::move(archived.entries);
  sink->OnHistory(std::move(chunk));
}

}  // namespace agentwire::gateway
