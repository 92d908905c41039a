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
constexpr auto kWatermarkTimeout = std::chrono::seconds(5);
constexpr int kJoinEveryMessages = 256;
/// Messages a scan reads before it lets other partitions' waiting resumes go first.
constexpr size_t kSliceMessages = 20'000;

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
  reader_ = std::make_unique<kafka::TopicReader>(properties_, identity_.topic);
  thread_ = std::thread([this] { Run(); });
}

void HistoryService::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  reader_.reset();
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

void HistoryService::Requeue(int partition, std::vector<HistoryRequest> requests) {
  if (requests.empty()) return;
  std::lock_guard lock(mutex_);
  auto& queue = queued_[partition];
  for (auto& request : requests) queue.push_back(std::move(request));
  queued_count_ += requests.size();
}

void HistoryService::SetActive(size_t count) {
  {
    std::lock_guard lock(mutex_);
    active_count_ = count;
  }
  UpdateDepth();
}

void HistoryService::SetStalled(bool stalled) {
  if (stalled_ == stalled) return;
  stalled_ = stalled;
  stalled_gauge_.Set(stalled ? 1 : 0);
}

/// One sequential read of one partition serving every request of it that it can (fan-in):
/// it starts at the lowest requested offset and hands each waiting session its own user's
/// events as it passes them. Lives for one turn of the history thread.
class HistoryService::PartitionScan final {
 public:
  PartitionScan(HistoryService& service, int partition)
      : service_(service), partition_(partition), reader_(*service.reader_) {}

  void Serve(std::vector<HistoryRequest> batch) {
    service_.scans_.Inc();
    std::string error;
    const auto marks = reader_.QueryWatermarks(partition_, kWatermarkTimeout, &error);
    if (!marks) {
      for (auto& request : batch) {
        const int64_t from = request.from;
        Answer(std::move(request), HistoryChunk::Status::kError, from, error);
      }
      return;
    }
    low_ = marks->low;
    high_ = marks->high;
    for (auto& request : batch) Admit(std::move(request));
    if (actives_.empty()) return;
    position_ = actives_.front()->request.from;
    for (const auto& active : actives_) position_ = std::min(position_, active->request.from);
    if (error = reader_.Assign({{partition_, position_}}); !error.empty()) {
      for (auto& active : actives_) {
        Deliver(*active, HistoryChunk::Status::kError, active->request.from, error);
      }
      return;
    }
    service_.SetActive(actives_.size());
    Read();
    service_.SetStalled(false);
    // Stopping: unserved requests are dropped (their sessions are closing); release their bytes.
    for (auto& active : actives_) {
      if (!active->finished) {
        service_.budget_.Release(active->request.user_id, active->chunk.charged_bytes);
      }
    }
  }

 private:
  /// A request being served by this scan.
  struct Active {
    HistoryRequest request;
    HistoryChunk chunk;
    bool finished = false;
  };
  using Status = HistoryChunk::Status;

  void Read() {
    auto last_progress = Clock::now();
    size_t since_join = 0;
    size_t slice = 0;
    while (!service_.stop_.load() && CompletePassed() > 0) {
      if (service_.budget_.Exhausted()) {
        WaitForBudget();
        last_progress = Clock::now();
        continue;
      }
      service_.SetStalled(false);
      auto record = reader_.Poll(std::chrono::milliseconds(100));
      if (!record) {
        FlushAll();
        JoinQueued();
        // The position moves past records that are not messages (transaction markers).
        if (const auto at = reader_.Position(partition_); at && *at > position_) {
          position_ = *at;
          last_progress = Clock::now();
        }
        if (Clock::now() - last_progress > service_.limits_.stall_timeout) {
          FailOpen(fmt::format("no progress reading {} [{}] at offset {}", service_.identity_.topic,
                               partition_, position_));
          return;
        }
        continue;
      }
      if (record->ErrorKind() == kafka::Record::Error::kOutOfRange) {
        // Retention removed the range while the scan was reading it: where does the log
        // start now? (Unknown, -1, if Kafka does not say: the session asks again.)
        const auto marks = reader_.QueryWatermarks(partition_, kWatermarkTimeout);
        low_ = marks ? marks->low : -1;
        for (auto& active : actives_) {
          if (!active->finished) Deliver(*active, Status::kOutOfRange, position_);
        }
        return;
      }
      if (record->ErrorKind() != kafka::Record::Error::kNone) continue;  // librdkafka retries
      if (record->Partition() != partition_ || record->Offset() < position_) continue;
      last_progress = Clock::now();
      service_.messages_read_.Inc();
      Hand(*record);
      if (++since_join >= kJoinEveryMessages) {
        since_join = 0;
        JoinQueued();
      }
      if (++slice >= kSliceMessages && service_.OthersWaiting(partition_)) {
        YieldTurn();
        return;
      }
    }
  }

