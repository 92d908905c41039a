#include "agentwire/producers/simulator.hpp"

#include <fmt/format.h>

#include <array>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "agentwire/producers/run_emitter.hpp"

namespace agentwire::producers {
namespace {

using Step = std::function<PublishStatus(RunEmitter&)>;

constexpr std::array<const char*, 6> kQuestions = {
    "Summarize last quarter's support tickets", "Why did the nightly build fail?",
    "Compare the three vendor proposals",       "Draft a reply to the customer escalation",
    "Find flaky tests in the payments service", "Plan the database migration"};
constexpr std::array<const char*, 5> kThoughts = {
    "Breaking the question into smaller parts.", "I should look this up before answering.",
    "The results disagree; checking a second source.", "Enough context now to answer.",
    "Cross-checking the numbers."};
constexpr std::array<const char*, 5> kTools = {"web_search", "code_interpreter", "read_file",
                                               "sql_query", "calculator"};

// One active run of a user: its emitter and the steps still to play.
struct ActiveRun {
  std::unique_ptr<RunEmitter> emitter;
  std::vector<Step> steps;
  size_t next = 0;
  bool fails = false;
};

class Simulation {
 public:
  Simulation(EventSink& sink, const SimulatorOptions& options)
      : sink_(sink),
        options_(options),
        rng_(options.seed != 0 ? options.seed : std::random_device{}()),
        // Run ids must be unique across processes: every reader keys runs by (user, run id)
        // and drops events of a run that ended (docs/runs.md), so a second `emit simulate` for
        // the same users must not reuse the first one's ids. Not from the seeded generator.
        run_tag_(fmt::format("{:06x}", std::random_device{}() & 0xffffffU)) {
    runs_.resize(static_cast<size_t>(std::max(1, options.users)));
  }

  // Plays one step of a random user's run; returns false when the sink rejected it.
  // Runs still open are about to be abandoned by their emitters' destructors.
  void CountAbandoned(SimulatorStats& stats) const {
    for (const auto& run : runs_) {
      if (run.emitter) {
        ++stats.runs_abandoned;
        ++stats.events;
      }
    }
  }

  bool Step(SimulatorStats& stats) {
    if (EndCancelledRuns(stats)) return true;
    const size_t user = std::uniform_int_distribution<size_t>(0, runs_.size() - 1)(rng_);
    auto& run = runs_[user];
    if (!run.emitter) StartRun(user, run, stats);
    const auto status = run.steps[run.next](*run.emitter);
    if (status != PublishStatus::kAccepted) {
      ++stats.rejected;
      return false;
    }
    ++stats.events;
    if (++run.next == run.steps.size()) {
      (run.fails ? stats.runs_failed : stats.runs_completed)++;
      run.emitter.reset();
    }
    return true;
  }

 private:
  template <typename Array>
  const char* Pick(const Array& values) {
    return values[std::uniform_int_distribution<size_t>(0, values.size() - 1)(rng_)];
  }
  uint32_t Millis(uint32_t low, uint32_t high) {
    return std::uniform_int_distribution<uint32_t>(low, high)(rng_);
  }

  // The runs whose user pressed Stop end now, as an agent that aborts its LLM call would.
  // Returns true when it published something (which counts as this step).
  bool EndCancelledRuns(SimulatorStats& stats) {
    std::vector<size_t> users;
    {
      std::lock_guard lock(cancelled_mutex_);
      users.swap(cancelled_);
    }
    bool published = false;
    for (const size_t user : users) {
      auto& run = runs_[user];
      if (!run.emitter || !run.emitter->CancelRequested()) continue;  // ended meanwhile
      if (run.emitter->Cancelled() == PublishStatus::kAccepted) {
        ++stats.events;
        published = true;
      }
      ++stats.runs_cancelled;
      run.emitter.reset();
    }
    return published;
  }

