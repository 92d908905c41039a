// Run control, measured as a user lives it (docs/runs.md), through the embedded Kafka and one
// gateway replica:
//
// --scenario stop: from a chat window's cancel frame to the agent's cancel callback, and to the
//   run's `cancelled` end in that window. A worker (RunEmitter + RunControl, in this process so
//   both clocks are one) keeps `--runs` runs open, each streaming a delta every 100 ms (Stop
//   checked every 2 ms); the client stops one run at a time at a steady `--rate`, waits for its
//   end, and a new run takes its place.
//     build/ci/tests/bench/run_control_bench --scenario stop --cancels 300 --rate 10 --runs 50
//
// --scenario kill: from `kill -9` of a worker process (`agentwire emit simulate`, default lease
//   15 s and heartbeat 5 s) to the `worker_lost` end of each of its open runs in the users'
//   WebSocket windows, with `agentwire supervisor` at its defaults, `--rounds` times.
//     build/ci/tests/bench/run_control_bench --scenario kill --rounds 3 --users 20
//
// Prints p50/p90/p99/max. The embedded Kafka holds each empty fetch for its full
// fetch.wait.max.ms (10 ms for RunControl's control reader, 5 ms for the gateway's tail, 20 ms
// for the supervisor): on a real broker those hops wake up when data arrives, so the Stop
// figures are an upper bound; the kill figures are dominated by the lease.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/run_control.hpp"
#include "agentwire/producers/run_emitter.hpp"
#include "support/gateway_harness.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using namespace agentwire;

struct OpenRun {
  std::unique_ptr<producers::RunEmitter> emitter;
  std::atomic<bool> stop_seen{false};
};

// When each Stop was sent (by the client) and how long its callback took (by the worker).
struct Timings {
  std::mutex mutex;
  std::map<std::string, Clock::time_point> sent_at;
  std::vector<double> to_callback;
};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

void Report(const char* what, const std::vector<double>& ms) {
  std::printf("%-28s n=%zu p50=%.1f ms p90=%.1f ms p99=%.1f ms max=%.1f ms\n", what, ms.size(),
              Percentile(ms, 0.5), Percentile(ms, 0.9), Percentile(ms, 0.99),
              ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end()));
}

