// The auto source of `agentwire replay`: history as the user sees it, across the seam between
// the archive (the cold tier) and Kafka. Per partition, the archive's rows below Kafka's log
// start, then Kafka from the log start: every record once, in offset order, and the partitions
// go through the same merge as the other sources, so all three print the same lines where they
// overlap. The archive is complete below its committed position (`agentwire archive` writes the
// rows and consumer_offsets in one transaction); offsets that retention deleted before the
// archive got to them are in neither tier: a hole, warned about with its range, listed in the gap
// report and counted in the summary line, never skipped silently.

#include <fmt/format.h>

#include <algorithm>

#include "replay_internal.hpp"

namespace agentwire::consumers::replay {
namespace {

// Reads [from, to) of one partition from the archive (nullptr when it holds none of it).
using ArchiveRangeReader =
    std::function<std::unique_ptr<PartitionReader>(int32_t partition, int64_t from, int64_t to)>;

// One partition across the seam: the archive's rows below Kafka's log start, then Kafka. When
// retention deletes more while Kafka is read, the Kafka reader pauses at the jump and the
// archive's rows of the deleted range are read in between, so offset order holds.
class SeamPartitionReader final : public PartitionReader {
 public:
  SeamPartitionReader(int32_t partition, ArchiveRangeReader read_archive)
      : partition_(partition), read_archive_(std::move(read_archive)) {}

  // Two steps because the Kafka reader's skip handler points back at this reader.
  void Attach(std::unique_ptr<PartitionReader> archived, std::unique_ptr<PartitionReader> kafka) {
    archived_ = std::move(archived);
    kafka_ = std::move(kafka);
  }

  void OnRetentionSkip(int64_t from, int64_t to) { skipped_.emplace(from, to); }

  int32_t Partition() const override { return partition_; }
  PartitionReader* Kafka() const { return kafka_.get(); }

  bool Fill(RecordBuffer& out, std::stop_token stop) override {
    if (!archived_ && skipped_) {
      archived_ = read_archive_(partition_, skipped_->first, skipped_->second);
      skipped_.reset();
    }
    if (archived_) {
      if (!archived_->Fill(out, stop)) archived_.reset();
      return true;  // Kafka's part follows
    }
    const bool more = kafka_->Fill(out, stop);
    return more || skipped_.has_value();  // a skip up to the end still has the archive's rows
  }

 private:
  int32_t partition_;
  ArchiveRangeReader read_archive_;
  std::unique_ptr<PartitionReader> archived_;  // the archive's part now being read, if any
  std::unique_ptr<PartitionReader> kafka_;
  std::optional<std::pair<int64_t, int64_t>> skipped_;  // deleted under the Kafka reader
};

class AutoSource final : public Source {
 public:
  AutoSource(const ReplayConfig& config, Progress& progress, Console& console)
      : config_(config), progress_(progress), console_(console) {}

  void Open() override {
    // Kafka's watermarks first, then the archive's snapshot: the archive can only have moved
    // on by then, which narrows a hole, never widens it.
    kafka_ = OpenKafkaLog(config_, progress_, console_, /*archive_below_low=*/true);
    archive_ = OpenArchiveTable(config_, progress_);
    committed_ = archive_->CommittedOffsets(config_.archive_group);
    if (committed_.empty()) {
      console_.Line(fmt::format(
          "replay: warning: the archive's group '{}' has no committed position for {} in this "
          "database (is --archive-group / AGENTWIRE_ARCHIVE_GROUP the archive's --group?): all "
          "that retention deleted counts as missing",
          config_.archive_group, config_.topic));
    }
    const auto& selection = config_.selection;
    const int64_t selection_from = selection.from_cursor ? selection.from_cursor->next_offset : 0;
    for (const auto& plan : kafka_->Plans()) {
      // --since found its start inside the log: by the assumption the search rests on (a
      // partition's timestamps do not decrease), nothing older than the log start is selected.
      const bool since_within_log = selection.since && plan.start > plan.low;
      if (since_within_log || selection_from >= plan.low) continue;
      if (const auto part = ArchivedPart(plan.partition, selection_from, plan.low)) {
        archived_parts_[plan.partition] = *part;
      }
    }
  }

  int32_t PartitionCount() const override { return kafka_->PartitionCount(); }

  bool Run(const RecordSink& sink, std::stop_token stop) override {
    const ArchiveRangeReader read_archive = [this](int32_t partition, int64_t from, int64_t to) {
      const auto part = ArchivedPart(partition, from, to);
      return part ? archive_->MakeReader(partition, part->first, part->second) : nullptr;
    };
    std::vector<std::unique_ptr<PartitionReader>> readers;
    std::vector<PartitionReader*> kafka_readers;
    for (const auto& plan : kafka_->Plans()) {
      auto seam = std::make_unique<SeamPartitionReader>(plan.partition, read_archive);
      std::unique_ptr<PartitionReader> archived;
      if (const auto it = archived_parts_.find(plan.partition); it != archived_parts_.end()) {
        archived = archive_->MakeReader(plan.partition, it->second.first, it->second.second);
      }
      SeamPartitionReader* owner = seam.get();
      auto on_skip = [owner](int32_t /*partition*/, int64_t from, int64_t to) {
        owner->OnRetentionSkip(from, to);
      };
      seam->Attach(std::move(archived), kafka_->MakeReader(plan, on_skip));
      kafka_readers.push_back(seam->Kafka());
      readers.push_back(std::move(seam));
    }
    const bool finished = MergePartitions(readers, sink, stop);
    if (!finished || !config_.follow) return finished;
    return kafka_->Follow(kafka_readers, sink, stop);
  }

  std::vector<OffsetHole> Holes() const override { return holes_; }

 private:
  // The part of [from, to) the archive holds: up to its committed position. The rest is a hole,
  // reported here.
  std::optional<std::pair<int64_t, int64_t>> ArchivedPart(int32_t partition, int64_t from,
                                                          int64_t to) {
    const auto it = committed_.find(partition);
    const int64_t archived_to = it == committed_.end() ? 0 : it->second;
    const int64_t hole_from = std::max(from, archived_to);
    if (hole_from < to) {
      holes_.push_back({partition, hole_from, to});
      console_.Line(fmt::format(
          "replay: warning: {} partition {}: offsets [{}, {}) ({} messages) are in neither the "
          "archive nor Kafka: retention deleted them before the archive (group '{}', committed "
          "up to {}) stored them; selected events among them are missing from this replay",
          config_.topic, partition, hole_from, to, to - hole_from, config_.archive_group,
          archived_to));
    }
    const int64_t archived_end = std::min(to, archived_to);
    if (from >= archived_end) return std::nullopt;
    return std::make_pair(from, archived_end);
  }

  const ReplayConfig& config_;
  Progress& progress_;
  Console& console_;
  std::unique_ptr<KafkaLog> kafka_;
  std::unique_ptr<ArchiveTable> archive_;
  std::unordered_map<int32_t, int64_t> committed_;  // the archive group's next offsets
  // Per partition, the offsets below Kafka's log start to read from the archive.
  std::unordered_map<int32_t, std::pair<int64_t, int64_t>> archived_parts_;
  std::vector<OffsetHole> holes_;
};

}  // namespace

std::unique_ptr<Source> MakeAutoSource(const ReplayConfig& config, Progress& progress,
                                       Console& console) {
  return std::make_unique<AutoSource>(config, progress, console);
}

}  // namespace agentwire::consumers::replay
