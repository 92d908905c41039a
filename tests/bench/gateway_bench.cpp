// Load generator for the gateway benchmarks (docs/benchmarks.md, "Gateway").
//
// One process, one Asio thread for every WebSocket client and the publish pacing (plus the
// EventPublisher's librdkafka threads). It starts the servers itself as child processes, so
// their CPU seconds can be read from /proc/<pid>/stat:
//   --target gateway   `agentwire broker` (1 broker) + `agentwire gateway`; events go through
//                      EventPublisher into the broker
//   --target baseline  beast_baseline_server; events go as HTTP POST /publish?user=U, the body
//                      being the same JSON frame the gateway would build
//
// Every event carries attributes.bench_ns = CLOCK_REALTIME at publish time and run_seq =
// 1, 2, 3... per user; each client checks lost / duplicated / reordered per user and the
// publish -> frame-received latency.
//
// Scenarios (--scenario):
//   steps   publish at each of --rates for --step-seconds over --connections clients; one row
//           per rate (latency p50/p99/p99.9, CPU seconds of every process, CPU per event);
//           stops after the first rate whose p99 exceeds --stop-p99-ms
//   idle    RSS of the server before/after --connections idle (authenticated) connections
//   ingest  no client; --resume-events events over --users users; the gateway's CPU per
//           consumed event (what every replica pays for the whole topic). With --ingest-rate R,
//           first the steady shape: `agentwire emit simulate` publishes R events/s over --users
//           users; the gateway's CPU per consumed event over --step-seconds (after
//           --warmup-seconds), beside its idle floor over as long with nothing published
//           (--resume-events 0: the steady shape only)
//   churn   steps at one rate, and every second --churn-fraction of the clients drop the TCP
//           connection and reconnect with their last cursor; exits 1 unless lost, duplicated
//           and reordered are all 0
//   resume  publishes --resume-events for one user, then times a cursor=earliest catch-up on
//           a gateway with the cache and on one with --cache-bytes 0
//   storm   the mass reconnect of issue 8: --connections clients (--users users; slots past
//           --users are extra sessions of the first users) on one replica while events flow at
//           --rate; after --storm-after-seconds the replica is killed (--storm-signal kill:
//           SIGKILL, a new replica starts on the same port --storm-downtime-seconds later; term:
//           SIGTERM, the clients go to a
//           second replica that was already running). Every client reconnects with its cursor.
//           Prints the time from the replacement's readiness until every client has every event
//           published by then, lost/duplicated/reordered (from each user's first event), closes
//           by code, the replacement's CPU and peak RSS and its resume/catch-up metrics. Exits
//           1 unless clean, caught up within --storm-timeout-seconds and without a 1013 close,
//           and (with --max-catchup-buffered B) the replacement's catch-up buffer peak <= B,
//           and (with --min-kafka-resumes N / --min-archive-resumes N) at least N resumes were
//           served from Kafka / the archive. A metric the replacement does not export prints as
//           "absent" and fails a check on it.
//           --storm-past-retention (kill only): a throwaway PostgreSQL and a real `agentwire
//           archive` run on the topic and every replica gets --archive-dsn; during the downtime
//           incompressible filler (one filler user per partition) is published until every
//           partition's log start is past its high watermark at the kill, so every client's
//           cursor lies before the log start, and the replacement starts once the archive has
//           committed past the new log starts (it holds everything Kafka deleted) and on to the
//           log's end.
//   archive_resume  a throwaway PostgreSQL and `agentwire archive` on a 1-partition topic;
//           --resume-events (default 200,000) events of one user are published (in batches the
//           archive commits before the next) and then pushed out of Kafka by filler; one client
//           resumes from the cursor before the user's first event through a fresh gateway with
//           --archive-dsn. Prints events/s from connect to `ready`, the CPU seconds of the
//           gateway and of PostgreSQL, and the gateway's archive read metrics.
//   tail    two replicas, users routed by partition (even/odd), once with --tail all and once
//           with --tail auto: each replica's consumed messages and CPU for --connections
//           clients and the first of --rates for --step-seconds; exits 1 unless clean
// Exit code: 0 clean, 1 when events were lost, duplicated or reordered, 2 on bad usage.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/gateway/auth.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"
#include "support/ws_client.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using agentwire::testing::Subprocess;

namespace {

constexpr const char* kSecret = "agentwire-bench-secret-0123456789abcdef";
constexpr const char* kTopic = "agent.lifecycle.v1";

int64_t RealtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Options {
  std::string target = "gateway";
  std::string scenario = "steps";
  std::string transport = "websocket";  // or sse: GET /v1/events as text/event-stream
  int connections = 1000;
  int users = 1000;
  std::vector<int> rates{10'000};
  double step_seconds = 20;
  double warmup_seconds = 2;
  double stop_p99_ms = 100;
  int partitions = 12;
  int fetch_wait_ms = 5;
  std::string cache_bytes;  // gateway default when empty
  int server_threads = 0;   // 0 = the server's default (one per core)
  int linger_ms = -1;       // -1 = EventPublisher default
  int http_connections = 8;
  int http_batch = 1;  // > 1: up to this many frames per POST /publish-batch
  // How a WebSocket client presents its token: "subprotocol" as a browser must
  // (`Sec-WebSocket-Protocol: agentwire.bearer, <jwt>`), or "header" (Authorization: Bearer).
  std::string ws_auth = "subprotocol";
  double churn_fraction = 0.1;
  int resume_events = -1;  // -1: the scenario's default (100,000; archive_resume 200,000)
  int ingest_rate = 0;     // ingest: > 0 adds the steady shape (events/s of `emit simulate`)
  int connect_parallel = 256;
  std::string storm_signal = "kill";
  double storm_after_seconds = 12;
  double storm_tail_seconds = 5;
  double storm_downtime_seconds = 0;  // kill: publishing goes on this long before the restart
  double storm_timeout_seconds = 120;
  bool storm_past_retention = false;
  long long max_catchup_buffered = -1;    // -1: not checked
  long long min_kafka_resumes = -1;       // -1: not checked
  long long min_archive_resumes = -1;     // -1: not checked
  std::vector<std::string> gateway_args;  // passed to every `agentwire gateway`
  std::string agentwire = AGENTWIRE_BINARY;
  std::string baseline;
};

[[noreturn]] void Usage(const std::string& problem) {
  std::cerr
      << "gateway_bench: " << problem
      << "\nusage: gateway_bench [--target gateway|baseline] "
         "[--scenario steps|idle|ingest|churn|resume|storm|tail|archive_resume] [--connections N] "
         "[--users N] "
         "[--rates R1,R2,...] [--step-seconds S] [--warmup-seconds S] [--stop-p99-ms MS] "
         "[--partitions N] [--fetch-wait-ms MS] [--cache-bytes B] [--server-threads N] "
         "[--linger-ms MS] [--http-connections N] [--http-batch N] [--ws-auth subprotocol|header] "
         "[--churn-fraction F] "
         "[--resume-events N] [--ingest-rate R] [--storm-signal kill|term] "
         "[--storm-after-seconds S] "
         "[--storm-tail-seconds S] [--storm-downtime-seconds S] [--storm-timeout-seconds S] "
         "[--storm-past-retention] [--max-catchup-buffered B] [--min-kafka-resumes N] "
         "[--min-archive-resumes N] [--transport websocket|sse] "
         "[--gateway-arg ARG]... [--agentwire PATH] [--baseline PATH]\n";
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  o.baseline = (std::filesystem::path(argv[0]).parent_path() / "beast_baseline_server").string();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--target") {
      o.target = value();
    } else if (arg == "--transport") {
      o.transport = value();
      if (o.transport != "websocket" && o.transport != "sse") Usage("--transport websocket|sse");
    } else if (arg == "--scenario") {
      o.scenario = value();
    } else if (arg == "--connections") {
      o.connections = std::stoi(value());
    } else if (arg == "--users") {
      o.users = std::stoi(value());
    } else if (arg == "--rates" || arg == "--rate") {
      o.rates.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) o.rates.push_back(std::stoi(item));
    } else if (arg == "--step-seconds") {
      o.step_seconds = std::stod(value());
    } else if (arg == "--warmup-seconds") {
      o.warmup_seconds = std::stod(value());
    } else if (arg == "--stop-p99-ms") {
      o.stop_p99_ms = std::stod(value());
    } else if (arg == "--partitions") {
      o.partitions = std::stoi(value());
    } else if (arg == "--fetch-wait-ms") {
      o.fetch_wait_ms = std::stoi(value());
    } else if (arg == "--cache-bytes") {
      o.cache_bytes = value();
    } else if (arg == "--server-threads") {
      o.server_threads = std::stoi(value());
    } else if (arg == "--linger-ms") {
      o.linger_ms = std::stoi(value());
    } else if (arg == "--http-connections") {
      o.http_connections = std::stoi(value());
    } else if (arg == "--ws-auth") {
      o.ws_auth = value();
      if (o.ws_auth != "subprotocol" && o.ws_auth != "header")
        Usage("--ws-auth subprotocol|header");
    } else if (arg == "--http-batch") {
      o.http_batch = std::max(1, std::stoi(value()));
    } else if (arg == "--churn-fraction") {
      o.churn_fraction = std::stod(value());
    } else if (arg == "--resume-events") {
      o.resume_events = std::stoi(value());
    } else if (arg == "--ingest-rate") {
      o.ingest_rate = std::stoi(value());
    } else if (arg == "--storm-signal") {
      o.storm_signal = value();
    } else if (arg == "--storm-after-seconds") {
      o.storm_after_seconds = std::stod(value());
    } else if (arg == "--storm-downtime-seconds") {
      o.storm_downtime_seconds = std::stod(value());
    } else if (arg == "--storm-tail-seconds") {
      o.storm_tail_seconds = std::stod(value());
    } else if (arg == "--storm-timeout-seconds") {
      o.storm_timeout_seconds = std::stod(value());
    } else if (arg == "--storm-past-retention") {
      o.storm_past_retention = true;
    } else if (arg == "--max-catchup-buffered") {
      o.max_catchup_buffered = std::stoll(value());
    } else if (arg == "--min-kafka-resumes") {
      o.min_kafka_resumes = std::stoll(value());
    } else if (arg == "--min-archive-resumes") {
      o.min_archive_resumes = std::stoll(value());
    } else if (arg == "--gateway-arg") {
      o.gateway_args.push_back(value());
    } else if (arg == "--agentwire") {
      o.agentwire = value();
    } else if (arg == "--baseline") {
      o.baseline = value();
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (o.target != "gateway" && o.target != "baseline") Usage("--target gateway|baseline");
  if (o.users < 1 || o.connections < 1 || o.rates.empty()) Usage("bad counts");
  if (o.scenario == "resume" && o.target != "gateway") Usage("resume needs --target gateway");
  if (o.transport == "sse" && o.target != "gateway")
    Usage("--transport sse needs --target gateway");
  if (o.scenario == "storm" && o.target != "gateway") Usage("storm needs --target gateway");
  if (o.scenario == "tail" && o.target != "gateway") Usage("tail needs --target gateway");
  if (o.storm_signal != "kill" && o.storm_signal != "term") Usage("--storm-signal kill|term");
  if (o.storm_past_retention && (o.scenario != "storm" || o.storm_signal != "kill")) {
    Usage("--storm-past-retention needs --scenario storm --storm-signal kill");
  }
  if (o.scenario == "archive_resume" && o.target != "gateway") {
    Usage("archive_resume needs --target gateway");
  }
  if (o.resume_events < 0) o.resume_events = o.scenario == "archive_resume" ? 200'000 : 100'000;
  return o;
}

// ---- process accounting --------------------------------------------------------------------

/// The fields of /proc/<pid>/stat from field 3 (the state) on; empty when the process is gone.
std::istringstream StatFields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');  // the command name may hold anything but ends here
  return std::istringstream(paren == std::string::npos ? std::string() : text.substr(paren + 2));
}

