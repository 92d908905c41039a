"""Kafka's murmur2 (the Java client's default partitioner, librdkafka's murmur2_random), as
core/src/hashing.cpp computes it: which partition a user's events live in."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(key: bytes) -> int:
    """The unsigned 32-bit murmur2 hash of `key` (bytes; a str is UTF-8 encoded)."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    length = len(key)
    h = (_SEED ^ length) & _MASK
    blocks = length // 4
    for i in range(blocks):
        k = int.from_bytes(key[i * 4:i * 4 + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = key[blocks * 4:]
    rest = length % 4
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_key(key, partition_count: int) -> int:
    """The partition librdkafka's murmur2_random (and Java's default) picks for a non-empty key."""
    return (murmur2(key) & 0x7FFFFFFF) % partition_count