  /// Hands the record at position_ - 1 to the requests of its user that want it.
  void Hand(const kafka::Record& record) {
    const int64_t offset = record.Offset();
    position_ = offset + 1;
    const auto it = by_user_.find(std::string(record.Key()));
    if (it == by_user_.end()) return;
    LogEntryPtr entry;
    bool decoded = false;
    for (Active* active : it->second) {
      if (active->finished || offset < active->request.from || offset >= active->request.to) {
        continue;
      }
      const auto sink = active->request.sink.lock();
      if (!sink) {
        active->finished = true;
        service_.budget_.Release(active->request.user_id, active->chunk.charged_bytes);
        continue;
      }
      const size_t held = sink->PendingCatchupBytes() + active->chunk.charged_bytes;
      // Paused (it asks again once it has written, or after a while when it holds nothing):
      // a session at its own bound, or any session of a user at its fair share of the
      // replica's budget (many sessions of one user that do not read must not take it all).
      if (held >= service_.limits_.per_session_bytes ||
          service_.budget_.UserOverShare(active->request.user_id)) {
        Deliver(*active, Status::kPaused, offset);
        continue;
      }
      if (!decoded) {
        decoded = true;
        // The same routing rule as the tailer: the key must be the payload's user_id.
        entry = MakeLogEntry(service_.identity_, partition_, offset, record.TimestampMs(),
                             record.Key(), record.Value());
      }
      if (!entry) continue;
      const size_t bytes = entry->Bytes();
      service_.budget_.Charge(active->request.user_id, bytes);
      active->chunk.charged_bytes += bytes;
      active->chunk.entries.push_back(entry);
      if (active->chunk.charged_bytes >= service_.limits_.chunk_bytes) {
        Deliver(*active, Status::kMore, position_);
      }
    }
  }

  void Deliver(Active& active, Status status, int64_t next, std::string error = {}) {
    active.chunk.status = status;
    active.chunk.next_offset = next;
    active.chunk.error = std::move(error);
    // Before the log's start: the session reads [next, low) from the archive (or names it in
    // `reset`, the missing range, when there is none).
    if (status == Status::kOutOfRange && next < low_) active.chunk.log_start = low_;
    if (auto sink = active.request.sink.lock()) {
      sink->OnHistory(std::move(active.chunk));
    } else {
      // The session is gone.
      service_.budget_.Release(active.request.user_id, active.chunk.charged_bytes);
    }
    active.chunk = {};
    if (status != Status::kMore) active.finished = true;
  }

  void Answer(HistoryRequest request, Status status, int64_t next, std::string error = {}) {
    Active once{std::move(request), {}, false};
    Deliver(once, status, next, std::move(error));
  }

  /// Takes a request into this scan when the scan can still serve it; false: leave it queued
  /// (it starts before where the scan has got to).
  bool Admit(HistoryRequest request) {
    if (request.earliest && request.from < low_) request.from = low_;
    const int64_t from = request.from;
    if (from < low_ || from > high_) {
      Answer(std::move(request), Status::kOutOfRange, from);
      return true;
    }
    if (from >= request.to) {
      Answer(std::move(request), Status::kDone, from);
      return true;
    }
    if (position_ >= 0 && request.from < position_) return false;
    actives_.push_back(std::make_unique<Active>(Active{std::move(request), {}, false}));
    by_user_[actives_.back()->request.user_id].push_back(actives_.back().get());
    return true;
  }