double ProcessCpuSeconds(pid_t pid) {
  auto fields = StatFields(pid);
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int index = 3; fields >> field; ++index) {  // field 3 is the state
    if (index == 14) utime = std::stoull(field);
    if (index == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

long StatusKiB(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(field)) return std::stol(line.substr(field.size()));
  }
  return -1;
}
long RssKiB(pid_t pid) { return StatusKiB(pid, "VmRSS:"); }
long PeakRssKiB(pid_t pid) { return StatusKiB(pid, "VmHWM:"); }

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

void RaiseFileLimit() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

// ---- servers -------------------------------------------------------------------------------

/// The processes under test, started from the main thread (Subprocess kills them when it
/// exits).
class Servers final {
 public:
  explicit Servers(const Options& o, int partitions = -1) : options_(o) {
    dir_ = agentwire::testing::MakeTempDirectory("gateway-bench");
    if (o.target == "baseline") {
      std::vector<std::string> argv{o.baseline, "--port-file", dir_ + "/port"};
      if (o.server_threads > 0) {
        argv.insert(argv.end(), {"--threads", std::to_string(o.server_threads)});
      }
      server_ = std::make_unique<Subprocess>(argv);
      port_ = WaitPort(dir_ + "/port", *server_);
      return;
    }
    const int parts = partitions > 0 ? partitions : o.partitions;
    broker_ = std::make_unique<Subprocess>(
        std::vector<std::string>{o.agentwire, "broker", "--brokers", "1", "--topic",
                                 std::string(kTopic) + ":" + std::to_string(parts),
                                 "--bootstrap-file", dir_ + "/bootstrap", "--log-level", "warn"});
    if (!agentwire::testing::WaitForFile(dir_ + "/bootstrap", std::chrono::seconds(30))) {
      throw std::runtime_error("broker did not start: " + broker_->Describe());
    }
    bootstrap_ = agentwire::testing::ReadFirstLine(dir_ + "/bootstrap");
  }

  /// Starts one gateway replica (several for the resume scenario); returns its index.
  size_t StartGateway(const std::string& cache_bytes, uint16_t port = 0,
                      const std::vector<std::string>& extra_args = {}) {
    const auto index = gateways_.size();
    const std::string port_file = dir_ + "/gateway-port-" + std::to_string(index);
    std::vector<std::string> argv{options_.agentwire, "gateway",
                                  "--brokers",        bootstrap_,
                                  "--port",           std::to_string(port),
                                  "--port-file",      port_file,
                                  "--jwt-secret",     kSecret,
                                  "--fetch-wait-ms",  std::to_string(options_.fetch_wait_ms),
                                  "--log-level",      "warn"};
    argv.insert(argv.end(), options_.gateway_args.begin(), options_.gateway_args.end());
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    if (!cache_bytes.empty()) argv.insert(argv.end(), {"--cache-bytes", cache_bytes});
    if (options_.server_threads > 0) {
      argv.insert(argv.end(), {"--threads", std::to_string(options_.server_threads)});
    }
    gateways_.push_back(std::make_unique<Subprocess>(argv));
    gateway_ports_.push_back(WaitPort(port_file, *gateways_.back()));
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (agentwire::testing::HttpGet(gateway_ports_.back(), "/readyz").status != 200) {
      if (Clock::now() > deadline) throw std::runtime_error("gateway never became ready");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return index;
  }

  /// Sends `signal` to replica `index` (SIGKILL: a crash; SIGTERM: a drain).
  void SignalGateway(size_t index, int signal) { gateways_[index]->Signal(signal); }
  bool WaitGatewayExit(size_t index, std::chrono::milliseconds timeout) {
    return gateways_[index]->Wait(timeout).has_value();
  }

  bool IsGateway() const { return options_.target == "gateway"; }
  /// 0 for a replica not started yet (a LoadGenerator that only publishes may exist before it).
  uint16_t Port(size_t index = 0) const {
    if (!IsGateway()) return port_;
    return index < gateway_ports_.size() ? gateway_ports_[index] : 0;
  }
  pid_t ServerPid(size_t index = 0) const {
    return IsGateway() ? gateways_[index]->Pid() : server_->Pid();
  }
  pid_t BrokerPid() const { return broker_ ? broker_->Pid() : -1; }
  const std::string& Bootstrap() const { return bootstrap_; }

 private:
  static uint16_t WaitPort(const std::string& file, Subprocess& process) {
    if (!agentwire::testing::WaitForFile(file, std::chrono::seconds(30))) {
      throw std::runtime_error("server did not start: " + process.Describe());
    }
    return static_cast<uint16_t>(std::stoi(agentwire::testing::ReadFirstLine(file)));
  }

  const Options& options_;
  std::string dir_;
  std::string bootstrap_;
  std::unique_ptr<Subprocess> broker_;
  std::unique_ptr<Subprocess> server_;
  std::vector<std::unique_ptr<Subprocess>> gateways_;
  std::vector<uint16_t> gateway_ports_;
  uint16_t port_ = 0;
};

/// CPU seconds of everything involved, read at one moment.
struct CpuSnapshot {
  Clock::time_point at;
  double server = 0;
  double broker = 0;
  double self = 0;
  static CpuSnapshot Take(const Servers& servers, size_t gateway = 0) {
    CpuSnapshot s;
    s.at = Clock::now();
    s.server = ProcessCpuSeconds(servers.ServerPid(gateway));
    if (servers.BrokerPid() > 0) s.broker = ProcessCpuSeconds(servers.BrokerPid());
    s.self = SelfCpuSeconds();
    return s;
  }
};

// ---- the archive: the log's cold tier ------------------------------------------------------

using Offsets = std::map<int32_t, int64_t>;  // by partition

Offsets HighWatermarks(const std::string& bootstrap) {
  Offsets highs;
  for (const auto& [partition, marks] :
       agentwire::testing::Watermarks(bootstrap, kTopic, std::chrono::seconds(10))) {
    highs[partition] = marks.high;
  }
  return highs;
}

/// "p0 a->b, p1 c->d": where each partition's log start moved.
std::string Moves(const Offsets& from, const Offsets& to) {
  std::string text;
  for (const auto& [partition, offset] : from) {
    if (!text.empty()) text += ", ";
    text += "p" + std::to_string(partition) + " " + std::to_string(offset) + "->" +
            std::to_string(to.at(partition));
  }
  return text;
}

/// CPU seconds of `parent` and its children (PostgreSQL: the postmaster and its backends).
double ProcessTreeCpuSeconds(pid_t parent) {
  double total = ProcessCpuSeconds(parent);
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ignored)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    auto fields = StatFields(pid);
    std::string state;
    pid_t ppid = 0;
    if (fields >> state >> ppid && ppid == parent) total += ProcessCpuSeconds(pid);
  }
  return total;
}

/// A throwaway PostgreSQL database and a real `agentwire archive` process on the bench's topic:
/// what `agentwire gateway --archive-dsn` reads for cursors before Kafka's log start. Main
/// thread only (the PostgreSQL cluster and Subprocess are not thread-safe).
class ColdTier final {
 public:
  ColdTier(const Options& o, const std::string& bootstrap)
      : dsn_(agentwire::testing::SharedPostgres().CreateDatabase("gateway_bench")) {
    auto argv = agentwire::testing::ConsumerCommand(
        "archive", bootstrap, dsn_, {"--topic", kTopic, "--writers", "1", "--log-level", "warn"});
    argv.front() = o.agentwire;  // the binary under test, as for the gateway
    archive_ = std::make_unique<Subprocess>(argv);
  }

  const std::string& Dsn() const { return dsn_; }

  /// The archive's committed position (the next offset it will write) of every partition it has
  /// written; empty before its first batch.
  Offsets Committed() const {
    Offsets committed;
    try {
      for (const auto& row : agentwire::testing::SharedPostgres().QueryRows(
               dsn_, std::string("SELECT partition, next_offset FROM consumer_offsets WHERE "
                                 "group_id = 'agentwire-archive' AND topic = '") +
                         kTopic + "'")) {
        committed[std::stoi(row.at(0))] = std::stoll(row.at(1));
      }
    } catch (const std::runtime_error&) {
      // Its tables do not exist yet (the archive migrates when it starts).
    }
    return committed;
  }

