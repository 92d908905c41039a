#include "partition_hub.hpp"

#include <algorithm>
#include <utility>

namespace agentwire::gateway {

namespace {
std::string RunKey(const std::string& user_id, const std::string& id) {
  std::string key = user_id;
  key.push_back('\0');
  key += id;
  return key;
}

// RunKey written into `scratch` (a partition's, under its lock): every dispatched event looks
// its run up, and a key of its own would be an allocation per event.
const std::string& RunKeyIn(std::string& scratch, const std::string& user_id,
                            const std::string& id) {
  scratch.assign(user_id);
  scratch.push_back('\0');
  scratch.append(id);
  return scratch;
}
}  // namespace

RunEnd RunEndOf(EventKind kind, std::string_view error_code) {
  if (kind == EventKind::kAgentCompleted) return RunEnd::kCompleted;
  if (kind != EventKind::kAgentFailed) return RunEnd::kNone;
  if (error_code == "cancelled") return RunEnd::kCancelled;
  if (error_code == "worker_lost") return RunEnd::kWorkerLost;
  return RunEnd::kFailed;
}

std::string_view RunEndType(RunEnd end) {
  switch (end) {
    case RunEnd::kNone:
      return "";
    case RunEnd::kCompleted:
      return "agent_completed";
    default:
      return "agent_failed";
  }
}

std::string_view RunEndCode(RunEnd end) {
  if (end == RunEnd::kCancelled) return "cancelled";
  if (end == RunEnd::kWorkerLost) return "worker_lost";
  return "";
}

std::shared_ptr<LogEntry> LogEntry::MetadataOf(const LogEntry& other) {
  auto copy = std::make_shared<LogEntry>();
  copy->offset = other.offset;
  copy->timestamp_ms = other.timestamp_ms;
  copy->gap = other.gap;
  copy->user_id = other.user_id;
  copy->thread_id = other.thread_id;
  copy->run_id = other.run_id;
  copy->kind = other.kind;
  copy->end = other.end;
  copy->cursor = other.cursor;
  return copy;
}

void LogEntry::SetFrame(std::shared_ptr<const std::string> frame) {
  frame_bytes_ = frame ? frame->size() : 0;
  frame_ = std::move(frame);
  build_ = nullptr;
}

void LogEntry::SetLazyFrame(std::string raw, FrameBuilder build, size_t estimated_frame_bytes) {
  raw_ = std::move(raw);
  build_ = build;
  frame_bytes_ = estimated_frame_bytes;
}

const std::shared_ptr<const std::string>& LogEntry::Frame() const {
  if (build_ != nullptr) {
    std::call_once(built_, [this] {
      frame_ = build_(*this, raw_);
      std::string().swap(raw_);  // the record is not needed any more
    });
  }
  return frame_;
}

PartitionHub::PartitionHub(int partition_count, size_t cache_bytes_total)
    : cache_bytes_per_partition_(cache_bytes_total /
                                 static_cast<size_t>(std::max(1, partition_count))) {
  partitions_.reserve(static_cast<size_t>(partition_count));
  for (int i = 0; i < partition_count; ++i) partitions_.push_back(std::make_unique<Partition>());
}

void PartitionHub::StartTail(int partition, int64_t offset, int64_t high_watermark) {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::vector<std::shared_ptr<LiveListener>> waiting;
  {
    std::lock_guard lock(p.mutex);
    p.tailed = true;
    p.tail_requested = false;
    p.dispatched_end = offset;
    p.covered_from = offset;
    p.start_high_watermark = high_watermark;
    p.idle_since = std::chrono::steady_clock::now();
    for (auto& [user, list] : p.listeners) {
      for (const auto& ref : list) {
        if (auto strong = ref.weak.lock()) waiting.push_back(std::move(strong));
      }
    }
  }
  // Outside the lock, as in Dispatch; before any Dispatch of the partition (same thread).
  for (const auto& listener : waiting) listener->OnTailStarted(offset);
}

bool PartitionHub::Tailed(int partition) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  return p.tailed;
}

