#include "agentwire/consumers/replay.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <iterator>
#include <ostream>
#include <queue>
#include <sstream>
#include <thread>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "event_time.hpp"
#include "replay_internal.hpp"

namespace agentwire::consumers {
namespace {

// Days since 1970-01-01 of a proleptic Gregorian date.
int64_t DaysFromCivil(int64_t year, unsigned month, unsigned day) {
  year -= month <= 2 ? 1 : 0;
  const int64_t era = (year >= 0 ? year : year - 399) / 400;
  const auto yoe = static_cast<unsigned>(year - era * 400);
  const unsigned doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool IsLeap(int64_t year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

unsigned DaysInMonth(int64_t year, unsigned month) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && IsLeap(year) ? 29 : kDays[month - 1];
}

// Reads exactly `width` digits at `pos`.
bool ReadDigits(std::string_view text, size_t& pos, size_t width, int64_t& value) {
  if (pos + width > text.size()) return false;
  value = 0;
  for (size_t i = 0; i < width; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  pos += width;
  return true;
}

bool Expect(std::string_view text, size_t& pos, char c) {
  if (pos >= text.size() || text[pos] != c) return false;
  ++pos;
  return true;
}

// RFC 3339 date-time (a date alone means its midnight UTC). nullopt when malformed.
std::optional<TimePoint> ParseRfc3339(std::string_view text) {
  size_t pos = 0;
  int64_t year = 0;
  int64_t month = 0;
  int64_t day = 0;
  if (!ReadDigits(text, pos, 4, year) || !Expect(text, pos, '-') ||
      !ReadDigits(text, pos, 2, month) || !Expect(text, pos, '-') ||
      !ReadDigits(text, pos, 2, day)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, static_cast<unsigned>(month))) {
    return std::nullopt;
  }
  int64_t seconds_of_day = 0;
  int64_t nanos = 0;
  int64_t offset_seconds = 0;
  if (pos < text.size()) {
    const char t = text[pos];
    if (t != 'T' && t != 't' && t != ' ') return std::nullopt;
    ++pos;
    int64_t hour = 0;
    int64_t minute = 0;
    int64_t second = 0;
    if (!ReadDigits(text, pos, 2, hour) || !Expect(text, pos, ':') ||
        !ReadDigits(text, pos, 2, minute) || !Expect(text, pos, ':') ||
        !ReadDigits(text, pos, 2, second)) {
      return std::nullopt;
    }
    if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
    seconds_of_day = hour * 3600 + minute * 60 + std::min<int64_t>(second, 59);
    if (pos < text.size() && text[pos] == '.') {
      ++pos;
      size_t digits = 0;
      while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
        if (digits < 9) nanos = nanos * 10 + (text[pos] - '0');
        ++digits;
        ++pos;
      }
      if (digits == 0) return std::nullopt;
      for (size_t i = digits; i < 9; ++i) nanos *= 10;
    }
    if (pos >= text.size()) return std::nullopt;  // RFC 3339 requires a zone
    const char zone = text[pos++];
    if (zone == 'Z' || zone == 'z') {
      offset_seconds = 0;
    } else if (zone == '+' || zone == '-') {
      int64_t oh = 0;
      int64_t om = 0;
      if (!ReadDigits(text, pos, 2, oh) || !Expect(text, pos, ':') ||
          !ReadDigits(text, pos, 2, om) || oh > 23 || om > 59) {
        return std::nullopt;
      }
      offset_seconds = (oh * 3600 + om * 60) * (zone == '+' ? 1 : -1);
    } else {
      return std::nullopt;
    }
  }
  if (pos != text.size()) return std::nullopt;
  const int64_t seconds =
      DaysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
      seconds_of_day - offset_seconds;
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds(seconds) + std::chrono::nanoseconds(nanos)));
}

std::string KnownTypesText() {
  std::string out;
  for (const auto type : schemas::KnownEventTypes()) {
    if (!out.empty()) out += ", ";
    out += type;
  }
  return out;
}