  /// Waits until the archive has committed every partition p up to at least targets[p]. Throws
  /// when it exits or takes longer than `timeout`.
  void WaitCommitted(const Offsets& targets, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto committed = Committed();
      const bool done = std::all_of(targets.begin(), targets.end(), [&](const auto& target) {
        const auto at = committed.find(target.first);
        return target.second <= 0 || (at != committed.end() && at->second >= target.second);
      });
      if (done) return;
      if (!archive_->Running()) {
        throw std::runtime_error("the archive exited: " + archive_->Describe());
      }
      if (Clock::now() > deadline) {
        throw std::runtime_error("the archive did not commit in time: " + archive_->Describe());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  /// The archived events of `user` and the offset of the first (-1: none).
  std::pair<int64_t, int64_t> RowsOf(const std::string& user) const {
    const auto rows = agentwire::testing::SharedPostgres().QueryRows(
        dsn_, "SELECT count(*), coalesce(min(\"offset\"), -1) FROM agent_events WHERE user_id = '" +
                  user + "'");
    return {std::stoll(rows.at(0).at(0)), std::stoll(rows.at(0).at(1))};
  }

  /// CPU seconds of the PostgreSQL server (every process of it) so far.
  static double PostgresCpuSeconds() {
    std::ifstream pid_file(agentwire::testing::SharedPostgres().Directory() +
                           "/data/postmaster.pid");
    pid_t postmaster = 0;
    pid_file >> postmaster;
    return postmaster > 0 ? ProcessTreeCpuSeconds(postmaster) : 0.0;
  }

 private:
  std::string dsn_;
  std::unique_ptr<Subprocess> archive_;
};

/// Incompressible events (~700 bytes) of one filler user per partition: the embedded Kafka keeps
/// ~5 MiB of compressed batches per partition and deletes the oldest beyond, so this is what
/// pushes the bench's events out of Kafka. Its own publisher; main thread only.
class Filler final {
 public:
  Filler(const std::string& bootstrap, int partitions) : bootstrap_(bootstrap) {
    agentwire::producers::PublisherConfig config;
    config.client_properties["bootstrap.servers"] = bootstrap;
    config.topic = kTopic;
    publisher_ = std::make_unique<agentwire::producers::EventPublisher>(config);
    users_.resize(static_cast<size_t>(partitions));
    int filled = 0;
    for (int k = 0; filled < partitions; ++k) {
      const std::string name = "bench-filler-" + std::to_string(k);
      auto& user = users_[static_cast<size_t>(agentwire::PartitionForKey(name, partitions))];
      if (user.empty()) {
        user = name;
        ++filled;
      }
    }
  }

  /// Publishes filler into every partition whose log start is not yet past targets[p] until it
  /// is; returns the log starts then. Throws when the log start does not move.
  Offsets PushPast(const Offsets& targets) {
    constexpr int kPerRound = 2'000;  // ~1.5 MiB per partition: about 4 rounds go past 5 MiB
    constexpr int kMaxRounds = 20;
    for (int round = 0;; ++round) {
      const auto marks =
          agentwire::testing::Watermarks(bootstrap_, kTopic, std::chrono::seconds(10));
      std::vector<int32_t> behind;
      Offsets lows;
      for (const auto& [partition, target] : targets) {
        lows[partition] = marks.at(partition).low;
        if (marks.at(partition).low <= target) behind.push_back(partition);
      }
      if (behind.empty()) return lows;
      if (round == kMaxRounds) {
        throw std::runtime_error("filler did not move the log start past every target");
      }
      for (int i = 0; i < kPerRound; ++i) {
        for (const int32_t partition : behind) Publish(partition);
      }
      if (publisher_->Flush(std::chrono::seconds(60)) != 0) {
        throw std::runtime_error("filler not delivered");
      }
    }
  }

  uint64_t Published() const { return published_; }

 private:
  void Publish(int32_t partition) {
    const auto& user = users_[static_cast<size_t>(partition)];
    agentwire::v1::AgentEvent event;
    event.set_event_id(user + "-" + std::to_string(++published_));
    event.set_user_id(user);
    event.set_thread_id("t-filler");
    event.set_run_id("r-" + user);
    event.set_run_seq(static_cast<uint32_t>(published_));
    event.set_agent_name("bench");
    event.mutable_agent_thinking()->set_text(agentwire::testing::IncompressibleText(700));
    while (publisher_->Publish(event, {}, std::chrono::milliseconds(1000)) !=
           agentwire::producers::PublishStatus::kAccepted) {
    }
  }

  std::string bootstrap_;
  std::unique_ptr<agentwire::producers::EventPublisher> publisher_;
  std::vector<std::string> users_;  // by partition
  uint64_t published_ = 0;
};

// ---- frame parsing (no JSON parser: the load generator must stay cheap) ---------------------

std::string_view StringField(std::string_view text, std::string_view key) {
  const auto at = text.find(key);
  if (at == std::string_view::npos) return {};
  const auto start = at + key.size();
  const auto end = text.find('"', start);
  return end == std::string_view::npos ? std::string_view{} : text.substr(start, end - start);
}

int64_t NumberField(std::string_view text, std::string_view key) {
  const auto at = text.find(key);
  if (at == std::string_view::npos) return -1;
  int64_t value = 0;
  for (auto i = at + key.size(); i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

// ---- the load generator --------------------------------------------------------------------

/// Everything below runs on the one I/O thread; the controller (main thread) reaches it only
/// through OnIo().
class LoadGenerator final {
 public:
  struct Totals {
    uint64_t frames = 0;      // event frames received
    uint64_t lost = 0;        // computed by Audit()
    uint64_t duplicated = 0;  // a seq received twice by one client
    uint64_t reordered = 0;   // a first copy below the client's highest seq
    uint64_t resets = 0;      // reset frames (should never happen here)
    uint64_t unexpected_closes = 0;
    uint64_t reconnects = 0;
    uint64_t publish_errors = 0;
    uint64_t closes_1012 = 0;  // the replica drained
    uint64_t closes_1013 = 0;  // closed as too slow (must never happen to a reading client)
  };

  LoadGenerator(const Options& options, const Servers& servers, size_t gateway_index = 0)
      : options_(options),
        servers_(servers),
        port_(servers.Port(gateway_index)),
        pacer_(io_),
        churn_timer_(io_) {
    published_.assign(static_cast<size_t>(options.users), 0);
    for (int u = 0; u < options.users; ++u) {
      user_names_.push_back("bench-user-" + std::to_string(u));
      if (servers.IsGateway()) {
        tokens_.push_back(
            agentwire::gateway::MintHs256Token(kSecret, user_names_.back(), std::chrono::hours(2)));
      }
    }
    if (servers.IsGateway()) {
      agentwire::producers::PublisherConfig config;
      config.client_properties["bootstrap.servers"] = servers.Bootstrap();
      if (options.linger_ms >= 0) {
        config.client_properties["linger.ms"] = std::to_string(options.linger_ms);
      }
      config.topic = kTopic;
      publisher_ = std::make_unique<agentwire::producers::EventPublisher>(config);
    } else {
      for (int i = 0; i < options.http_connections; ++i) {
        http_.push_back(std::make_unique<HttpPublisher>(io_));
      }
    }
    work_ = std::make_unique<WorkGuard>(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
  }

  /// Runs `f` on the I/O thread and returns its result (controller thread only).
  template <typename F>
  auto OnIo(F&& f) {
    std::packaged_task<decltype(f())()> task(std::forward<F>(f));
    auto future = task.get_future();
    asio::post(io_, [&task] { task(); });
    return future.get();
  }

  ~LoadGenerator() {
    OnIo([this] {
      pacer_.cancel();
      churn_timer_.cancel();
      for (auto& client : clients_) CloseClient(*client);
      for (auto& h : http_) {
        beast::error_code ignored;
        h->stream.socket().close(ignored);
      }
    });
    work_.reset();
    io_.stop();
    thread_.join();
    publisher_.reset();
  }

  /// Opens `count` clients (slot i belongs to user i % users) and waits for all `ready`
  /// frames. `cursor_query` is appended to the target (e.g. "cursor=earliest").
  void OpenClients(int count, const std::string& cursor_query = {}) {
    OnIo([&] {
      for (int i = 0; i < count; ++i) {
        auto client = std::make_unique<Client>();
        client->slot = static_cast<int>(clients_.size());
        client->user = client->slot % options_.users;
        if (!cursor_query.empty()) client->cursor_query = cursor_query;
        pending_connects_.push_back(client->slot);
        clients_.push_back(std::move(client));
      }
      PumpConnects();
    });
    WaitReady(std::chrono::seconds(300));
  }

  bool WaitReady(std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      const bool all = OnIo([&] {
        return std::all_of(clients_.begin(), clients_.end(), [](const auto& c) { return c->live; });
      });
      if (all) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::cerr << "warning: not every client became ready\n";
    return false;
  }

  /// Starts publishing at `rate` events/s (0 stops).
  void SetRate(int rate) {
    OnIo([&] {
      rate_ = rate;
      rate_start_ = Clock::now();
      rate_sent_ = 0;
      if (rate > 0 && !pacing_) {
        pacing_ = true;
        Pace();
      }
    });
  }

  /// From now on, latencies of events stamped at or after now are recorded; returns the
  /// samples collected since the previous call.
  std::vector<int64_t> TakeLatencies() {
    return OnIo([&] {
      std::vector<int64_t> out;
      out.swap(latencies_);
      window_start_ns_ = RealtimeNs();
      return out;
    });
  }

  void StartChurn() {
    OnIo([&] {
      churn_round_ = 0;
      ChurnTick();
    });
  }
  void StopChurn() {
    OnIo([&] { churn_timer_.cancel(); });
  }

  uint64_t Published() {
    return OnIo([&] { return total_published_; });
  }
  Totals Snapshot() {
    return OnIo([&] { return totals_; });
  }

  /// Waits until every published event reached every client of its user (or timeout).
  bool WaitDelivered(std::chrono::milliseconds timeout) {
    if (publisher_) publisher_->Flush(std::chrono::seconds(30));
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (OnIo([&] { return Missing() == 0; })) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  /// Final per-client audit: lost = published seqs of the client's user never received.
  Totals Audit() {
    return OnIo([&] {
      totals_.lost = Missing();
      return totals_;
    });
  }

  /// Publishes `count` events for user 0 as fast as the publisher accepts them.
  void PublishBurst(int count) {
    for (int i = 0; i < count; ++i) {
      auto event = MakeEvent(0, ++published_[0], RealtimeNs());
      while (publisher_->Publish(event, {}, std::chrono::milliseconds(1000)) !=
             agentwire::producers::PublishStatus::kAccepted) {
      }
      ++total_published_;
    }
    publisher_->Flush(std::chrono::seconds(60));
  }

  /// Publishes `count` events round-robin over every user, as fast as the publisher accepts.
  void PublishSpread(int count) {
    const int users = static_cast<int>(published_.size());
    for (int i = 0; i < count; ++i) {
      const int user = i % users;
      auto event = MakeEvent(user, ++published_[static_cast<size_t>(user)], RealtimeNs());
      while (publisher_->Publish(event, {}, std::chrono::milliseconds(1000)) !=
             agentwire::producers::PublishStatus::kAccepted) {
      }
      ++total_published_;
    }
    publisher_->Flush(std::chrono::seconds(60));
  }

  uint64_t PublishedFor(int user) {
    return OnIo([&] { return published_[static_cast<size_t>(user)]; });
  }
  void SetPublishedFor(int user, uint64_t value) {
    OnIo([&] { published_[static_cast<size_t>(user)] = value; });
  }

  /// Where clients (re)connect from now on.
  void SetPort(uint16_t port) {
    OnIo([&] { port_ = port; });
  }
  /// Each user's replica (a load balancer that routes by user); unset: SetPort's.
  void SetRoute(std::function<uint16_t(const std::string& user)> route) {
    OnIo([&] { route_ = std::move(route); });
  }
  const std::string& UserName(int user) const { return user_names_[static_cast<size_t>(user)]; }
  /// Audit every client from its user's first event, not from its own first frame (storm:
  /// every client was connected before anything was published).
  /// WebSocket clients opened from now on read with the load generator's own frame parser
  /// (ConnectPlain), so a catch-up measures the server, not Beast's client.
  void UseRawWebSocketReader() { raw_websocket_reader_ = true; }
  void AuditFromFirstEvent() {
    OnIo([&] { audit_from_one_ = true; });
  }
  std::vector<uint64_t> PublishedPerUser() {
    return OnIo([&] { return published_; });
  }
  /// Clients that do not yet have every seq up to `targets[user]`.
  size_t Behind(const std::vector<uint64_t>& targets) {
    return OnIo([&] {
      size_t behind = 0;
      for (const auto& c : clients_) {
        if (c->contiguous < targets[static_cast<size_t>(c->user)]) ++behind;
      }
      return behind;
    });
  }

  /// For the resume scenario: (time of the ready frame, event frames before it) of slot i.
  std::pair<Clock::time_point, uint64_t> ReadyInfo(int slot) {
    return OnIo([&] {
      const auto& c = *clients_[static_cast<size_t>(slot)];
      return std::make_pair(c.ready_at, c.replayed);
    });
  }
  uint64_t FirstSeq(int slot) {
    return OnIo([&] { return clients_[static_cast<size_t>(slot)]->first_seq; });
  }

 private:
  using WorkGuard = asio::executor_work_guard<asio::io_context::executor_type>;

  struct Client {
    int slot = 0;
    int user = 0;
    uint64_t generation = 0;
    std::unique_ptr<websocket::stream<beast::tcp_stream>> ws;
    beast::flat_buffer buffer;
    // --transport sse, or the raw WebSocket reader: the plain TCP stream, what was read and
    // not parsed yet, the request.
    std::unique_ptr<beast::tcp_stream> plain;
    std::string pending;
    std::string request;
    bool head_done = false;
    std::string cursor;
    std::string cursor_query;
    bool live = false;  // ready frame received on the current connection
    bool open = false;
    uint64_t replayed = 0;
    Clock::time_point ready_at;
    std::vector<uint8_t> seen;  // by run_seq
    uint64_t max_seq = 0;
    uint64_t first_seq = 0;
    uint64_t contiguous = 0;  // every seq in [1, contiguous] was received
  };

  struct HttpPublisher {
    explicit HttpPublisher(asio::io_context& io) : stream(io) {}
    beast::tcp_stream stream;
    bool connected = false;
    bool busy = false;
    std::deque<std::pair<int, std::string>> queue;  // user, frame
    http::request<http::string_body> request;
    http::response<http::empty_body> response;
    beast::flat_buffer buffer;
  };

  agentwire::v1::AgentEvent MakeEvent(int user, uint64_t seq, int64_t now_ns) const {
    agentwire::v1::AgentEvent event;
    const auto& name = user_names_[static_cast<size_t>(user)];
    event.set_event_id(name + "-" + std::to_string(seq));
    event.set_user_id(name);
    event.set_thread_id("t-1");
    event.set_run_id("r-" + std::to_string(user));
    event.set_run_seq(static_cast<uint32_t>(seq));
    event.set_agent_name("bench");
    event.mutable_emitted_at()->set_seconds(now_ns / 1'000'000'000);
    event.mutable_emitted_at()->set_nanos(static_cast<int32_t>(now_ns % 1'000'000'000));
    event.mutable_agent_thinking()->set_text("thinking about step " + std::to_string(seq));
    (*event.mutable_attributes())["bench_ns"] = std::to_string(now_ns);
    return event;
  }

  void Publish(int user) {
    const uint64_t seq = ++published_[static_cast<size_t>(user)];
    ++total_published_;
    const auto event = MakeEvent(user, seq, RealtimeNs());
    if (publisher_) {
      if (publisher_->Publish(event) != agentwire::producers::PublishStatus::kAccepted) {
        ++totals_.publish_errors;
      }
      return;
    }
    // The baseline gets the frame the gateway would have built (same size and shape).
    std::string frame =
        R"({"type":"event","cursor":"AQAAAAFhHEt7AAAADAAAAAEAAAAAAAAAAQ","event":)" +
        agentwire::schemas::ToJson(event) + "}";
    auto& h = *http_[next_http_++ % http_.size()];
    h.queue.emplace_back(user, std::move(frame));
    HttpNext(h);
  }

  void HttpNext(HttpPublisher& h) {
    if (h.busy || h.queue.empty()) return;
    h.busy = true;
    if (!h.connected) {
      h.stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_),
                             [this, &h](beast::error_code ec) {
                               if (ec) throw std::runtime_error("publish connect: " + ec.message());
                               h.stream.socket().set_option(tcp::no_delay(true));
                               h.connected = true;
                               h.busy = false;
                               HttpNext(h);
                             });
      return;
    }
    if (options_.http_batch > 1) {
      h.request = {http::verb::post, "/publish-batch", 11};
      std::string body;
      for (int n = 0; n < options_.http_batch && !h.queue.empty(); ++n) {
        auto& [user, frame] = h.queue.front();
        body += user_names_[static_cast<size_t>(user)];
        body += '\t';
        body += frame;
        body += '\n';
        h.queue.pop_front();
      }
      h.request.body() = std::move(body);
    } else {
      auto [user, frame] = std::move(h.queue.front());
      h.queue.pop_front();
      h.request = {http::verb::post, "/publish?user=" + user_names_[static_cast<size_t>(user)], 11};
      h.request.body() = std::move(frame);
    }
    h.request.set(http::field::host, "127.0.0.1");
    h.request.prepare_payload();
    http::async_write(h.stream, h.request, [this, &h](beast::error_code ec, std::size_t) {
      if (ec) throw std::runtime_error("publish write: " + ec.message());
      h.response = {};
      http::async_read(h.stream, h.buffer, h.response, [this, &h](beast::error_code ec, size_t) {
        if (ec) throw std::runtime_error("publish read: " + ec.message());
        if (h.response.result() != http::status::no_content) ++totals_.publish_errors;
        h.busy = false;
        HttpNext(h);
      });
    });
  }

  void Pace() {
    if (rate_ <= 0) {
      pacing_ = false;
      return;
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - rate_start_).count();
    const auto due = static_cast<uint64_t>(elapsed * rate_);
    while (rate_sent_ < due) {
      Publish(static_cast<int>(next_user_++ % static_cast<uint64_t>(options_.users)));
      ++rate_sent_;
    }
    pacer_.expires_after(std::chrono::milliseconds(1));
    pacer_.async_wait([this](beast::error_code ec) {
      if (ec) {
        pacing_ = false;
        return;
      }
      Pace();
    });
  }

  void ChurnTick() {
    const int per_round = std::max(
        1, static_cast<int>(options_.churn_fraction * static_cast<double>(clients_.size())));
    const int groups = std::max(1, static_cast<int>(clients_.size()) / per_round);
    for (auto& c : clients_) {
      if (c->slot % groups != churn_round_ % groups || !c->open) continue;
      CloseClient(*c);
      ++totals_.reconnects;
      pending_connects_.push_back(c->slot);
    }
    ++churn_round_;
    PumpConnects();
    churn_timer_.expires_after(std::chrono::seconds(1));
    churn_timer_.async_wait([this](beast::error_code ec) {
      if (!ec) ChurnTick();
    });
  }

  void CloseClient(Client& c) {
    ++c.generation;
    c.live = false;
    c.open = false;
    if (c.ws) {
      beast::error_code ignored;
      beast::get_lowest_layer(*c.ws).socket().shutdown(tcp::socket::shutdown_both, ignored);
      beast::get_lowest_layer(*c.ws).socket().close(ignored);
    }
    if (c.plain) {
      beast::error_code ignored;
      c.plain->socket().shutdown(tcp::socket::shutdown_both, ignored);
      c.plain->socket().close(ignored);
    }
  }

  // --transport sse: the same client over Server-Sent Events. Each SSE event is turned back
  // into the WebSocket frame it stands for, so OnFrame audits both transports alike.
  // UseRawWebSocketReader(): a WebSocket client that sends the upgrade itself and parses the
  // server's frames from 256 KiB reads. Beast's client reads at most 1,536 bytes per read
  // syscall (its frame buffer), which makes it, not the server, the bottleneck of a catch-up.
  void ConnectPlain(Client& c, uint64_t generation, bool websocket) {
    c.plain = std::make_unique<beast::tcp_stream>(io_);
    c.pending.clear();
    c.head_done = false;
    c.plain->async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), PortFor(c)),
        [this, &c, generation, websocket](beast::error_code ec) {
          if (generation != c.generation) return ConnectDone();
          if (ec) {
            --connecting_;
            return ConnectFailed(c, "connect: " + ec.message());
          }
          c.plain->socket().set_option(tcp::no_delay(true));
          std::string target = "/v1/events";
          if (!c.cursor.empty()) {
            target += "?cursor=" + c.cursor;
          } else if (!c.cursor_query.empty()) {
            target += "?" + c.cursor_query;
          }
          c.request = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
          c.request += websocket ? "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                 : "Accept: text/event-stream\r\n";
          const std::string& token = tokens_[static_cast<size_t>(c.user)];
          c.request += websocket && options_.ws_auth == "subprotocol"
                           ? "Sec-WebSocket-Protocol: agentwire.bearer, " + token + "\r\n\r\n"
                           : "Authorization: Bearer " + token + "\r\n\r\n";
          asio::async_write(*c.plain, asio::buffer(c.request),
                            [this, &c, generation, websocket](beast::error_code ec, std::size_t) {
                              ConnectDone();
                              if (generation != c.generation) return;
                              if (ec) return ConnectFailed(c, "request: " + ec.message());
                              ReadPlain(c, generation, websocket);
                            });
        });
  }

  void ReadPlain(Client& c, uint64_t generation, bool websocket) {
    auto chunk = c.buffer.prepare(256 * 1024);
    c.plain->async_read_some(
        chunk, [this, &c, generation, websocket](beast::error_code ec, std::size_t n) {
          if (generation != c.generation) return;
          if (ec) return PlainEnded(c, ec.message());
          c.buffer.commit(n);
          const auto data = c.buffer.cdata();
          c.pending.append(static_cast<const char*>(data.data()), data.size());
          c.buffer.consume(c.buffer.size());
          if (!c.head_done) {
            const auto end = c.pending.find("\r\n\r\n");
            if (end == std::string::npos) return ReadPlain(c, generation, websocket);
            if (c.pending.compare(0, 12, websocket ? "HTTP/1.1 101" : "HTTP/1.1 200") != 0) {
              std::cerr << "client " << c.slot << " refused: " << c.pending.substr(0, 40) << "\n";
              return ConnectFailed(c, "refused");
            }
            c.pending.erase(0, end + 4);
            c.head_done = true;
          }
          const size_t parsed = websocket ? ParseWebSocketFrames(c) : ParseSseEvents(c);
          if (parsed == std::string::npos) return;  // closed by the server
          c.pending.erase(0, parsed);
          ReadPlain(c, generation, websocket);
        });
  }

  void PlainEnded(Client& c, const std::string& why) {
    ++totals_.unexpected_closes;
    if (totals_.unexpected_closes <= 5) {
      std::cerr << "client " << c.slot << " stream ended: " << why << "\n";
    }
    c.open = false;
    c.live = false;
    pending_connects_.push_back(c.slot);
    PumpConnects();
  }

  /// Server frames (RFC 6455 5.2: unmasked, never fragmented by the gateway) from the front of
  /// c.pending; returns the bytes consumed, or npos when a close frame ended the connection.
  size_t ParseWebSocketFrames(Client& c) {
    const std::string& in = c.pending;
    size_t at = 0;
    while (in.size() - at >= 2) {
      const auto byte = [&](size_t i) { return static_cast<uint8_t>(in[at + i]); };
      const int opcode = byte(0) & 0x0F;
      uint64_t length = byte(1) & 0x7F;
      size_t header = 2;
      if (length >= 126) {
        const size_t extra = length == 126 ? 2 : 8;
        if (in.size() - at < 2 + extra) break;
        length = 0;
        for (size_t i = 0; i < extra; ++i) length = (length << 8) | byte(2 + i);
        header += extra;
      }
      if (in.size() - at < header + length) break;
      const std::string_view payload(in.data() + at + header, length);
      at += header + length;
      if (opcode == 0x1) {
        OnFrame(c, payload);
      } else if (opcode == 0x8) {
        const int code = payload.size() >= 2 ? (static_cast<uint8_t>(payload[0]) << 8) |
                                                   static_cast<uint8_t>(payload[1])
                                             : 0;
        if (code == 1012) ++totals_.closes_1012;
        if (code == 1013) ++totals_.closes_1013;
        PlainEnded(c, "close frame " + std::to_string(code));
        return std::string::npos;
      }  // pings (idle connections only) and pongs: nothing to audit
    }
    return at;
  }

  /// SSE events from the front of c.pending, each turned into its WebSocket frame; returns the
  /// bytes consumed.
  size_t ParseSseEvents(Client& c) {
    size_t at = 0;
    for (size_t end; (end = c.pending.find("\n\n", at)) != std::string::npos; at = end + 2) {
      const std::string_view block(c.pending.data() + at, end - at);
      std::string_view id, type, body;
      for (size_t line = 0; line < block.size();) {
        const auto eol = std::min(block.find('\n', line), block.size());
        const auto text = block.substr(line, eol - line);
        if (text.starts_with("id: ")) id = text.substr(4);
        if (text.starts_with("event: ")) type = text.substr(7);
        if (text.starts_with("data: ")) body = text.substr(6);
        line = eol + 1;
      }
      if (type == "event") {
        OnFrame(c, std::string(R"({"type":"event","cursor":")") + std::string(id) +
                       R"(","event":)" + std::string(body) + "}");
      } else if (type == "ready") {
        OnFrame(c, std::string(R"({"type":"ready",)") + std::string(body.substr(1)));
      } else if (type == "reset") {
        OnFrame(c, R"({"type":"reset"})");
      }
    }
    return at;
  }

  void PumpConnects() {
    while (connecting_ < options_.connect_parallel && !pending_connects_.empty()) {
      const int slot = pending_connects_.front();
      pending_connects_.pop_front();
      Connect(*clients_[static_cast<size_t>(slot)]);
    }
  }

  void Connect(Client& c) {
    ++connecting_;
    const uint64_t generation = ++c.generation;
    c.buffer.clear();
    c.live = false;
    c.open = true;
    c.replayed = 0;
    if (options_.transport == "sse") return ConnectPlain(c, generation, /*websocket=*/false);
    if (raw_websocket_reader_) return ConnectPlain(c, generation, /*websocket=*/true);
    c.ws = std::make_unique<websocket::stream<beast::tcp_stream>>(io_);
    beast::get_lowest_layer(*c.ws).async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), PortFor(c)),
        [this, &c, generation](beast::error_code ec) {
          if (generation != c.generation) return ConnectDone();
          if (ec) {
            --connecting_;  // a refused connect frees its slot too (the replica restarting)
            return ConnectFailed(c, "connect: " + ec.message());
          }
          beast::get_lowest_layer(*c.ws).socket().set_option(tcp::no_delay(true));
          std::string target;
          if (servers_.IsGateway()) {
            target = "/v1/events";
            if (!c.cursor.empty()) {
              target += "?cursor=" + c.cursor;
            } else if (!c.cursor_query.empty()) {
              target += "?" + c.cursor_query;
            }
            c.ws->set_option(websocket::stream_base::decorator(
                [token = tokens_[static_cast<size_t>(c.user)]](websocket::request_type& r) {
                  r.set(http::field::authorization, "Bearer " + token);
                }));
          } else {
            target = "/ws?user=" + user_names_[static_cast<size_t>(c.user)];
          }
          c.ws->async_handshake("127.0.0.1", target, [this, &c, generation](beast::error_code ec) {
            ConnectDone();
            if (generation != c.generation) return;
            if (ec) return ConnectFailed(c, "handshake: " + ec.message());
            if (!servers_.IsGateway()) {
              // The baseline has no ready frame: an open socket is live.
              c.live = true;
              c.ready_at = Clock::now();
            }
            Read(c, generation);
          });
        });
  }

