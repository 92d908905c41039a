#include "history.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/logging.hpp"

namespace agentwire::gateway {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kWatermarkTimeoutMs = 5'000;
constexpr int kJoinEveryMessages = 256;
/// Messages a scan reads before it lets other partitions' waiting resumes go first.
constexpr size_t kSliceMessages = 20'000;

size_t FrameBytes(const LogEntryPtr& entry) { return entry->Bytes(); }

}  // namespace

void CatchupBudget::Charge(const std::string& user, size_t bytes) {
  if (bytes == 0) return;
  {
    std::lock_guard lock(users_mutex_);
    by_user_[user] += bytes;
  }
  const size_t now = buffered_.fetch_add(bytes) + bytes;
  buffered_gauge_.Set(static_cast<double>(now));
  size_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  if (now > peak) peak_gauge_.Set(static_cast<double>(now));
}

void CatchupBudget::Release(const std::string& user, size_t bytes) {
  if (bytes == 0) return;
  {
    std::lock_guard lock(users_mutex_);
    const auto it = by_user_.find(user);
    if (it != by_user_.end()) {
      it->second -= std::min(it->second, bytes);
      if (it->second == 0) by_user_.erase(it);
    }
  }
  const size_t now = buffered_.fetch_sub(bytes) - bytes;
  buffered_gauge_.Set(static_cast<double>(now));
}

size_t CatchupBudget::UserBytes(const std::string& user) const {
  std::lock_guard lock(users_mutex_);
  const auto it = by_user_.find(user);
  return it == by_user_.end() ? 0 : it->second;
}

size_t CatchupBudget::FairShare() const {
  std::lock_guard lock(users_mutex_);
  return std::max(min_share_, max_bytes_ / (by_user_.size() + 1));
}

bool CatchupBudget::UserOverShare(const std::string& user) const {
  std::lock_guard lock(users_mutex_);
  const auto it = by_user_.find(user);
  if (it == by_user_.end()) return false;
  return it->second >= std::max(min_share_, max_bytes_ / (by_user_.size() + 1));
}

/// A request being served by the current scan.
struct HistoryService::Active {
  HistoryRequest request;
  HistoryChunk chunk;
  bool finished = false;
};

HistoryService::HistoryService(kafka::Properties properties, TopicIdentity identity, Limits limits,
                               CatchupBudget& budget, metrics::Registry& metrics)
    : properties_(std::move(properties)),
      identity_(std::move(identity)),
      limits_(limits),
      budget_(budget),
      queue_depth_(metrics.GetGauge("agentwire_gateway_history_requests",
                                    "Kafka catch-up reads queued or being served")),
      scans_(metrics.GetCounter("agentwire_gateway_history_scans_total",
                                "Sequential partition scans (each serves every waiting session "
                                "of the partition)")),
      messages_read_(metrics.GetCounter("agentwire_gateway_history_messages_total",
                                        "Messages read by catch-up scans")),
      stalled_gauge_(metrics.GetGauge(
          "agentwire_gateway_history_stalled",
          "1 while the history reader waits for the catch-up budget (every Kafka-backed resume "
          "of the replica waits with it)")),
      yields_(metrics.GetCounter("agentwire_gateway_history_scan_yields_total",
                                 "Scans that stopped after a slice to let other partitions' "
                                 "resumes go first (they go on later)")),
      stalled_micros_(
          metrics.GetCounter("agentwire_gateway_history_stalled_microseconds_total",
                             "Time the history reader spent waiting for the catch-up budget")) {
  properties_["client.id"] = "agentwire-gateway-history";
  // librdkafka prefetches up to this much per partition: keep the reader's own memory small.
  properties_.emplace("queued.max.messages.kbytes", "8192");
}

HistoryService::~HistoryService() { Stop(); }

void HistoryService::Start() {
  consumer_ = kafka::MakeClient(RD_KAFKA_CONSUMER, kafka::MakeConf(properties_));
  thread_ = std::thread([this] { Run(); });
}

void HistoryService::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (consumer_) {
    rd_kafka_assign(consumer_.get(), nullptr);
    consumer_.reset();
  }
}

