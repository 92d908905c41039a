#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace agentwire::metrics {

/// Label pairs, e.g. {{"topic", "agent.lifecycle.v1"}, {"partition", "3"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

/// Monotonic count. Thread-safe, lock-free.
class Counter final {
 public:
  void Inc(uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

/// A value that goes up and down. Thread-safe, lock-free.
class Gauge final {
 public:
  void Set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) noexcept { value_.fetch_add(v, std::memory_order_relaxed); }
  double Value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

/// Cumulative-bucket histogram (Prometheus semantics). Thread-safe, lock-free.
class Histogram final {
 public:
  /// `upper_bounds` ascending; +Inf is implicit.
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value) noexcept;
  uint64_t Count() const noexcept { return count_.load(std::memory_order_relaxed); }
  double Sum() const noexcept { return sum_.load(std::memory_order_relaxed); }
  const std::vector<double>& UpperBounds() const noexcept { return bounds_; }
  /// Non-cumulative count of bucket i (i == bounds().size() is the +Inf bucket).
  uint64_t BucketCount(size_t i) const noexcept {
    return buckets_[i].load(std::memory_order_relaxed);
  }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

/// Latency buckets in seconds, 0.5 ms .. 10 s.
std::vector<double> LatencyBuckets();

/// Owns every metric of a process and renders the Prometheus text exposition format
/// (version 0.0.4). Get* return references that stay valid for the registry's lifetime,
/// so hot paths look a metric up once and keep the reference. Thread-safe.
class Registry final {
 public:
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          std::vector<double> upper_bounds, const Labels& labels = {});

  std::string RenderPrometheus() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::map<std::string, std::unique_ptr<Counter>> counters;  // key: rendered labels
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& FamilyFor(const std::string& name, const std::string& help, Type type);

  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
};

/// Formats labels as `{a="x",b="y"}` with Prometheus escaping; "" when empty.
std::string RenderLabels(const Labels& labels);

}  // namespace agentwire::metrics
