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
#include "agentwire/schemas/wire_reader.hpp"

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

// What the writer prints, as views: filled from a decoded AgentEvent, or straight from its wire
// bytes (the gateway's per-event path, which then never builds the message). One writer for
// both, so the two cannot drift apart.
struct EventView {
  std::string_view event_id, user_id, thread_id, run_id, agent_name, trace_id;
  uint32_t run_seq = 0;
  bool has_emitted_at = false;
  int64_t seconds = 0;
  int32_t nanos = 0;
  // Sorted by key before printing. (ToJson prints entries in the map's hash order, which can
  // differ between two copies of one event; this is the one place where the output is not
  // ToJson's bytes, only its value.) Reused per thread: a vector per event was the writer's
  // only allocation.
  std::vector<std::pair<std::string_view, std::string_view>>* attributes = nullptr;
  bool has_truncated = false;
  std::vector<std::string_view>* truncated_fields = nullptr;
  uint32_t original_bytes = 0;
  uint32_t limit_bytes = 0;
  int body = 0;  // the oneof's field number (20 agent_started ... 26 message_delta), 0: none
  // The body's fields by field number (every body field is a string or a uint32).
  std::array<std::string_view, 6> body_text{};
  std::array<uint32_t, 6> body_number{};
};

// The body's name by its field number (the event's JSON "type"), from the descriptor.
std::string_view BodyName(int number) {
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
  const auto index = static_cast<size_t>(number);
  return number > 0 && index < names.size() ? names[index] : std::string_view();
}

std::vector<std::pair<std::string_view, std::string_view>>& AttributeScratch() {
  thread_local std::vector<std::pair<std::string_view, std::string_view>> entries;
  entries.clear();
  return entries;
}

std::vector<std::string_view>& TruncatedScratch() {
  thread_local std::vector<std::string_view> fields;
  fields.clear();
  return fields;
}

void FillView(const v1::AgentEvent& event, EventView& view) {
  view.event_id = event.event_id();
  view.user_id = event.user_id();
  view.thread_id = event.thread_id();
  view.run_id = event.run_id();
  view.run_seq = event.run_seq();
  view.agent_name = event.agent_name();
  view.trace_id = event.trace_id();
  if (event.has_emitted_at()) {
    view.has_emitted_at = true;
    view.seconds = event.emitted_at().seconds();
    view.nanos = event.emitted_at().nanos();
  }
  view.attributes = &AttributeScratch();
  for (const auto& [key, value] : event.attributes()) view.attributes->emplace_back(key, value);
  if (event.has_truncated()) {
    view.has_truncated = true;
    view.truncated_fields = &TruncatedScratch();
    for (const auto& field : event.truncated().fields()) view.truncated_fields->push_back(field);
    view.original_bytes = event.truncated().original_bytes();
    view.limit_bytes = event.truncated().limit_bytes();
  }
  view.body = static_cast<int>(event.body_case());
  auto& text = view.body_text;
  auto& number = view.body_number;
  switch (event.body_case()) {
    case v1::AgentEvent::kAgentStarted:
      text[1] = event.agent_started().input();
      text[2] = event.agent_started().model();
      number[3] = event.agent_started().lease_ms();
      break;
    case v1::AgentEvent::kAgentThinking:
      text[1] = event.agent_thinking().text();
      break;
    case v1::AgentEvent::kToolExecuting:
      text[1] = event.tool_executing().tool_name();
      text[2] = event.tool_executing().input();
      text[3] = event.tool_executing().tool_call_id();
      break;
    case v1::AgentEvent::kToolCompleted:
      text[1] = event.tool_completed().tool_name();
      text[2] = event.tool_completed().output();
      text[3] = event.tool_completed().error();
      number[4] = event.tool_completed().duration_ms();
      text[5] = event.tool_completed().tool_call_id();
      break;
    case v1::AgentEvent::kAgentCompleted:
      text[1] = event.agent_completed().result();
      number[2] = event.agent_completed().duration_ms();
      break;
    case v1::AgentEvent::kAgentFailed:
      text[1] = event.agent_failed().error_code();
      text[2] = event.agent_failed().message();
      break;
    case v1::AgentEvent::kMessageDelta:
      text[1] = event.message_delta().text();
      break;
    default:
      view.body = -1;  // a body this writer does not know
      break;
  }
}

