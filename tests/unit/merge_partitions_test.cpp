// MergePartitions: replay's k-way merge of per-partition readers into (emitted_at, partition)
// order. Readers hand out random batch sizes, sometimes empty ones (a batch the filter
// emptied), as the Kafka and PostgreSQL sources do.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "replay_internal.hpp"

namespace agentwire::consumers::replay {
namespace {

class ScriptedReader final : public PartitionReader {
 public:
  ScriptedReader(int32_t partition, std::vector<int64_t> times, uint32_t seed)
      : partition_(partition), times_(std::move(times)), random_(seed) {}
  int32_t Partition() const override { return partition_; }
  bool Fill(RecordBuffer& out, std::stop_token /*stop*/) override {
    if (next_ == times_.size()) return false;
    const size_t batch = random_() % 4;  // 0: a batch with nothing selected
    for (size_t i = 0; i < batch && next_ < times_.size(); ++i, ++next_) {
      Record& record = out.Append();
      record.partition = partition_;
      record.offset = static_cast<int64_t>(next_);
      record.time_ns = times_[next_];
    }
    return true;
  }

 private:
  int32_t partition_;
  std::vector<int64_t> times_;
  std::mt19937 random_;
  size_t next_ = 0;
};

TEST(MergePartitions, EmitsEverythingInTimeThenPartitionOrderAndEachPartitionInOffsetOrder) {
  std::mt19937 random(42);
  for (int round = 0; round < 300; ++round) {
    const int partitions = 1 + static_cast<int>(random() % 6);
    std::vector<std::unique_ptr<PartitionReader>> readers;
    size_t total = 0;
    for (int p = 0; p < partitions; ++p) {
      std::vector<int64_t> times(random() % 40);
      int64_t t = static_cast<int64_t>(random() % 5);
      for (auto& time : times) {
        time = t;
        t += static_cast<int64_t>(random() % 3);  // ties within and across partitions
      }
      total += times.size();
      readers.push_back(std::make_unique<ScriptedReader>(p, std::move(times), random()));
    }
    std::vector<std::tuple<int64_t, int32_t, int64_t>> out;
    const bool finished = MergePartitions(
        readers,
        [&](Record& r) {
          out.emplace_back(r.time_ns, r.partition, r.offset);
          return true;
        },
        std::stop_token{});
    ASSERT_TRUE(finished);
    ASSERT_EQ(out.size(), total) << "round " << round;
    EXPECT_TRUE(std::is_sorted(out.begin(), out.end())) << "round " << round;
  }
}

TEST(MergePartitions, StopsWhenTheSinkSaysSo) {
  std::vector<std::unique_ptr<PartitionReader>> readers;
  readers.push_back(std::make_unique<ScriptedReader>(0, std::vector<int64_t>{1, 2, 3, 4}, 1));
  readers.push_back(std::make_unique<ScriptedReader>(1, std::vector<int64_t>{1, 2, 3, 4}, 2));
  int seen = 0;
  EXPECT_FALSE(MergePartitions(
      readers, [&](Record&) { return ++seen < 3; }, std::stop_token{}));
  EXPECT_EQ(seen, 3);
}

TEST(MergePartitions, NoReadersOrOnlyEmptyOnes) {
  std::vector<std::unique_ptr<PartitionReader>> readers;
  EXPECT_TRUE(MergePartitions(
      readers, [](Record&) { return true; }, std::stop_token{}));
  readers.push_back(std::make_unique<ScriptedReader>(0, std::vector<int64_t>{}, 1));
  int seen = 0;
  EXPECT_TRUE(MergePartitions(
      readers, [&](Record&) { return ++seen > 0; }, std::stop_token{}));
  EXPECT_EQ(seen, 0);
}

}  // namespace
}  // namespace agentwire::consumers::replay