std::string Thousands(uint64_t value) {
  std::string digits = std::to_string(value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// Draws the bar (terminal) or a line every few seconds (logs) while a replay runs.
class ProgressReporter final {
 public:
  ProgressReporter(const replay::Progress& progress, replay::Console& console, bool lines)
      : progress_(progress), console_(console), lines_(lines) {
    if (console_.BarMode() || lines_) thread_ = std::thread([this] { Loop(); });
  }
  ~ProgressReporter() { Stop(); }
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  void Stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    console_.ClearBar();
  }

 private:
  void Loop() {
    const auto start = std::chrono::steady_clock::now();
    const auto period =
        console_.BarMode() ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000);
    std::unique_lock lock(mutex_);
    while (!cv_.wait_for(lock, period, [this] { return stopping_; })) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const uint64_t scanned = progress_.scanned.load();
      const uint64_t matched = progress_.matched.load();
      const uint64_t expected = progress_.expected.load();
      const auto rate =
          static_cast<uint64_t>(seconds > 0 ? static_cast<double>(scanned) / seconds : 0);
      std::string text;
      if (console_.BarMode() && expected > 0) {
        constexpr int kWidth = 30;
        const double done =
            std::min(1.0, static_cast<double>(scanned) / static_cast<double>(expected));
        const int filled = static_cast<int>(done * kWidth);
        text = fmt::format("[{}{}] {:3.0f}%  ", std::string(filled, '#'),
                           std::string(kWidth - filled, '.'), done * 100);
      }
      text += fmt::format("{} scanned, {} matched, {}/s", Thousands(scanned), Thousands(matched),
                          Thousands(rate));
      lock.unlock();
      if (console_.BarMode()) {
        console_.Bar(text);
      } else {
        console_.Line("replay: " + text);
      }
      lock.lock();
    }
  }

  const replay::Progress& progress_;
  replay::Console& console_;
  bool lines_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

TimePoint ParseTimeArgument(std::string_view text, std::string_view flag, TimePoint now) {
  if (text == "now") return now;
  if (auto absolute = ParseRfc3339(text)) return *absolute;
  // An age needs its unit ("90s", "15m", "2h", "7d"): a bare number would be taken for a year.
  if (!text.empty() && std::isalpha(static_cast<unsigned char>(text.back()))) {
    try {
      return now - std::chrono::duration_cast<TimePoint::duration>(ParseDuration(text, flag));
    } catch (const ConfigError&) {
      // Falls through to the message that names every accepted form.
    }
  }
  throw ConfigError(fmt::format(
      "{} '{}': expected an RFC 3339 time like 2026-11-22T10:00:00Z (or with an offset, "
      "+01:00), 'now', or an age like 15m, 2h, 7d, 1w",
      flag, text));
}

std::string FormatTimeMillis(TimePoint time) {
  const int64_t millis = replay::ToMillis(time);
  int64_t seconds = millis / 1000;
  int64_t rest = millis % 1000;
  if (rest < 0) {
    rest += 1000;
    --seconds;
  }
  std::string out;
  schemas::AppendDateTime(seconds, out);
  fmt::format_to(std::back_inserter(out), ".{:03}Z", rest);
  return out;
}

