// The event's JSON form, written directly instead of through protobuf's JSON printer. That
// printer goes through reflection, a binary round trip and a type resolver (~40 us per event
// here), which alone would cap a replay near 25,000 events/s and cost the gateway and the
// archive most of their CPU. This writer reproduces the printer's bytes (field order, defaults,
// escaping, timestamp precision; tests/unit/event_json_test.cpp compares the two), except that
// attributes are sorted by key, and hands anything it does not recognise back to the printer.

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agentwire/schemas/event_json.hpp"

namespace agentwire::schemas {
namespace {

// Valid google.protobuf.Timestamp range (0001-01-01 .. 9999-12-31); outside it ToJson prints an
// error object, which the fallback reproduces.
constexpr int64_t kMinSeconds = -62'135'596'800;
constexpr int64_t kMaxSeconds = 253'402'300'799;

// The schema this writer was written against. A regenerated schema with more fields (or
// bodies) makes every event go through ToJson until this file learns them.
bool SchemaIsKnown() {
  static const bool known = [] {
    const auto* event = v1::AgentEvent::descriptor();
    const std::array<std::pair<const google::protobuf::Descriptor*, int>, 9> expected = {{
        {event, 17},
        {v1::Truncation::descriptor(), 3},
        {v1::AgentStarted::descriptor(), 3},
        {v1::AgentThinking::descriptor(), 1},
        {v1::ToolExecuting::descriptor(), 3},
        {v1::ToolCompleted::descriptor(), 5},
        {v1::AgentCompleted::descriptor(), 2},
        {v1::AgentFailed::descriptor(), 2},
        {v1::MessageDelta::descriptor(), 1},
    }};
    return std::all_of(expected.begin(), expected.end(), [](const auto& entry) {
      return entry.first->field_count() == entry.second;
    });
  }();
  return known;
}

// Code points outside ASCII that protobuf's JSON writer escapes as \uXXXX (C1 controls, soft
// hyphen, invisible format characters, and the U+2028/2029 line separators JavaScript chokes
// on). Measured against protobuf 3.21 over every code point.
bool NeedsEscape(uint32_t cp) {
  if (cp < 0xA0) return cp >= 0x7F;
  if (cp < 0x600) return cp == 0xAD;
  if (cp <= 0x603) return true;
  if (cp < 0x1000) return cp == 0x6DD || cp == 0x70F;
  if (cp < 0x2000) return cp == 0x17B4 || cp == 0x17B5;
  if (cp < 0x3000) {
    return (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202E) ||
           (cp >= 0x2060 && cp <= 0x2064) || (cp >= 0x206A && cp <= 0x206F);
  }
  if (cp < 0x10000) return cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB);
  return (cp >= 0x1D173 && cp <= 0x1D17A) || cp == 0xE0001 || (cp >= 0xE0020 && cp <= 0xE007F);
}

void AppendU16Escape(uint32_t unit, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  const char escaped[6] = {'\\',
                           'u',
                           kHex[(unit >> 12) & 0xF],
                           kHex[(unit >> 8) & 0xF],
                           kHex[(unit >> 4) & 0xF],
                           kHex[unit & 0xF]};
  out.append(escaped, 6);
}

void AppendCodePointEscape(uint32_t cp, std::string& out) {
  if (cp < 0x10000) {
    AppendU16Escape(cp, out);
    return;
  }
  const uint32_t v = cp - 0x10000;
  AppendU16Escape(0xD800 + (v >> 10), out);
  AppendU16Escape(0xDC00 + (v & 0x3FF), out);
}

// ASCII bytes that need escaping, and how.
constexpr std::array<const char*, 128> kAsciiEscapes = [] {
  std::array<const char*, 128> table{};
  table['"'] = "\\\"";
  table['\\'] = "\\\\";
  table['\b'] = "\\b";
  table['\t'] = "\\t";
  table['\n'] = "\\n";
  table['\f'] = "\\f";
  table['\r'] = "\\r";
  return table;
}();

// Bytes copied as they are: printable ASCII other than '"', '\\', '<', '>'.
constexpr std::array<bool, 256> kPlainByte = [] {
  std::array<bool, 256> table{};
  for (int c = 0x20; c < 0x7F; ++c) table[static_cast<size_t>(c)] = true;
  table['"'] = false;
  table['\\'] = false;
  table['<'] = false;
  table['>'] = false;
  return table;
}();

void AppendQuoted(std::string_view key, std::string& out) {
  out.push_back('"');
  out.append(key);
  out.append("\":", 2);
}

// `prefix` is everything up to the value's opening quote, e.g. ,"user_id":"
bool AppendStringField(std::string_view prefix, std::string_view value, std::string& out) {
  out.append(prefix);
  if (!AppendJsonEscaped(value, out)) return false;
  out.push_back('"');
  return true;
}

void AppendNumber(uint32_t value, std::string& out) {
  char digits[16];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out.append(digits, static_cast<size_t>(end - digits));
}

// Days since 1970-01-01 to a civil date (proleptic Gregorian).
void CivilFromDays(int64_t days, int64_t& year, unsigned& month, unsigned& day) {
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  day = doy - (153 * mp + 2) / 5 + 1;
  month = mp < 10 ? mp + 3 : mp - 9;
  year = static_cast<int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0);
}

