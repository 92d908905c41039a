// Publisher throughput: N realistic events through EventPublisher to the embedded Kafka,
// then the very same messages (same keys, value bytes and headers) through kcat, in one
// run, and the ratio between the two. Prints figures; asserts nothing about speed.
//
//   publisher_bench [--events N] [--rounds N] [--users N] [--partitions N] [--kcat PATH]
//                   [--no-kcat]
//
// Each round runs the library, then kcat, on fresh topics; the summary takes the median
// rate of each. CPU seconds are reported too: on a shared 2-core machine they say more
// than wall time when other work competes for the cores.

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/subprocess.hpp"

namespace agentwire {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  size_t events = 1'000'000;
  int rounds = 1;
  int users = 1'000;
  int partitions = 64;
  std::string kcat = "kcat";
  bool no_kcat = false;
  bool serve_reports_in_caller = false;
  std::string tmp_dir = std::filesystem::temp_directory_path().string();
};

// Delimiters for kcat's input file. kcat (1.7) splits on multi-byte delimiters, so
// binary protobuf values can go through unchanged; the file writer checks that neither
// delimiter occurs inside a key or value, which would split a message in the wrong place.
constexpr std::string_view kKeyDelimiter = "<~agentwire-key~>";
constexpr std::string_view kMessageDelimiter = "<~agentwire-end-of-message~>";

constexpr std::array<const char*, 5> kTools = {"web_search", "code_interpreter", "read_file",
                                               "sql_query", "calculator"};
constexpr std::array<const char*, 24> kWords = {
    "the",     "service", "returned", "rows",    "latency", "p99",     "ticket",   "customer",
    "payment", "retry",   "timeout",  "cache",   "region",  "deploy",  "rollback", "queue",
    "invoice", "budget",  "quarter",  "summary", "error",   "warning", "build",    "result"};