void ValidateReplayConfig(const ReplayConfig& config) {
  const auto& s = config.selection;
  if (s.since && s.until && *s.since >= *s.until) {
    throw ConfigError(fmt::format("--since {} is not before --until {}: nothing can match",
                                  FormatTimeMillis(*s.since), FormatTimeMillis(*s.until)));
  }
  const auto& known = schemas::KnownEventTypes();
  for (const auto& type : s.types) {
    if (std::find(known.begin(), known.end(), type) == known.end()) {
      throw ConfigError(fmt::format("--type '{}': unknown event type (expected one of: {})", type,
                                    KnownTypesText()));
    }
  }
  kafka::ValidateTopicName(config.topic, "--topic / AGENTWIRE_TOPIC");
  if (config.source == ReplaySource::kPostgres && config.pg_dsn.empty()) {
    throw ConfigError("--source postgres needs a connection string: --pg DSN or AGENTWIRE_PG_DSN");
  }
  if (config.source == ReplaySource::kAuto && config.pg_dsn.empty()) {
    throw ConfigError(
        "--source auto reads the archive below Kafka's log start: it needs the archive's "
        "database, --pg DSN or AGENTWIRE_PG_DSN");
  }
  if (config.source == ReplaySource::kAuto && config.archive_group.empty()) {
    throw ConfigError("--archive-group must name the archive's consumer group (its --group)");
  }
  if (config.source != ReplaySource::kPostgres &&
      !config.client_properties.contains("bootstrap.servers")) {
    throw ConfigError("--brokers / AGENTWIRE_BROKERS is not set");
  }
  if (config.follow && config.source == ReplaySource::kPostgres) {
    throw ConfigError("--follow tails Kafka: it cannot be combined with --source postgres");
  }
  if (config.follow && s.until) {
    throw ConfigError("--follow keeps reading new events: it cannot be combined with --until");
  }
  if (config.partition_count < 0) {
    throw ConfigError("--partition-count must be positive (0 = ask Kafka)");
  }
  if (s.from_cursor) {
    const auto& cursor = *s.from_cursor;
    if (cursor.topic_hash != TopicHash(config.topic)) {
      throw ConfigError(fmt::format(
          "--from-cursor belongs to another topic (its topic hash is {:08x}, --topic {} has "
          "{:08x}): pass the --topic the cursor's gateway serves",
          cursor.topic_hash, config.topic, TopicHash(config.topic)));
    }
    if (cursor.epoch != config.topic_epoch) {
      throw ConfigError(fmt::format(
          "--from-cursor is from topic epoch {}, not {} (--topic-epoch / AGENTWIRE_TOPIC_EPOCH): "
          "the topic was recreated since, so its offsets mean nothing now",
          cursor.epoch, config.topic_epoch));
    }
  }
  if (!config.republish_to.empty()) {
    kafka::ValidateTopicName(config.republish_to, "--republish-to");
    if (config.republish_to == config.topic && !config.allow_same_topic) {
      throw ConfigError(fmt::format(
          "--republish-to {} is the source topic: that would duplicate every selected event "
          "for every consumer; pass --allow-same-topic if that is really what you want",
          config.topic));
    }
    if (config.republish_rate < 0) {
      throw ConfigError("--rate must be >= 0 events/s (0 = unlimited)");
    }
    if (!config.client_properties.contains("bootstrap.servers")) {
      throw ConfigError("--republish-to needs --brokers / AGENTWIRE_BROKERS");
    }
  }
}

namespace replay {

int64_t EmittedAtNanos(const v1::AgentEvent& event) {
  return internal::EmittedAtNanos(event).value_or(0);
}

int64_t ToNanos(TimePoint time) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
}

int64_t ToMillis(TimePoint time) {
  return std::chrono::floor<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

EventFilter::EventFilter(const ReplaySelection& selection) : selection_(selection) {
  if (selection.since) since_ns_ = ToNanos(*selection.since);
  if (selection.until) until_ns_ = ToNanos(*selection.until);
}

bool EventFilter::Matches(const v1::AgentEvent& event) const {
  if (!selection_.user_id.empty() && event.user_id() != selection_.user_id) return false;
  if (!selection_.run_id.empty() && event.run_id() != selection_.run_id) return false;
  if (!selection_.thread_id.empty() && event.thread_id() != selection_.thread_id) return false;
  if (!selection_.types.empty()) {
    const auto type = schemas::EventType(event);
    if (std::find(selection_.types.begin(), selection_.types.end(), type) ==
        selection_.types.end()) {
      return false;
    }
  }
  return true;
}

void Console::Line(std::string_view text) {
  std::lock_guard lock(mutex_);
  if (bar_shown_) out_ << "\r\033[K";
  bar_shown_ = false;
  out_ << text << '\n';
  out_.flush();
}

void Console::Bar(std::string_view text) {
  if (!bar_) return;
  std::lock_guard lock(mutex_);
  out_ << "\r\033[K" << text;
  out_.flush();
  bar_shown_ = true;
}

void Console::ClearBar() {
  std::lock_guard lock(mutex_);
  if (!bar_shown_) return;
  out_ << "\r\033[K";
  out_.flush();
  bar_shown_ = false;
}

bool MergePartitions(std::vector<std::unique_ptr<PartitionReader>>& readers, const RecordSink& sink,
                     std::stop_token stop) {
  struct Lane {
    PartitionReader* reader;
    RecordBuffer buffer;
    bool exhausted = false;
  };
  std::vector<Lane> lanes;
  lanes.reserve(readers.size());
  for (auto& reader : readers) lanes.push_back({reader.get(), {}, false});

  // Blocks until the lane has a head or is known to be exhausted.
  auto refill = [&stop](Lane& lane) {
    while (lane.buffer.Empty() && !lane.exhausted && !stop.stop_requested()) {
      lane.exhausted = !lane.reader->Fill(lane.buffer, stop);
    }
    return !lane.buffer.Empty();
  };
  // Min-heap on the head's (emitted_at, partition).
  struct Head {
    int64_t emitted_ns;
    int32_t partition;
    size_t lane;
    bool operator>(const Head& other) const {
      return emitted_ns != other.emitted_ns ? emitted_ns > other.emitted_ns
                                            : partition > other.partition;
    }
  };
  auto head_of = [&lanes](size_t index) {
    const Record& record = lanes[index].buffer.Front();
    return Head{record.time_ns, record.partition, index};
  };
  std::priority_queue<Head, std::vector<Head>, std::greater<>> heap;
  for (size_t i = 0; i < lanes.size(); ++i) {
    if (refill(lanes[i])) heap.push(head_of(i));
  }
  while (!heap.empty()) {
    if (stop.stop_requested()) return false;
    const size_t index = heap.top().lane;
    heap.pop();
    Lane& lane = lanes[index];
    // The record stays in the lane's buffer (reused later); PopFront after the sink is done.
    const bool more = sink(lane.buffer.Front());
    lane.buffer.PopFront();
    if (!more) return false;
    if (refill(lane)) heap.push(head_of(index));
  }
  return !stop.stop_requested();
}

PipelinedSink::PipelinedSink(RecordSink output) : output_(std::move(output)) {
  filling_.resize(kBatch);
  draining_.resize(kBatch);
  thread_ = std::thread([this] { Loop(); });
}

PipelinedSink::~PipelinedSink() { Finish(); }

bool PipelinedSink::Push(Record& record) {
  // Swap, not copy: the caller gets back a used Record whose allocations it will reuse.
  std::swap(filling_[filled_], record);
  if (++filled_ == kBatch) HandOver();
  return !stopped_.load(std::memory_order_relaxed);
}

void PipelinedSink::HandOver() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return !busy_; });
  std::swap(filling_, draining_);
  draining_count_ = filled_;
  filled_ = 0;
  busy_ = true;
  cv_.notify_all();
}

