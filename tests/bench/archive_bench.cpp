// Archive throughput: events/s from Kafka into PostgreSQL agent_events by the real
// `agentwire archive` process (COPY into a staging table, INSERT ... ON CONFLICT DO NOTHING,
// offsets in the same transaction). Embedded Kafka in this process, a throwaway PostgreSQL 15
// (fsync off). Prints figures; asserts nothing.
//
//   archive_bench [--events N] [--partitions P] [--simulate-users U] [--batch-size B]
//                 [--batch-ms M] [--writers W] [--processes N] [--sql S]...
//                 [--rounds R [--vs-sql S]... [--vs-writers W] [--vs-batch-size B]
//                 [--vs-batch-ms M] [--binary PATH] [--vs-binary PATH]]
//
// Events: by default the bench's own (~250-byte thinking / tool_completed events of 5,000
// users). --simulate-users U publishes the realistic shape instead: the real
// `agentwire emit simulate --rate 0 --max-events N --users U` (seeded) as a child process,
// i.e. whole runs (started, thinking, tool calls, deltas, completed / failed) of U users; the
// events archived are whatever it delivered (N plus the runs it abandons at the end).
// --batch-size, --batch-ms and --writers are the archive's own flags, passed only when given
// (otherwise the archive's defaults); --writers W means W group members in one process;
// --processes N runs N archive processes in the one consumer group. Either way each member writes
// its own partitions over its own PostgreSQL connection (the per-partition fence keeps it
// exactly-once).
// --sql S runs S against the migrated database before the archive starts, to measure a schema
// variant (e.g. --sql 'ALTER TABLE agent_events ALTER COLUMN payload TYPE json').
// --rounds R --vs-sql S compares two schemas on the same published events: R rounds, each
// archiving them once into a fresh database as migrated (A, with any --sql) and once with S
// applied too (B), the order alternating (A B, B A, ...) so drift on a noisy machine hits both; it
// prints each round's A/B ratio and the medians (e.g. --vs-sql 'DROP INDEX
// agent_events_user_offset': the write cost of an index). --vs-writers, --vs-batch-size and
// --vs-batch-ms compare archive settings the same way (B runs with them, A without), and
// --vs-binary PATH another build of agentwire (e.g. a copy of the binary before a change; A runs
// --binary PATH, by default the build's own).
// Each run also reports how full its batches were (rows per distinct archived_at, i.e. per
// committed transaction).

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string_view>
#include <thread>
#include <vector>

