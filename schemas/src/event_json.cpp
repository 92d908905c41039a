#include "agentwire/schemas/event_json.hpp"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <nlohmann/json.hpp>

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

std::optional<JsonError> FromJson(std::string_view json, v1::AgentEvent& out) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(json);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
    std::string what = e.what();
    const auto pos = what.find("] ");
    what = pos == std::string::npos ? what : what.substr(pos + 2);
    // The caller reports the line number; nlohmann's "line 1" would only confuse.
    if (const auto at = what.find("at line 1, column"); at != std::string::npos) {
      what.replace(at, 17, "at column");
    }
    return JsonError{"invalid JSON: " + what};
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

std::optional<JsonError> Validate(const v1::AgentEvent& event) {
  if (event.user_id().empty()) return JsonError{"missing user_id (it is the Kafka key)"};
  if (event.run_id().empty()) return JsonError{"missing run_id"};
  if (EventType(event).empty()) {
    return JsonError{fmt::format(R"(missing "type" (one of: {}))", KnownTypesText())};
  }
  return std::nullopt;
}

void FillDefaults(v1::AgentEvent& event) {
  if (event.event_id().empty()) event.set_event_id(NewEventId());
  if (!event.has_emitted_at()) {
    *event.mutable_emitted_at() = pb::util::TimeUtil::GetCurrentTime();
  }
}

}  // namespace agentwire::schemas
