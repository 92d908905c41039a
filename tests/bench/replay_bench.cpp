// Replay throughput: events/s the real `agentwire replay` process reads from Kafka and writes
// as JSON lines to /dev/null, for a full-topic time range and for one user's selection.
// Embedded Kafka in this process (a real Kafka wire-protocol server). Prints figures; asserts
// nothing.
//
//   replay_bench [--events N] [--partitions P] [--users U] [--repeat R]

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <regex>
#include <string>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string Rfc3339(std::chrono::system_clock::time_point time) {
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(millis / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", text, millis % 1000);
}

std::string Thousands(double value) {
  std::string digits = std::to_string(static_cast<uint64_t>(value));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

struct Measured {
  double wall_seconds = 0;
  uint64_t scanned = 0;
  uint64_t written = 0;
  double replay_seconds = 0;
};

// Runs `agentwire replay <args> > /dev/null` through sh and reads its summary line.
Measured RunReplay(const std::string& args) {
  const std::string command = fmt::format("exec '{}' replay {} --progress off > /dev/null",
                                          agentwire::testing::AgentwireBinary(), args);
  const auto started = Clock::now();
  const auto result = agentwire::testing::Run({"/bin/sh", "-c", command}, std::chrono::minutes(10));
  Measured measured;
  measured.wall_seconds = Seconds(Clock::now() - started);
  if (result.exit_code != 0) {
    std::cerr << "replay failed (exit " << result.exit_code.value_or(-999)
              << "): " << result.stderr_text << '\n';
    return measured;
  }
  static const std::regex summary(
      R"(replay: (\d+) scanned, (\d+) matched, (\d+) written in ([0-9.]+) s)");
  std::smatch match;
  if (std::regex_search(result.stderr_text, match, summary)) {
    measured.scanned = std::stoull(match[1]);
    measured.written = std::stoull(match[3]);
    measured.replay_seconds = std::stod(match[4]);
  }
  return measured;
}

void Report(const std::string& name, const Measured& m) {
  std::cout << fmt::format(
      "{}: {} written of {} scanned; replay {:.2f} s = {} events/s scanned, {} written/s; "
      "process wall {:.2f} s (start-up and metadata included) = {} events/s scanned\n",
      name, Thousands(m.written), Thousands(m.scanned), m.replay_seconds,
      Thousands(m.replay_seconds > 0 ? m.scanned / m.replay_seconds : 0),
      Thousands(m.replay_seconds > 0 ? m.written / m.replay_seconds : 0), m.wall_seconds,
      Thousands(m.wall_seconds > 0 ? m.scanned / m.wall_seconds : 0));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace agentwire;
  int64_t events = 1'000'000;
  // 32 partitions keep 1M events under the embedded Kafka's ~5 MiB per partition, and give a
  // user's partition ~31k messages: enough to time a --user replay beyond its start-up.
  int partitions = 32;
  int users = 1000;
  int repeat = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--partitions") == 0) partitions = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--users") == 0) users = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--repeat") == 0) repeat = std::atoi(argv[i + 1]);
  }
  const std::string topic = "agent.lifecycle.v1";
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({topic, partitions});

  // Realistic events (a few hundred bytes of thinking/tool text), emitted_at = publish time so
  // the Kafka timestamps and the time selectors agree as in production.
  const auto first_emitted = std::chrono::system_clock::now();
  {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", kafka.BootstrapServers()}};
    config.topic = topic;
    producers::EventPublisher publisher(config);
    const auto started = Clock::now();
    for (int64_t i = 0; i < events; ++i) {
      v1::AgentEvent event;
      event.set_event_id(fmt::format("01JBENCH{:018}", i));
      event.set_user_id(fmt::format("user-{:04}", i % users));
      event.set_thread_id(fmt::format("thread-{:04}", i % users));
      event.set_run_id(fmt::format("run-{:04}-{}", i % users, i / (users * 50)));
      event.set_run_seq(static_cast<uint32_t>(i / users % 50 + 1));
      event.set_agent_name("researcher");
      event.set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
      const auto now = std::chrono::system_clock::now().time_since_epoch();
      event.mutable_emitted_at()->set_seconds(
          std::chrono::duration_cast<std::chrono::seconds>(now).count());
      event.mutable_emitted_at()->set_nanos(static_cast<int32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() % 1'000'000'000));
      if (i % 3 == 0) {
        auto* tool = event.mutable_tool_completed();
        tool->set_tool_name("web_search");
        tool->set_output("Top results: agentwire carries agent lifecycle events through Kafka.");
        tool->set_duration_ms(812);
      } else {
        event.mutable_agent_thinking()->set_text(
            "Looking at the user's question, the next step is to search for recent sources.");
      }
      publisher.Publish(event, {}, std::chrono::seconds(30));
    }
    publisher.Flush(std::chrono::seconds(120));
    std::cout << fmt::format("published {} events ({} users, {} partitions) in {:.2f} s\n",
                             Thousands(static_cast<double>(events)), users, partitions,
                             Seconds(Clock::now() - started));
  }
  const auto last_emitted = std::chrono::system_clock::now();

  // The embedded Kafka drops a partition's oldest data past ~5 MiB: say so if it happened.
  {
    auto client = kafka::MakeClient(
        RD_KAFKA_PRODUCER,
        kafka::MakeConf({{"bootstrap.servers", kafka.BootstrapServers()}, {"log_level", "3"}}));
    int64_t total = 0;
    for (int p = 0; p < partitions; ++p) {
      int64_t low = 0;
      int64_t high = 0;
      rd_kafka_query_watermark_offsets(client.get(), topic.c_str(), p, &low, &high, 10'000);
      if (low != 0) std::cout << fmt::format("warning: partition {} low watermark {}\n", p, low);
      total += high - low;
    }
    std::cout << fmt::format("topic holds {} events\n", Thousands(static_cast<double>(total)));
  }

  const std::string common =
      fmt::format("--brokers {} --topic {}", kafka.BootstrapServers(), topic);
  const std::string range = fmt::format("--since {} --until {}", Rfc3339(first_emitted),
                                        Rfc3339(last_emitted + std::chrono::seconds(1)));
  const std::string user = "user-0001";
  std::cout << fmt::format("user {} is in partition {} with ~{} events of its own\n", user,
                           PartitionForKey(user, partitions), events / users);
  for (int r = 0; r < repeat; ++r) {
    Report("full-topic time range, jsonl", RunReplay(common + " " + range));
    Report("one user (--user), jsonl", RunReplay(common + " --user " + user));
    Report("one user, last hour (--user --since 1h), jsonl",
           RunReplay(common + " --user " + user + " --since 1h"));
  }
  return 0;
}
