#include "agentwire/core/hashing.hpp"

#include <gtest/gtest.h>

namespace agentwire {
namespace {

// Vectors from the Java client's UtilsTest and librdkafka's rdmurmur2.c unit test: the
// hash must match Java's bit for bit, or workers in other languages pick other partitions.
TEST(Murmur2, MatchesJavaClientVectors) {
  EXPECT_EQ(static_cast<int32_t>(Murmur2("21")), -973932308);
  EXPECT_EQ(static_cast<int32_t>(Murmur2("foobar")), -790332482);
  EXPECT_EQ(static_cast<int32_t>(Murmur2("a-little-bit-long-string")), -985981536);
  EXPECT_EQ(static_cast<int32_t>(Murmur2("a-little-bit-longer-string")), -1486304829);
  EXPECT_EQ(static_cast<int32_t>(Murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")),
            -58897971);
  EXPECT_EQ(static_cast<int32_t>(Murmur2("abc")), 479470107);
  EXPECT_EQ(Murmur2("kafka"), 0xd067cf64U);
}

TEST(Murmur2, PartitionIsPositiveModulo) {
  // murmur2("21") is negative as a Java int: the sign bit is masked, not abs()'d.
  EXPECT_EQ(PartitionForKey("21", 12), static_cast<int32_t>((0xC5F2F8ECU & 0x7fffffffU) % 12));
  for (int partitions : {1, 3, 12, 64}) {
    for (const char* key : {"alice", "bob", "user-0001", ""}) {
      const auto p = PartitionForKey(key, partitions);
      EXPECT_GE(p, 0);
      EXPECT_LT(p, partitions);
    }
  }
}

// The published FNV-1a test vectors (Fowler/Noll/Vo): cursors and advisory-lock keys written by
// one build must be read by the next.
TEST(Fnv1a32, MatchesPublishedVectors) {
  EXPECT_EQ(Fnv1a32(""), 0x811c9dc5U);
  EXPECT_EQ(Fnv1a32("a"), 0xe40c292cU);
  EXPECT_EQ(Fnv1a32("foobar"), 0xbf9cf968U);
}

}  // namespace
}  // namespace agentwire
