// Output of `agentwire replay`: JSON lines, the human table, and the gap report.

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <ostream>

#include "agentwire/core/cursor.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "replay_internal.hpp"

namespace agentwire::consumers::replay {
namespace {

constexpr size_t kFlushBytes = 1 << 16;

void AppendInteger(int64_t value, std::string& out) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out.append(digits, static_cast<size_t>(end - digits));
}

TimePoint FromNanos(int64_t nanos) {
  return TimePoint(
      std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(nanos)));
}

// The time the replay placed the event by; a '*' marks a Kafka timestamp that replaced an
// emitted_at more than 24 h away from it.
std::string EventTimeText(const Record& record) {
  if (!record.event.has_emitted_at()) return "-";
  return FormatTimeMillis(FromNanos(record.time_ns)) + (record.time_replaced ? "*" : "");
}

// "2026-11-22T10:00:00" is the same for every event of a second: formatted once per second.
class MillisFormatter final {
 public:
  void Append(int64_t millis, std::string& out) {
    const int64_t second = millis >= 0 ? millis / 1000 : (millis - 999) / 1000;
    if (second != cached_second_ || prefix_.empty()) {
      cached_second_ = second;
      prefix_ = FormatTimeMillis(FromNanos(second * 1'000'000'000));
      prefix_.resize(prefix_.size() - 5);  // drop ".000Z"
    }
    out += prefix_;
    const auto ms = static_cast<int>(millis - second * 1000);
    const char tail[6] = {'.',
                          static_cast<char>('0' + ms / 100),
                          static_cast<char>('0' + ms / 10 % 10),
                          static_cast<char>('0' + ms % 10),
                          'Z',
                          '"'};
    out.append(tail, 6);
  }

 private:
  int64_t cached_second_ = 0;
  std::string prefix_;
};

class JsonlWriter final : public EventWriter {
 public:
  JsonlWriter(std::ostream& out, const ReplayConfig& config, int32_t partition_count)
      : out_(out), flush_each_(config.follow) {
    prefix_ = "{\"topic\":\"";
    (void)schemas::AppendJsonEscaped(config.topic, prefix_);
    prefix_ += "\",\"partition\":";
    identity_ = TopicIdentity::Of(config.topic, config.topic_epoch, std::max(partition_count, 0));
    buffer_.reserve(kFlushBytes * 2);
  }
  ~JsonlWriter() override { Flush(); }

  void Write(const Record& record) override {
    buffer_ += prefix_;
    AppendInteger(record.partition, buffer_);
    buffer_ += ",\"offset\":";
    AppendInteger(record.offset, buffer_);
    buffer_ += ",\"timestamp\":";
    if (record.timestamp_ms >= 0) {
      buffer_.push_back('"');
      millis_.Append(record.timestamp_ms, buffer_);
    } else {
      buffer_ += "null";
    }
    buffer_ += ",\"cursor\":";
    if (identity_.partition_count > record.partition) {
      buffer_.push_back('"');
      // Resumes after this event.
      AppendCursor(identity_.CursorAt(record.partition, record.offset + 1), buffer_);
      buffer_.push_back('"');
    } else {
      buffer_ += "null";
    }
    buffer_ += ",\"event\":";
    schemas::AppendJson(record.event, buffer_);
    buffer_ += "}\n";
    if (flush_each_ || buffer_.size() >= kFlushBytes) Flush();
  }

  void Finish() override { Flush(); }

 private:
  void Flush() {
    if (buffer_.empty()) return;
    out_.write(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    out_.flush();
    buffer_.clear();
  }

  std::ostream& out_;
  bool flush_each_;
  std::string prefix_;
  TopicIdentity identity_;
  MillisFormatter millis_;
  std::string buffer_;
};

// The length of a C1 control character (U+0080..U+009F, 0xC2 0x80..0x9F in UTF-8) at `i`, or 0.
// Terminals act on them like on ESC sequences (0x9B is CSI).
size_t C1ControlAt(std::string_view text, size_t i) {
  return i + 1 < text.size() && static_cast<unsigned char>(text[i]) == 0xC2 &&
                 (static_cast<unsigned char>(text[i + 1]) & 0xE0) == 0x80
             ? 2
             : 0;
}

bool IsC0Control(unsigned char c) { return c < 0x20 || c == 0x7F; }

// An identifier or name from an event, safe to print on a terminal: C0 and C1 control
// characters (ESC, BEL, CR, CSI...) are shown as escapes like backslash-x1b, so an event can
// neither retitle nor clear an SRE's terminal and the value stays recognizable.
std::string TerminalSafe(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (IsC0Control(c)) {
      out += fmt::format("\\x{:02x}", c);
    } else if (C1ControlAt(text, i) != 0) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned char>(text[i + 1]));
      ++i;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// Free text on one line: control characters (C0 and C1) become spaces, and the text is cut at
// `limit` code points.
std::string OneLine(std::string_view text, size_t limit = 80) {
  std::string out;
  size_t points = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const bool continuation = (c & 0xC0) == 0x80;
    if (!continuation) {
      if (points == limit) {
        out += "...";
        return out;
      }
      ++points;
    }
    if (C1ControlAt(text, i) != 0) {
      out.push_back(' ');
      ++i;
      continue;
    }
    out.push_back(IsC0Control(c) ? ' ' : static_cast<char>(c));
  }
  return out;
}

std::string Summary(const v1::AgentEvent& event) {
  switch (event.body_case()) {
    case v1::AgentEvent::kAgentStarted: {
      const auto& b = event.agent_started();
      return OneLine(b.model().empty() ? b.input() : fmt::format("[{}] {}", b.model(), b.input()));
    }
    case v1::AgentEvent::kAgentThinking:
      return OneLine(event.agent_thinking().text());
    case v1::AgentEvent::kToolExecuting: {
      const auto& b = event.tool_executing();
      return OneLine(fmt::format("{}({})", b.tool_name(), b.input()));
    }
    case v1::AgentEvent::kToolCompleted: {
      const auto& b = event.tool_completed();
      return b.error().empty() ? OneLine(fmt::format("{} ok {}ms: {}", b.tool_name(),
                                                     b.duration_ms(), b.output()))
                               : OneLine(fmt::format("{} ERROR {}ms: {}", b.tool_name(),
                                                     b.duration_ms(), b.error()));
    }
    case v1::AgentEvent::kAgentCompleted: {
      const auto& b = event.agent_completed();
      return OneLine(fmt::format("done in {}ms: {}", b.duration_ms(), b.result()));
    }
    case v1::AgentEvent::kAgentFailed: {
      const auto& b = event.agent_failed();
      return OneLine(fmt::format("{}: {}", b.error_code(), b.message()));
    }
    case v1::AgentEvent::kMessageDelta:
      return OneLine(event.message_delta().text());
    default:
      return "(no body)";
  }
}

class TableWriter final : public EventWriter {
 public:
  TableWriter(std::ostream& out, const ReplayConfig& config)
      : out_(out), streaming_(config.follow) {
    if (streaming_) WriteColumns();
  }

  void Write(const Record& record) override {
    const auto& event = record.event;
    std::string line = fmt::format(
        "{:<24}  {:<12}  {:<26}  {:>4}  {:<15} {}\n", EventTimeText(record),
        TerminalSafe(event.user_id()), TerminalSafe(event.run_id()), event.run_seq(),
        schemas::EventType(event), (event.has_truncated() ? "[truncated] " : "") + Summary(event));
    if (streaming_) {
      if (event.run_id() != last_run_) {
        out_ << '\n' << Header(event, 0);
        last_run_ = event.run_id();
      }
      out_ << line;
      out_.flush();
      return;
    }
    auto [it, inserted] = index_.try_emplace(event.run_id(), groups_.size());
    if (inserted) groups_.push_back({event, 0, {}});
    auto& group = groups_[it->second];
    ++group.events;
    group.lines += line;
  }

  void Finish() override {
    if (streaming_) return;
    if (groups_.empty()) {
      out_ << "(no events matched the selection)\n";
    } else {
      WriteColumns();
      for (const auto& group : groups_) {
        out_ << '\n' << Header(group.first, group.events) << group.lines;
      }
    }
    out_ << '\n';
    out_.flush();
  }

 private:
  struct Group {
    v1::AgentEvent first;
    uint64_t events;
    std::string lines;
  };

  void WriteColumns() {
    out_ << fmt::format("{:<24}  {:<12}  {:<26}  {:>4}  {:<15} {}\n", "TIME (UTC)", "USER", "RUN",
                        "SEQ", "TYPE", "SUMMARY");
  }

  static std::string Header(const v1::AgentEvent& first, uint64_t events) {
    std::string header =
        fmt::format("== run {}  user {}  thread {}  agent {}", TerminalSafe(first.run_id()),
                    TerminalSafe(first.user_id()),
                    first.thread_id().empty() ? "-" : TerminalSafe(first.thread_id()),
                    first.agent_name().empty() ? "-" : TerminalSafe(first.agent_name()));
    if (events > 0) header += fmt::format("  ({} events)", events);
    return header + '\n';
  }

  std::ostream& out_;
  bool streaming_;
  std::string last_run_;
  std::map<std::string, size_t> index_;
  std::vector<Group> groups_;
};

// "4, 7-9"
std::string Ranges(const std::vector<std::pair<uint32_t, uint32_t>>& ranges) {
  std::string out;
  for (const auto& [from, to] : ranges) {
    if (!out.empty()) out += ", ";
    out += from == to ? std::to_string(from) : fmt::format("{}-{}", from, to);
  }
  return out;
}

}  // namespace

std::unique_ptr<EventWriter> MakeJsonlWriter(std::ostream& out, const ReplayConfig& config,
                                             int32_t partition_count) {
  return std::make_unique<JsonlWriter>(out, config, partition_count);
}

std::unique_ptr<EventWriter> MakeTableWriter(std::ostream& out, const ReplayConfig& config) {
  return std::make_unique<TableWriter>(out, config);
}

void ReportOffsetHoles(std::ostream& out, const std::vector<OffsetHole>& holes) {
  if (holes.empty()) return;
  out << fmt::format(
      "offset holes: {} (offsets in neither the archive nor Kafka: retention deleted them before "
      "the archive stored them; their events, if any were selected, are missing above)\n",
      holes.size());
  for (const auto& hole : holes) {
    out << fmt::format("  partition {}: offsets [{}, {}) ({} messages)\n", hole.partition,
                       hole.from, hole.to, hole.to - hole.from);
  }
}

void GapTracker::Add(const v1::AgentEvent& event) {
  auto [it, inserted] = runs_.try_emplace(event.run_id());
  Run& run = it->second;
  if (inserted) {
    order_.push_back(event.run_id());
    run.user_id = event.user_id();
    run.thread_id = event.thread_id();
  }
  const bool terminal = schemas::IsTerminal(event);
  if (run.terminal) {
    // After the end. The end itself delivered again (same event_id: a producer retry) is a
    // duplicate, not a second end.
    if (terminal && !event.event_id().empty() && event.event_id() == run.end_event_id &&
        event.run_seq() == run.end_seq) {
      run.seqs.push_back(event.run_seq());
      return;
    }
    ++run.late;
    if (terminal) ++run.late_terminals;
    return;
  }
  run.seqs.push_back(event.run_seq());
  if (terminal) {
    run.terminal = true;
    run.end_seq = event.run_seq();
    run.end_event_id = event.event_id();
    run.end_text = std::string(schemas::EventType(event));
    if (event.has_agent_failed() && !event.agent_failed().error_code().empty()) {
      run.end_text += ' ' + TerminalSafe(event.agent_failed().error_code());
    }
  }
  if (event.run_seq() >= run.last_seq) {
    run.last_seq = event.run_seq();
    run.last_type = std::string(schemas::EventType(event));
    run.last_emitted_ns = EmittedAtNanos(event);
  }
}

void GapTracker::Report(std::ostream& out, bool selection_is_partial) {
  runs_with_holes_ = 0;
  runs_without_terminal_ = 0;
  runs_with_late_events_ = 0;
  late_events_ = 0;
  runs_with_several_terminals_ = 0;
  std::string details;
  for (const auto& run_id : order_) {
    Run& run = runs_[run_id];
    std::sort(run.seqs.begin(), run.seqs.end());
    std::vector<std::pair<uint32_t, uint32_t>> holes;
    std::vector<std::pair<uint32_t, uint32_t>> duplicates;
    // A run's first event is run_seq 1; a later start is a hole unless the selection may have
    // cut the run's beginning off.
    if (!selection_is_partial && !run.seqs.empty() && run.seqs.front() > 1) {
      holes.emplace_back(1, run.seqs.front() - 1);
    }
    for (size_t i = 1; i < run.seqs.size(); ++i) {
      const uint32_t previous = run.seqs[i - 1];
      const uint32_t current = run.seqs[i];
      if (current == previous) {
        if (duplicates.empty() || duplicates.back().second != current) {
          duplicates.emplace_back(current, current);
        }
      } else if (current > previous + 1) {
        holes.emplace_back(previous + 1, current - 1);
      }
    }
    std::vector<std::string> problems;
    if (!holes.empty()) {
      ++runs_with_holes_;
      problems.push_back("missing run_seq " + Ranges(holes));
    }
    if (!run.terminal) {
      ++runs_without_terminal_;
      problems.push_back(fmt::format(
          "no terminal event (last: run_seq {} {} at {})", run.last_seq, run.last_type,
          run.last_emitted_ns == 0
              ? std::string("-")
              : FormatTimeMillis(TimePoint(std::chrono::duration_cast<TimePoint::duration>(
                    std::chrono::nanoseconds(run.last_emitted_ns))))));
    }
    if (!duplicates.empty()) problems.push_back("duplicated run_seq " + Ranges(duplicates));
    if (run.late > 0) {
      ++runs_with_late_events_;
      late_events_ += run.late;
      std::string late = fmt::format("{} late event{} after its end at run_seq {} ({})", run.late,
                                     run.late == 1 ? "" : "s", run.end_seq, run.end_text);
      if (run.late_terminals > 0) {
        ++runs_with_several_terminals_;
        late += fmt::format(", {} of them terminal", run.late_terminals);
      }
      problems.push_back(std::move(late));
    }
    if (problems.empty()) continue;
    details += fmt::format("  run {} (user {}, thread {}): ", TerminalSafe(run_id),
                           TerminalSafe(run.user_id),
                           run.thread_id.empty() ? "-" : TerminalSafe(run.thread_id));
    for (size_t i = 0; i < problems.size(); ++i) {
      details += (i == 0 ? "" : "; ") + problems[i];
    }
    details += '\n';
  }
  out << fmt::format(
      "gap report: {} runs; {} with run_seq holes, {} without a terminal event "
      "(agent_completed/agent_failed), {} with late events after their end ({} events), {} "
      "with more than one terminal event\n",
      order_.size(), runs_with_holes_, runs_without_terminal_, runs_with_late_events_, late_events_,
      runs_with_several_terminals_);
  out << details;
  if (selection_is_partial) {
    out << "  note: the selection (--since/--until/--from-cursor/--type/--limit) may cut runs; "
           "events before or after it are not counted as missing at the start, but runs it "
           "cuts short show up without a terminal event, and events of a run that ended before "
           "it are not recognized as late\n";
  }
}

}  // namespace agentwire::consumers::replay
