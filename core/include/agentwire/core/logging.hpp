#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>

namespace agentwire::log {

enum class Format { kText, kJson };

/// Parses "text" / "json"; throws ConfigError otherwise.
Format ParseFormat(std::string_view text);

/// Configures the process-wide logger: always stderr (stdout carries data such as
/// bootstrap lists and JSON lines). Text: `2026-11-22T10:00:00.123Z info msg key=value`.
/// JSON: one object per line `{"ts":…,"level":…,"msg":…,"topic":…}`.
/// `level` is trace|debug|info|warn|error; throws ConfigError on anything else.
void Setup(Format format, std::string_view level = "info");

/// One structured field. Keys are fixed project-wide: topic, partition, offset, user,
/// session, run, event_id, error, count, ... so logs can be grepped and parsed.
struct Field {
  Field(std::string_view k, std::string_view v) : key(k), value(v), quoted(true) {}
  Field(std::string_view k, const std::string& v) : key(k), value(v), quoted(true) {}
  Field(std::string_view k, const char* v) : key(k), value(v), quoted(true) {}
  Field(std::string_view k, int64_t v) : key(k), value(std::to_string(v)) {}
  Field(std::string_view k, int32_t v) : key(k), value(std::to_string(v)) {}
  Field(std::string_view k, uint64_t v) : key(k), value(std::to_string(v)) {}
  Field(std::string_view k, uint32_t v) : key(k), value(std::to_string(v)) {}
  Field(std::string_view k, double v);
  Field(std::string_view k, bool v) : key(k), value(v ? "true" : "false") {}

  std::string_view key;
  std::string value;
  bool quoted = false;
};

using Fields = std::initializer_list<Field>;

void Debug(std::string_view message, Fields fields = {});
void Info(std::string_view message, Fields fields = {});
void Warn(std::string_view message, Fields fields = {});
void Error(std::string_view message, Fields fields = {});

enum class Level { kDebug, kInfo, kWarn, kError };

/// Rate limit for one kind of log line that can repeat per event or per accept (a log flood
/// is an outage of its own, and log storage bills by the byte): at most one line per
/// `interval`; the lines dropped in between are counted, and the next line that passes
/// carries their number as the field `suppressed`. Keep one limiter per kind of line, e.g. a
/// function-local `static log::RateLimited limit;` or a member. Thread-safe.
class RateLimited final {
 public:
  explicit RateLimited(std::chrono::milliseconds interval = std::chrono::seconds(1))
      : interval_(interval) {}

  /// Writes the line unless one was written less than `interval` ago. Returns true if written.
  bool Write(Level level, std::string_view message, Fields fields = {});
  bool Warn(std::string_view message, Fields fields = {}) {
    return Write(Level::kWarn, message, fields);
  }
  bool Error(std::string_view message, Fields fields = {}) {
    return Write(Level::kError, message, fields);
  }

  /// The decision alone, with an injectable clock (tests): true when a line may be written at
  /// `now`; then `suppressed` is the number of lines dropped since the previous one.
  bool Allow(std::chrono::steady_clock::time_point now, uint64_t& suppressed);

 private:
  const std::chrono::milliseconds interval_;
  std::mutex mutex_;
  bool any_ = false;
  std::chrono::steady_clock::time_point last_{};
  uint64_t suppressed_ = 0;
};

/// Renders the payload the way the current format does (exposed for tests).
std::string Render(Format format, std::string_view message, Fields fields);
std::string RenderRange(Format format, std::string_view message, const Field* begin,
                        const Field* end);

}  // namespace agentwire::log
