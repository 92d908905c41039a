#include "agentwire/core/cursor.hpp"

#include <gtest/gtest.h>

#include <random>

namespace agentwire {
namespace {

TEST(Cursor, RoundTripsAndIsUrlSafe) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    Cursor cursor{static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng()), 64,
                  static_cast<uint32_t>(rng() % 64), static_cast<int64_t>(rng() >> 1)};
    const auto text = EncodeCursor(cursor);
    EXPECT_EQ(text.size(), 34U);
    EXPECT_EQ(
        text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        std::string::npos);
    ASSERT_EQ(DecodeCursor(text), cursor);
  }
}

TEST(Cursor, RejectsMalformed) {
  const auto good = EncodeCursor({1, TopicHash("agent.lifecycle.v1"), 12, 3, 42});
  EXPECT_FALSE(DecodeCursor(""));
  EXPECT_FALSE(DecodeCursor("earliest"));
  EXPECT_FALSE(DecodeCursor(good.substr(1)));
  EXPECT_FALSE(DecodeCursor(good + "A"));
  EXPECT_FALSE(DecodeCursor(good.substr(0, 33) + "="));
  EXPECT_FALSE(DecodeCursor(good.substr(0, 33) + "+"));
  EXPECT_FALSE(DecodeCursor(EncodeCursor({1, 1, 12, 12, 0})));  // partition out of range
  EXPECT_FALSE(DecodeCursor(EncodeCursor({1, 1, 12, 0, -5})));  // negative offset
  EXPECT_TRUE(DecodeCursor(good));
}

TEST(Base64Url, MatchesRfc4648Vectors) {
  EXPECT_EQ(Base64UrlEncode("f"), "Zg");
  EXPECT_EQ(Base64UrlEncode("fo"), "Zm8");
  EXPECT_EQ(Base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(Base64UrlEncode("foob"), "Zm9vYg");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  EXPECT_EQ(Base64UrlDecode("Zm9vYg"), "foob");
  EXPECT_FALSE(Base64UrlDecode("Zm9vY"));
}

}  // namespace
}  // namespace agentwire
