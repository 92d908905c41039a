#include "agentwire/core/logging.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <vector>

#include "agentwire/core/errors.hpp"

namespace agentwire::log {
namespace {

std::atomic<Format> g_format{Format::kText};

std::string JsonString(std::string_view text) {
  // dump() escapes control characters and invalid UTF-8 is replaced, never thrown.
  return nlohmann::json(std::string(text))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// spdlog's registry (and its default logger) is a function-local static inside the prebuilt,
// uninstrumented libspdlog: ThreadSanitizer cannot see that two threads logging for the first
// time at once are ordered by its guard, and reports the second's read of the logger as a race.
// Creating it once under a static of our own (an instrumented guard) gives that order.
spdlog::logger* DefaultLogger() {
  static const bool created = spdlog::default_logger_raw() != nullptr;
  (void)created;
  return spdlog::default_logger_raw();
}

void WriteLine(spdlog::level::level_enum level, std::string_view message, Fields fields) {
  auto* logger = DefaultLogger();
  if (!logger->should_log(level)) return;
  logger->log(level, "{}", Render(g_format.load(std::memory_order_relaxed), message, fields));
}

spdlog::level::level_enum ToSpdlog(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      break;
  }
  return spdlog::level::err;
}

}  // namespace

Field::Field(std::string_view k, double v) : key(k), value(fmt::format("{}", v)) {}

Format ParseFormat(std::string_view text) {
  if (text == "text") return Format::kText;
  if (text == "json") return Format::kJson;
  throw ConfigError(
      fmt::format("--log-format / AGENTWIRE_LOG_FORMAT '{}': expected 'text' or 'json'", text));
}

void Setup(Format format, std::string_view level) {
  const auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    throw ConfigError(
        fmt::format("--log-level '{}': expected trace, debug, info, warn, error or off", level));
  }
  g_format.store(format);
  auto logger = std::make_shared<spdlog::logger>("agentwire",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == Format::kJson) {
    logger->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})",
                        spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
}

std::string Render(Format format, std::string_view message, Fields fields) {
  return RenderRange(format, message, fields.begin(), fields.end());
}

std::string RenderRange(Format format, std::string_view message, const Field* begin,
                        const Field* end) {
  std::string out;
  if (format == Format::kJson) {
    out = "\"msg\":" + JsonString(message);
    for (const Field* it = begin; it != end; ++it) {
      const Field& field = *it;
      out += ',';
      out += JsonString(field.key);
      out += ':';
      out += field.quoted ? JsonString(field.value) : field.value;
    }
    return out;
  }
  out = std::string(message);
  for (const Field* it = begin; it != end; ++it) {
    const Field& field = *it;
    out += ' ';
    out += field.key;
    out += '=';
    const bool needs_quotes =
        field.quoted &&
        (field.value.empty() || field.value.find_first_of(" \"=") != std::string::npos);
    out += needs_quotes ? JsonString(field.value) : field.value;
  }
  return out;
}

bool RateLimited::Allow(std::chrono::steady_clock::time_point now, uint64_t& suppressed) {
  std::lock_guard lock(mutex_);
  if (any_ && now - last_ < interval_) {
    ++suppressed_;
    return false;
  }
  any_ = true;
  last_ = now;
  suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

bool RateLimited::Write(Level level, std::string_view message, Fields fields) {
  const auto spd_level = ToSpdlog(level);
  if (!DefaultLogger()->should_log(spd_level)) return false;
  uint64_t suppressed = 0;
  if (!Allow(std::chrono::steady_clock::now(), suppressed)) return false;
  if (suppressed == 0) {
    WriteLine(spd_level, message, fields);
    return true;
  }
  std::vector<Field> all(fields.begin(), fields.end());
  all.emplace_back("suppressed", suppressed);
  DefaultLogger()->log(spd_level, "{}",
                       RenderRange(g_format.load(std::memory_order_relaxed), message, all.data(),
                                   all.data() + all.size()));
  return true;
}

void Debug(std::string_view message, Fields fields) {
  WriteLine(spdlog::level::debug, message, fields);
}
void Info(std::string_view message, Fields fields) {
  WriteLine(spdlog::level::info, message, fields);
}
void Warn(std::string_view message, Fields fields) {
  WriteLine(spdlog::level::warn, message, fields);
}
void Error(std::string_view message, Fields fields) {
  WriteLine(spdlog::level::err, message, fields);
}

}  // namespace agentwire::log