// Deterministic, realistic tool_completed events: an envelope like the gateway sees, and
// tool output text of 40-225 characters, so serialized values are ~200-400 bytes.
std::vector<v1::AgentEvent> MakeEvents(const Options& options) {
  std::mt19937_64 rng(42);
  std::vector<std::string> outputs(4096);
  for (auto& text : outputs) {
    const size_t target = std::uniform_int_distribution<size_t>(40, 225)(rng);
    while (text.size() < target) {
      text += kWords[rng() % kWords.size()];
      text += ' ';
    }
    text.resize(target);
  }
  std::vector<v1::AgentEvent> events(options.events);
  std::vector<uint32_t> seq(static_cast<size_t>(options.users), 0);
  constexpr std::string_view kBase32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  for (size_t i = 0; i < events.size(); ++i) {
    auto& event = events[i];
    const int user = static_cast<int>(rng() % static_cast<uint64_t>(options.users));
    std::string id = "01JD";  // ULID-shaped: 26 Crockford base32 characters
    for (uint64_t v = i * 2654435761ULL + 0x9e3779b97f4a7c15ULL; id.size() < 26; v /= 32) {
      id += kBase32[v % 32];
    }
    event.set_event_id(std::move(id));
    event.set_user_id(fmt::format("user-{:04d}", user));
    event.set_thread_id(fmt::format("thread-{:04d}-{}", user, i % 7));
    event.set_run_id(fmt::format("run-{:04d}-{:06d}", user, i / 5000));
    event.set_run_seq(++seq[static_cast<size_t>(user)]);
    event.mutable_emitted_at()->set_seconds(1'790'000'000 + static_cast<int64_t>(i / 1000));
    event.mutable_emitted_at()->set_nanos(static_cast<int32_t>(i % 1000) * 1'000'000);
    event.set_agent_name("researcher");
    event.set_trace_id(fmt::format("{:016x}{:016x}", rng(), rng()));
    auto* body = event.mutable_tool_completed();
    body->set_tool_name(kTools[i % kTools.size()]);
    body->set_output(outputs[rng() % outputs.size()]);
    body->set_duration_ms(static_cast<uint32_t>(rng() % 5000));
    body->set_tool_call_id(fmt::format("call-{}", i));
  }
  return events;
}

struct RunResult {
  double seconds = 0;
  double cpu_seconds = 0;  // user + system, every thread and child involved
  size_t messages = 0;
  size_t bytes = 0;  // key + value
  double EventsPerSecond() const { return static_cast<double>(messages) / seconds; }
  double MegabytesPerSecond() const { return static_cast<double>(bytes) / seconds / 1e6; }
};

double CpuSeconds(int who) {
  rusage usage{};
  ::getrusage(who, &usage);
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct TopicCounts {
  int64_t messages = 0;  // sum of high watermarks (the 5 MiB cap never lowers them)
  int truncated = 0;     // partitions whose oldest batches the cap dropped
  std::vector<int64_t> per_partition;
};

TopicCounts CountTopic(const std::string& bootstrap, const std::string& topic) {
  auto client = kafka::MakeClient(
      RD_KAFKA_PRODUCER, kafka::MakeConf({{"bootstrap.servers", bootstrap}, {"log_level", "3"}}));
  const int partitions = kafka::PartitionCount(client.get(), topic, 10s);
  TopicCounts counts;
  for (int p = 0; p < partitions; ++p) {
    int64_t low = 0;
    int64_t high = 0;
    if (rd_kafka_query_watermark_offsets(client.get(), topic.c_str(), p, &low, &high, 10000) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      high = -1;
    }
    counts.per_partition.push_back(high);
    counts.messages += std::max<int64_t>(high, 0);
    if (low > 0) ++counts.truncated;
  }
  return counts;
}

RunResult RunLibrary(const std::string& bootstrap, const std::string& topic,
                     const std::vector<v1::AgentEvent>& events, size_t bytes,
                     bool serve_reports_in_caller) {
  std::atomic<size_t> ok{0};
  std::atomic<size_t> failed{0};
  const producers::DeliveryCallback on_delivery = [&](const producers::DeliveryReport& report) {
    (report.ok ? ok : failed).fetch_add(1, std::memory_order_relaxed);
  };

  const double cpu_start = CpuSeconds(RUSAGE_SELF);
  const auto start = Clock::now();
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", bootstrap}};
  config.topic = topic;
  config.serve_reports_in_caller = serve_reports_in_caller;
  producers::EventPublisher publisher(config);
  Clock::time_point published;
  for (const auto& event : events) {
    const auto status = publisher.Publish(event, on_delivery, 60s);
    if (status != producers::PublishStatus::kAccepted) {
      throw std::runtime_error(fmt::format("Publish: {}", producers::ToString(status)));
    }
  }
  published = Clock::now();
  const size_t left = publisher.Flush(300s);
  const auto done = Clock::now();
  const double cpu = CpuSeconds(RUSAGE_SELF) - cpu_start;
  if (left != 0 || failed.load() != 0 || ok.load() != events.size()) {
    throw std::runtime_error(fmt::format("library run: {} ok, {} failed, {} unreported", ok.load(),
                                         failed.load(), left));
  }
  fmt::print("  library: Publish() loop {:.2f} s, all delivery reports after {:.2f} s\n",
             std::chrono::duration<double>(published - start).count(),
             std::chrono::duration<double>(done - start).count());
  return {std::chrono::duration<double>(done - start).count(), cpu, events.size(), bytes};
}

// Writes key<K>value<D> for every event and returns the path. Throws if a delimiter
// occurs where it would split a message wrongly.
std::string WriteKcatInput(const Options& options, const std::vector<v1::AgentEvent>& events) {
  const auto path = (std::filesystem::path(options.tmp_dir) /
                     fmt::format("agentwire-publisher-bench-{}.bin", ::getpid()))
                        .string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::string value;
  std::string framed;
  for (const auto& event : events) {
    event.SerializeToString(&value);
    framed.clear();
    framed.append(event.user_id()).append(kKeyDelimiter).append(value).append(kMessageDelimiter);
    // kcat takes the first key delimiter in a message and the first message delimiter in
    // the stream: both must sit exactly where we put them.
    const size_t key_end = event.user_id().size();
    const size_t value_end = key_end + kKeyDelimiter.size() + value.size();
    if (framed.find(kKeyDelimiter) != key_end || framed.find(kMessageDelimiter) != value_end) {
      throw std::runtime_error("a kcat delimiter occurs inside a message; pick another");
    }
    out.write(framed.data(), static_cast<std::streamsize>(framed.size()));
  }
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  return path;
}

std::vector<std::string> KcatArgs(const Options& options, const std::string& bootstrap,
                                  const std::string& topic) {
  // The library's producer settings (DefaultProducerProperties + the queue size the
  // publisher derives from max_pending), so both sides pay for the same guarantees.
  std::vector<std::string> args = {options.kcat, "-P",
                                   "-b",         bootstrap,
                                   "-t",         topic,
                                   "-K",         std::string(kKeyDelimiter),
                                   "-D",         std::string(kMessageDelimiter),
                                   "-H",         "content-type=application/x-protobuf",
                                   "-H",         "schema=agentwire.v1.AgentEvent"};
  kafka::Properties properties = producers::DefaultProducerProperties();
  properties["client.id"] = "kcat-bench";
  properties["queue.buffering.max.messages"] =
      std::to_string(producers::PublisherConfig{}.max_pending + 1024);
  for (const auto& [key, value] : properties) {
    args.emplace_back("-X");
    args.push_back(key + "=" + value);
  }
  return args;
}

RunResult RunKcat(const std::vector<std::string>& args, const std::string& input_path,
                  size_t messages, size_t bytes) {
  testing::Subprocess::Options spawn;
  spawn.stdin_file = input_path;
  // Our own process runs the embedded broker, which works for kcat too: count both.
  const double cpu_start = CpuSeconds(RUSAGE_SELF) + CpuSeconds(RUSAGE_CHILDREN);
  const auto start = Clock::now();
  testing::Subprocess kcat(args, spawn);
  const auto code = kcat.Wait(600s);
  const auto done = Clock::now();
  if (code != 0) {
    throw std::runtime_error(
        fmt::format("kcat failed (exit {}): {}", code.value_or(-999), kcat.Describe()));
  }
  const double cpu = CpuSeconds(RUSAGE_SELF) + CpuSeconds(RUSAGE_CHILDREN) - cpu_start;
  return {std::chrono::duration<double>(done - start).count(), cpu, messages, bytes};
}

void PrintRun(const char* name, const RunResult& run) {
  fmt::print(
      "{:<8} {:>9} events in {:6.2f} s = {:>9.0f} events/s, {:6.1f} MB/s, {:5.2f} CPU s "
      "({:.2f} us CPU/event)\n",
      name, run.messages, run.seconds, run.EventsPerSecond(), run.MegabytesPerSecond(),
      run.cpu_seconds, run.cpu_seconds * 1e6 / static_cast<double>(run.messages));
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"EventPublisher throughput vs kcat on the embedded Kafka"};
  app.add_option("--events", options.events, "messages per run")->check(CLI::Range(1, 50'000'000));
  app.add_option("--rounds", options.rounds, "library + kcat runs, on fresh topics")
      ->check(CLI::Range(1, 20));
  app.add_option("--users", options.users, "distinct keys")->check(CLI::Range(1, 1'000'000));
  app.add_option("--partitions", options.partitions, "partitions of each topic")
      ->check(CLI::Range(1, 1000));
  app.add_option("--kcat", options.kcat, "kcat executable");
  app.add_flag("--no-kcat", options.no_kcat, "skip the kcat reference run");
  app.add_flag("--serve-reports-in-caller", options.serve_reports_in_caller,
               "the publisher's opt-in mode: delivery reports on the publishing thread");
  app.add_option("--tmp-dir", options.tmp_dir, "where kcat's input file is written");
  CLI11_PARSE(app, argc, argv);
  log::Setup(log::Format::kText, "warn");

  const auto events = MakeEvents(options);
  size_t bytes = 0;
  size_t smallest = SIZE_MAX;
  size_t largest = 0;
  for (const auto& event : events) {
    const size_t size = event.ByteSizeLong();
    smallest = std::min(smallest, size);
    largest = std::max(largest, size);
    bytes += size + event.user_id().size();
  }
  fmt::print("events: {} ({} users), value {}-{} bytes, mean key+value {:.0f} bytes\n",
             events.size(), options.users, smallest, largest,
             static_cast<double>(bytes) / static_cast<double>(events.size()));

  kafka::EmbeddedKafka cluster(1);
  fmt::print("embedded Kafka: 1 broker, {} partitions per topic\n", options.partitions);
  std::string library_settings;
  for (const auto& [key, value] : producers::DefaultProducerProperties()) {
    library_settings += fmt::format(" {}={}", key, value);
  }
  fmt::print("library settings:{} queue.buffering.max.messages={} (max_pending={}){}\n",
             library_settings, producers::PublisherConfig{}.max_pending + 1024,
             producers::PublisherConfig{}.max_pending,
             options.serve_reports_in_caller ? " serve_reports_in_caller" : "");

  std::string input;
  if (!options.no_kcat) input = WriteKcatInput(options, events);
  std::vector<double> library_rates;
  std::vector<double> kcat_rates;
  std::vector<double> library_cpu;
  std::vector<double> kcat_cpu;
  int status = 0;
  for (int round = 1; round <= options.rounds; ++round) {
    fmt::print("round {}/{}\n", round, options.rounds);
    const std::string library_topic = fmt::format("bench.library.{}", round);
    const std::string kcat_topic = fmt::format("bench.kcat.{}", round);
    cluster.CreateTopic({library_topic, options.partitions});
    cluster.CreateTopic({kcat_topic, options.partitions});

    const auto library = RunLibrary(cluster.BootstrapServers(), library_topic, events, bytes,
                                    options.serve_reports_in_caller);
    PrintRun("library", library);
    const auto library_counts = CountTopic(cluster.BootstrapServers(), library_topic);
    fmt::print("  topic {} holds {} messages ({} partitions past the 5 MiB cap)\n", library_topic,
               library_counts.messages, library_counts.truncated);
    library_rates.push_back(library.EventsPerSecond());
    library_cpu.push_back(library.cpu_seconds);
    if (options.no_kcat) continue;

    const auto args = KcatArgs(options, cluster.BootstrapServers(), kcat_topic);
    if (round == 1) {
      std::string command;
      for (const auto& arg : args) command += (command.empty() ? "" : " ") + arg;
      fmt::print("kcat: {} < {}\n", command, input);
    }
    RunResult kcat;
    try {
      kcat = RunKcat(args, input, events.size(), bytes);
    } catch (...) {
      std::filesystem::remove(input);
      throw;
    }
    PrintRun("kcat", kcat);
    const auto kcat_counts = CountTopic(cluster.BootstrapServers(), kcat_topic);
    fmt::print(
        "  topic {} holds {} messages ({} partitions past the 5 MiB cap); "
        "same count per partition as the library's: {}\n",
        kcat_topic, kcat_counts.messages, kcat_counts.truncated,
        kcat_counts.per_partition == library_counts.per_partition ? "yes" : "NO");
    if (static_cast<size_t>(kcat_counts.messages) != events.size() ||
        kcat_counts.per_partition != library_counts.per_partition) {
      fmt::print("ERROR: kcat did not publish the same messages; its rate is not comparable\n");
      status = 1;
    }
    kcat_rates.push_back(kcat.EventsPerSecond());
    kcat_cpu.push_back(kcat.cpu_seconds);
  }
  if (!input.empty()) std::filesystem::remove(input);

  const auto median = [](std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
  };
  fmt::print("summary ({} round(s), medians): library {:.0f} events/s ({:.2f} CPU s)",
             options.rounds, median(library_rates), median(library_cpu));
  if (!kcat_rates.empty()) {
    const double ratio = median(library_rates) / median(kcat_rates);
    fmt::print(", kcat {:.0f} events/s ({:.2f} CPU s)\n", median(kcat_rates), median(kcat_cpu));
    fmt::print("ratio library/kcat = {:.2f} (kcat is {:.2f}x the library; goal: within 1.5x)\n",
               ratio, 1.0 / ratio);
  } else {
    fmt::print("\n");
  }
  return status;
}

}  // namespace
}  // namespace agentwire

int main(int argc, char** argv) {
  try {
    return agentwire::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "publisher_bench: %s\n", e.what());
    return 1;
  }
}