  void ConnectDone() {
    --connecting_;
    PumpConnects();
  }

  void ConnectFailed(Client& c, const std::string& what) {
    if (++connect_failures_ <= 5) std::cerr << "client " << c.slot << " " << what << "\n";
    c.open = false;
    // Retry: the server may have been briefly out of accept backlog.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
    timer->async_wait([this, timer, slot = c.slot](beast::error_code) {
      pending_connects_.push_back(slot);
      PumpConnects();
    });
  }

  void Read(Client& c, uint64_t generation) {
    c.ws->async_read(c.buffer, [this, &c, generation](beast::error_code ec, std::size_t) {
      if (generation != c.generation) return;
      if (ec) {
        ++totals_.unexpected_closes;
        if (c.ws->reason().code == websocket::close_code::service_restart) ++totals_.closes_1012;
        if (c.ws->reason().code == websocket::close_code::try_again_later) ++totals_.closes_1013;
        if (totals_.unexpected_closes <= 5) {
          std::cerr << "client " << c.slot << " closed: " << ec.message() << " (close code "
                    << c.ws->reason().code << " " << c.ws->reason().reason << ")\n";
        }
        c.open = false;
        c.live = false;
        pending_connects_.push_back(c.slot);
        PumpConnects();
        return;
      }
      const auto data = c.buffer.cdata();
      OnFrame(c, std::string_view(static_cast<const char*>(data.data()), data.size()));
      c.buffer.consume(c.buffer.size());
      Read(c, generation);
    });
  }