bool PartitionHub::CaughtUp(int partition) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  return p.tailed && p.dispatched_end >= p.start_high_watermark;
}

int PartitionHub::TailedCount() const {
  int count = 0;
  for (const auto& p : partitions_) {
    std::lock_guard lock(p->mutex);
    count += p->tailed ? 1 : 0;
  }
  return count;
}

void PartitionHub::SetTailRequestHook(std::function<void()> hook) {
  std::lock_guard lock(tail_requests_mutex_);
  tail_request_hook_ = std::move(hook);
}

std::vector<int> PartitionHub::TakeTailRequests() {
  std::lock_guard lock(tail_requests_mutex_);
  tail_requests_pending_.store(false, std::memory_order_release);
  return std::exchange(tail_requests_, {});
}

std::vector<int> PartitionHub::StopIdleTails(std::chrono::steady_clock::duration idle_for) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> stopped;
  for (size_t i = 0; i < partitions_.size(); ++i) {
    auto& p = *partitions_[i];
    std::lock_guard lock(p.mutex);
    if (!p.tailed) continue;
    const bool had_listeners = !p.listeners.empty();
    for (auto it = p.listeners.begin(); it != p.listeners.end();) {
      std::erase_if(it->second, [](const ListenerRef& ref) { return ref.weak.expired(); });
      it = it->second.empty() ? p.listeners.erase(it) : std::next(it);
    }
    if (had_listeners && p.listeners.empty()) p.idle_since = now;
    if (!p.listeners.empty() || now - p.idle_since < idle_for) continue;
    p.tailed = false;
    p.dispatched_end = -1;
    p.covered_from = -1;
    p.cache.clear();
    p.cache_bytes = 0;
    p.runs.clear();
    p.runs_by_id.clear();
    p.ended_order.clear();
    p.ended = {};
    p.open_by_start.Clear();
    p.runs_by_start.Clear();
    stopped.push_back(static_cast<int>(i));
  }
  return stopped;
}

void PartitionHub::SetLogStart(int partition, int64_t offset) {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  p.log_start = offset;
}

int64_t PartitionHub::LogStart(int partition) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  return p.log_start;
}

void PartitionHub::Dispatch(int partition, const LogEntryPtr& entry) {
  auto& p = *partitions_[static_cast<size_t>(partition)];
  // Built outside the lock: a frame-less copy of an entry too large to cache (an event of a
  // megabyte of '<' is a 6 MB frame, which would otherwise evict the whole partition's cache).
  LogEntryPtr cached = entry;
  if (cache_bytes_per_partition_ > 0 && entry->Bytes() > cache_bytes_per_partition_ / 8) {
    auto stub = LogEntry::MetadataOf(*entry);
    stub->frame_not_cached = true;
    cached = std::move(stub);
  }
  // Reused (one tailer thread dispatches): a vector per event was an allocation per event.
  thread_local std::vector<std::shared_ptr<LiveListener>> targets;
  targets.clear();
  {
    std::lock_guard lock(p.mutex);
    // A message fetched for a tail that was stopped since, or again after the assignment was
    // renewed: dispatched already (or to nobody), never twice.
    if (!p.tailed || entry->offset < p.dispatched_end) return;
    p.dispatched_end = entry->offset + 1;
    if (IsLateLocked(p, *entry)) {
      // A zombie worker's event after its run's end (docs/runs.md): kept in the log, counted,
      // never delivered (like Skip: not cached either, so no read path can hand it out).
      if (p.cache.empty()) p.covered_from = p.dispatched_end;
      if (late_events_ != nullptr) late_events_->Inc();
      return;
    }
    TrackRun(p, *entry);
    if (cache_bytes_per_partition_ > 0) {
      p.cache_bytes += cached->Bytes();
      p.cache.push_back(std::move(cached));
      while (p.cache_bytes > cache_bytes_per_partition_ && !p.cache.empty()) {
        p.cache_bytes -= p.cache.front()->Bytes();
        p.covered_from = p.cache.front()->offset + 1;
        p.cache.pop_front();
      }
    } else {
      p.covered_from = p.dispatched_end;
    }
    const auto it = p.listeners.find(entry->user_id);
    if (it != p.listeners.end()) {
      auto& list = it->second;
      for (auto ref = list.begin(); ref != list.end();) {
        // The strong reference lives in `targets`, released after the lock (see Detach).
        if (auto strong = ref->weak.lock()) {
          targets.push_back(std::move(strong));
          ++ref;
        } else {
          ref = list.erase(ref);
        }
      }
      if (list.empty()) {
        p.listeners.erase(it);
        if (p.listeners.empty()) p.idle_since = std::chrono::steady_clock::now();
      }
    }
  }
  // Outside the lock: listeners only hand over to their I/O threads, never under our mutex.
  for (const auto& listener : targets) listener->OnLive(entry);
  targets.clear();  // the last references may go here, outside the lock (see Detach)
}

