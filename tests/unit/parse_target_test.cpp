// ParseTarget: how the gateway reads /v1/events?user=...&cursor=...&access_token=... from an
// untrusted request line.
#include <gtest/gtest.h>

#include "http_server.hpp"
#include "url.hpp"

namespace agentwire::gateway {
namespace {

TEST(ParseTarget, PathAndParameters) {
  const auto t = ParseTarget("/v1/events?cursor=abc&thread=t-1");
  EXPECT_EQ(t.path, "/v1/events");
  EXPECT_EQ(t.Param("cursor"), "abc");
  EXPECT_EQ(t.Param("thread"), "t-1");
  EXPECT_TRUE(t.Has("cursor"));
  EXPECT_FALSE(t.Has("run"));
  EXPECT_EQ(t.Param("run"), "");
}

TEST(ParseTarget, PercentDecodingAndPlusInTheQueryOnly) {
  const auto t = ParseTarget("/v1/a%20b+c?q=x%20y+z&k%3D=v%26w");
  EXPECT_EQ(t.path, "/v1/a b+c") << "'+' is a space only in a query";
  EXPECT_EQ(t.Param("q"), "x y z");
  EXPECT_EQ(t.Param("k="), "v&w") << "escaped separators are data, not separators";
}

TEST(ParseTarget, FirstOccurrenceWins) {
  const auto t = ParseTarget("/v1/events?cursor=first&cursor=second");
  EXPECT_EQ(t.Param("cursor"), "first");
  ASSERT_EQ(t.params.size(), 1u);
}

TEST(ParseTarget, EdgeCases) {
  EXPECT_TRUE(ParseTarget("/v1/events").params.empty());
  EXPECT_TRUE(ParseTarget("/v1/events?").params.empty());
  EXPECT_TRUE(ParseTarget("/v1/events?&&").params.empty());
  EXPECT_TRUE(ParseTarget("/v1/events?=value").params.empty()) << "a parameter needs a name";
  const auto flag = ParseTarget("/v1/events?follow&x=");
  EXPECT_TRUE(flag.Has("follow"));
  EXPECT_EQ(flag.Param("follow"), "");
  EXPECT_TRUE(flag.Has("x"));
  const auto eq = ParseTarget("/?a=b=c");
  EXPECT_EQ(eq.Param("a"), "b=c") << "only the first '=' separates";
}

TEST(ParseTarget, InvalidEscapesStayAsTheyAre) {
  EXPECT_EQ(ParseTarget("/?t=%zz").Param("t"), "%zz");
  EXPECT_EQ(ParseTarget("/?t=%4").Param("t"), "%4");
  EXPECT_EQ(ParseTarget("/?t=%").Param("t"), "%");
  EXPECT_EQ(ParseTarget("/?t=%41").Param("t"), "A");
  EXPECT_EQ(ParseTarget("/?t=a%41").Param("t"), "aA");
  EXPECT_EQ(ParseTarget("/?t=%00x").Param("t"), std::string("\0x", 2))
      << "a decoded NUL is data; the handlers validate it";
}

TEST(SegmentBetween, TheIdBetweenPrefixAndSuffixOrNothing) {
  EXPECT_EQ(SegmentBetween("/v1/runs/r-1/cancel", "/v1/runs/", "/cancel"), "r-1");
  EXPECT_EQ(SegmentBetween("/v1/runs//cancel", "/v1/runs/", "/cancel"), "");
  EXPECT_EQ(SegmentBetween("/v1/runs/cancel", "/v1/runs/", "/cancel"), std::nullopt);
  EXPECT_EQ(SegmentBetween("/v1/runs/r-1", "/v1/runs/", "/cancel"), std::nullopt);
}

TEST(IsTextId, Utf8WithoutControlCharactersWithinTheBound) {
  EXPECT_TRUE(IsTextId("t-1"));
  EXPECT_TRUE(IsTextId("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é, €, an emoji
  EXPECT_TRUE(IsTextId(std::string(256, 't')));
  EXPECT_FALSE(IsTextId(std::string(257, 't')));
  EXPECT_FALSE(IsTextId(""));
  EXPECT_FALSE(IsTextId(std::string("a\0b", 3)));  // NUL: PostgreSQL refuses it in text
  EXPECT_FALSE(IsTextId("a\nb"));
  EXPECT_FALSE(IsTextId("a\x7F"));
  EXPECT_FALSE(IsTextId("\xC2\x85"));          // C1 control (NEL)
  EXPECT_FALSE(IsTextId("\xFF"));              // never in UTF-8
  EXPECT_FALSE(IsTextId("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsTextId("\xE0\x80\xAF"));      // overlong, 3 bytes
  EXPECT_FALSE(IsTextId("\xED\xA0\x80"));      // a surrogate
  EXPECT_FALSE(IsTextId("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsTextId("\xE2\x82"));          // cut short
}

}  // namespace
}  // namespace agentwire::gateway
