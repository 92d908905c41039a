// The pieces that keep a process quiet and cool under a flood: the log rate limit, the accept
// loop's backoff and the --max-connections default.
#include <gtest/gtest.h>

#include <boost/asio/error.hpp>
#include <cerrno>

#include "agentwire/core/listen.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/metrics.hpp"
#include "agentwire/gateway/gateway.hpp"

namespace agentwire {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(RateLimitedLog, OneLinePerIntervalWithTheSuppressedCount) {
  log::RateLimited limit(1s);
  const auto start = Clock::now();
  uint64_t suppressed = 99;
  ASSERT_TRUE(limit.Allow(start, suppressed));
  EXPECT_EQ(suppressed, 0U);
  int passed = 0;
  // 10,000 attempts within the same second: none passes.
  for (int i = 0; i < 10'000; ++i) passed += limit.Allow(start + 900ms, suppressed) ? 1 : 0;
  EXPECT_EQ(passed, 0);
  ASSERT_TRUE(limit.Allow(start + 1s, suppressed));
  EXPECT_EQ(suppressed, 10'000U);
  ASSERT_TRUE(limit.Allow(start + 5s, suppressed));
  EXPECT_EQ(suppressed, 0U);
}

TEST(RateLimitedLog, WritesTheCountIntoTheLine) {
  // Each limiter is its own kind: two kinds do not suppress each other.
  log::RateLimited a(1h);
  log::RateLimited b(1h);
  EXPECT_TRUE(a.Warn("kind a"));
  EXPECT_TRUE(b.Warn("kind b"));
  EXPECT_FALSE(a.Warn("kind a"));
  EXPECT_FALSE(b.Warn("kind b"));
}

boost::system::error_code Errno(int value) { return {value, boost::system::system_category()}; }

TEST(AcceptThrottle, ResourceErrorsBackOffFrom10msTo1sAndResetOnSuccess) {
  metrics::Registry registry;
  AcceptThrottle throttle(registry, "test_", "test");
  EXPECT_FALSE(throttle.Paused());
  EXPECT_FALSE(throttle.Overloaded());
  const std::vector<int64_t> expected = {10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000};
  for (size_t i = 0; i < expected.size(); ++i) {
    const int error = i % 4 == 0 ? EMFILE : i % 4 == 1 ? ENFILE : i % 4 == 2 ? ENOBUFS : ENOMEM;
    EXPECT_EQ(throttle.OnError(Errno(error)).count(), expected[i]) << i;
    EXPECT_TRUE(throttle.Paused());
  }
  throttle.OnAccepted();
  EXPECT_FALSE(throttle.Paused());
  EXPECT_TRUE(throttle.Overloaded()) << "a resource error a moment ago still counts";
  EXPECT_EQ(throttle.OnError(Errno(EMFILE)).count(), 10);

  // An error about one connection does not pause: the next one is accepted right away.
  throttle.OnAccepted();
  EXPECT_EQ(throttle.OnError(Errno(ECONNABORTED)).count(), 0);
  EXPECT_EQ(throttle.OnError(boost::asio::error::connection_aborted).count(), 0);
  EXPECT_FALSE(throttle.Paused());

  const std::string text = registry.RenderPrometheus();
  EXPECT_NE(text.find(R"(test_accept_errors_total{reason="emfile"} 4)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(test_accept_errors_total{reason="enfile"} 3)"), std::string::npos);
  EXPECT_NE(text.find(R"(test_accept_errors_total{reason="other"} 2)"), std::string::npos);
  EXPECT_NE(text.find("test_accept_paused 0"), std::string::npos) << text;
}

TEST(AcceptErrorReason, NamesTheResource) {
  EXPECT_EQ(AcceptErrorReason(Errno(EMFILE)), "emfile");
  EXPECT_EQ(AcceptErrorReason(Errno(ENFILE)), "enfile");
  EXPECT_EQ(AcceptErrorReason(Errno(ENOBUFS)), "enobufs");
  EXPECT_EQ(AcceptErrorReason(Errno(ENOMEM)), "enomem");
  EXPECT_EQ(AcceptErrorReason(Errno(EPERM)), "other");
}

TEST(FileLimit, RaisedSoftLimitReachesTheHardLimit) {
  const FileLimit limit = RaiseFileLimit();
  EXPECT_EQ(limit.soft, limit.hard);
  EXPECT_GE(limit.soft, limit.soft_before);
  EXPECT_EQ(CurrentFileLimit().soft, limit.soft);
}

TEST(DefaultMaxConnections, LeavesRoomForKafkaAndTheProcess) {
  EXPECT_EQ(gateway::DefaultMaxConnections(1024), 1024 - 64 - 102);
  EXPECT_EQ(gateway::DefaultMaxConnections(128), 128 - 64 - 12);
  EXPECT_EQ(gateway::DefaultMaxConnections(65536), 65536 - 64 - 6553);
  EXPECT_EQ(gateway::DefaultMaxConnections(10), 1);
  EXPECT_EQ(gateway::DefaultMaxConnections(UINT64_MAX), 1'000'000);
}

}  // namespace
}  // namespace agentwire