  void OnFrame(Client& c, std::string_view text) {
    if (text.starts_with(R"({"type":"ready")")) {
      c.cursor.assign(StringField(text, R"("cursor":")"));
      c.live = true;
      c.ready_at = Clock::now();
      return;
    }
    if (text.starts_with(R"({"type":"reset")")) {
      ++totals_.resets;
      return;
    }
    const int64_t now = RealtimeNs();
    if (servers_.IsGateway()) c.cursor.assign(StringField(text, R"("cursor":")"));
    const int64_t seq = NumberField(text, R"("run_seq":)");
    ++totals_.frames;
    if (!c.live) ++c.replayed;
    if (seq <= 0) return;
    if (c.first_seq == 0) c.first_seq = static_cast<uint64_t>(seq);
    if (c.seen.size() <= static_cast<size_t>(seq)) c.seen.resize(static_cast<size_t>(seq) * 2);
    if (c.seen[static_cast<size_t>(seq)]) {
      ++totals_.duplicated;
    } else {
      c.seen[static_cast<size_t>(seq)] = 1;
      if (static_cast<uint64_t>(seq) < c.max_seq) ++totals_.reordered;
    }
    c.max_seq = std::max(c.max_seq, static_cast<uint64_t>(seq));
    while (c.contiguous + 1 < c.seen.size() && c.seen[c.contiguous + 1]) ++c.contiguous;
    const auto stamp = c.live ? StringField(text, R"("bench_ns":")") : std::string_view();
    if (!stamp.empty()) {
      const int64_t sent = std::stoll(std::string(stamp));
      if (sent >= window_start_ns_) latencies_.push_back(now - sent);
    }
  }

  /// Published events of each client's user (from the client's first seq) not yet received.
  uint64_t Missing() const {
    uint64_t missing = 0;
    for (const auto& c : clients_) {
      const uint64_t published = published_[static_cast<size_t>(c->user)];
      const uint64_t from = audit_from_one_ ? 1 : c->first_seq == 0 ? published + 1 : c->first_seq;
      for (uint64_t s = from; s <= published; ++s) {
        if (s >= c->seen.size() || !c->seen[s]) ++missing;
      }
    }
    return missing;
  }

  const Options& options_;
  const Servers& servers_;
  uint16_t port_;
  std::function<uint16_t(const std::string& user)> route_;
  uint16_t PortFor(const Client& c) const {
    return route_ ? route_(user_names_[static_cast<size_t>(c.user)]) : port_;
  }
  asio::io_context io_{1};
  std::unique_ptr<WorkGuard> work_;
  std::thread thread_;
  asio::steady_timer pacer_;
  asio::steady_timer churn_timer_;
  std::unique_ptr<agentwire::producers::EventPublisher> publisher_;
  std::vector<std::unique_ptr<HttpPublisher>> http_;
  size_t next_http_ = 0;
  std::vector<std::string> user_names_;
  std::vector<std::string> tokens_;
  std::vector<uint64_t> published_;
  uint64_t total_published_ = 0;
  std::vector<std::unique_ptr<Client>> clients_;
  std::deque<int> pending_connects_;
  int connecting_ = 0;
  int connect_failures_ = 0;
  int rate_ = 0;
  bool pacing_ = false;
  Clock::time_point rate_start_;
  uint64_t rate_sent_ = 0;
  uint64_t next_user_ = 0;
  int churn_round_ = 0;
  int64_t window_start_ns_ = INT64_MAX;
  std::vector<int64_t> latencies_;
  Totals totals_;
  bool audit_from_one_ = false;
  bool raw_websocket_reader_ = false;
};

// ---- reporting -----------------------------------------------------------------------------

struct Percentiles {
  double p50 = 0, p99 = 0, p999 = 0, max = 0;  // milliseconds
  size_t samples = 0;
};

Percentiles Summarize(std::vector<int64_t> ns) {
  Percentiles p;
  p.samples = ns.size();
  if (ns.empty()) return p;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    const auto index =
        std::min(ns.size() - 1, static_cast<size_t>(q * static_cast<double>(ns.size())));
    return static_cast<double>(ns[index]) / 1e6;
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.p999 = at(0.999);
  p.max = static_cast<double>(ns.back()) / 1e6;
  return p;
}

void PrintHeader(const Options& o) {
  std::printf(
      "# gateway_bench target=%s transport=%s scenario=%s connections=%d users=%d partitions=%d "
      "fetch_wait_ms=%d cache_bytes=%s server_threads=%d linger_ms=%d http_batch=%d load=%s\n",
      o.target.c_str(), o.transport.c_str(), o.scenario.c_str(), o.connections, o.users,
      o.partitions, o.fetch_wait_ms, o.cache_bytes.empty() ? "default" : o.cache_bytes.c_str(),
      o.server_threads, o.linger_ms, o.http_batch, LoadAverage().c_str());
  std::fflush(stdout);
}

bool Clean(const LoadGenerator::Totals& t) {
  return t.lost == 0 && t.duplicated == 0 && t.reordered == 0 && t.resets == 0;
}

/// One measured step at `rate`; returns its p99 (ms) and whether the totals were clean.
std::pair<double, bool> RunStep(const Options& o, const Servers& servers, LoadGenerator& lg,
                                int rate, bool churn) {
  lg.SetRate(rate);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup_seconds));
  lg.TakeLatencies();  // drop warm-up samples; record from here
  const auto before_totals = lg.Snapshot();
  const auto before_published = lg.Published();
  const auto cpu0 = CpuSnapshot::Take(servers);
  if (churn) lg.StartChurn();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.step_seconds));
  if (churn) lg.StopChurn();
  const auto published_at_stop = lg.Published();
  lg.SetRate(0);
  const bool drained = lg.WaitDelivered(std::chrono::seconds(30));
  const auto cpu1 = CpuSnapshot::Take(servers);
  const auto latencies = Summarize(lg.TakeLatencies());
  const auto totals = lg.Audit();
  const double wall = std::chrono::duration<double>(cpu1.at - cpu0.at).count();
  const uint64_t frames = totals.frames - before_totals.frames;
  const double server_cpu = cpu1.server - cpu0.server;
  const double broker_cpu = cpu1.broker - cpu0.broker;
  const double self_cpu = cpu1.self - cpu0.self;
  std::printf(
      "rate=%d published=%llu delivered_frames=%llu wall_s=%.2f delivered_per_s=%.0f "
      "p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f samples=%zu | "
      "cpu_s server=%.2f broker=%.2f loadgen=%.2f (server %.0f%% broker %.0f%% loadgen %.0f%% "
      "of one core) server_us_per_event=%.2f loadgen_us_per_event=%.2f | lost=%llu "
      "duplicated=%llu reordered=%llu resets=%llu reconnects=%llu unexpected_closes=%llu "
      "publish_errors=%llu drained=%s load=%s\n",
      rate, static_cast<unsigned long long>(published_at_stop - before_published),
      static_cast<unsigned long long>(frames), wall, static_cast<double>(frames) / wall,
      latencies.p50, latencies.p99, latencies.p999, latencies.max, latencies.samples, server_cpu,
      broker_cpu, self_cpu, 100 * server_cpu / wall, 100 * broker_cpu / wall, 100 * self_cpu / wall,
      frames ? 1e6 * server_cpu / static_cast<double>(frames) : 0.0,
      frames ? 1e6 * self_cpu / static_cast<double>(frames) : 0.0,
      static_cast<unsigned long long>(totals.lost),
      static_cast<unsigned long long>(totals.duplicated),
      static_cast<unsigned long long>(totals.reordered),
      static_cast<unsigned long long>(totals.resets),
      static_cast<unsigned long long>(totals.reconnects),
      static_cast<unsigned long long>(totals.unexpected_closes),
      static_cast<unsigned long long>(totals.publish_errors), drained ? "yes" : "no",
      LoadAverage().c_str());
  std::fflush(stdout);
  return {latencies.p99, Clean(totals)};
}