// kill -9 of a worker -> worker_lost at each open run's user's WebSocket, `rounds` times.
int KillScenario(int rounds, int users) {
  testing::GatewayHarness harness(12);
  harness.StartGateway();
  const auto& brokers = harness.Kafka().BootstrapServers();
  testing::Subprocess supervisor({testing::AgentwireBinary(), "supervisor", "--brokers", brokers,
                                  "--topic", harness.Topic(), "--metrics-port", "0"});
  std::vector<double> seconds;
  for (int round = 0; round < rounds; ++round) {
    const std::string prefix = "kill" + std::to_string(round) + "-";
    std::vector<std::unique_ptr<testing::WsClient>> clients;
    for (int u = 1; u <= users; ++u) {
      char user[64];
      std::snprintf(user, sizeof(user), "%s%04d", prefix.c_str(), u);
      auto& client = *clients.emplace_back(std::make_unique<testing::WsClient>());
      if (client.Connect(harness.ClientOptions(user)).status != 101) return 1;
    }
    testing::Subprocess worker(
        {testing::AgentwireBinary(), "emit", "simulate", "--brokers", brokers, "--topic",
         harness.Topic(), "--users", std::to_string(users), "--rate", std::to_string(users * 2),
         "--duration", "0", "--failure-ratio", "0", "--user-prefix", prefix});
    // Per client: open runs (started, no end yet) as the window shows them.
    std::vector<std::map<std::string, bool>> open(clients.size());
    auto drain = [&](std::chrono::milliseconds wait, std::vector<double>* ended_after,
                     Clock::time_point killed_at) {
      for (size_t c = 0; c < clients.size(); ++c) {
        while (const auto text = clients[c]->Read(wait)) {
          const auto frame = nlohmann::json::parse(*text, nullptr, false);
          if (frame.is_discarded() || frame.value("type", "") != "event") continue;
          const auto& event = frame["event"];
          const auto type = event.value("type", "");
          const auto run = event.value("run_id", "");
          if (type == "agent_started") open[c][run] = true;
          if (type == "agent_completed" || type == "agent_failed") {
            if (open[c].erase(run) > 0 && ended_after != nullptr) {
              ended_after->push_back(
                  std::chrono::duration<double>(Clock::now() - killed_at).count());
            }
          }
          wait = 1ms;
        }
      }
    };
    const auto until = Clock::now() + 6s;
    while (Clock::now() < until) drain(50ms, nullptr, {});
    worker.Kill();  // SIGKILL: no terminal events, no more heartbeats
    const auto killed_at = Clock::now();
    size_t open_at_kill = 0;
    drain(200ms, nullptr, {});  // what was in flight at the kill is not a supervisor's end
    for (const auto& runs : open) open_at_kill += runs.size();
    std::vector<double> round_seconds;
    while (Clock::now() < killed_at + 60s) {
      size_t still_open = 0;
      for (const auto& runs : open) still_open += runs.size();
      if (still_open == 0) break;
      drain(100ms, &round_seconds, killed_at);
    }
    size_t still_open = 0;
    for (const auto& runs : open) still_open += runs.size();
    std::printf("round %d: %zu runs open at kill -9, %zu ended by the supervisor, %zu never\n",
                round + 1, open_at_kill, round_seconds.size(), still_open);
    seconds.insert(seconds.end(), round_seconds.begin(), round_seconds.end());
  }
  std::vector<double> ms;
  ms.reserve(seconds.size());
  for (const double s : seconds) ms.push_back(s * 1000);
  Report("kill -9 -> worker_lost end", ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario = "stop";
  int cancels = 300;
  double rate = 10;
  int runs = 50;
  int rounds = 3;
  int users = 20;
  CLI::App app{"Run control latency: Stop (cancel -> callback -> end) and kill -9 -> worker_lost"};
  app.add_option("--scenario", scenario, "stop or kill")
      ->check(CLI::IsMember({"stop", "kill"}))
      ->capture_default_str();
  app.add_option("--cancels", cancels, "stop: Stops to measure")->capture_default_str();
  app.add_option("--rate", rate, "stop: Stops per second (steady)")->capture_default_str();
  app.add_option("--runs", runs, "stop: runs kept open by the worker")->capture_default_str();
  app.add_option("--rounds", rounds, "kill: workers killed, one after the other")
      ->capture_default_str();
  app.add_option("--users", users, "kill: users of each worker (one window each)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (scenario == "kill") return KillScenario(rounds, users);

  testing::GatewayHarness harness(12);
  harness.StartGateway();
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", harness.Kafka().BootstrapServers()},
                              {"linger.ms", "0"}};
  config.topic = harness.Topic();
  producers::EventPublisher publisher(config);
  producers::RunControlConfig control_config;
  control_config.client_properties = config.client_properties;
  control_config.topic = harness.Topic();
  producers::RunControl control(control_config);

  const std::string user = "bench-user";
  Timings timings;
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<OpenRun>> open;
  uint64_t next_run = 0;
  auto start_run = [&] {
    auto run = std::make_unique<OpenRun>();
    const std::string id = "run-" + std::to_string(++next_run);
    run->emitter = std::make_unique<producers::RunEmitter>(
        publisher, producers::RunIdentity{user, "t-bench", id, "bench", "", {}, {}}, 5s,
        producers::DeliveryCallback{}, 0, &control);
    auto* raw = run.get();
    raw->emitter->OnCancel([raw, id, &timings] {
      const auto now = Clock::now();
      {
        std::lock_guard lock(timings.mutex);
        const auto it = timings.sent_at.find(id);
        if (it != timings.sent_at.end()) {
          timings.to_callback.push_back(
              std::chrono::duration<double, std::milli>(now - it->second).count());
        }
      }
      raw->stop_seen = true;
    });
    raw->emitter->Started("question", "m");
    open.emplace(id, std::move(run));
  };
  {
    std::lock_guard lock(mutex);
    for (int i = 0; i < runs; ++i) start_run();
  }
  // The agent: a delta every 100 ms per run; a stopped run ends cancelled at once (the agent's
  // next check), and another starts.
  std::atomic<bool> done{false};
  std::thread agent([&] {
    auto next_delta = Clock::now();
    while (!done) {
      const bool deltas = Clock::now() >= next_delta;
      if (deltas) next_delta += 100ms;
      {
        std::lock_guard lock(mutex);
        for (auto it = open.begin(); it != open.end();) {
          if (it->second->stop_seen) {  // checked every 2 ms, as an agent between tokens
            it->second->emitter->Cancelled();
            it = open.erase(it);
            start_run();
            continue;
          }
          if (deltas) it->second->emitter->MessageDelta("token ");
          ++it;
        }
      }
      std::this_thread::sleep_for(2ms);
    }
  });

  testing::WsClient client;
  if (client.Connect(harness.ClientOptions(user)).status != 101) return 1;
  std::vector<double> to_end;
  const auto interval = std::chrono::duration_cast<Clock::duration>(1s / rate);
  auto next = Clock::now() + 1s;
  for (int i = 0; i < cancels; ++i) {
    std::this_thread::sleep_until(next);
    next += interval;
    std::string id;
    {
      std::lock_guard lock(mutex);
      id = std::next(open.begin(), static_cast<long>(static_cast<size_t>(i) % open.size()))->first;
    }
    const auto sent = Clock::now();
    {
      std::lock_guard lock(timings.mutex);
      timings.sent_at[id] = sent;
    }
    client.Send(R"({"type":"cancel","run_id":")" + id + R"("})");
    // Until this run's end arrives (other runs' deltas stream past meanwhile).
    bool ended = false;
    const auto deadline = sent + 10s;
    while (!ended && Clock::now() < deadline) {
      const auto text = client.Read(100ms);
      if (!text) continue;
      const auto frame = nlohmann::json::parse(*text, nullptr, false);
      if (frame.is_discarded() || frame.value("type", "") != "event") continue;
      const auto& event = frame["event"];
      if (event.value("run_id", "") == id && event.value("type", "") == "agent_failed") {
        to_end.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
        ended = true;
      }
    }
    if (!ended) std::fprintf(stderr, "cancel_bench: run %s did not end within 10 s\n", id.c_str());
  }
  done = true;
  agent.join();
  std::lock_guard lock(timings.mutex);
  Report("cancel frame -> agent callback", timings.to_callback);
  Report("cancel frame -> cancelled end", to_end);
  return 0;
}