bool AppendBody(const EventView& view, std::string& out) {
  bool ok = true;
  const auto& text = view.body_text;
  const auto& number = view.body_number;
  out.push_back('{');
  switch (view.body) {
    case v1::AgentEvent::kAgentStarted:
      ok = AppendStringField("\"input\":\"", text[1], out);
      ok = ok && AppendStringField(",\"model\":\"", text[2], out);
      out.append(",\"lease_ms\":");
      AppendNumber(number[3], out);
      break;
    case v1::AgentEvent::kAgentThinking:
    case v1::AgentEvent::kMessageDelta:
      ok = AppendStringField("\"text\":\"", text[1], out);
      break;
    case v1::AgentEvent::kToolExecuting:
      ok = AppendStringField("\"tool_name\":\"", text[1], out);
      ok = ok && AppendStringField(",\"input\":\"", text[2], out);
      ok = ok && AppendStringField(",\"tool_call_id\":\"", text[3], out);
      break;
    case v1::AgentEvent::kToolCompleted:
      ok = AppendStringField("\"tool_name\":\"", text[1], out);
      ok = ok && AppendStringField(",\"output\":\"", text[2], out);
      ok = ok && AppendStringField(",\"error\":\"", text[3], out);
      out.append(",\"duration_ms\":");
      AppendNumber(number[4], out);
      ok = ok && AppendStringField(",\"tool_call_id\":\"", text[5], out);
      break;
    case v1::AgentEvent::kAgentCompleted:
      ok = AppendStringField("\"result\":\"", text[1], out);
      out.append(",\"duration_ms\":");
      AppendNumber(number[2], out);
      break;
    case v1::AgentEvent::kAgentFailed:
      ok = AppendStringField("\"error_code\":\"", text[1], out);
      ok = ok && AppendStringField(",\"message\":\"", text[2], out);
      break;
    default:
      return false;
  }
  out.push_back('}');
  return ok;
}

bool AppendView(EventView& view, std::string& out) {
  if (!SchemaIsKnown() || view.body < 0) return false;
  if (view.has_emitted_at) {
    if (view.seconds < kMinSeconds || view.seconds > kMaxSeconds || view.nanos < 0 ||
        view.nanos > 999'999'999) {
      return false;
    }
  }
  const auto type = BodyName(view.body);
  bool ok = true;
  if (!type.empty()) {
    ok = AppendStringField("{\"type\":\"", type, out);
    ok = ok && AppendStringField(",\"event_id\":\"", view.event_id, out);
  } else {
    ok = AppendStringField("{\"event_id\":\"", view.event_id, out);
  }
  ok = ok && AppendStringField(",\"user_id\":\"", view.user_id, out);
  ok = ok && AppendStringField(",\"thread_id\":\"", view.thread_id, out);
  ok = ok && AppendStringField(",\"run_id\":\"", view.run_id, out);
  out.append(",\"run_seq\":");
  AppendNumber(view.run_seq, out);
  ok = ok && AppendStringField(",\"agent_name\":\"", view.agent_name, out);
  ok = ok && AppendStringField(",\"trace_id\":\"", view.trace_id, out);
  out.append(",\"attributes\":{");
  if (view.attributes != nullptr && !view.attributes->empty()) {
    auto& entries = *view.attributes;
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
  if (view.has_truncated) {
    // Where the printer puts it: after attributes, before the body.
    out.append(",\"truncated\":{\"fields\":[");
    bool first = true;
    if (view.truncated_fields != nullptr) {
      for (const auto field : *view.truncated_fields) {
        ok = ok && AppendStringField(first ? "\"" : ",\"", field, out);
        first = false;
      }
    }
    out.append("],\"original_bytes\":");
    AppendNumber(view.original_bytes, out);
    out.append(",\"limit_bytes\":");
    AppendNumber(view.limit_bytes, out);
    out.push_back('}');
  }
  if (!type.empty()) {
    out.push_back(',');
    AppendQuoted(type, out);
    ok = ok && AppendBody(view, out);
  }
  if (view.has_emitted_at) {
    out.append(",\"emitted_at\":\"");
    AppendTimestamp(view.seconds, view.nanos, out);
    out.push_back('"');
  }
  out.push_back('}');
  return ok;
}

bool TryAppendEventJson(const v1::AgentEvent& event, std::string& out) {
  EventView view;
  FillView(event, view);
  return AppendView(view, out);
}

// ---- Reading the view straight off the wire ----
//
// Only the plain shape every serializer writes is read here: each field at most once (repeated
// ones excepted), known field numbers with their declared wire types, integers in range. On
// anything else (a field twice, which protobuf merges; an unknown field; a map key twice, where
// the last wins) the reader says no and the caller decodes the message the ordinary way, so
// the bytes printed are always those of the decoded event. Invalid UTF-8 fails in the writer,
// as it fails protobuf's parse.

// A message whose fields are each a string or a uint32 (Timestamp aside, every nested message
// of AgentEvent): `text_fields` and `number_fields` are bit sets by field number.
bool ReadFlat(std::string_view bytes, uint32_t text_fields, uint32_t number_fields,
              std::array<std::string_view, 6>& text, std::array<uint32_t, 6>& number) {
  WireReader reader(bytes);
  uint32_t seen = 0;
  while (!reader.Done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!reader.Next(field, type) || field >= 6 || (seen & (1U << field)) != 0) return false;
    seen |= 1U << field;
    if ((text_fields & (1U << field)) != 0 && type == WireReader::kLength) {
      if (!reader.Bytes(text[field])) return false;
    } else if ((number_fields & (1U << field)) != 0 && type == WireReader::kVarint) {
      if (!reader.Uint32(number[field])) return false;
    } else {
      return false;
    }
  }
  return true;
}