int RunSteps(const Options& o, bool churn) {
  Servers servers(o);
  if (servers.IsGateway()) servers.StartGateway(o.cache_bytes);
  LoadGenerator lg(o, servers);
  lg.OpenClients(o.connections);
  bool clean = true;
  for (const int rate : o.rates) {
    const auto [p99, step_clean] = RunStep(o, servers, lg, rate, churn);
    clean = clean && step_clean;
    if (p99 > o.stop_p99_ms) {
      std::printf("# p99 %.1f ms > %.0f ms at %d events/s: stopping\n", p99, o.stop_p99_ms, rate);
      break;
    }
  }
  std::printf("# %s\n", clean ? "clean: lost 0, duplicated 0, reordered 0"
                              : "NOT CLEAN: events lost, duplicated or reordered");
  return clean ? 0 : 1;
}

int RunIdle(const Options& o) {
  Servers servers(o);
  if (servers.IsGateway()) servers.StartGateway(o.cache_bytes);
  LoadGenerator lg(o, servers);
  // One connection first, so one-time allocations (first session, thread-local pools) are not
  // charged to the idle connections.
  lg.OpenClients(1);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const long rss_start = RssKiB(servers.ServerPid());
  const auto start = Clock::now();
  lg.OpenClients(o.connections);
  const double open_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const long rss_after = RssKiB(servers.ServerPid());
  const auto totals = lg.Snapshot();
  std::printf(
      "idle connections=%d open_s=%.1f rss_before_kib=%ld rss_after_kib=%ld "
      "kib_per_connection=%.2f unexpected_closes=%llu load=%s\n",
      o.connections, open_s, rss_start, rss_after,
      static_cast<double>(rss_after - rss_start) / o.connections,
      static_cast<unsigned long long>(totals.unexpected_closes), LoadAverage().c_str());
  return 0;
}

int RunResume(Options o) {
  o.users = 1;
  Servers servers(o, 1);
  const size_t cached = servers.StartGateway(o.cache_bytes.empty() ? "1073741824" : o.cache_bytes);
  const size_t uncached = servers.StartGateway("0");
  // Live observers on both replicas: when they have every event, both tailers have dispatched
  // (and the first filled its cache with) the whole partition.
  LoadGenerator observer_cached(o, servers, cached);
  LoadGenerator observer_uncached(o, servers, uncached);
  observer_cached.OpenClients(1);
  observer_uncached.OpenClients(1);
  std::printf("publishing %d events for one user...\n", o.resume_events);
  std::fflush(stdout);
  observer_cached.PublishBurst(o.resume_events);
  observer_uncached.SetPublishedFor(0, observer_cached.PublishedFor(0));
  if (!observer_cached.WaitDelivered(std::chrono::seconds(120)) ||
      !observer_uncached.WaitDelivered(std::chrono::seconds(120))) {
    std::printf("observers did not receive every event\n");
  }
  const auto marks =
      agentwire::testing::Watermarks(servers.Bootstrap(), kTopic, std::chrono::seconds(10));
  const auto& mark = marks.at(0);
  const uint64_t retained = static_cast<uint64_t>(mark.high - mark.low);
  std::printf("partition 0 low=%lld high=%lld retained=%llu\n", static_cast<long long>(mark.low),
              static_cast<long long>(mark.high), static_cast<unsigned long long>(retained));
  bool clean = true;
  for (const auto& [index, label] :
       std::vector<std::pair<size_t, const char*>>{{cached, "cache"}, {uncached, "kafka"}}) {
    LoadGenerator lg(o, servers, index);
    if (o.transport == "websocket") lg.UseRawWebSocketReader();
    lg.SetPublishedFor(0, observer_cached.PublishedFor(0));
    const auto cpu0 = CpuSnapshot::Take(servers, index);
    const auto start = Clock::now();
    lg.OpenClients(1, "cursor=earliest");
    const auto [ready_at, replayed] = lg.ReadyInfo(0);
    const auto cpu1 = CpuSnapshot::Take(servers, index);
    const double seconds = std::chrono::duration<double>(ready_at - start).count();
    const auto totals = lg.Audit();
    const uint64_t first = lg.FirstSeq(0);
    // The cache may still hold events the mock broker already dropped (its ~5 MiB cap), so
    // the cache path can replay more than Kafka retains; either way the replay must be one
    // gapless, duplicate-free run of seqs up to the last published one.
    const bool ok = replayed >= retained && totals.duplicated == 0 && totals.reordered == 0 &&
                    totals.lost == 0 && totals.resets == 0;
    clean = clean && ok;
    std::printf(
        "resume from %s: replayed=%llu (first seq %llu) in %.3f s = %.0f events/s | cpu_s "
        "gateway=%.2f broker=%.2f loadgen=%.2f | lost=%llu duplicated=%llu "
        "reordered=%llu resets=%llu %s load=%s\n",
        label, static_cast<unsigned long long>(replayed), static_cast<unsigned long long>(first),
        seconds, static_cast<double>(replayed) / seconds, cpu1.server - cpu0.server,
        cpu1.broker - cpu0.broker, cpu1.self - cpu0.self,
        static_cast<unsigned long long>(totals.lost),
        static_cast<unsigned long long>(totals.duplicated),
        static_cast<unsigned long long>(totals.reordered),
        static_cast<unsigned long long>(totals.resets), ok ? "ok" : "MISMATCH",
        LoadAverage().c_str());
    std::fflush(stdout);
  }
  return clean ? 0 : 1;
}

std::optional<double> Metric(uint16_t port, const std::string& name);

/// A figure for the report: "absent" when the replica does not export the metric (a renamed
/// metric must not read as a measured 0).
std::string Shown(const std::optional<double>& value) {
  if (!value) return "absent";
  char text[64];
  std::snprintf(text, sizeof(text), "%.0f", *value);
  return text;
}

/// CPU seconds of each of `pid`'s threads, summed by thread name (librdkafka names its own
/// "rdk:main", "rdk:broker1", ...).
std::map<std::string, double> ThreadCpuSeconds(pid_t pid) {
  std::map<std::string, double> by_name;
  std::error_code ignored;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& entry : std::filesystem::directory_iterator(tasks, ignored)) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    std::getline(comm, name);
    std::ifstream in(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto paren = text.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(text.substr(paren + 2));
    std::string field;
    unsigned long long ticks = 0;
    for (int index = 3; rest >> field && index <= 15; ++index) {
      if (index == 14 || index == 15) ticks += std::stoull(field);
    }
    by_name[name] += static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  return by_name;
}

/// "name=cpu_s,..." of what each thread name spent between two ThreadCpuSeconds, largest first.
std::string ThreadCpuDelta(const std::map<std::string, double>& before,
                           const std::map<std::string, double>& after) {
  std::vector<std::pair<double, std::string>> spent;
  for (const auto& [name, seconds] : after) {
    const auto was = before.find(name);
    const double delta = seconds - (was != before.end() ? was->second : 0.0);
    if (delta >= 0.005) spent.emplace_back(delta, name);
  }
  std::sort(spent.rbegin(), spent.rend());
  std::string text;
  for (const auto& [seconds, name] : spent) {
    char item[96];
    std::snprintf(item, sizeof(item), "%s%s=%.2f", text.empty() ? "" : ",", name.c_str(), seconds);
    text += item;
  }
  return text;
}

