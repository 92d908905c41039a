#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace agentwire::gateway {

/// A first-in first-out queue that allocates nothing while it has never held anything.
/// std::deque allocates its map and a 512-byte node on construction, which was most of
/// what an idle session cost beyond Beast's own buffers; most sessions' queues are empty
/// almost all the time. Popped slots are released at once; storage is compacted when the
/// consumed prefix is large and given back whenever the queue drains: an idle session then
/// holds no queue storage at all, at the price of one small allocation per burst (tens of
/// nanoseconds next to the write syscall that drains it).
template <typename T>
class Fifo {
 public:
  Fifo() = default;
  Fifo(Fifo&& other) noexcept : items_(std::move(other.items_)), head_(other.head_) {
    other.items_.clear();
    other.head_ = 0;
  }
  Fifo& operator=(Fifo&& other) noexcept {
    items_ = std::move(other.items_);
    head_ = other.head_;
    other.items_.clear();
    other.head_ = 0;
    return *this;
  }
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;

  bool empty() const { return head_ == items_.size(); }
  std::size_t size() const { return items_.size() - head_; }
  T& front() { return items_[head_]; }
  void push_back(T item) { items_.push_back(std::move(item)); }

  void pop_front() {
    items_[head_] = T();  // release what the slot refers to now, not at compaction
    if (++head_ == items_.size()) {
      clear();
    } else if (head_ >= kCompactAfter && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

  void clear() {
    items_.clear();
    head_ = 0;
    std::vector<T>().swap(items_);
  }

 private:
  static constexpr std::size_t kCompactAfter = 1024;

  std::vector<T> items_;
  std::size_t head_ = 0;
};

}  // namespace agentwire::gateway
