#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentwire/core/kafka_properties.hpp"

// librdkafka's message, owned by Record; its definition stays in the .cpp.
struct rd_kafka_message_s;

namespace agentwire::kafka {

/// A partition's first retained offset (`low`) and the next offset to be written (`high`).
struct Watermarks {
  int64_t low = 0;
  int64_t high = 0;
};

/// Where reading of a partition starts.
struct PartitionStart {
  int partition = 0;
  int64_t offset = 0;
};

/// One record as TopicReader::Poll returns it, or a read error of one partition. Owns the
/// underlying librdkafka message (its key and value stay valid as long as the Record).
class Record final {
 public:
  enum class Error {
    kNone,
    kPartitionEnd,  // reached the end of a partition (only with enable.partition.eof)
    kOutOfRange,    // the offset is gone (retention) or past the end: the partition stopped
    kOther,         // transient: librdkafka retries
  };

  explicit Record(rd_kafka_message_s* message) noexcept;
  ~Record();
  Record(Record&& other) noexcept;
  Record& operator=(Record&& other) noexcept;
  Record(const Record&) = delete;
  Record& operator=(const Record&) = delete;

  Error ErrorKind() const noexcept;
  std::string ErrorText() const;
  /// -1 for errors not tied to a partition.
  int Partition() const noexcept;
  int64_t Offset() const noexcept;
  /// The record's timestamp (producer CreateTime), milliseconds since the epoch; -1 if none.
  int64_t TimestampMs() const noexcept;
  std::string_view Key() const noexcept;
  std::string_view Value() const noexcept;

 private:
  rd_kafka_message_s* message_;
};

/// An unjoined consumer of one topic's partitions, assigned by hand (no group, nothing
/// committed): what the gateway's tailer and history reader need from Kafka, in one RAII class
/// so that no raw librdkafka call is spread over them. Not thread-safe, except Wake.
class TopicReader final {
 public:
  /// Throws KafkaError when the client cannot be created (bad properties).
  TopicReader(const Properties& properties, std::string topic);
  /// Unassigns, then destroys the client.
  ~TopicReader();
  TopicReader(const TopicReader&) = delete;
  TopicReader& operator=(const TopicReader&) = delete;

  const std::string& Topic() const noexcept;
  /// The topic's partition count from the cluster's metadata. Throws KafkaError: retryable when
  /// the cluster does not answer in `timeout`, fatal when it has no such topic.
  int PartitionCount(std::chrono::milliseconds timeout) const;

  /// Replaces the assignment (nothing: none). Each returns "" or why it failed.
  std::string Assign(const std::vector<PartitionStart>& starts);
  /// Adds to, or removes from, the assignment; the other partitions read on undisturbed.
  std::string AddPartitions(const std::vector<PartitionStart>& starts);
  std::string RemovePartitions(const std::vector<int>& partitions);

  /// Asks the partition's leader. nullopt on failure, with the reason in `error` when given.
  std::optional<Watermarks> QueryWatermarks(int partition, std::chrono::milliseconds timeout,
                                            std::string* error = nullptr) const;
  /// As of the last fetch response for the partition (no request); nullopt while unknown.
  std::optional<Watermarks> CachedWatermarks(int partition) const;
  /// The next offset the reader returns for `partition` (it moves past records that are not
  /// messages, e.g. transaction markers); nullopt while unknown.
  std::optional<int64_t> Position(int partition) const;

  /// The next record or error of the assigned partitions; nullopt when `timeout` passed (or
  /// Wake was called).
  std::optional<Record> Poll(std::chrono::milliseconds timeout);
  /// Waits up to `timeout` for the first record (or error), then appends to `out` whatever else
  /// is queued already, `max` in all, without waiting for more: each record is returned as soon
  /// as it arrives, as with Poll, and a fetch response's records take one call instead of one
  /// each. (A wait for a full batch is the latency trap of docs/benchmarks.md, Ingest.) Returns
  /// how many were appended; 0 when `timeout` passed (or Wake was called).
  size_t PollBatch(std::chrono::milliseconds timeout, size_t max, std::vector<Record>& out);
  /// Makes a Poll under way return at once. Thread-safe.
  void Wake() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentwire::kafka
