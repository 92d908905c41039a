#pragma once

// Reading a topic back and auditing what arrived, for integration tests that publish to
// the embedded Kafka and must prove nothing was lost, duplicated or reordered.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

struct rd_kafka_s;

namespace agentwire::testing {

/// Produces one raw record (any key, any bytes; `partition` < 0: the partitioner decides),
/// polling while librdkafka's queue is full. Returns librdkafka's error code (0 = queued).
/// For tests that must put on the topic what EventPublisher never would: poison values,
/// keys that are not the payload's user.
int ProduceRaw(rd_kafka_s* producer, const std::string& topic, const std::string& key,
               const std::string& value, int32_t partition = -1);

/// Printable text that lz4 cannot shrink: the embedded Kafka's ~5 MiB size cap counts
/// compressed bytes, so tests that need retention to delete old records publish events
/// carrying this (a different text on every call).
std::string IncompressibleText(size_t bytes);

/// One message as a plain consumer sees it.
struct ConsumedRecord {
  std::string key;
  int32_t partition = -1;
  int64_t offset = -1;
  int64_t timestamp_ms = -1;
  std::string value;
  std::map<std::string, std::string> headers;
};

/// Reads `topic` from the beginning of every partition (manual assignment, nothing
/// committed) until `expected` records arrived and every partition has been read up to
/// its high watermark as of that moment (so duplicates beyond `expected` are seen too),
/// or until `timeout` passed; returns what it got: per partition in offset order,
/// partitions interleaved. Throws agentwire::KafkaError when the topic's metadata cannot
/// be read.
std::vector<ConsumedRecord> ConsumeAll(const std::string& bootstrap, const std::string& topic,
                                       size_t expected, std::chrono::milliseconds timeout);

/// What a test published: for each user, that user's event_ids in publish order.
using PublishedByUser = std::map<std::string, std::vector<std::string>>;

/// Counts of everything that can go wrong between Publish() and a consumer. A healthy
/// run has all of them 0.
struct DeliveryAudit {
  size_t lost = 0;        // published event_ids never consumed
  size_t duplicated = 0;  // extra copies of an event_id (2 copies count 1)
  size_t reordered = 0;  // first copies that arrived after a later-published event of the same user
  size_t users_in_multiple_partitions = 0;
  size_t wrong_partition = 0;  // partition != PartitionForKey(user_id, partitions)
  size_t unknown = 0;          // undecodable values, or event_ids nobody published
  size_t consumed = 0;         // records examined

  bool Clean() const {
    return lost == 0 && duplicated == 0 && reordered == 0 && users_in_multiple_partitions == 0 &&
           wrong_partition == 0 && unknown == 0;
  }
  /// "consumed=… lost=… duplicated=… …", for assertion messages.
  std::string Summary() const;
};

/// Decodes every record as agentwire::v1::AgentEvent and compares it with `published`.
/// Order is judged per user by (partition, offset), on the first copy of each event_id.
DeliveryAudit AuditDelivery(const PublishedByUser& published,
                            const std::vector<ConsumedRecord>& consumed, int32_t partition_count);

struct PartitionWatermarks {
  int64_t low = -1;   // first retained offset
  int64_t high = -1;  // next offset to be written
};

/// Low and high watermarks of every partition of `topic`. Throws agentwire::KafkaError.
std::map<int32_t, PartitionWatermarks> Watermarks(const std::string& bootstrap,
                                                  const std::string& topic,
                                                  std::chrono::milliseconds timeout);

/// The low watermark (first retained offset) of every partition of `topic`. The embedded
/// Kafka silently drops a partition's oldest batches past ~5 MiB; a low watermark above 0
/// means a test's "lost" count would be blaming the wrong thing.
std::map<int32_t, int64_t> LowWatermarks(const std::string& bootstrap, const std::string& topic,
                                         std::chrono::milliseconds timeout);

}  // namespace agentwire::testing