/// Ingest at a steady rate (issue 26): what a replica pays while it tails, each partition's
/// fetch holding a few events. `agentwire emit simulate` (realistic runs, --no-run-control: the
/// bench's broker has no control topic) publishes --ingest-rate events/s over --users users; the
/// gateway's CPU over --step-seconds (after --warmup-seconds) per consumed event, beside its idle
/// floor: its CPU over an equally long window before, every partition tailed, nothing published.
bool RunSteadyIngest(const Options& o) {
  Servers servers(o);
  servers.StartGateway(o.cache_bytes);
  const pid_t gateway = servers.ServerPid(0);
  const char* kConsumed = "agentwire_gateway_kafka_messages_total";
  const auto window = std::chrono::duration<double>(o.step_seconds);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // past the start-up
  const auto idle0 = CpuSnapshot::Take(servers, 0);
  std::this_thread::sleep_for(window);
  const auto idle1 = CpuSnapshot::Take(servers, 0);
  const double idle_seconds = std::chrono::duration<double>(idle1.at - idle0.at).count();
  const double floor_per_s = (idle1.server - idle0.server) / idle_seconds;

  // Longer than the window: the simulator ends its open runs in a burst when it stops, which
  // must not fall into the window (it is killed once the window closes).
  const double duration = o.warmup_seconds + o.step_seconds + 30;
  Subprocess emit({o.agentwire, "emit", "simulate", "--brokers", servers.Bootstrap(), "--topic",
                   kTopic, "--rate", std::to_string(o.ingest_rate), "--users",
                   std::to_string(o.users), "--duration",
                   std::to_string(static_cast<int>(duration)) + "s", "--no-run-control",
                   "--log-level", "warn"});
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup_seconds));
  const double consumed0 = Metric(servers.Port(), kConsumed).value_or(0);
  const auto threads0 = ThreadCpuSeconds(gateway);
  const auto cpu0 = CpuSnapshot::Take(servers, 0);
  const double emit0 = ProcessCpuSeconds(emit.Pid());
  std::this_thread::sleep_for(window);
  const auto cpu1 = CpuSnapshot::Take(servers, 0);
  const auto threads1 = ThreadCpuSeconds(gateway);
  const double emit1 = ProcessCpuSeconds(emit.Pid());
  const double consumed = Metric(servers.Port(), kConsumed).value_or(0) - consumed0;
  const bool emitting = emit.Running();
  emit.Kill();
  const double seconds = std::chrono::duration<double>(cpu1.at - cpu0.at).count();
  const double cpu = cpu1.server - cpu0.server;
  const double floor = floor_per_s * seconds;
  auto per_event = [consumed](double cpu_s) { return consumed > 0 ? cpu_s * 1e6 / consumed : 0.0; };
  std::printf(
      "ingest steady rate=%d users=%d partitions=%d fetch_wait_ms=%d window_s=%.2f consumed=%.0f "
      "(%.0f/s) | cpu_s gateway=%.3f idle_floor=%.3f (%.3f over %.2f s idle) broker=%.2f "
      "emit=%.2f | gateway_us_per_consumed_event total=%.2f floor=%.2f above_floor=%.2f | "
      "threads %s | load=%s\n",
      o.ingest_rate, o.users, o.partitions, o.fetch_wait_ms, seconds, consumed, consumed / seconds,
      cpu, floor, idle1.server - idle0.server, idle_seconds, cpu1.broker - cpu0.broker,
      emit1 - emit0, per_event(cpu), per_event(floor), per_event(cpu - floor),
      ThreadCpuDelta(threads0, threads1).c_str(), LoadAverage().c_str());
  std::fflush(stdout);
  if (!emitting) {
    std::cerr << "gateway_bench: emit simulate ended early: " << emit.Describe() << "\n";
  }
  // Paced at the rate: anything far below means the publisher (or the machine) fell behind.
  return emitting && consumed >= 0.8 * o.ingest_rate * seconds;
}

/// Bulk catch-up: no client connected, --resume-events events spread over --users users
/// published as fast as possible; the gateway's CPU seconds while its tailer consumes them, per
/// consumed event (issue 12's "ingest <= 1 us per consumed event without a subscriber").
bool RunBulkIngest(const Options& o) {
  Servers servers(o);
  servers.StartGateway(o.cache_bytes);
  LoadGenerator lg(o, servers);
  const char* kConsumed = "agentwire_gateway_kafka_messages_total";
  const double consumed0 = Metric(servers.Port(), kConsumed).value_or(0);
  const auto cpu0 = CpuSnapshot::Take(servers, 0);
  const auto start = Clock::now();
  lg.PublishSpread(o.resume_events);
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  double consumed = 0;
  while ((consumed = Metric(servers.Port(), kConsumed).value_or(0) - consumed0) < o.resume_events &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto cpu1 = CpuSnapshot::Take(servers, 0);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = cpu1.server - cpu0.server;
  std::printf(
      "ingest events=%d users=%d consumed=%.0f wall_s=%.2f | cpu_s gateway=%.3f broker=%.2f "
      "loadgen=%.2f | gateway_us_per_consumed_event=%.2f load=%s\n",
      o.resume_events, o.users, consumed, seconds, cpu, cpu1.broker - cpu0.broker,
      cpu1.self - cpu0.self, consumed > 0 ? cpu * 1e6 / consumed : 0.0, LoadAverage().c_str());
  std::fflush(stdout);
  return consumed >= o.resume_events;
}

/// Ingest cost with no client connected: the steady shape (with --ingest-rate), then the bulk
/// one (unless --resume-events 0).
int RunIngest(const Options& o) {
  bool ok = true;
  if (o.ingest_rate > 0) ok = RunSteadyIngest(o);
  if (o.resume_events > 0) ok = RunBulkIngest(o) && ok;
  return ok ? 0 : 1;
}

/// Two replicas behind a load balancer that routes by user (users of even partitions to the
/// first, odd to the second), once with --tail all and once with --tail auto: what each replica
/// consumes from Kafka and the CPU it spends, for the same --connections clients and events at
/// the first --rates for --step-seconds (issue 12's "two replicas in auto vs all").
int RunTail(const Options& o) {
  const int rate = o.rates.front();
  bool clean = true;
  for (const std::string mode : {"all", "auto"}) {
    Servers servers(o);
    const size_t a = servers.StartGateway(o.cache_bytes, 0, {"--tail", mode});
    const size_t b = servers.StartGateway(o.cache_bytes, 0, {"--tail", mode});
    LoadGenerator lg(o, servers, a);
    const uint16_t port_a = servers.Port(a);
    const uint16_t port_b = servers.Port(b);
    const int partitions = o.partitions;
    lg.SetRoute([=](const std::string& user) {
      return agentwire::PartitionForKey(user, partitions) % 2 == 0 ? port_a : port_b;
    });
    lg.OpenClients(o.connections);
    const char* kConsumed = "agentwire_gateway_kafka_messages_total";
    const double consumed_a0 = Metric(port_a, kConsumed).value_or(0);
    const double consumed_b0 = Metric(port_b, kConsumed).value_or(0);
    const double cpu_a0 = ProcessCpuSeconds(servers.ServerPid(a));
    const double cpu_b0 = ProcessCpuSeconds(servers.ServerPid(b));
    lg.SetRate(rate);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.step_seconds));
    lg.SetRate(0);
    const bool delivered = lg.WaitDelivered(std::chrono::seconds(60));
    const auto totals = lg.Audit();
    const double consumed_a = Metric(port_a, kConsumed).value_or(0) - consumed_a0;
    const double consumed_b = Metric(port_b, kConsumed).value_or(0) - consumed_b0;
    const double cpu_a = ProcessCpuSeconds(servers.ServerPid(a)) - cpu_a0;
    const double cpu_b = ProcessCpuSeconds(servers.ServerPid(b)) - cpu_b0;
    const auto published = static_cast<double>(lg.Published());
    const bool ok = delivered && totals.lost == 0 && totals.duplicated == 0 &&
                    totals.reordered == 0 && totals.resets == 0;
    clean = clean && ok;
    std::printf(
        "tail=%s published=%.0f frames=%llu | consumed A=%.0f (%.0f%%) B=%.0f (%.0f%%) | cpu_s "
        "A=%.3f B=%.3f | tailed partitions A=%s B=%s | lost=%llu duplicated=%llu "
        "reordered=%llu %s load=%s\n",
        mode.c_str(), published, static_cast<unsigned long long>(totals.frames), consumed_a,
        100 * consumed_a / published, consumed_b, 100 * consumed_b / published, cpu_a, cpu_b,
        Shown(Metric(port_a, "agentwire_gateway_tailed_partitions")).c_str(),
        Shown(Metric(port_b, "agentwire_gateway_tailed_partitions")).c_str(),
        static_cast<unsigned long long>(totals.lost),
        static_cast<unsigned long long>(totals.duplicated),
        static_cast<unsigned long long>(totals.reordered), ok ? "ok" : "MISMATCH",
        LoadAverage().c_str());
    std::fflush(stdout);
  }
  return clean ? 0 : 1;
}

/// Reads one sample's value from the Prometheus text of replica `port`; nullopt when absent.
std::optional<double> Metric(uint16_t port, const std::string& name) {
  const auto response = agentwire::testing::HttpGet(port, "/metrics");
  std::istringstream lines(response.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with(name + " ")) return std::stod(line.substr(name.size() + 1));
  }
  return std::nullopt;
}

/// --storm-past-retention, during the downtime: filler until Kafka has deleted everything
/// published before the kill (`kill_highs`: every client's cursor lies before the log start),
/// then a wait until the archive has committed past the new log starts, so it holds all of it,
/// and on to the log's end: a real archive tails the end of the log, while this one would still
/// be writing ~5 MiB of filler per partition into the same PostgreSQL during the catch-up.
void PushPastRetention(const Servers& servers, ColdTier& archive, const Offsets& kill_highs) {
  const auto start = Clock::now();
  Offsets lows_before;
  for (const auto& [partition, marks] :
       agentwire::testing::Watermarks(servers.Bootstrap(), kTopic, std::chrono::seconds(10))) {
    lows_before[partition] = marks.low;
  }
  Filler filler(servers.Bootstrap(), static_cast<int>(kill_highs.size()));
  const auto lows = filler.PushPast(kill_highs);
  const auto filled_at = Clock::now();
  archive.WaitCommitted(lows, std::chrono::seconds(120));
  const auto past_lows_at = Clock::now();
  archive.WaitCommitted(HighWatermarks(servers.Bootstrap()), std::chrono::seconds(120));
  std::printf(
      "past retention: %llu filler events in %.2f s moved the log starts past the kill's high "
      "watermarks (%s); the archive committed past them %.2f s later and reached the log's end "
      "%.2f s after that\n",
      static_cast<unsigned long long>(filler.Published()),
      std::chrono::duration<double>(filled_at - start).count(), Moves(lows_before, lows).c_str(),
      std::chrono::duration<double>(past_lows_at - filled_at).count(),
      std::chrono::duration<double>(Clock::now() - past_lows_at).count());
  std::fflush(stdout);
}

