#pragma once

#include <cstdint>
#include <string_view>

namespace agentwire::producers {

/// Kafka's Java client murmur2 (org.apache.kafka.common.utils.Utils.murmur2, seed
/// 0x9747b28c), returned as the same 32 bits Java's int holds.
uint32_t Murmur2(std::string_view key) noexcept;

/// The partition the Java client and librdkafka's `murmur2_random` partitioner pick for a
/// non-empty key: (murmur2(key) & 0x7fffffff) % partition_count. Replay uses it to read
/// only a user's partition. Precondition: partition_count > 0.
int32_t PartitionForKey(std::string_view key, int32_t partition_count) noexcept;

}  // namespace agentwire::producers