void PartitionHub::Skip(int partition, int64_t offset) {
  auto& p = *partitions_[static_cast<size_t>(partition)];
  std::lock_guard lock(p.mutex);
  if (!p.tailed || offset < p.dispatched_end) return;
  p.dispatched_end = offset + 1;
  if (p.cache.empty()) p.covered_from = p.dispatched_end;
}

void PartitionHub::Gap(int partition, int64_t resume_offset) {
  auto& p = *partitions_[static_cast<size_t>(partition)];
  auto marker = std::make_shared<LogEntry>();
  marker->gap = true;
  marker->offset = resume_offset - 1;
  std::vector<std::shared_ptr<LiveListener>> targets;
  {
    std::lock_guard lock(p.mutex);
    if (!p.tailed || resume_offset <= p.dispatched_end) return;
    p.dispatched_end = resume_offset;
    p.covered_from = resume_offset;
    p.cache.clear();
    p.cache_bytes = 0;
    for (auto& [user, list] : p.listeners) {
      for (const auto& ref : list) {
        if (auto strong = ref.weak.lock()) targets.push_back(std::move(strong));
      }
    }
  }
  for (const auto& listener : targets) listener->OnLive(marker);
}

int64_t PartitionHub::Attach(int partition, const std::string& user_id,
                             const std::shared_ptr<LiveListener>& listener) {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  bool request = false;
  int64_t attach_point = kNotTailed;
  {
    std::lock_guard lock(p.mutex);
    p.listeners[user_id].push_back({listener.get(), listener});
    if (p.tailed) {
      attach_point = p.dispatched_end;
    } else if (!p.tail_requested) {
      p.tail_requested = true;
      request = true;
    }
  }
  if (request) {
    std::lock_guard lock(tail_requests_mutex_);
    tail_requests_.push_back(partition);
    tail_requests_pending_.store(true, std::memory_order_release);
    if (tail_request_hook_) tail_request_hook_();
  }
  return attach_point;
}

void PartitionHub::Detach(int partition, const std::string& user_id, const LiveListener* listener) {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  const auto it = p.listeners.find(user_id);
  if (it == p.listeners.end()) return;
  auto& list = it->second;
  list.erase(std::remove_if(list.begin(), list.end(),
                            [listener](const ListenerRef& ref) {
                              return ref.raw == listener || ref.weak.expired();
                            }),
             list.end());
  if (list.empty()) {
    p.listeners.erase(it);
    if (p.listeners.empty()) p.idle_since = std::chrono::steady_clock::now();
  }
}