void AppendDigits(uint32_t value, int width, std::string& out) {
  char digits[9];
  for (int i = width - 1; i >= 0; --i) {
    digits[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
  out.append(digits, static_cast<size_t>(width));
}

// Protobuf's Timestamp JSON: 0, 3, 6 or 9 fractional digits, whichever is exact. The date and
// time of day are the same for every event of one second: formatted once per second.
void AppendTimestamp(int64_t seconds, int32_t nanos, std::string& out) {
  thread_local int64_t cached_seconds = 0;
  thread_local std::string cached;
  if (seconds != cached_seconds || cached.empty()) {
    cached.clear();
    cached_seconds = seconds;
    AppendDateTime(seconds, cached);
  }
  out += cached;
  if (nanos != 0) {
    out.push_back('.');
    if (nanos % 1'000'000 == 0) {
      AppendDigits(static_cast<uint32_t>(nanos / 1'000'000), 3, out);
    } else if (nanos % 1'000 == 0) {
      AppendDigits(static_cast<uint32_t>(nanos / 1'000), 6, out);
    } else {
      AppendDigits(static_cast<uint32_t>(nanos), 9, out);
    }
  }
  out.push_back('Z');
}

bool AppendBody(const v1::AgentEvent& event, std::string& out) {
  bool ok = true;
  out.push_back('{');
  switch (event.body_case()) {
    case v1::AgentEvent::kAgentStarted: {
      const auto& b = event.agent_started();
      ok = AppendStringField("\"input\":\"", b.input(), out);
      ok = ok && AppendStringField(",\"model\":\"", b.model(), out);
      out.append(",\"lease_ms\":");
      AppendNumber(b.lease_ms(), out);
      break;
    }
    case v1::AgentEvent::kAgentThinking:
      ok = AppendStringField("\"text\":\"", event.agent_thinking().text(), out);
      break;
    case v1::AgentEvent::kToolExecuting: {
      const auto& b = event.tool_executing();
      ok = AppendStringField("\"tool_name\":\"", b.tool_name(), out);
      ok = ok && AppendStringField(",\"input\":\"", b.input(), out);
      ok = ok && AppendStringField(",\"tool_call_id\":\"", b.tool_call_id(), out);
      break;
    }
    case v1::AgentEvent::kToolCompleted: {
      const auto& b = event.tool_completed();
      ok = AppendStringField("\"tool_name\":\"", b.tool_name(), out);
      ok = ok && AppendStringField(",\"output\":\"", b.output(), out);
      ok = ok && AppendStringField(",\"error\":\"", b.error(), out);
      out.append(",\"duration_ms\":");
      AppendNumber(b.duration_ms(), out);
      ok = ok && AppendStringField(",\"tool_call_id\":\"", b.tool_call_id(), out);
      break;
    }
    case v1::AgentEvent::kAgentCompleted: {
      const auto& b = event.agent_completed();
      ok = AppendStringField("\"result\":\"", b.result(), out);
      out.append(",\"duration_ms\":");
      AppendNumber(b.duration_ms(), out);
      break;
    }
    case v1::AgentEvent::kAgentFailed: {
      const auto& b = event.agent_failed();
      ok = AppendStringField("\"error_code\":\"", b.error_code(), out);
      ok = ok && AppendStringField(",\"message\":\"", b.message(), out);
      break;
    }
    case v1::AgentEvent::kMessageDelta:
      ok = AppendStringField("\"text\":\"", event.message_delta().text(), out);
      break;
    default:
      return false;
  }
  out.push_back('}');
  return ok;
}

bool TryAppendEventJson(const v1::AgentEvent& event, std::string& out) {
  if (!SchemaIsKnown()) return false;
  if (event.has_emitted_at()) {
    const auto& at = event.emitted_at();
    if (at.seconds() < kMinSeconds || at.seconds() > kMaxSeconds || at.nanos() < 0 ||
        at.nanos() > 999'999'999) {
      return false;
    }
  }
  const auto type = EventType(event);
  bool ok = true;
  if (!type.empty()) {
    ok = AppendStringField("{\"type\":\"", type, out);
    ok = ok && AppendStringField(",\"event_id\":\"", event.event_id(), out);
  } else {
    ok = AppendStringField("{\"event_id\":\"", event.event_id(), out);
  }
  ok = ok && AppendStringField(",\"user_id\":\"", event.user_id(), out);
  ok = ok && AppendStringField(",\"thread_id\":\"", event.thread_id(), out);
  ok = ok && AppendStringField(",\"run_id\":\"", event.run_id(), out);
  out.append(",\"run_seq\":");
  AppendNumber(event.run_seq(), out);
  ok = ok && AppendStringField(",\"agent_name\":\"", event.agent_name(), out);
  ok = ok && AppendStringField(",\"trace_id\":\"", event.trace_id(), out);
  out.append(",\"attributes\":{");
  if (!event.attributes().empty()) {
    // Sorted by key, so the same event always prints the same bytes. (ToJson prints entries in
    // the map's hash order, which can differ between two copies of one event; this is the
    // one place where the output is not ToJson's bytes, only its value.)
    std::vector<std::pair<std::string_view, std::string_view>> entries;
    entries.reserve(event.attributes().size());
    for (const auto& [key, value] : event.attributes()) entries.emplace_back(key, value);
    std::sort(entries.begin(), entries.end());
    bool first = true;
    for (const auto& [key, value] : entries) {
      if (!first) out.push_back(',');
      first = false;
      out.push_back('"');
      ok = ok && AppendJsonEscaped(key, out);
      out.append("\":\"");
      ok = ok && AppendJsonEscaped(value, out);
      out.push_back('"');
    }
  }
  out.push_back('}');
  if (event.has_truncated()) {
    // Where the printer puts it: after attributes, before the body.
    const auto& truncated = event.truncated();
    out.append(",\"truncated\":{\"fields\":[");
    for (int i = 0; i < truncated.fields_size(); ++i) {
      ok = ok && AppendStringField(i == 0 ? "\"" : ",\"", truncated.fields(i), out);
    }
    out.append("],\"original_bytes\":");
    AppendNumber(truncated.original_bytes(), out);
    out.append(",\"limit_bytes\":");
    AppendNumber(truncated.limit_bytes(), out);
    out.push_back('}');
  }
  if (!type.empty()) {
    out.push_back(',');
    AppendQuoted(type, out);
    ok = ok && AppendBody(event, out);
  }
  if (event.has_emitted_at()) {
    out.append(",\"emitted_at\":\"");
    AppendTimestamp(event.emitted_at().seconds(), event.emitted_at().nanos(), out);
    out.push_back('"');
  }
  out.push_back('}');
  return ok;
}

}  // namespace

void AppendDateTime(int64_t seconds, std::string& out) {
  int64_t days = seconds / 86400;
  int64_t rest = seconds % 86400;
  if (rest < 0) {
    rest += 86400;
    --days;
  }
  int64_t year = 0;
  unsigned month = 0;
  unsigned day = 0;
  CivilFromDays(days, year, month, day);
  auto it = std::back_inserter(out);
  fmt::format_to(it, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", year, month, day, rest / 3600,
                 (rest / 60) % 60, rest % 60);
}

std::string_view EventType(const v1::AgentEvent& event) {
  // Field number -> field name, from the descriptor.
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> out;
    const auto* oneof = v1::AgentEvent::descriptor()->FindOneofByName("body");
    for (int i = 0; i < oneof->field_count(); ++i) {
      const auto* field = oneof->field(i);
      if (out.size() <= static_cast<size_t>(field->number())) out.resize(field->number() + 1);
      out[field->number()] = field->name();
    }
    return out;
  }();
  const auto number = static_cast<size_t>(event.body_case());
  return number < names.size() ? names[number] : std::string_view();
}

bool AppendJsonEscaped(std::string_view text, std::string& out) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    // Copy the longest run of plain ASCII in one go.
    const auto* run = p;
    while (run < end && kPlainByte[*run]) ++run;
    out.append(reinterpret_cast<const char*>(p), static_cast<size_t>(run - p));
    p = run;
    if (p == end) break;
    const unsigned char c = *p;
    if (c < 0x80) {
      if (const char* escape = kAsciiEscapes[c]) {
        out.append(escape);
      } else {
        AppendU16Escape(c, out);
      }
      ++p;
      continue;
    }
    uint32_t cp = 0;
    size_t length = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      cp = c & 0x1F;
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      cp = c & 0x0F;
      length = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      cp = c & 0x07;
      length = 4;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) < length) return false;
    for (size_t i = 1; i < length; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    const bool overlong = (length == 3 && cp < 0x800) || (length == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    if (NeedsEscape(cp)) {
      AppendCodePointEscape(cp, out);
    } else {
      out.append(reinterpret_cast<const char*>(p), length);
    }
    p += length;
  }
  return true;
}

void AppendJson(const v1::AgentEvent& event, std::string& out) {
  const size_t start = out.size();
  if (TryAppendEventJson(event, out)) return;
  out.resize(start);
  out += ToJsonViaProtobuf(event);
}

std::string ToJson(const v1::AgentEvent& event) {
  std::string out;
  out.reserve(256 + event.ByteSizeLong() * 2);
  AppendJson(event, out);
  return out;
}

}  // namespace agentwire::schemas
