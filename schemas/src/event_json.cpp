#include "agentwire/schemas/event_json.hpp"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <chrono>
#include <new>
#include <nlohmann/json.hpp>
#include <utility>

namespace agentwire::schemas {
namespace {

namespace pb = google::protobuf;

const pb::OneofDescriptor& BodyOneof() {
  static const pb::OneofDescriptor* oneof = v1::AgentEvent::descriptor()->FindOneofByName("body");
  return *oneof;
}

std::string KnownTypesText() {
  std::string out;
  for (const auto type : KnownEventTypes()) {
    if (!out.empty()) out += ", ";
    out += type;
  }
  return out;
}

}  // namespace

const std::vector<std::string_view>& KnownEventTypes() {
  static const std::vector<std::string_view> types = [] {
    std::vector<std::string_view> out;
    const auto& oneof = BodyOneof();
    out.reserve(oneof.field_count());
    for (int i = 0; i < oneof.field_count(); ++i) out.push_back(oneof.field(i)->name());
    return out;
  }();
  return types;
}

bool IsTerminal(const v1::AgentEvent& event) {
  return event.has_agent_completed() || event.has_agent_failed();
}

std::string ToJsonViaProtobuf(const v1::AgentEvent& event) {
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  // Printing a valid in-memory message cannot fail; the status is checked anyway so
  // a future schema change that breaks this shows up loudly in tests.
  const auto status = pb::util::MessageToJsonString(event, &json, options);
  if (!status.ok()) return fmt::format(R"({{"error":"{}"}})", std::string(status.message()));
  const auto type = EventType(event);
  if (!type.empty() && json.size() > 2) {
    json.insert(1, fmt::format(R"("type":"{}",)", type));
  }
  return json;
}

namespace {

// nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ...".
std::string NlohmannReason(const nlohmann::json::exception& e) {
  std::string what = e.what();
  const auto pos = what.find("] ");
  what = pos == std::string::npos ? what : what.substr(pos + 2);
  // The caller reports the line number; nlohmann's "line 1" would only confuse.
  if (const auto at = what.find("at line 1, column"); at != std::string::npos) {
    what.replace(at, 17, "at column");
  }
  return what;
}

// The deepest nesting of objects and arrays, counted without parsing, so a hostile line
// (200,000 levels) never reaches a recursive algorithm. Stops counting past `limit`.
int NestingDepth(std::string_view json, int limit) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

// Parses `json`, refusing duplicate keys in any object (nlohmann keeps the last silently,
// which would publish `"user_id":"a","user_id":"b"` for b). Throws nlohmann exceptions.
std::optional<JsonError> ParseStrict(std::string_view json, nlohmann::json& out) {
  std::vector<std::vector<std::string>> keys;  // one list per open object
  std::string duplicate;
  out = nlohmann::json::parse(
      json, [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using Event = nlohmann::json::parse_event_t;
        if (event == Event::object_start) {
          keys.emplace_back();
        } else if (event == Event::object_end) {
          if (!keys.empty()) keys.pop_back();
        } else if (event == Event::key && !keys.empty()) {
          auto& seen = keys.back();
          const auto& key = parsed.get_ref<const std::string&>();
          if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
            if (duplicate.empty()) duplicate = key;
          } else {
            seen.push_back(key);
          }
        }
        return true;
      });
  if (!duplicate.empty()) {
    return JsonError{fmt::format(R"(duplicate key "{}" (each key may appear once))", duplicate)};
  }
  return std::nullopt;
}

std::optional<JsonError> FromJsonUnchecked(std::string_view json, v1::AgentEvent& out) {
  if (const int depth = NestingDepth(json, kMaxJsonDepth); depth > kMaxJsonDepth) {
    return JsonError{fmt::format("invalid JSON: nested deeper than {} levels", kMaxJsonDepth)};
  }
  nlohmann::json object;
  try {
    if (auto error = ParseStrict(json, object)) return error;
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for numbers such as 1e400.
    return JsonError{"invalid JSON: " + NlohmannReason(e)};
  }
  if (!object.is_object()) return JsonError{"expected a JSON object"};

  std::string type;
  if (const auto it = object.find("type"); it != object.end()) {
    if (!it->is_string()) return JsonError{R"("type" must be a string)"};
    type = it->get<std::string>();
    object.erase(it);
    const auto& known = KnownEventTypes();
    if (std::find(known.begin(), known.end(), type) == known.end()) {
      return JsonError{
          fmt::format("unknown type '{}' (expected one of: {})", type, KnownTypesText())};
    }
  }
  std::string body_present;
  for (const auto name : KnownEventTypes()) {
    if (object.contains(name)) {
      if (!body_present.empty()) {
        return JsonError{fmt::format("two bodies: '{}' and '{}'", body_present, name)};
      }
      body_present = std::string(name);
    }
  }
  if (type.empty() && body_present.empty()) {
    return JsonError{fmt::format(R"(missing "type" (one of: {}))", KnownTypesText())};
  }
  if (!type.empty() && !body_present.empty() && type != body_present) {
    return JsonError{fmt::format("type '{}' does not match body '{}'", type, body_present)};
  }
  if (body_present.empty()) object[type] = nlohmann::json::object();

  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  out.Clear();
  const auto status = pb::util::JsonStringToMessage(object.dump(), &out, options);
  if (!status.ok()) return JsonError{std::string(status.message())};
  return std::nullopt;
}

}  // namespace

std::optional<JsonError> FromJson(std::string_view json, v1::AgentEvent& out) {
  // Whatever goes wrong on hostile input is this line's error, never the process's.
  try {
    return FromJsonUnchecked(json, out);
  } catch (const nlohmann::json::exception& e) {
    return JsonError{"invalid JSON: " + NlohmannReason(e)};
  } catch (const std::bad_alloc&) {
    return JsonError{fmt::format("out of memory parsing {} bytes", json.size())};
  } catch (const std::exception& e) {
    return JsonError{fmt::format("cannot parse: {}", e.what())};
  }
}

std::optional<JsonError> Validate(const v1::AgentEvent& event) {
  if (event.user_id().empty()) return JsonError{"missing user_id (it is the Kafka key)"};
  if (event.run_id().empty()) return JsonError{"missing run_id"};
  if (EventType(event).empty()) {
    return JsonError{fmt::format(R"(missing "type" (one of: {}))", KnownTypesText())};
  }
  return std::nullopt;
}

pb::Timestamp TimestampNow() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch).count();
  pb::Timestamp now;
  now.set_seconds(micros / 1'000'000);
  now.set_nanos(static_cast<int32_t>(micros % 1'000'000) * 1000);
  if (now.nanos() < 0) {  // before 1970: a broken clock, still a valid Timestamp
    now.set_nanos(now.nanos() + 1'000'000'000);
    now.set_seconds(now.seconds() - 1);
  }
  return now;
}

void FillDefaults(v1::AgentEvent& event) {
  if (event.event_id().empty()) event.set_event_id(NewEventId());
  if (!event.has_emitted_at()) *event.mutable_emitted_at() = TimestampNow();
}

void FillDefaults(v1::AgentEvent& event, pb::Timestamp& not_before) {
  if (event.event_id().empty()) event.set_event_id(NewEventId());
  if (event.has_emitted_at()) return;
  auto now = TimestampNow();
  if (std::pair(now.seconds(), now.nanos()) < std::pair(not_before.seconds(), not_before.nanos())) {
    now = not_before;
  }
  not_before = now;
  *event.mutable_emitted_at() = std::move(now);
}

}  // namespace agentwire::schemas