  void StartRun(size_t user, ActiveRun& run, SimulatorStats& stats) {
    ++stats.runs_started;
    RunIdentity identity;
    identity.user_id = fmt::format("{}{:04}", options_.user_prefix, user + 1);
    identity.thread_id = fmt::format("t-{}-{}", user + 1, run_counter_ % 3);
    identity.run_id = fmt::format("r-{}-{}-{}", run_tag_, user + 1, ++run_counter_);
    identity.agent_name = options_.agent_name;
    identity.trace_id = fmt::format("{:016x}{:016x}", rng_(), rng_());
    run.emitter = std::make_unique<RunEmitter>(sink_, identity, std::chrono::seconds(5),
                                               DeliveryCallback{}, 0, options_.control);
    // Called on RunControl's thread: only note it; the playing thread ends the run.
    run.emitter->OnCancel([this, user] {
      std::lock_guard lock(cancelled_mutex_);
      cancelled_.push_back(user);
    });
    run.steps.clear();
    run.next = 0;
    run.fails = std::bernoulli_distribution(options_.failure_ratio)(rng_);

    const std::string question = Pick(kQuestions);
    run.steps.emplace_back([question](RunEmitter& e) { return e.Started(question, "gpt-sim-1"); });
    const int thoughts = std::uniform_int_distribution<int>(1, 3)(rng_);
    const int tools = std::uniform_int_distribution<int>(0, 3)(rng_);
    for (int i = 0; i < std::max(thoughts, tools); ++i) {
      if (i < thoughts) {
        const std::string thought = Pick(kThoughts);
        run.steps.emplace_back([thought](RunEmitter& e) { return e.Thinking(thought); });
      }
      if (i < tools) {
        const std::string tool = Pick(kTools);
        const std::string call_id = fmt::format("call-{}", i + 1);
        const uint32_t duration = Millis(20, 2500);
        const bool tool_error = std::bernoulli_distribution(0.1)(rng_);
        run.steps.emplace_back([tool, call_id](RunEmitter& e) {
          return e.ToolExecuting(tool, R"({"query":"agent events"})", call_id);
        });
        run.steps.emplace_back([tool, call_id, duration, tool_error](RunEmitter& e) {
          return tool_error ? e.ToolCompleted(tool, "", duration, "timeout after 2500 ms", call_id)
                            : e.ToolCompleted(tool, "3 results", duration, "", call_id);
        });
      }
    }
    if (run.fails) {
      run.steps.emplace_back(
          [](RunEmitter& e) { return e.Failed("tool_error", "the tool kept failing; giving up"); });
      return;
    }
    const int deltas = std::uniform_int_distribution<int>(0, 3)(rng_);
    for (int i = 0; i < deltas; ++i) {
      run.steps.emplace_back(
          [i](RunEmitter& e) { return e.MessageDelta(fmt::format("part {} ", i + 1)); });
    }
    const uint32_t duration = Millis(500, 30'000);
    run.steps.emplace_back(
        [duration](RunEmitter& e) { return e.Completed("Here is what I found.", duration); });
  }

  EventSink& sink_;
  const SimulatorOptions& options_;
  std::mt19937_64 rng_;
  std::string run_tag_;
  // Before runs_, so they outlive the emitters whose Stop handlers use them.
  std::mutex cancelled_mutex_;
  std::vector<size_t> cancelled_;  // users whose run was stopped, not yet ended
  std::vector<ActiveRun> runs_;
  uint64_t run_counter_ = 0;
};

}  // namespace

SimulatorStats RunSimulation(EventSink& sink, const SimulatorOptions& options,
                             const std::stop_token& stop,
                             const std::function<void(const SimulatorStats&)>& on_progress) {
  SimulatorStats stats;
  {
    Simulation simulation(sink, options);
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto end =
        options.duration.count() > 0 ? start + options.duration : Clock::time_point::max();
    const bool paced = options.events_per_second > 0;
    const auto interval = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(paced ? 1.0 / options.events_per_second : 0.0));
    auto next_event = start;
    auto next_progress = start + std::chrono::seconds(1);
    while (!stop.stop_requested()) {
      const auto now = Clock::now();
      if (now >= end) break;
      if (options.max_events > 0 && stats.events >= options.max_events) break;
      if (paced && next_event > now + std::chrono::milliseconds(1)) {
        std::this_thread::sleep_until(std::min(next_event, end));
        continue;
      }
      if (!simulation.Step(stats)) break;  // the sink is closed or stuck: stop playing
      next_event += interval;
      if (on_progress && now >= next_progress) {
        on_progress(stats);
        next_progress = now + std::chrono::seconds(1);
      }
    }
    simulation.CountAbandoned(stats);
    // Leaving this scope ends every unfinished run with agent_failed "run_abandoned",
    // exactly as a real worker that stops mid-run would.
  }
  return stats;
}

}  // namespace agentwire::producers