void PipelinedSink::Finish() {
  if (!thread_.joinable()) return;
  if (filled_ > 0) HandOver();
  {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return !busy_; });
    closing_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void PipelinedSink::Loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    cv_.wait(lock, [this] { return busy_ || closing_; });
    if (!busy_) return;
    lock.unlock();
    for (size_t i = 0; i < draining_count_; ++i) {
      if (stopped_.load(std::memory_order_relaxed)) break;
      if (!output_(draining_[i])) stopped_.store(true);
    }
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

int32_t ExistingTopicPartitions(rd_kafka_t* client, const std::string& topic, std::string_view flag,
                                std::chrono::milliseconds timeout) {
  if (const auto count = kafka::FindPartitionCount(client, topic, timeout)) return *count;
  throw ConfigError(fmt::format("{} {}: {}", flag, topic, kafka::MissingTopicText(topic)));
}

void CheckCursorAgainstTopic(const ReplayConfig& config, int32_t partition_count) {
  const auto& cursor = config.selection.from_cursor;
  if (!cursor || partition_count <= 0) return;
  if (static_cast<int32_t>(cursor->partition_count) != partition_count) {
    throw ConfigError(fmt::format(
        "--from-cursor was issued when {} had {} partitions; it has {} now, so users may have "
        "moved to other partitions: select with --user and --since instead",
        config.topic, cursor->partition_count, partition_count));
  }
  const auto& user = config.selection.user_id;
  if (!user.empty()) {
    const int32_t partition = PartitionForKey(user, partition_count);
    if (static_cast<int32_t>(cursor->partition) != partition) {
      throw ConfigError(fmt::format(
          "--from-cursor points into partition {}, but user '{}' lives in partition {}: the "
          "cursor belongs to another user",
          cursor->partition, user, partition));
    }
  }
}

}  // namespace replay

