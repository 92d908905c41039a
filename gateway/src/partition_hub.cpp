#include "partition_hub.hpp"

#include <algorithm>

namespace agentwire::gateway {

PartitionHub::PartitionHub(int partition_count, size_t cache_bytes_total)
    : cache_bytes_per_partition_(cache_bytes_total /
                                 static_cast<size_t>(std::max(1, partition_count))) {
  partitions_.reserve(static_cast<size_t>(partition_count));
  for (int i = 0; i < partition_count; ++i) partitions_.push_back(std::make_unique<Partition>());
}

void PartitionHub::SetStartOffset(int partition, int64_t offset) {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  p.dispatched_end = offset;
  p.covered_from = offset;
}

void PartitionHub::Dispatch(int partition, LogEntryPtr entry) {
  auto& p = *partitions_[static_cast<size_t>(partition)];
  std::vector<std::shared_ptr<LiveListener>> targets;
  {
    std::lock_guard lock(p.mutex);
    p.dispatched_end = entry->offset + 1;
    if (cache_bytes_per_partition_ > 0) {
      p.cache_bytes += entry->Bytes();
      p.cache.push_back(entry);
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
      targets.reserve(list.size());
      for (auto weak = list.begin(); weak != list.end();) {
        if (auto strong = weak->lock()) {
          targets.push_back(std::move(strong));
          ++weak;
        } else {
          weak = list.erase(weak);
        }
      }
      if (list.empty()) p.listeners.erase(it);
    }
  }
  // Outside the lock: listeners only post to their strands, but never under our mutex.
  for (const auto& listener : targets) listener->OnLive(entry);
}

void PartitionHub::Skip(int partition, int64_t offset) {
  auto& p = *partitions_[static_cast<size_t>(partition)];
  std::lock_guard lock(p.mutex);
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
    if (resume_offset <= p.dispatched_end) return;
    p.dispatched_end = resume_offset;
    p.covered_from = resume_offset;
    p.cache.clear();
    p.cache_bytes = 0;
    for (auto& [user, list] : p.listeners) {
      for (const auto& weak : list) {
        if (auto strong = weak.lock()) targets.push_back(std::move(strong));
      }
    }
  }
  for (const auto& listener : targets) listener->OnLive(marker);
}

PartitionHub::Attachment PartitionHub::Attach(int partition, const std::string& user_id,
                                              const std::shared_ptr<LiveListener>& listener,
                                              int64_t from_offset) {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  Attachment attachment;
  std::lock_guard lock(p.mutex);
  p.listeners[user_id].push_back(listener);
  attachment.dispatched_end = p.dispatched_end;
  if (from_offset < 0 || from_offset >= p.dispatched_end) {
    attachment.from_cache = true;  // nothing to catch up on
    return attachment;
  }
  if (from_offset < p.covered_from) return attachment;  // older than the cache: read Kafka
  attachment.from_cache = true;
  auto first = std::lower_bound(
      p.cache.begin(), p.cache.end(), from_offset,
      [](const LogEntryPtr& entry, int64_t offset) { return entry->offset < offset; });
  for (auto it = first; it != p.cache.end(); ++it) {
    if ((*it)->user_id == user_id) attachment.cached.push_back(*it);
  }
  return attachment;
}

void PartitionHub::Detach(int partition, const std::string& user_id, const LiveListener* listener) {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  const auto it = p.listeners.find(user_id);
  if (it == p.listeners.end()) return;
  auto& list = it->second;
  list.erase(std::remove_if(list.begin(), list.end(),
                            [listener](const std::weak_ptr<LiveListener>& weak) {
                              const auto strong = weak.lock();
                              return !strong || strong.get() == listener;
                            }),
             list.end());
  if (list.empty()) p.listeners.erase(it);
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

size_t PartitionHub::ListenerCount(const std::string& user_id, int partition) const {
  auto& p = *partitions_.at(static_cast<size_t>(partition));
  std::lock_guard lock(p.mutex);
  const auto it = p.listeners.find(user_id);
  return it == p.listeners.end() ? 0 : it->second.size();
}

}  // namespace agentwire::gateway