  /// Late requests for this partition whose start the scan has not passed yet ride along.
  void JoinQueued() {
    auto late = service_.TakeQueued(partition_);
    if (late.empty()) return;
    std::vector<HistoryRequest> later;
    for (auto& request : late) {
      if (!Admit(request)) later.push_back(std::move(request));
    }
    service_.Requeue(partition_, std::move(later));
    service_.SetActive(actives_.size());
  }

  void FlushAll() {
    for (auto& active : actives_) {
      if (!active->finished && !active->chunk.entries.empty()) {
        Deliver(*active, Status::kMore, position_);
      }
    }
  }

  /// Completes the requests whose range the scan has passed; returns how many remain.
  size_t CompletePassed() {
    size_t open = 0;
    for (auto& active : actives_) {
      if (active->finished) continue;
      if (active->request.to <= position_) {
        Deliver(*active, Status::kDone, active->request.to);
      } else {
        ++open;
      }
    }
    return open;
  }

  void FailOpen(const std::string& error) {
    for (auto& active : actives_) {
      if (!active->finished) Deliver(*active, Status::kError, position_, error);
    }
  }

  /// Scans take turns: a deep one (a cursor at the start of a long retention) yields after a
  /// slice when resumes of other partitions wait, and goes on from where it stopped after
  /// them. Without this, one client's deep resume stalls every other Kafka-backed resume.
  void YieldTurn() {
    FlushAll();
    std::vector<HistoryRequest> rest;
    for (auto& active : actives_) {
      if (active->finished) continue;
      active->finished = true;
      HistoryRequest request = active->request;
      request.from = std::max(request.from, position_);
      request.earliest = false;
      rest.push_back(std::move(request));
    }
    service_.Requeue(partition_, std::move(rest));
    service_.yields_.Inc();
  }

  /// Sessions release bytes as their clients read; hand over what is built and wait. Every
  /// Kafka-backed resume of the replica waits meanwhile: say so (a gauge, a counter of the
  /// time, and a line at most every 10 s). Sessions that stop reading lose their share
  /// (Session's --catchup-stall-timeout), so the wait ends.
  void WaitForBudget() {
    FlushAll();
    const auto wait_started = Clock::now();
    service_.SetStalled(true);
    static log::RateLimited stalled_log(std::chrono::seconds(10));
    stalled_log.Warn(
        "history reader waiting: the catch-up budget is held by sessions whose clients have "
        "not read it (see --catchup-buffer-bytes, --catchup-stall-timeout)",
        {{"topic", service_.identity_.topic},
         {"partition", partition_},
         {"bytes", static_cast<uint64_t>(service_.budget_.Buffered())}});
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    service_.stalled_micros_.Inc(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - wait_started)
            .count()));
  }

  HistoryService& service_;
  const int partition_;
  kafka::TopicReader& reader_;
  int64_t low_ = 0;
  int64_t high_ = 0;
  int64_t position_ = -1;  // the next offset the scan reads; -1 before it started
  std::vector<std::unique_ptr<Active>> actives_;
  std::unordered_map<std::string, std::vector<Active*>> by_user_;
};

void HistoryService::Run() {
  int partition = 0;
  std::vector<HistoryRequest> batch;
  while (TakeNext(partition, batch)) {
    try {
      PartitionScan(*this, partition).Serve(std::move(batch));
    } catch (const std::exception& e) {
      // Nothing may escape this thread; the sessions of the failed scan retry with 1013.
      log::Error("history scan failed",
                 {{"topic", identity_.topic}, {"partition", partition}, {"error", e.what()}});
    }
    batch.clear();
    SetActive(0);
  }
}

}  // namespace agentwire::gateway