ReplayStats RunReplay(const ReplayConfig& config, std::ostream& out, std::ostream& progress_out,
                      std::stop_token stop) {
  ValidateReplayConfig(config);
  const auto started = std::chrono::steady_clock::now();
  replay::Progress progress;
  replay::Console console(progress_out, config.progress == ReplayProgress::kBar);

  std::unique_ptr<replay::Source> source;
  switch (config.source) {
    case ReplaySource::kKafka:
      source = replay::MakeKafkaSource(config, progress, console);
      break;
    case ReplaySource::kPostgres:
      source = replay::MakePostgresSource(config, progress, console);
      break;
    case ReplaySource::kAuto:
      source = replay::MakeAutoSource(config, progress, console);
      break;
  }
  source->Open();
  std::unique_ptr<replay::Republisher> republisher;
  if (!config.republish_to.empty()) republisher = std::make_unique<replay::Republisher>(config);

  auto writer = config.format == ReplayFormat::kJsonl
                    ? replay::MakeJsonlWriter(out, config, source->PartitionCount())
                    : replay::MakeTableWriter(out, config);
  const bool gaps = config.gap_report || config.format == ReplayFormat::kTable;
  replay::GapTracker tracker;

  ReplayStats stats;
  const uint64_t limit = config.selection.limit;
  bool republish_stopped = false;
  // Runs on the output thread (or inline with --follow): formatting, gap tracking, republish.
  const replay::RecordSink output = [&](replay::Record& record) {
    writer->Write(record);
    if (gaps) tracker.Add(record.event);
    if (republisher && !republisher->Send(record, stop)) {
      republish_stopped = true;
      return false;
    }
    return true;
  };
  {
    // With --follow every event is printed as soon as it is read; otherwise events go to the
    // output thread in batches, so decoding and formatting use both cores.
    std::unique_ptr<replay::PipelinedSink> pipeline;
    if (!config.follow) pipeline = std::make_unique<replay::PipelinedSink>(output);
    const replay::RecordSink sink = [&](replay::Record& record) {
      progress.matched.fetch_add(1, std::memory_order_relaxed);
      if (limit != 0 && stats.emitted >= limit) return false;
      ++stats.emitted;
      const bool more = pipeline ? pipeline->Push(record) : output(record);
      return more && (limit == 0 || stats.emitted < limit);
    };
    ProgressReporter reporter(progress, console, config.progress == ReplayProgress::kLines);
    try {
      (void)source->Run(sink, stop);
    } catch (...) {
      if (pipeline) pipeline->Finish();
      throw;
    }
    if (pipeline) pipeline->Finish();
    reporter.Stop();
  }
  writer->Finish();
  if (gaps) {
    const auto& s = config.selection;
    const bool partial = !s.types.empty() || s.limit != 0 || s.since.has_value() ||
                         s.until.has_value() || s.from_cursor.has_value();
    std::ostringstream report;
    if (s.types.empty()) {
      tracker.Report(report, partial);
    } else {
      // Every run would look full of holes.
      report << "gap report: skipped (--type keeps only some events of each run)\n";
    }
    replay::ReportOffsetHoles(report, source->Holes());
    // The table's report follows the table on stdout; jsonl keeps stdout to events only.
    if (config.format == ReplayFormat::kTable) {
      out << report.str();
      out.flush();
    } else {
      std::string text = report.str();
      if (!text.empty() && text.back() == '\n') text.pop_back();
      console.Line(text);
    }
    stats.runs = tracker.Runs();
    stats.runs_with_holes = tracker.RunsWithHoles();
    stats.runs_without_terminal = tracker.RunsWithoutTerminal();
  }
  if (republisher) {
    republisher->Finish(std::chrono::seconds(60));
    stats.republished = republisher->Delivered();
    stats.republish_failed = republisher->Failed();
  }

  stats.scanned = progress.scanned.load();
  stats.matched = progress.matched.load();
  stats.undecodable = progress.undecodable.load();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::string summary =
      fmt::format("replay: {} scanned, {} matched, {} written in {:.2f} s ({} events/s scanned)",
                  stats.scanned, stats.matched, stats.emitted, stats.seconds,
                  static_cast<uint64_t>(
                      stats.seconds > 0 ? static_cast<double>(stats.scanned) / stats.seconds : 0));
  if (stats.undecodable > 0) {
    summary += fmt::format("; {} undecodable messages skipped", stats.undecodable);
  }
  if (const uint64_t replaced = progress.times_replaced.load(); replaced > 0) {
    summary += fmt::format(
        "; {} events with emitted_at more than 24 h from their Kafka timestamp were placed by "
        "the Kafka timestamp",
        replaced);
  }
  if (const auto holes = source->Holes(); !holes.empty()) {
    uint64_t missing = 0;
    for (const auto& hole : holes) missing += static_cast<uint64_t>(hole.to - hole.from);
    summary += fmt::format(
        "; {} offsets in neither the archive nor Kafka ({} holes, see the warnings above)", missing,
        holes.size());
  }
  if (republisher) {
    summary += fmt::format("; republished {} to {}, {} failed", stats.republished,
                           config.republish_to, stats.republish_failed);
  }
  if (republish_stopped || stop.stop_requested()) summary += " (interrupted)";
  console.Line(summary);
  return stats;
}

}  // namespace agentwire::consumers
