// Archive throughput: events/s from Kafka into PostgreSQL agent_events by the real
// `agentwire archive` process (COPY into a staging table, INSERT ... ON CONFLICT DO NOTHING,
// offsets in the same transaction). Embedded Kafka in this process, a throwaway PostgreSQL 15
// (fsync off). Prints figures; asserts nothing.
//
//   archive_bench [--events N] [--partitions P] [--batch-size B] [--writers W] [--processes N]
//                 [--sql S]...
//
// --writers W is the archive's own flag (W group members in one process); --processes N runs
// N archive processes in the one consumer group. Either way each member writes its own
// partitions over its own PostgreSQL connection (the per-partition fence keeps it exactly-once).
// --sql S runs S against the migrated database before the archive starts, to measure a schema
// variant (e.g. --sql 'ALTER TABLE agent_events ALTER COLUMN payload TYPE json').

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "agentwire/consumers/migrations.hpp"
#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

int main(int argc, char** argv) {
  using namespace agentwire;
  int64_t events = 300'000;
  int partitions = 64;
  std::string batch_size = "5000";
  int processes = 1;
  std::string writers = "1";
  std::vector<std::string> schema_changes;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--processes") == 0) processes = std::max(1, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--writers") == 0) writers = argv[i + 1];
    if (std::strcmp(argv[i], "--sql") == 0) schema_changes.emplace_back(argv[i + 1]);
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--partitions") == 0) partitions = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--batch-size") == 0) batch_size = argv[i + 1];
  }
  const std::string topic = "agent.lifecycle.v1";
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({topic, partitions});
  kafka.CreateTopic({topic + ".dlq", 2});
  auto& pg = testing::SharedPostgres();
  const std::string dsn = pg.CreateDatabase("archive_bench");

  // Realistic events: the simulator's mix is thinking/tool/delta text of a few hundred bytes.
  {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", kafka.BootstrapServers()}};
    config.topic = topic;
    producers::EventPublisher publisher(config);
    const auto started = Clock::now();
    for (int64_t i = 0; i < events; ++i) {
      v1::AgentEvent event;
      event.set_event_id(fmt::format("01JBENCH{:018}", i));
      event.set_user_id(fmt::format("user-{:05}", i % 5000));
      event.set_thread_id(fmt::format("thread-{:05}", i % 5000));
      event.set_run_id(fmt::format("run-{:05}-{}", i % 5000, i / 50'000));
      event.set_run_seq(static_cast<uint32_t>(i / 5000 + 1));
      event.set_agent_name("researcher");
      event.set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
      event.mutable_emitted_at()->set_seconds(1'790'000'000 + i / 1000);
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
    std::cout << fmt::format("published {} events in {:.2f} s\n", events,
                             Seconds(Clock::now() - started));
  }

  consumers::ApplyMigrations(dsn);
  for (const auto& sql : schema_changes) {
    pg.Query(dsn, sql);
    std::cout << "schema change: " << sql << '\n';
  }
  const auto started = Clock::now();
  std::vector<std::unique_ptr<testing::Subprocess>> archives;
  for (int i = 0; i < processes; ++i) {
    archives.push_back(std::make_unique<testing::Subprocess>(std::vector<std::string>{
        testing::AgentwireBinary(), "archive", "--brokers", kafka.BootstrapServers(), "--pg", dsn,
        "--batch-size", batch_size, "--writers", writers, "--metrics-port", "0", "--kafka",
        "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=1000"}));
  }
  auto stored = [&]() -> int64_t {
    try {
      return pg.QueryInt(dsn, "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets");
    } catch (const std::exception&) {
      return 0;
    }
  };
  Clock::time_point first_row{};
  int64_t first_rows = 0;
  while (true) {
    const int64_t done = stored();
    if (done > 0 && first_row == Clock::time_point{}) {
      first_row = Clock::now();
      first_rows = done;
    }
    if (done >= events) break;
    for (const auto& archive : archives) {
      if (!archive->Running()) {
        std::cerr << archive->Describe() << '\n';
        return 1;
      }
    }
    // Each poll is a psql process: poll slowly so the bench does not eat the CPU it measures.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const auto finished = Clock::now();
  for (const auto& archive : archives) archive->Signal(SIGTERM);
  for (const auto& archive : archives) archive->Wait(std::chrono::seconds(30));

  // The precise figure comes from the rows themselves: archived_at is each batch's
  // transaction start, so the span between the first and the last batch is pure archive time.
  const auto span = pg.QueryRows(
      dsn,
      "SELECT extract(epoch FROM max(archived_at) - min(archived_at)),"
      " count(*) FILTER (WHERE archived_at > (SELECT min(archived_at) FROM agent_events))"
      " FROM agent_events");
  const double span_seconds = std::stod(span.at(0).at(0));
  const double span_rows = std::stod(span.at(0).at(1));
  std::cout << fmt::format(
      "archive: {:.0f} events/s between the first and the last batch ({:.0f} rows in {:.2f} s)\n",
      span_seconds > 0 ? span_rows / span_seconds : 0.0, span_rows, span_seconds);
  const double total = Seconds(finished - started);
  const double steady = Seconds(finished - first_row);
  std::cout << fmt::format(
      "archive: {} events, {} partitions, batch {}, {} process(es) of {} writer(s): {:.2f} s from "
      "process start ({:.0f} events/s), {:.2f} s from the first commit ({:.0f} events/s)\n",
      events, partitions, batch_size, processes, writers, total, events / total, steady,
      (events - first_rows) / steady);
  std::cout << fmt::format("agent_events size: {}\n",
                           pg.Query(dsn,
                                    "SELECT pg_size_pretty(pg_total_relation_size("
                                    "'agent_events'))"));
  return 0;
}