int RunStorm(const Options& o) {
  Servers servers(o);
  std::unique_ptr<ColdTier> archive;
  std::vector<std::string> replica_args;
  if (o.storm_past_retention) {
    archive = std::make_unique<ColdTier>(o, servers.Bootstrap());
    replica_args = {"--archive-dsn", archive->Dsn()};
  }
  const size_t first = servers.StartGateway(o.cache_bytes, 0, replica_args);
  const uint16_t port = servers.Port(first);
  size_t replacement = 0;
  if (o.storm_signal == "term") replacement = servers.StartGateway(o.cache_bytes);
  LoadGenerator lg(o, servers, first);
  lg.AuditFromFirstEvent();
  const auto open_start = Clock::now();
  lg.OpenClients(o.connections);
  std::printf("opened %d clients for %d users in %.1f s\n", o.connections, o.users,
              std::chrono::duration<double>(Clock::now() - open_start).count());
  const int rate = o.rates.empty() ? 2000 : o.rates.front();
  lg.SetRate(rate);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.storm_after_seconds));

  const auto signal_at = Clock::now();
  double replacement_cpu0 = 0;
  if (o.storm_signal == "kill") {
    servers.SignalGateway(first, SIGKILL);
    servers.WaitGatewayExit(first, std::chrono::seconds(10));
    // Every cursor is at most the high watermark of its partition now.
    const auto kill_highs = HighWatermarks(servers.Bootstrap());
    // A longer outage makes every cursor older: more to catch up per client.
    std::this_thread::sleep_for(std::chrono::duration<double>(o.storm_downtime_seconds));
    if (archive) PushPastRetention(servers, *archive, kill_highs);
    // The replacement binds the same port; clients retry until it accepts.
    replacement = servers.StartGateway(o.cache_bytes, port, replica_args);
  } else {
    replacement_cpu0 = ProcessCpuSeconds(servers.ServerPid(replacement));
    lg.SetPort(servers.Port(replacement));
    servers.SignalGateway(first, SIGTERM);
  }
  const auto ready_at = Clock::now();
  const double postgres_cpu0 = archive ? ColdTier::PostgresCpuSeconds() : 0;
  const auto targets = lg.PublishedPerUser();
  size_t behind = lg.Behind(targets);
  const auto deadline = ready_at + std::chrono::duration<double>(o.storm_timeout_seconds);
  while (behind > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    behind = lg.Behind(targets);
  }
  const auto caught_up_at = Clock::now();
  // PostgreSQL's CPU during the catch-up: the archive's reads (its writes are only the live
  // events then).
  const double postgres_cpu = archive ? ColdTier::PostgresCpuSeconds() - postgres_cpu0 : 0;
  const double catch_up_s = std::chrono::duration<double>(caught_up_at - ready_at).count();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.storm_tail_seconds));
  lg.SetRate(0);
  const bool drained = lg.WaitDelivered(std::chrono::seconds(60));
  const auto totals = lg.Audit();
  const pid_t pid = servers.ServerPid(replacement);
  const double cpu = ProcessCpuSeconds(pid) - replacement_cpu0;
  const long peak_rss = PeakRssKiB(pid);
  const uint16_t replacement_port = servers.Port(replacement);
  const auto from_cache =
      Metric(replacement_port, R"(agentwire_gateway_resumes_total{source="cache"})");
  const auto from_kafka =
      Metric(replacement_port, R"(agentwire_gateway_resumes_total{source="kafka"})");
  const auto from_archive =
      Metric(replacement_port, R"(agentwire_gateway_resumes_total{source="archive"})");
  const auto archive_reads = Metric(replacement_port, "agentwire_gateway_archive_reads_total");
  const auto archive_rows = Metric(replacement_port, "agentwire_gateway_archive_rows_total");
  const auto archive_read_seconds =
      Metric(replacement_port, "agentwire_gateway_archive_read_seconds_sum");
  const auto catchup_peak =
      Metric(replacement_port, "agentwire_gateway_catchup_buffered_bytes_peak");
  const auto extended = Metric(replacement_port, "agentwire_gateway_catchup_extended_total");
  const auto sessions = Metric(replacement_port, "agentwire_gateway_connections");
  const auto readies = Metric(replacement_port, "agentwire_gateway_time_to_ready_seconds_count");
  const bool caught_up = behind == 0;
  const bool within_budget =
      o.max_catchup_buffered < 0 ||
      (catchup_peak && *catchup_peak <= static_cast<double>(o.max_catchup_buffered));
  // A Kafka-backed storm that resumed from anywhere else did not test the Kafka path.
  const bool from_kafka_enough =
      o.min_kafka_resumes < 0 ||
      (from_kafka && *from_kafka >= static_cast<double>(o.min_kafka_resumes));
  // Likewise a storm past retention that did not read the archive.
  const bool from_archive_enough =
      o.min_archive_resumes < 0 ||
      (from_archive && *from_archive >= static_cast<double>(o.min_archive_resumes));
  const bool ok = Clean(totals) && caught_up && drained && totals.closes_1013 == 0 &&
                  within_budget && from_kafka_enough && from_archive_enough;
  std::printf(
      "storm signal=%s clients=%d users=%d rate=%d | replacement ready %.2f s after the signal; "
      "all clients caught up %.2f s after ready (%zu behind) | replacement cpu_s=%.2f "
      "peak_rss_mib=%.1f sessions=%s ready_sent=%s resumes cache=%s kafka=%s archive=%s "
      "archive_reads=%s archive_rows=%s archive_read_s_total=%.2f postgres_cpu_s=%.2f "
      "catchup_extended=%s "
      "catchup_buffered_peak_bytes=%s | published=%llu frames=%llu lost=%llu duplicated=%llu "
      "reordered=%llu resets=%llu closes_1012=%llu closes_1013=%llu reconnects_after_close=%llu "
      "drained=%s %s load=%s\n",
      o.storm_signal.c_str(), o.connections, o.users, rate,
      std::chrono::duration<double>(ready_at - signal_at).count(), catch_up_s, behind, cpu,
      static_cast<double>(peak_rss) / 1024.0, Shown(sessions).c_str(), Shown(readies).c_str(),
      Shown(from_cache).c_str(), Shown(from_kafka).c_str(), Shown(from_archive).c_str(),
      Shown(archive_reads).c_str(), Shown(archive_rows).c_str(), archive_read_seconds.value_or(0),
      postgres_cpu, Shown(extended).c_str(), Shown(catchup_peak).c_str(),
      static_cast<unsigned long long>(lg.Published()),
      static_cast<unsigned long long>(totals.frames), static_cast<unsigned long long>(totals.lost),
      static_cast<unsigned long long>(totals.duplicated),
      static_cast<unsigned long long>(totals.reordered),
      static_cast<unsigned long long>(totals.resets),
      static_cast<unsigned long long>(totals.closes_1012),
      static_cast<unsigned long long>(totals.closes_1013),
      static_cast<unsigned long long>(totals.unexpected_closes), drained ? "yes" : "no",
      ok ? "ok" : "FAILED", LoadAverage().c_str());
  std::fflush(stdout);
  return ok ? 0 : 1;
}

/// Resume throughput from the archive (issue 23): one user's --resume-events events, archived
/// and then deleted from Kafka, resumed by one client from the cursor before the first of them
/// through a fresh replica with --archive-dsn.
int RunArchiveResume(Options o) {
  o.users = 1;
  Servers servers(o, 1);
  ColdTier archive(o, servers.Bootstrap());
  LoadGenerator lg(o, servers);  // publishes now; its client connects once the replica runs
  lg.AuditFromFirstEvent();
  if (o.transport == "websocket") lg.UseRawWebSocketReader();
  const std::string& user = lg.UserName(0);
  std::printf("publishing %d events for one user into the archive...\n", o.resume_events);
  std::fflush(stdout);
  const auto publish_start = Clock::now();
  // In batches the archive commits before the next is published: the embedded Kafka keeps ~5 MiB
  // per partition and would delete early events the archive had not read yet.
  constexpr int kBatch = 20'000;
  for (int sent = 0; sent < o.resume_events; sent += kBatch) {
    lg.PublishBurst(std::min(kBatch, o.resume_events - sent));
    archive.WaitCommitted(HighWatermarks(servers.Bootstrap()), std::chrono::seconds(120));
  }
  const auto published_at = Clock::now();
  const auto highs = HighWatermarks(servers.Bootstrap());
  Filler filler(servers.Bootstrap(), 1);
  const auto lows = filler.PushPast(highs);
  // To the log's end, not just past the log start: no filler is written during the measurement.
  archive.WaitCommitted(HighWatermarks(servers.Bootstrap()), std::chrono::seconds(120));
  const auto [rows, first_offset] = archive.RowsOf(user);
  std::printf(
      "published and archived in %.1f s; %llu filler events moved the log start to %lld (high "
      "was %lld); the archive holds %lld of the user's events from offset %lld\n",
      std::chrono::duration<double>(published_at - publish_start).count(),
      static_cast<unsigned long long>(filler.Published()), static_cast<long long>(lows.at(0)),
      static_cast<long long>(highs.at(0)), static_cast<long long>(rows),
      static_cast<long long>(first_offset));
  std::fflush(stdout);
  if (rows != o.resume_events || first_offset < 0) {
    std::printf("the archive does not hold every event: no figure\n");
    return 1;
  }

  // A fresh replica: its warm start reads only what Kafka still holds (the filler).
  const size_t gateway = servers.StartGateway(o.cache_bytes, 0, {"--archive-dsn", archive.Dsn()});
  lg.SetPort(servers.Port(gateway));
  const std::string cursor =
      agentwire::EncodeCursor(agentwire::TopicIdentity::Of(kTopic, 1, 1).CursorAt(0, first_offset));
  const double postgres0 = ColdTier::PostgresCpuSeconds();
  const auto cpu0 = CpuSnapshot::Take(servers, gateway);
  const auto start = Clock::now();
  lg.OpenClients(1, "cursor=" + cursor);
  const auto [ready_at, replayed] = lg.ReadyInfo(0);
  const auto cpu1 = CpuSnapshot::Take(servers, gateway);
  const double postgres = ColdTier::PostgresCpuSeconds() - postgres0;
  const double seconds = std::chrono::duration<double>(ready_at - start).count();
  const auto totals = lg.Audit();
  const uint16_t port = servers.Port(gateway);
  const auto from_archive = Metric(port, R"(agentwire_gateway_resumes_total{source="archive"})");
  const auto reads = Metric(port, "agentwire_gateway_archive_reads_total");
  const auto read_rows = Metric(port, "agentwire_gateway_archive_rows_total");
  const auto read_seconds = Metric(port, "agentwire_gateway_archive_read_seconds_sum");
  const auto errors = Metric(port, "agentwire_gateway_archive_errors_total");
  const bool ok = replayed == static_cast<uint64_t>(o.resume_events) && Clean(totals) &&
                  from_archive && *from_archive >= 1;
  std::printf(
      "resume from archive: replayed=%llu (first seq %llu) in %.3f s = %.0f events/s | cpu_s "
      "gateway=%.2f postgres=%.2f loadgen=%.2f | archive resumes=%s reads=%s rows=%s "
      "read_s_total=%.3f (%.2f ms per read) errors=%s | lost=%llu duplicated=%llu reordered=%llu "
      "resets=%llu %s load=%s\n",
      static_cast<unsigned long long>(replayed), static_cast<unsigned long long>(lg.FirstSeq(0)),
      seconds, static_cast<double>(replayed) / seconds, cpu1.server - cpu0.server, postgres,
      cpu1.self - cpu0.self, Shown(from_archive).c_str(), Shown(reads).c_str(),
      Shown(read_rows).c_str(), read_seconds.value_or(0),
      reads && *reads > 0 ? 1000 * read_seconds.value_or(0) / *reads : 0.0, Shown(errors).c_str(),
      static_cast<unsigned long long>(totals.lost),
      static_cast<unsigned long long>(totals.duplicated),
      static_cast<unsigned long long>(totals.reordered),
      static_cast<unsigned long long>(totals.resets), ok ? "ok" : "MISMATCH",
      LoadAverage().c_str());
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  RaiseFileLimit();  // before the servers start: they inherit it
  PrintHeader(options);
  try {
    if (options.scenario == "steps") return RunSteps(options, false);
    if (options.scenario == "churn") return RunSteps(options, true);
    if (options.scenario == "idle") return RunIdle(options);
    if (options.scenario == "ingest") return RunIngest(options);
    if (options.scenario == "resume") return RunResume(options);
    if (options.scenario == "storm") return RunStorm(options);
    if (options.scenario == "tail") return RunTail(options);
    if (options.scenario == "archive_resume") return RunArchiveResume(options);
  } catch (const std::exception& e) {
    std::cerr << "gateway_bench: " << e.what() << "\n";
    return 3;
  }
  Usage("unknown scenario " + options.scenario);
}