bool ReadTimestamp(std::string_view bytes, EventView& view) {
  WireReader reader(bytes);
  uint32_t seen = 0;
  while (!reader.Done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    uint64_t value = 0;
    if (!reader.Next(field, type) || type != WireReader::kVarint || field > 2 ||
        (seen & (1U << field)) != 0 || !reader.Varint(value)) {
      return false;
    }
    seen |= 1U << field;
    // Protobuf's int64 and int32 from a varint: two's complement, an int32 truncated.
    if (field == 1) {
      view.seconds = static_cast<int64_t>(value);
    } else {
      view.nanos = static_cast<int32_t>(static_cast<uint32_t>(value));
    }
  }
  return true;
}

bool ReadAttribute(std::string_view bytes, EventView& view) {
  std::array<std::string_view, 6> text{};
  std::array<uint32_t, 6> unused{};
  if (!ReadFlat(bytes, 0b110, 0, text, unused)) return false;
  view.attributes->emplace_back(text[1], text[2]);
  return true;
}

bool ReadTruncation(std::string_view bytes, EventView& view) {
  WireReader reader(bytes);
  view.truncated_fields = &TruncatedScratch();
  uint32_t seen = 0;
  while (!reader.Done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!reader.Next(field, type)) return false;
    if (field == 1 && type == WireReader::kLength) {  // repeated
      std::string_view name;
      if (!reader.Bytes(name)) return false;
      view.truncated_fields->push_back(name);
      continue;
    }
    if ((field != 2 && field != 3) || type != WireReader::kVarint || (seen & (1U << field)) != 0) {
      return false;
    }
    seen |= 1U << field;
    if (!reader.Uint32(field == 2 ? view.original_bytes : view.limit_bytes)) return false;
  }
  return true;
}

// Per body field number: which of its fields are strings and which uint32s (bit per number).
struct BodyShape {
  uint32_t text_fields;
  uint32_t number_fields;
};
constexpr std::array<BodyShape, 7> kBodyShapes = {{
    {0b0110, 0b1000},     // 20 agent_started: input, model; lease_ms
    {0b0010, 0},          // 21 agent_thinking: text
    {0b1110, 0},          // 22 tool_executing: tool_name, input, tool_call_id
    {0b101110, 0b10000},  // 23 tool_completed: tool_name, output, error, tool_call_id; duration_ms
    {0b0010, 0b0100},     // 24 agent_completed: result; duration_ms
    {0b0110, 0},          // 25 agent_failed: error_code, message
    {0b0010, 0},          // 26 message_delta: text
}};

bool ReadWire(std::string_view bytes, EventView& view) {
  WireReader reader(bytes);
  view.attributes = &AttributeScratch();
  uint64_t seen = 0;
  while (!reader.Done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!reader.Next(field, type) || field > 26) return false;
    if (field != 9) {  // attributes is the only repeated field
      if ((seen & (uint64_t{1} << field)) != 0) return false;
      seen |= uint64_t{1} << field;
    }
    if (field == 5) {
      if (type != WireReader::kVarint || !reader.Uint32(view.run_seq)) return false;
      continue;
    }
    std::string_view value;
    if (type != WireReader::kLength || !reader.Bytes(value)) return false;
    switch (field) {
      case 1:
        view.event_id = value;
        break;
      case 2:
        view.user_id = value;
        break;
      case 3:
        view.thread_id = value;
        break;
      case 4:
        view.run_id = value;
        break;
      case 7:
        view.agent_name = value;
        break;
      case 8:
        view.trace_id = value;
        break;
      case 6:
        view.has_emitted_at = true;
        if (!ReadTimestamp(value, view)) return false;
        break;
      case 9:
        if (!ReadAttribute(value, view)) return false;
        break;
      case 10:
        view.has_truncated = true;
        if (!ReadTruncation(value, view)) return false;
        break;
      default: {
        if (field < 20 || view.body != 0) return false;  // unknown, or a second body
        const auto& shape = kBodyShapes.at(field - 20);
        view.body = static_cast<int>(field);
        if (!ReadFlat(value, shape.text_fields, shape.number_fields, view.body_text,
                      view.body_number)) {
          return false;
        }
        break;
      }
    }
  }
  // A key twice: protobuf keeps the last, this view would print both.
  auto& entries = *view.attributes;
  std::sort(entries.begin(), entries.end());
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].first == entries[i - 1].first) return false;
  }
  return true;
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
  return BodyName(static_cast<int>(event.body_case()));
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

bool TryAppendJsonFromWire(std::string_view record, std::string& out) {
  const size_t start = out.size();
  EventView view;
  if (ReadWire(record, view) && AppendView(view, out)) return true;
  out.resize(start);
  return false;
}

std::string ToJson(const v1::AgentEvent& event) {
  std::string out;
  out.reserve(256 + event.ByteSizeLong() * 2);
  AppendJson(event, out);
  return out;
}

}  // namespace agentwire::schemas