#include "agentwire/consumers/migrations.hpp"
#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n == 0 ? 0.0 : n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/// CPU seconds (user + system) the PostgreSQL cluster in `data_directory` has used so far: the
/// postmaster, its live children (backends, checkpointer, WAL writer, autovacuum) and the
/// children it has reaped. The archive's writes cost PostgreSQL's backends most of the machine,
/// and CPU time is far less disturbed by other load on a shared machine than a rate is.
double PostgresCpuSeconds(const std::string& data_directory) {
  pid_t postmaster = 0;
  std::ifstream(data_directory + "/postmaster.pid") >> postmaster;
  double ticks = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string line;
    std::getline(std::ifstream(entry.path() / "stat"), line);
    // The command is in parentheses and may hold spaces: fields are counted after it, from
    // field 3 (state); ppid is field 4, utime 14, stime 15, cutime 16, cstime 17 (proc(5)).
    const size_t command_end = line.rfind(')');
    if (command_end == std::string::npos) continue;
    std::istringstream rest(line.substr(command_end + 1));
    const std::vector<std::string> fields{std::istream_iterator<std::string>(rest),
                                          std::istream_iterator<std::string>()};
    if (fields.size() < 15) continue;
    const auto field = [&](int number) { return std::stod(fields[number - 3]); };
    if (std::stoi(name) == postmaster) {
      ticks += field(14) + field(15) + field(16) + field(17);
    } else if (static_cast<pid_t>(field(4)) == postmaster) {
      ticks += field(14) + field(15);
    }
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct Shape {
  std::string name;
  std::vector<std::string> sql;  // run on the migrated database before the archive starts
  std::string binary;            // the agentwire executable
  // The archive's flags; "" = not passed (the archive's default).
  std::string writers;
  std::string batch_size;
  std::string batch_ms;
};

struct RunSettings {
  std::string bootstrap;
  int64_t events = 0;
  int partitions = 0;
  int processes = 1;
};

std::string OrDefault(const std::string& value) { return value.empty() ? "default" : value; }

struct RunResult {
  double rate = 0;             // events/s between the first and the last batch
  double postgres_cpu_us = 0;  // PostgreSQL's CPU per archived event
};

/// Archives every published event into a fresh database of `shape` (rate 0 when an archive
/// process failed). Drops the database after.
RunResult ArchiveOnce(const RunSettings& settings, const Shape& shape, int run) {
  using namespace agentwire;
  auto& pg = testing::SharedPostgres();
  const std::string dsn = pg.CreateDatabase("archive_bench");
  consumers::ApplyMigrations(dsn);
  for (const auto& sql : shape.sql) {
    pg.Query(dsn, sql);
    std::cout << "schema change: " << sql << '\n';
  }
  const std::string data_directory = pg.Directory() + "/data";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // psql's backends have exited
  const double cpu_before = PostgresCpuSeconds(data_directory);
  const auto started = Clock::now();
  std::vector<std::unique_ptr<testing::Subprocess>> archives;
  archives.reserve(static_cast<size_t>(settings.processes));
  for (int i = 0; i < settings.processes; ++i) {
    // A group of its own per run: nothing of an earlier run's membership can delay this one.
    std::vector<std::string> argv{shape.binary,     "archive",
                                  "--brokers",      settings.bootstrap,
                                  "--pg",           dsn,
                                  "--group",        fmt::format("archive-bench-{}", run),
                                  "--metrics-port", "0",
                                  "--kafka",        "session.timeout.ms=6000",
                                  "--kafka",        "heartbeat.interval.ms=1000"};
    const auto flag = [&argv](const char* name, const std::string& value) {
      if (value.empty()) return;
      argv.emplace_back(name);
      argv.push_back(value);
    };
    flag("--writers", shape.writers);
    flag("--batch-size", shape.batch_size);
    flag("--batch-ms", shape.batch_ms);
    archives.push_back(std::make_unique<testing::Subprocess>(std::move(argv)));
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
    if (done >= settings.events) break;
    for (const auto& archive : archives) {
      if (!archive->Running()) {
        std::cerr << archive->Describe() << '\n';
        return {};
      }
    }
    // Each poll is a psql process: poll slowly so the bench does not eat the CPU it measures.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const auto finished = Clock::now();
  for (const auto& archive : archives) archive->Signal(SIGTERM);
  for (const auto& archive : archives) archive->Wait(std::chrono::seconds(30));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // their backends have exited
  const double postgres_cpu = PostgresCpuSeconds(data_directory) - cpu_before;

  // The precise figure comes from the rows themselves: archived_at is each batch's
  // transaction start, so the span between the first and the last batch is pure archive time.
  const auto span = pg.QueryRows(
      dsn,
      "SELECT extract(epoch FROM max(archived_at) - min(archived_at)),"
      " count(*) FILTER (WHERE archived_at > (SELECT min(archived_at) FROM agent_events))"
      " FROM agent_events");
  const double span_seconds = std::stod(span.at(0).at(0));
  const double span_rows = std::stod(span.at(0).at(1));
  const double rate = span_seconds > 0 ? span_rows / span_seconds : 0.0;
  std::cout << fmt::format(
      "archive ({}): {:.0f} events/s between the first and the last batch ({:.0f} rows in "
      "{:.2f} s)\n",
      shape.name, rate, span_rows, span_seconds);
  const double total = Seconds(finished - started);
  const double steady = Seconds(finished - first_row);
  std::cout << fmt::format(
      "archive ({}): {} events, {} partitions, batch {} / {} ms, {} process(es) of {} writer(s): "
      "{:.2f} s from process start ({:.0f} events/s), {:.2f} s from the first commit ({:.0f} "
      "events/s)\n",
      shape.name, settings.events, settings.partitions, OrDefault(shape.batch_size),
      OrDefault(shape.batch_ms), settings.processes, OrDefault(shape.writers), total,
      static_cast<double>(settings.events) / total, steady,
      static_cast<double>(settings.events - first_rows) / steady);
  // archived_at is the transaction's start: one value per committed batch (two writers starting
  // theirs in the same microsecond would merge, which is rare enough not to matter here).
  const auto fill =
      pg.QueryRows(dsn,
                   "SELECT count(*), round(avg(n)), percentile_disc(0.5) WITHIN GROUP (ORDER BY n),"
                   " min(n), max(n), round(avg(p), 1) FROM (SELECT archived_at, count(*) AS n,"
                   " count(DISTINCT partition) AS p FROM agent_events GROUP BY archived_at) AS b");
  std::cout << fmt::format(
      "batches ({}): {} committed, rows per batch mean {} median {} min {} max {}, {} partitions "
      "per batch on average\n",
      shape.name, fill.at(0).at(0), fill.at(0).at(1), fill.at(0).at(2), fill.at(0).at(3),
      fill.at(0).at(4), fill.at(0).at(5));
  const double cpu_us = postgres_cpu / static_cast<double>(settings.events) * 1e6;
  std::cout << fmt::format(
      "PostgreSQL CPU ({}): {:.2f} s while archiving, {:.1f} us per event (backends, WAL and "
      "checkpoints, a few polling queries)\n",
      shape.name, postgres_cpu, cpu_us);
  std::cout << fmt::format(
      "agent_events size ({}): {}\n", shape.name,
      pg.Query(dsn, "SELECT pg_size_pretty(pg_total_relation_size('agent_events'))"));
  std::cout << fmt::format(
      "agent_events parts ({}): {}\n", shape.name,
      pg.Query(dsn,
               "SELECT string_agg(c.relname || ' ' || pg_size_pretty(pg_relation_size(c.oid)),"
               " ', ' ORDER BY c.relname) FROM pg_class c WHERE c.relname LIKE 'agent_events%'"
               " OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE relname = 'agent_events')"));
  // Each run's rows would otherwise stay on disk for the rest of the bench.
  try {
    const size_t name = dsn.find("dbname=") + 7;
    pg.Query(pg.Dsn(), "DROP DATABASE \"" + dsn.substr(name, dsn.find(' ', name) - name) + "\"");
  } catch (const std::exception& e) {
    std::cerr << "cannot drop the run's database (its rows stay on disk): " << e.what() << '\n';
  }
  return {rate, cpu_us};
}

}  // namespace

int main(int argc, char** argv) {
  using namespace agentwire;
  int64_t events = 300'000;
  int partitions = 64;
  int simulate_users = 0;
  int processes = 1;
  int rounds = 1;
  Shape a;
  Shape b;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--processes") processes = std::max(1, std::atoi(value));
    if (flag == "--writers") a.writers = value;
    if (flag == "--batch-size") a.batch_size = value;
    if (flag == "--batch-ms") a.batch_ms = value;
    if (flag == "--sql") a.sql.emplace_back(value);
    if (flag == "--vs-sql") b.sql.emplace_back(value);
    if (flag == "--vs-writers") b.writers = value;
    if (flag == "--vs-batch-size") b.batch_size = value;
    if (flag == "--vs-batch-ms") b.batch_ms = value;
    if (flag == "--binary") a.binary = value;
    if (flag == "--vs-binary") b.binary = value;
    if (flag == "--rounds") rounds = std::max(1, std::atoi(value));
    if (flag == "--events") events = std::atoll(value);
    if (flag == "--partitions") partitions = std::atoi(value);
    if (flag == "--simulate-users") simulate_users = std::atoi(value);
  }
  const bool compare = !b.sql.empty() || !b.writers.empty() || !b.batch_size.empty() ||
                       !b.batch_ms.empty() || !b.binary.empty();
  if (a.binary.empty()) a.binary = testing::AgentwireBinary();
  b.sql.insert(b.sql.begin(), a.sql.begin(), a.sql.end());  // B is A plus its own changes
  if (b.writers.empty()) b.writers = a.writers;
  if (b.batch_size.empty()) b.batch_size = a.batch_size;
  if (b.batch_ms.empty()) b.batch_ms = a.batch_ms;
  const bool other_binary = !b.binary.empty();
  if (b.binary.empty()) b.binary = a.binary;
  a.name = a.sql.empty() ? "as migrated" : "--sql";
  if (compare) {
    a.name = fmt::format("A, {}, writers {}, batch {} / {} ms", a.name, OrDefault(a.writers),
                         OrDefault(a.batch_size), OrDefault(a.batch_ms));
    b.name = fmt::format("B, {}{}writers {}, batch {} / {} ms",
                         b.sql.size() > a.sql.size() ? "--vs-sql, " : "",
                         other_binary ? "--vs-binary, " : "", OrDefault(b.writers),
                         OrDefault(b.batch_size), OrDefault(b.batch_ms));
  }

  const std::string topic = "agent.lifecycle.v1";
  kafka::EmbeddedKafka kafka(1);
  kafka.CreateTopic({topic, partitions});
  kafka.CreateTopic({topic + ".dlq", 2});

  if (simulate_users > 0) {
    // The realistic shape: the simulator itself, as `agentwire emit simulate` runs it. Seeded,
    // so every run of the bench archives the same events (run ids carry a random tag).
    const auto started = Clock::now();
    testing::Subprocess simulate({a.binary,
                                  "emit",
                                  "simulate",
                                  "--brokers",
                                  kafka.BootstrapServers(),
                                  "--topic",
                                  topic,
                                  "--rate",
                                  "0",
                                  "--duration",
                                  "0",
                                  "--max-events",
                                  std::to_string(events),
                                  "--users",
                                  std::to_string(simulate_users),
                                  "--seed",
                                  "26",
                                  "--no-run-control",
                                  "--log-level",
                                  "warn"});
    const auto code = simulate.Wait(std::chrono::minutes(10));
    if (code != 0) {
      std::cerr << "emit simulate failed: " << simulate.Describe() << '\n';
      return 1;
    }
    int64_t published = 0;
    for (const auto& [partition, marks] :
         testing::Watermarks(kafka.BootstrapServers(), topic, std::chrono::seconds(10))) {
      if (marks.low != 0) {
        std::cerr << fmt::format("partition {} lost its oldest records (low watermark {})\n",
                                 partition, marks.low);
        return 1;
      }
      published += marks.high;
    }
    std::cout << fmt::format(
        "published {} events with emit simulate --max-events {} --users {} in {:.2f} s\n",
        published, events, simulate_users, Seconds(Clock::now() - started));
    events = published;
  } else {
    // The bench's own events: thinking / tool_completed text of a few hundred bytes.
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

  const RunSettings settings{kafka.BootstrapServers(), events, partitions, processes};
  if (!compare) {
    for (int round = 0; round < rounds; ++round) {
      if (ArchiveOnce(settings, a, round).rate == 0) return 1;
    }
    return 0;
  }
  // Per round: A's and B's rate and CPU per event, and the A/B ratios.
  std::array<std::vector<double>, 6> figures;
  for (auto& column : figures) column.reserve(static_cast<size_t>(rounds));
  int run = 0;
  for (int round = 0; round < rounds; ++round) {
    std::array<RunResult, 2> result{};  // A, B
    for (int k = 0; k < 2; ++k) {
      const bool b_first = round % 2 == 1;
      const bool is_b = (k == 0) == b_first;
      result[is_b ? 1 : 0] = ArchiveOnce(settings, is_b ? b : a, run++);
      if (result[is_b ? 1 : 0].rate == 0) return 1;
    }
    const std::array<double, 6> row = {result[0].rate,
                                       result[1].rate,
                                       result[0].rate / result[1].rate,
                                       result[0].postgres_cpu_us,
                                       result[1].postgres_cpu_us,
                                       result[0].postgres_cpu_us / result[1].postgres_cpu_us};
    for (size_t i = 0; i < row.size(); ++i) figures[i].push_back(row[i]);
    std::cout << fmt::format(
        "round {} ({}): A {:.0f} events/s, B {:.0f} events/s, A/B {:.3f}; PostgreSQL CPU per "
        "event A {:.1f} us, B {:.1f} us, A/B {:.3f}\n",
        round + 1, round % 2 == 1 ? "B first" : "A first", row[0], row[1], row[2], row[3], row[4],
        row[5]);
  }
  std::cout << fmt::format(
      "median over {} rounds (ratios: median of the pairwise ones): A {:.0f} events/s, B {:.0f} "
      "events/s, A/B {:.3f}; PostgreSQL CPU per event A {:.1f} us, B {:.1f} us, A/B {:.3f}\n",
      rounds, Median(figures[0]), Median(figures[1]), Median(figures[2]), Median(figures[3]),
      Median(figures[4]), Median(figures[5]));
  return 0;
}