void HistoryService::Submit(HistoryRequest request) {
  {
    std::lock_guard lock(mutex_);
    queued_[request.partition].push_back(std::move(request));
    ++queued_count_;
  }
  UpdateDepth();
  wake_.notify_one();
}

void HistoryService::UpdateDepth() {
  std::lock_guard lock(mutex_);
  queue_depth_.Set(static_cast<double>(queued_count_ + active_count_));
}

std::vector<HistoryRequest> HistoryService::TakeQueued(int partition) {
  std::lock_guard lock(mutex_);
  std::vector<HistoryRequest> taken;
  const auto it = queued_.find(partition);
  if (it == queued_.end()) return taken;
  taken = std::move(it->second);
  queued_.erase(it);
  queued_count_ -= taken.size();
  return taken;
}

bool HistoryService::OthersWaiting(int partition) {
  std::lock_guard lock(mutex_);
  const auto it = queued_.find(partition);
  return queued_count_ > (it == queued_.end() ? 0 : it->second.size());
}

bool HistoryService::TakeNext(int& partition, std::vector<HistoryRequest>& batch) {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [this] { return stop_.load() || queued_count_ > 0; });
  if (stop_.load()) return false;
  // Round-robin over partitions, so one busy partition cannot starve the others.
  auto it = queued_.lower_bound(next_partition_);
  if (it == queued_.end()) it = queued_.begin();
  partition = it->first;
  batch = std::move(it->second);
  queued_.erase(it);
  queued_count_ -= batch.size();
  next_partition_ = partition + 1;
  return true;
}

void HistoryService::Run() {
  int partition = 0;
  std::vector<HistoryRequest> batch;
  while (TakeNext(partition, batch)) {
    try {
      ScanPartition(partition, std::move(batch));
    } catch (const std::exception& e) {
      // Nothing may escape this thread; the sessions of the failed scan retry with 1013.
      log::Error("history scan failed",
                 {{"topic", identity_.topic}, {"partition", partition}, {"error", e.what()}});
    }
    batch.clear();
    {
      std::lock_guard lock(mutex_);
      active_count_ = 0;
    }
    UpdateDepth();
  }
}

