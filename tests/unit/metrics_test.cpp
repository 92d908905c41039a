#include "agentwire/core/metrics.hpp"

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace agentwire::metrics {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// Checks every line against the text exposition format 0.0.4 grammar (comments, then
// samples `name{labels} value`) and that each family's HELP and TYPE precede its samples.
void ExpectValidExposition(const std::string& text) {
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n') << "the exposition ends with a newline";
  const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*)");
  const std::regex type(
      R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*")"
      R"((,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*")*\})? )"
      R"((-?[0-9.e+-]+|\+Inf|-Inf|NaN))");
  std::map<std::string, std::string> types;
  std::string current_help;
  for (const auto& line : Lines(text)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      current_help = m[1];
      continue;
    }
    if (std::regex_match(line, m, type)) {
      EXPECT_EQ(m[1], current_help) << "HELP comes right before TYPE: " << line;
      EXPECT_EQ(types.count(m[1]), 0U) << "one TYPE line per family: " << line;
      types[m[1]] = m[2];
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, m, sample)) << "not a valid sample line: '" << line << "'";
    std::string family = m[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s = suffix;
      if (!types.contains(family) && family.size() > s.size() &&
          family.compare(family.size() - s.size(), s.size(), s) == 0) {
        family.resize(family.size() - s.size());
      }
    }
    EXPECT_EQ(types.count(family), 1U) << "sample before its TYPE line: " << line;
  }
}

TEST(Metrics, RendersCountersAndGaugesWithHelpAndType) {
  Registry registry;
  registry
      .GetCounter("agentwire_events_published_total", "Events acknowledged by Kafka",
                  {{"topic", "agent.lifecycle.v1"}})
      .Inc(3);
  registry
      .GetCounter("agentwire_events_published_total", "Events acknowledged by Kafka",
                  {{"topic", "other"}})
      .Inc();
  auto& sessions = registry.GetGauge("agentwire_sessions", "Open WebSocket sessions");
  sessions.Set(5);
  sessions.Add(-2);
  registry.GetGauge("agentwire_lag_ratio", "A fractional gauge").Set(0.25);

  const auto text = registry.RenderPrometheus();
  ExpectValidExposition(text);
  EXPECT_NE(text.find("# HELP agentwire_events_published_total Events acknowledged by Kafka\n"
                      "# TYPE agentwire_events_published_total counter\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("agentwire_events_published_total{topic=\"agent.lifecycle.v1\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("agentwire_events_published_total{topic=\"other\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE agentwire_sessions gauge\nagentwire_sessions 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("agentwire_lag_ratio 0.25\n"), std::string::npos) << text;
}

TEST(Metrics, SameNameAndLabelsIsTheSameMetric) {
  Registry registry;
  auto& a = registry.GetCounter("c_total", "help", {{"k", "v"}});
  auto& b = registry.GetCounter("c_total", "help", {{"k", "v"}});
  EXPECT_EQ(&a, &b);
  a.Inc();
  b.Inc();
  EXPECT_EQ(a.Value(), 2U);
  EXPECT_THROW(registry.GetGauge("c_total", "help"), std::logic_error);
}

TEST(Metrics, EscapesLabelValues) {
  EXPECT_EQ(RenderLabels({}), "");
  EXPECT_EQ(RenderLabels({{"path", R"(C:\dir "x")"}, {"msg", "two\nlines"}}),
            R"({path="C:\\dir \"x\"",msg="two\nlines"})");

  Registry registry;
  registry.GetCounter("weird_total", "Label values with quotes", {{"v", "a\"b\\c\nd"}}).Inc();
  const auto text = registry.RenderPrometheus();
  ExpectValidExposition(text);
  EXPECT_NE(text.find(R"(weird_total{v="a\"b\\c\nd"} 1)"), std::string::npos) << text;
}

TEST(Metrics, HistogramHasCumulativeBucketsSumAndCount) {
  Registry registry;
  auto& latency = registry.GetHistogram("agentwire_delivery_seconds", "Publish to ack",
                                        {0.25, 0.5, 1}, {{"topic", "t"}});
  // Binary fractions, so the sum is exact and renders without rounding noise.
  for (const double v : {0.125, 0.25, 0.375, 0.75, 0.875, 3.0}) latency.Observe(v);
  EXPECT_EQ(latency.Count(), 6U);
  EXPECT_DOUBLE_EQ(latency.Sum(), 5.375);

  const auto text = registry.RenderPrometheus();
  ExpectValidExposition(text);
  // le is inclusive: 0.25 falls in the 0.25 bucket. Buckets are cumulative and end at +Inf.
  const std::string expected =
      "# HELP agentwire_delivery_seconds Publish to ack\n"
      "# TYPE agentwire_delivery_seconds histogram\n"
      "agentwire_delivery_seconds_bucket{topic=\"t\",le=\"0.25\"} 2\n"
      "agentwire_delivery_seconds_bucket{topic=\"t\",le=\"0.5\"} 3\n"
      "agentwire_delivery_seconds_bucket{topic=\"t\",le=\"1\"} 5\n"
      "agentwire_delivery_seconds_bucket{topic=\"t\",le=\"+Inf\"} 6\n"
      "agentwire_delivery_seconds_sum{topic=\"t\"} 5.375\n"
      "agentwire_delivery_seconds_count{topic=\"t\"} 6\n";
  EXPECT_NE(text.find(expected), std::string::npos) << text;
}

TEST(Metrics, HistogramWithoutLabelsAndEmpty) {
  Registry registry;
  registry.GetHistogram("empty_seconds", "Nothing observed", LatencyBuckets());
  const auto text = registry.RenderPrometheus();
  ExpectValidExposition(text);
  EXPECT_NE(text.find("empty_seconds_bucket{le=\"0.0005\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("empty_seconds_bucket{le=\"+Inf\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("empty_seconds_sum 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("empty_seconds_count 0\n"), std::string::npos) << text;
  // Every bound of LatencyBuckets() appears, in ascending order.
  size_t position = 0;
  for (const double bound : LatencyBuckets()) {
    std::ostringstream le;
    le << "le=\"" << bound << "\"";
    const auto found = text.find(le.str(), position);
    ASSERT_NE(found, std::string::npos) << le.str() << "\n" << text;
    position = found;
  }
}

TEST(Metrics, HistogramRejectsUnsortedBounds) {
  EXPECT_THROW(Histogram({1, 0.5}), std::invalid_argument);
}

TEST(Metrics, CountsFromManyThreadsAreExact) {
  Registry registry;
  auto& counter = registry.GetCounter("c_total", "help");
  auto& histogram = registry.GetHistogram("h_seconds", "help", {0.5});
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50'000; ++i) {
        counter.Inc();
        histogram.Observe(i % 2 == 0 ? 0.25 : 1.0);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.Value(), 200'000U);
  EXPECT_EQ(histogram.Count(), 200'000U);
  EXPECT_EQ(histogram.BucketCount(0), 100'000U);
  EXPECT_EQ(histogram.BucketCount(1), 100'000U);
  EXPECT_DOUBLE_EQ(histogram.Sum(), 125'000.0);
}

}  // namespace
}  // namespace agentwire::metrics