PartitionHub::CacheRead PartitionHub::ReadCached(int partition, const std::string& user_id,
                                                 int64_t from, int64_t to, size_t max_bytes) const {
  // Bounds the time the tailer can wait for this lock, whatever the user's share of the cache.
  constexpr size_t kMaxScanned = 4096;
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  CacheRead read;
  std::lock_guard lock(p.mutex);
  if (from < p.covered_from || p.covered_from < 0) {
    read.next_offset = to;
    return read;
  }
  read.covered = true;
  to = std::min(to, p.dispatched_end);
  read.next_offset = std::max(from, to);
  auto it = std::lower_bound(
      p.cache.begin(), p.cache.end(), from,
      [](const LogEntryPtr& entry, int64_t offset) { return entry->offset < offset; });
  size_t bytes = 0;
  for (size_t scanned = 0; it != p.cache.end() && (*it)->offset < to; ++it, ++scanned) {
    if (scanned == kMaxScanned || (bytes >= max_bytes && !read.entries.empty())) {
      read.next_offset = (*it)->offset;
      return read;
    }
    if ((*it)->user_id != user_id) continue;
    if ((*it)->frame_not_cached) {
      // Hand back what was read before it; from there on, Kafka serves this one entry.
      if (!read.entries.empty()) {
        read.next_offset = (*it)->offset;
      } else {
        read.covered = false;
        read.next_offset = (*it)->offset + 1;
      }
      return read;
    }
    bytes += (*it)->Bytes();  // not Frame(): no frame is built under the partition lock
    read.entries.push_back(*it);
  }
  return read;
}

void PartitionHub::StartIndex::Add(int64_t offset, const std::string* key) {
  ++live_;
  if (starts_.empty() || starts_.back().first < offset) {
    starts_.emplace_back(offset, key);
    return;
  }
  // Not in dispatch order (never expected): kept sorted all the same.
  const auto at = std::lower_bound(starts_.begin(), starts_.end(), offset,
                                   [](const auto& start, int64_t o) { return start.first < o; });
  if (at != starts_.end() && at->first == offset) {
    if (at->second != nullptr) --live_;  // replaced
    at->second = key;
    return;
  }
  starts_.emplace(at, offset, key);
}

void PartitionHub::StartIndex::Erase(int64_t offset) {
  const auto at = std::lower_bound(starts_.begin(), starts_.end(), offset,
                                   [](const auto& start, int64_t o) { return start.first < o; });
  if (at == starts_.end() || at->first != offset || at->second == nullptr) return;
  at->second = nullptr;
  --live_;
  TrimFront();
  // Marked starts in the middle: compacted once they are as many as the live ones, so each
  // costs O(1) amortised and the array stays within twice what is live.
  if (starts_.size() > 2 * live_ + 64) {
    std::erase_if(starts_, [](const auto& start) { return start.second == nullptr; });
  }
}

void PartitionHub::StartIndex::PopOldest() {
  starts_.pop_front();
  --live_;
  TrimFront();
}

void PartitionHub::StartIndex::TrimFront() {
  while (!starts_.empty() && starts_.front().second == nullptr) starts_.pop_front();
}

bool PartitionHub::IsLateLocked(const Partition& p, const LogEntry& entry) {
  if (entry.run_id.empty() || p.ended.words.empty()) return false;
  const auto& key = RunKeyIn(p.key_scratch, entry.user_id, entry.run_id);
  if (!p.ended.MayContain(std::hash<std::string>{}(key))) return false;
  const auto it = p.runs_by_id.find(key);
  return it != p.runs_by_id.end() && it->second.ended_at >= 0 && entry.offset > it->second.ended_at;
}

bool PartitionHub::IsLate(int partition, const LogEntry& entry) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  return IsLateLocked(p, entry);
}

std::optional<PartitionHub::RunState> PartitionHub::RunById(int partition,
                                                            const std::string& user_id,
                                                            const std::string& run_id) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  const std::string key = RunKey(user_id, run_id);
  std::lock_guard lock(p.mutex);
  const auto it = p.runs_by_id.find(key);
  if (it == p.runs_by_id.end()) return std::nullopt;
  return it->second;
}

