#pragma once

#include <cstdint>
#include <initializer_list>
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

/// Renders the payload the way the current format does (exposed for tests).
std::string Render(Format format, std::string_view message, Fields fields);

}  // namespace agentwire::log