void HistoryService::ScanPartition(int partition, std::vector<HistoryRequest> batch) {
  scans_.Inc();
  std::vector<std::unique_ptr<Active>> actives;
  int64_t low = 0;
  int64_t high = 0;
  auto deliver = [this, &low](Active& active, HistoryChunk::Status status, int64_t next,
                              std::string error = {}) {
    active.chunk.status = status;
    // Before the log's start: the session reads [next, low) from the archive (or names it in
    // `reset`, the missing range, when there is none).
    if (status == HistoryChunk::Status::kOutOfRange && next < low) active.chunk.log_start = low;
    active.chunk.next_offset = next;
    active.chunk.error = std::move(error);
    if (auto sink = active.request.sink.lock()) {
      sink->OnHistory(std::move(active.chunk));
    } else {
      budget_.Release(active.request.user_id, active.chunk.charged_bytes);  // the session is gone
    }
    active.chunk = {};
    if (status != HistoryChunk::Status::kMore) active.finished = true;
  };
  auto answer = [&](HistoryRequest request, HistoryChunk::Status status, int64_t next,
                    std::string error = {}) {
    Active once{std::move(request), {}, false};
    deliver(once, status, next, std::move(error));
  };

  if (const auto err = rd_kafka_query_watermark_offsets(
          consumer_.get(), identity_.topic.c_str(), partition, &low, &high, kWatermarkTimeoutMs);
      err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (auto& request : batch) {
      const int64_t from = request.from;
      answer(std::move(request), HistoryChunk::Status::kError, from, kafka::ErrorText(err));
    }
    return;
  }

  // Admits a request into this scan when the scan can still serve it; false: leave it queued.
  int64_t position = -1;  // next offset the scan reads; -1 before the scan started
  std::unordered_map<std::string, std::vector<Active*>> by_user;
  auto admit = [&](HistoryRequest request) -> bool {
    if (request.earliest && request.from < low) request.from = low;
    const int64_t from = request.from;
    if (from < low || from > high) {
      answer(std::move(request), HistoryChunk::Status::kOutOfRange, from);
      return true;
    }
    if (from >= request.to) {
      answer(std::move(request), HistoryChunk::Status::kDone, from);
      return true;
    }
    if (position >= 0 && request.from < position) return false;
    actives.push_back(std::make_unique<Active>(Active{std::move(request), {}, false}));
    by_user[actives.back()->request.user_id].push_back(actives.back().get());
    return true;
  };
  for (auto& request : batch) admit(std::move(request));
  batch.clear();
  if (actives.empty()) return;

  position = actives.front()->request.from;
  for (const auto& active : actives) position = std::min(position, active->request.from);
  {
    kafka::TopicPartitionListPtr assignment(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(assignment.get(), identity_.topic.c_str(), partition)
        ->offset = position;
    if (const auto err = rd_kafka_assign(consumer_.get(), assignment.get());
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (auto& active : actives) {
        deliver(*active, HistoryChunk::Status::kError, active->request.from, kafka::ErrorText(err));
      }
      return;
    }
  }
  {
    std::lock_guard lock(mutex_);
    active_count_ = actives.size();
  }
  UpdateDepth();

  auto flush_all = [&] {
    for (auto& active : actives) {
      if (!active->finished && !active->chunk.entries.empty()) {
        deliver(*active, HistoryChunk::Status::kMore, position);
      }
    }
  };
  // Requests whose range the scan has passed are complete.
  auto complete_passed = [&] {
    size_t open = 0;
    for (auto& active : actives) {
      if (active->finished) continue;
      if (active->request.to <= position) {
        deliver(*active, HistoryChunk::Status::kDone, active->request.to);
      } else {
        ++open;
      }
    }
    return open;
  };
  // Late requests for this partition whose start the scan has not passed yet ride along.
  auto join_queued = [&] {
    auto late = TakeQueued(partition);
    if (late.empty()) return;
    std::vector<HistoryRequest> later;
    for (auto& request : late) {
      if (!admit(request)) later.push_back(std::move(request));
    }
    if (!later.empty()) {
      std::lock_guard lock(mutex_);
      auto& queue = queued_[partition];
      for (auto& request : later) queue.push_back(std::move(request));
      queued_count_ += later.size();
    }
    std::lock_guard lock(mutex_);
    active_count_ = actives.size();
  };

  auto last_progress = Clock::now();
  size_t since_join = 0;
  size_t slice_messages = 0;
  while (!stop_.load() && complete_passed() > 0) {
    if (budget_.Exhausted()) {
      // Sessions release bytes as their clients read; hand over what is built and wait. Every
      // Kafka-backed resume of the replica waits meanwhile: say so (a gauge, a counter of the
      // time, and a line at most every 10 s). Sessions that stop reading lose their share
      // (Session's --catchup-stall-timeout), so the wait ends.
      flush_all();
      const auto wait_started = Clock::now();
      if (!stalled_) {
        stalled_ = true;
        stalled_gauge_.Set(1);
      }
      static log::RateLimited stalled_log(std::chrono::seconds(10));
      stalled_log.Warn(
          "history reader waiting: the catch-up budget is held by sessions whose "
          "clients have not read it (see --catchup-buffer-bytes, "
          "--catchup-stall-timeout)",
          {{"topic", identity_.topic},
           {"partition", partition},
           {"bytes", static_cast<uint64_t>(budget_.Buffered())}});
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      stalled_micros_.Inc(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - wait_started)
              .count()));
      last_progress = Clock::now();
      continue;
    }
    if (stalled_) {
      stalled_ = false;
      stalled_gauge_.Set(0);
    }
    kafka::MessagePtr message(rd_kafka_consumer_poll(consumer_.get(), 100));
    if (!message) {
      flush_all();
      join_queued();
      // The position moves past records that are not messages (transaction markers).
      kafka::TopicPartitionListPtr where(rd_kafka_topic_partition_list_new(1));
      rd_kafka_topic_partition_list_add(where.get(), identity_.topic.c_str(), partition);
      if (rd_kafka_position(consumer_.get(), where.get()) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          where->elems[0].offset > position) {
        position = where->elems[0].offset;
        last_progress = Clock::now();
      }
      if (Clock::now() - last_progress > limits_.stall_timeout) {
        for (auto& active : actives) {
          if (!active->finished) {
            deliver(*active, HistoryChunk::Status::kError, position,
                    fmt::format("no progress reading {} [{}] at offset {}", identity_.topic,
                                partition, position));
          }
        }
        break;
      }
      continue;
    }
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (message->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
          message->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
        // Retention removed the range while the scan was reading it: where does the log start
        // now? (Unknown, -1, if Kafka does not say: the session asks again.)
        int64_t new_high = 0;
        if (rd_kafka_query_watermark_offsets(consumer_.get(), identity_.topic.c_str(), partition,
                                             &low, &new_high,
                                             kWatermarkTimeoutMs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
          low = -1;
        }
        for (auto& active : actives) {
          if (!active->finished) deliver(*active, HistoryChunk::Status::kOutOfRange, position);
        }
        break;
      }
      continue;  // transient: librdkafka retries; the stall timeout bounds it
    }
    if (message->partition != partition || message->offset < position) continue;
    last_progress = Clock::now();
    messages_read_.Inc();
    const int64_t offset = message->offset;
    position = offset + 1;
    const std::string key(static_cast<const char*>(message->key), message->key_len);
    if (const auto it = by_user.find(key); it != by_user.end()) {
      LogEntryPtr entry;
      bool decoded = false;
      for (Active* active : it->second) {
        if (active->finished || offset < active->request.from || offset >= active->request.to) {
          continue;
        }
        const auto sink = active->request.sink.lock();
        if (!sink) {
          active->finished = true;
          budget_.Release(active->request.user_id, active->chunk.charged_bytes);
          continue;
        }
        const size_t held = sink->PendingCatchupBytes() + active->chunk.charged_bytes;
        // Paused (it asks again once it has written, or after a while when it holds nothing):
        // a session at its own bound, or any session of a user at its fair share of the
        // replica's budget (many sessions of one user that do not read must not take it all).
        if (held >= limits_.per_session_bytes || budget_.UserOverShare(active->request.user_id)) {
          deliver(*active, HistoryChunk::Status::kPaused, offset);
          continue;
        }
        if (!decoded) {
          decoded = true;
          rd_kafka_timestamp_type_t type;
          const int64_t timestamp = rd_kafka_message_timestamp(message.get(), &type);
          // The same routing rule as the tailer: the key must be the payload's user_id.
          entry = MakeLogEntry(identity_, partition, offset, timestamp, key,
                               {static_cast<const char*>(message->payload), message->len});
        }
        if (!entry) continue;
        const size_t bytes = FrameBytes(entry);
        budget_.Charge(active->request.user_id, bytes);
        active->chunk.charged_bytes += bytes;
        active->chunk.entries.push_back(entry);
        if (active->chunk.charged_bytes >= limits_.chunk_bytes) {
          deliver(*active, HistoryChunk::Status::kMore, position);
        }
      }
    }
    if (++since_join >= kJoinEveryMessages) {
      since_join = 0;
      join_queued();
    }
    // Scans take turns: a deep one (a cursor at the start of a long retention) yields after a
    // slice when resumes of other partitions wait, and goes on from where it stopped after
    // them. Without this, one client's deep resume stalls every other Kafka-backed resume.
    if (++slice_messages >= kSliceMessages && OthersWaiting(partition)) {
      flush_all();
      std::vector<HistoryRequest> rest;
      for (auto& active : actives) {
        if (active->finished) continue;
        active->finished = true;
        HistoryRequest request = active->request;
        request.from = std::max(request.from, position);
        request.earliest = false;
        rest.push_back(std::move(request));
      }
      if (!rest.empty()) {
        std::lock_guard lock(mutex_);
        auto& queue = queued_[partition];
        for (auto& request : rest) queue.push_back(std::move(request));
        queued_count_ += rest.size();
      }
      yields_.Inc();
      break;
    }
  }
  if (stalled_) {
    stalled_ = false;
    stalled_gauge_.Set(0);
  }
  // Stopping: unserved requests are dropped (their sessions are closing); release their bytes.
  for (auto& active : actives) {
    if (!active->finished) budget_.Release(active->request.user_id, active->chunk.charged_bytes);
  }
}

}  // namespace agentwire::gateway