void PartitionHub::TrackRun(Partition& p, const LogEntry& entry) {
  if (!entry.run_id.empty() &&
      (entry.kind == EventKind::kAgentStarted || entry.end != RunEnd::kNone)) {
    auto [it, inserted] =
        p.runs_by_id.try_emplace(RunKeyIn(p.key_scratch, entry.user_id, entry.run_id));
    auto& run = it->second;
    if (entry.kind == EventKind::kAgentStarted) {
      if (run.started_at < 0) {
        run.started_at = entry.offset;
        if (run.ended_at < 0) p.open_by_start.Add(entry.offset, &it->first);
      }
    } else if (run.ended_at < 0) {  // the first end wins; IsLateLocked keeps later ones away
      if (run.started_at >= 0) p.open_by_start.Erase(run.started_at);
      run.ended_at = entry.offset;
      run.end = entry.end;
      run.end_cursor = entry.cursor;
      p.ended_order.push_back(it->first);
      p.ended.Add(std::hash<std::string>{}(it->first));
      if (p.ended_order.size() > kMaxEndedRunsPerPartition) {
        p.runs_by_id.erase(p.ended_order.front());
        p.ended_order.pop_front();
        if (++p.ended.dropped >= kMaxEndedRunsPerPartition) {
          // Forgotten runs' bits would otherwise fill the filter up: start it afresh.
          p.ended = {};
          for (const auto& ended : p.ended_order) p.ended.Add(std::hash<std::string>{}(ended));
        }
      }
    }
    if (inserted && p.runs_by_id.size() > kMaxRunsPerPartition + kMaxEndedRunsPerPartition &&
        !p.open_by_start.Empty()) {
      // Runs that never ended must not grow this without bound: drop the oldest open start.
      const std::string* oldest = p.open_by_start.Oldest();
      p.open_by_start.PopOldest();
      p.runs_by_id.erase(p.runs_by_id.find(*oldest));  // the key lives in the node
    }
  }
  if (entry.kind != EventKind::kAgentStarted && entry.kind != EventKind::kAgentCompleted &&
      entry.kind != EventKind::kAgentFailed) {
    return;
  }
  const std::string& key = RunKeyIn(p.key_scratch, entry.user_id, entry.thread_id);
  if (entry.kind == EventKind::kAgentStarted) {
    auto [it, inserted] = p.runs.try_emplace(key);
    if (!inserted) p.runs_by_start.Erase(it->second.started_at);
    it->second = {entry.run_id, entry.offset};
    p.runs_by_start.Add(entry.offset, &it->first);
    if (p.runs.size() > kMaxRunsPerPartition) {
      // Runs that never ended (a worker that died without its terminal event) must not grow
      // this without bound: drop the oldest start.
      const std::string* oldest = p.runs_by_start.Oldest();
      p.runs_by_start.PopOldest();
      p.runs.erase(p.runs.find(*oldest));
    }
    return;
  }
  const auto it = p.runs.find(key);
  if (it != p.runs.end() && it->second.run_id == entry.run_id) {
    p.runs_by_start.Erase(it->second.started_at);
    p.runs.erase(it);
  }
}

std::optional<RunInProgress> PartitionHub::RunOf(int partition, const std::string& user_id,
                                                 const std::string& thread_id) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::string key = user_id;
  key.push_back('\0');
  key += thread_id;
  std::lock_guard lock(p.mutex);
  const auto it = p.runs.find(key);
  if (it == p.runs.end()) return std::nullopt;
  return it->second;
}

int64_t PartitionHub::DispatchedEnd(int partition) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  return p.dispatched_end;
}

size_t PartitionHub::CachedBytes() const {
  size_t total = 0;
  for (const auto& p : partitions_) {
    std::lock_guard lock(p->mutex);
    total += p->cache_bytes;
  }
  return total;
}

}  // namespace agentwire::gateway
