#pragma once

// The hash functions whose exact bits other systems depend on: Kafka's partitioner (every
// client must put a user in the same partition) and the FNV-1a that names a topic in cursors
// and a consumer group in PostgreSQL advisory locks. One definition each.

#include <cstdint>
#include <string_view>

namespace agentwire {

/// Kafka's Java client murmur2 (org.apache.kafka.common.utils.Utils.murmur2, seed
/// 0x9747b28c), returned as the same 32 bits Java's int holds.
uint32_t Murmur2(std::string_view key) noexcept;

/// The partition the Java client and librdkafka's `murmur2_random` partitioner pick for a
/// non-empty key: (murmur2(key) & 0x7fffffff) % partition_count. The gateway routes a session
/// by it and replay reads only a user's partition. Precondition: partition_count > 0.
int32_t PartitionForKey(std::string_view key, int32_t partition_count) noexcept;

/// 32-bit FNV-1a (offset basis 2166136261, prime 16777619).
uint32_t Fnv1a32(std::string_view bytes) noexcept;

}  // namespace agentwire
