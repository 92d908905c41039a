#include "agentwire/schemas/event_json.hpp"

#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace agentwire::schemas {
namespace {

using google::protobuf::util::MessageDifferencer;
using google::protobuf::util::TimeUtil;

// Every envelope field set, with values that would expose a swapped or dropped field.
v1::AgentEvent Envelope() {
  v1::AgentEvent event;
  event.set_event_id("01JD0000000000000000000001");
  event.set_user_id("alice");
  event.set_thread_id("t-9");
  event.set_run_id("r-42");
  event.set_run_seq(5);
  *event.mutable_emitted_at() = TimeUtil::MillisecondsToTimestamp(1795341600123);  // 2026-11-22
  event.set_agent_name("researcher");
  event.set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
  (*event.mutable_attributes())["tenant"] = "acme";
  (*event.mutable_attributes())["model"] = "gpt-x";
  return event;
}

// One event per body type, every body field set.
std::vector<v1::AgentEvent> OneEventPerType() {
  std::vector<v1::AgentEvent> events;
  {
    auto e = Envelope();
    e.mutable_agent_started()->set_input("Summarize the tickets");
    e.mutable_agent_started()->set_model("gpt-sim-1");
    events.push_back(e);
  }
  {
    auto e = Envelope();
    e.mutable_agent_thinking()->set_text("Looking it up. \"quoted\" and\nnewline, ünïcödé");
    events.push_back(e);
  }
  {
    auto e = Envelope();
    auto* body = e.mutable_tool_executing();
    body->set_tool_name("web_search");
    body->set_input(R"({"query":"agent events"})");
    body->set_tool_call_id("call-1");
    events.push_back(e);
  }
  {
    auto e = Envelope();
    auto* body = e.mutable_tool_completed();
    body->set_tool_name("web_search");
    body->set_output("3 results");
    body->set_error("partial: one source timed out");
    body->set_duration_ms(4'000'000'000U);  // above INT32_MAX: must stay a JSON number
    body->set_tool_call_id("call-1");
    events.push_back(e);
  }
  {
    auto e = Envelope();
    e.mutable_agent_completed()->set_result("Here is what I found.");
    e.mutable_agent_completed()->set_duration_ms(812);
    events.push_back(e);
  }
  {
    auto e = Envelope();
    e.mutable_agent_failed()->set_error_code("tool_error");
    e.mutable_agent_failed()->set_message("the tool kept failing");
    events.push_back(e);
  }
  {
    auto e = Envelope();
    e.mutable_message_delta()->set_text("part 1 ");
    events.push_back(e);
  }
  return events;
}

TEST(EventJson, TestCoversEveryKnownType) {
  std::vector<std::string> covered;
  for (const auto& e : OneEventPerType()) covered.emplace_back(EventType(e));
  std::vector<std::string> known(KnownEventTypes().begin(), KnownEventTypes().end());
  EXPECT_EQ(covered, known) << "a new body type needs a round-trip case here";
}

TEST(EventJson, RoundTripsEveryTypeWithEveryField) {
  for (const auto& original : OneEventPerType()) {
    const std::string json = ToJson(original);
    v1::AgentEvent parsed;
    const auto error = FromJson(json, parsed);
    ASSERT_FALSE(error) << EventType(original) << ": " << error->message << "\n" << json;
    std::string difference;
    MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&difference);
    EXPECT_TRUE(differencer.Compare(original, parsed)) << json << "\n" << difference;
    // And back again: the same JSON document (map key order is not part of the contract).
    EXPECT_EQ(nlohmann::json::parse(ToJson(parsed)), nlohmann::json::parse(json));
  }
}

TEST(EventJson, JsonShapeUsesSnakeCaseTypeAndNumbers) {
  for (const auto& event : OneEventPerType()) {
    const std::string json = ToJson(event);
    const auto object = nlohmann::json::parse(json);
    const std::string type(EventType(event));
    SCOPED_TRACE(json);
    ASSERT_TRUE(object.contains("type"));
    EXPECT_EQ(object["type"], type);
    EXPECT_EQ(json.rfind(R"({"type":)", 0), 0U) << "\"type\" comes first";
    ASSERT_TRUE(object.contains(type));
    EXPECT_TRUE(object[type].is_object());
    for (const auto& other : KnownEventTypes()) {
      if (other != type) {
        EXPECT_FALSE(object.contains(std::string(other)));
      }
    }
    for (const char* name : {"event_id", "user_id", "thread_id", "run_id", "run_seq", "emitted_at",
                             "agent_name", "trace_id", "attributes"}) {
      EXPECT_TRUE(object.contains(name)) << name;
    }
    EXPECT_FALSE(object.contains("userId"));
    EXPECT_FALSE(object.contains("runSeq"));
    EXPECT_TRUE(object["run_seq"].is_number_integer());
    EXPECT_EQ(object["run_seq"], 5);
    EXPECT_EQ(object["attributes"], (nlohmann::json{{"tenant", "acme"}, {"model", "gpt-x"}}));
    EXPECT_EQ(object["emitted_at"], "2026-11-22T10:00:00.123Z");
    if (type == "tool_completed") {
      EXPECT_TRUE(object[type]["duration_ms"].is_number_integer());
      EXPECT_EQ(object[type]["duration_ms"], 4'000'000'000U);
      EXPECT_TRUE(object[type].contains("tool_call_id"));
      EXPECT_FALSE(object[type].contains("toolCallId"));
    }
    if (type == "agent_completed") {
      EXPECT_TRUE(object[type]["duration_ms"].is_number_integer());
      EXPECT_EQ(object[type]["duration_ms"], 812);
    }
  }
}

TEST(EventJson, EmittedAtIsRfc3339Utc) {
  v1::AgentEvent event = OneEventPerType().front();
  FillDefaults(event);
  const std::regex rfc3339_utc(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z)");
  const auto object = nlohmann::json::parse(ToJson(event));
  EXPECT_TRUE(std::regex_match(object["emitted_at"].get<std::string>(), rfc3339_utc))
      << object["emitted_at"];

  // A fresh timestamp too (not only the fixed one above).
  v1::AgentEvent fresh;
  fresh.set_user_id("u");
  fresh.set_run_id("r");
  fresh.mutable_agent_thinking();
  FillDefaults(fresh);
  const auto fresh_object = nlohmann::json::parse(ToJson(fresh));
  EXPECT_TRUE(std::regex_match(fresh_object["emitted_at"].get<std::string>(), rfc3339_utc))
      << fresh_object["emitted_at"];
}

TEST(EventJson, ParsesTimestampsWithOffsetsAsUtc) {
  v1::AgentEvent event;
  ASSERT_FALSE(FromJson(R"({"type":"agent_thinking","user_id":"u","run_id":"r",
                            "emitted_at":"2026-11-22T11:00:00.123+01:00"})",
                        event));
  EXPECT_EQ(TimeUtil::TimestampToMilliseconds(event.emitted_at()), 1795341600123);
}

TEST(EventJson, AcceptsTypeWithoutBodyAndBodyWithoutType) {
  v1::AgentEvent event;
  auto error = FromJson(R"({"type":"agent_started","user_id":"u","run_id":"r"})", event);
  ASSERT_FALSE(error) << error->message;
  EXPECT_TRUE(event.has_agent_started());

  error = FromJson(R"({"user_id":"u","run_id":"r","agent_thinking":{"text":"hm"}})", event);
  ASSERT_FALSE(error) << error->message;
  EXPECT_TRUE(event.has_agent_thinking());
  EXPECT_EQ(event.agent_thinking().text(), "hm");
  EXPECT_EQ(EventType(event), "agent_thinking");
}

struct BadJsonCase {
  const char* name;
  const char* json;
  const char* message_part;  // the reason the user needs to see
};

class EventJsonErrors : public ::testing::TestWithParam<BadJsonCase> {};

TEST_P(EventJsonErrors, GivesAClearMessage) {
  const auto& c = GetParam();
  v1::AgentEvent event;
  const auto error = FromJson(c.json, event);
  ASSERT_TRUE(error) << c.json << " was accepted";
  EXPECT_NE(error->message.find(c.message_part), std::string::npos)
      << "message: '" << error->message << "' lacks '" << c.message_part << "'";
  EXPECT_LT(error->message.size(), 300U) << "one short line: " << error->message;
  EXPECT_EQ(error->message.find('\n'), std::string::npos) << error->message;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, EventJsonErrors,
    ::testing::Values(
        BadJsonCase{"InvalidJson", R"({"type":"agent_thinking","user_id":)", "invalid JSON"},
        BadJsonCase{"Garbage", "not json at all", "invalid JSON"},
        BadJsonCase{"NotAnObjectArray", R"([{"type":"agent_thinking"}])", "JSON object"},
        BadJsonCase{"NotAnObjectString", R"("agent_thinking")", "JSON object"},
        BadJsonCase{"UnknownType", R"({"type":"agent_dreaming","user_id":"u","run_id":"r"})",
                    "unknown type 'agent_dreaming'"},
        BadJsonCase{"TypeNotString", R"({"type":7,"user_id":"u","run_id":"r"})",
                    "\"type\" must be a string"},
        BadJsonCase{"TypeBodyMismatch",
                    R"({"type":"agent_started","user_id":"u","run_id":"r","agent_thinking":{}})",
                    "does not match"},
        BadJsonCase{"TwoBodies",
                    R"({"user_id":"u","run_id":"r","agent_thinking":{},"agent_started":{}})",
                    "two bodies"},
        BadJsonCase{"UnknownField",
                    R"({"type":"agent_thinking","user_id":"u","run_id":"r","colour":"red"})",
                    "colour"},
        BadJsonCase{"UnknownBodyField",
                    R"({"type":"agent_thinking","user_id":"u","run_id":"r",
                        "agent_thinking":{"txt":"typo"}})",
                    "txt"},
        BadJsonCase{"WrongValueTypeRunSeq",
                    R"({"type":"agent_thinking","user_id":"u","run_id":"r","run_seq":"five"})",
                    "run_seq"},
        BadJsonCase{"WrongValueTypeUserId",
                    R"({"type":"agent_thinking","user_id":{"id":1},"run_id":"r"})", "user_id"},
        BadJsonCase{"NegativeRunSeq",
                    R"({"type":"agent_thinking","user_id":"u","run_id":"r","run_seq":-1})",
                    "run_seq"},
        BadJsonCase{
            "BadTimestamp",
            R"({"type":"agent_thinking","user_id":"u","run_id":"r","emitted_at":"yesterday"})",
            "emitted_at"},
        BadJsonCase{"MissingType", R"({"user_id":"u","run_id":"r"})", "missing \"type\""},
        // nlohmann throws out_of_range (not parse_error) for these: once a crash of emit.
        BadJsonCase{"NumberOverflow",
                    R"({"type":"agent_thinking","user_id":"u","run_id":"r","run_seq":1e400})",
                    "1e400"},
        BadJsonCase{"DuplicateKey",
                    R"({"type":"agent_thinking","user_id":"a","user_id":"b","run_id":"r"})",
                    "duplicate key \"user_id\""},
        BadJsonCase{"DuplicateKeyInBody",
                    R"({"type":"agent_thinking","user_id":"a","run_id":"r",
                        "agent_thinking":{"text":"x","text":"y"}})",
                    "duplicate key \"text\""},
        BadJsonCase{
            "TooDeep",
            R"({"type":"agent_thinking","user_id":"u","run_id":"r","attributes":)"
            R"({"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}})",
            "nested deeper than 32 levels"}),
    [](const ::testing::TestParamInfo<BadJsonCase>& info) { return info.param.name; });

TEST(EventJson, HostileNestingIsRefusedWithoutRecursion) {
  // 200,000 levels: parsing, dumping or destroying it recursively would overflow the stack.
  const std::string deep = std::string(200'000, '[') + std::string(200'000, ']');
  const std::string deep_objects = [] {
    std::string json;
    for (int i = 0; i < 200'000; ++i) json += R"({"a":)";
    json += "1";
    json += std::string(200'000, '}');
    return json;
  }();
  for (const auto& json : {deep, deep_objects}) {
    v1::AgentEvent event;
    const auto error = FromJson(json, event);
    ASSERT_TRUE(error);
    EXPECT_NE(error->message.find("nested deeper"), std::string::npos) << error->message;
  }
  // Brackets inside strings are text, not nesting.
  v1::AgentEvent event;
  const auto error =
      FromJson(R"({"type":"agent_thinking","user_id":"u","run_id":"r","agent_thinking":{"text":")" +
                   std::string(100, '[') + R"(\"{{{{"}})",
               event);
  ASSERT_FALSE(error) << error->message;
  EXPECT_EQ(event.agent_thinking().text(), std::string(100, '[') + "\"{{{{");
}

TEST(EventJson, ReadsTheTruncationRecord) {
  v1::AgentEvent event;
  ASSERT_FALSE(FromJson(R"({"type":"tool_completed","user_id":"u","run_id":"r",)"
                        R"("truncated":{"fields":["output"],"original_bytes":5000000,)"
                        R"("limit_bytes":900000},"tool_completed":{"output":"abc"}})",
                        event));
  ASSERT_TRUE(event.has_truncated());
  EXPECT_EQ(event.truncated().fields_size(), 1);
  EXPECT_EQ(event.truncated().original_bytes(), 5'000'000U);
  const auto json = nlohmann::json::parse(ToJson(event));
  EXPECT_EQ(json["truncated"]["fields"][0], "output");
  EXPECT_EQ(json["truncated"]["limit_bytes"], 900000);
  // An event published whole has no "truncated" member at all.
  event.clear_truncated();
  EXPECT_FALSE(nlohmann::json::parse(ToJson(event)).contains("truncated"));
}

TEST(EventJson, MissingTypeListsTheKnownTypes) {
  v1::AgentEvent event;
  const auto error = FromJson(R"({"user_id":"u","run_id":"r"})", event);
  ASSERT_TRUE(error);
  for (const auto type : KnownEventTypes()) {
    EXPECT_NE(error->message.find(type), std::string::npos) << error->message;
  }
}

TEST(EventJsonValidate, AcceptsACompleteEvent) {
  for (const auto& event : OneEventPerType()) EXPECT_FALSE(Validate(event));
}

TEST(EventJsonValidate, RequiresUserRunAndBody) {
  auto event = OneEventPerType().front();
  event.clear_user_id();
  auto error = Validate(event);
  ASSERT_TRUE(error);
  EXPECT_NE(error->message.find("user_id"), std::string::npos) << error->message;

  event = OneEventPerType().front();
  event.clear_run_id();
  error = Validate(event);
  ASSERT_TRUE(error);
  EXPECT_NE(error->message.find("run_id"), std::string::npos) << error->message;

  event = OneEventPerType().front();
  event.clear_body();
  error = Validate(event);
  ASSERT_TRUE(error);
  EXPECT_NE(error->message.find("type"), std::string::npos) << error->message;
}

TEST(EventJson, TypeAndTerminal) {
  v1::AgentEvent event;
  EXPECT_EQ(EventType(event), "");
  EXPECT_FALSE(IsTerminal(event));
  for (const auto& e : OneEventPerType()) {
    const auto type = EventType(e);
    EXPECT_EQ(IsTerminal(e), type == "agent_completed" || type == "agent_failed") << type;
  }
}

TEST(EventJsonDefaults, FillsOnlyWhatIsMissing) {
  v1::AgentEvent event;
  event.set_user_id("u");
  event.set_run_id("r");
  event.mutable_agent_thinking();
  const auto before = TimeUtil::GetCurrentTime();  // whole seconds (protobuf 3.21)
  FillDefaults(event);
  const auto after = TimeUtil::GetCurrentTime() + TimeUtil::SecondsToDuration(1);
  EXPECT_EQ(event.event_id().size(), 26U);
  ASSERT_TRUE(event.has_emitted_at());
  EXPECT_GE(event.emitted_at(), before);
  EXPECT_LT(event.emitted_at(), after);

  auto preset = Envelope();
  preset.mutable_agent_thinking();
  const auto copy = preset;
  FillDefaults(preset);
  EXPECT_TRUE(MessageDifferencer::Equals(preset, copy)) << "existing values are kept";
}

TEST(EventJsonDefaults, EmittedAtHasMicrosecondsAndNeverGoesBackWithinARun) {
  // Sub-second resolution: over many stamps the fractions differ, and are whole microseconds.
  std::set<int32_t> fractions;
  for (int i = 0; i < 200; ++i) {
    const auto now = TimestampNow();
    EXPECT_EQ(now.nanos() % 1000, 0) << "microseconds, as PostgreSQL keeps them";
    fractions.insert(now.nanos());
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  EXPECT_GT(fractions.size(), 100U);

  // A run whose previous event was stamped in the future (a clock stepped back since): the
  // next stamps do not go below it.
  google::protobuf::Timestamp run_clock = TimestampNow() + TimeUtil::SecondsToDuration(60);
  const auto ahead = run_clock;
  v1::AgentEvent event;
  FillDefaults(event, run_clock);
  EXPECT_EQ(event.emitted_at(), ahead);
  EXPECT_EQ(run_clock, ahead);
  // A clock behind the current time moves forward with it.
  google::protobuf::Timestamp old_clock = TimestampNow() - TimeUtil::SecondsToDuration(60);
  v1::AgentEvent second;
  FillDefaults(second, old_clock);
  EXPECT_GT(second.emitted_at(), TimestampNow() - TimeUtil::SecondsToDuration(5));
  EXPECT_EQ(old_clock, second.emitted_at());
  // An emitted_at the caller set is kept, and does not move the run's clock.
  auto preset = Envelope();
  const auto preset_time = preset.emitted_at();
  FillDefaults(preset, old_clock);
  EXPECT_EQ(preset.emitted_at(), preset_time);
  EXPECT_EQ(old_clock, second.emitted_at());
}

constexpr std::string_view kCrockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

uint64_t DecodeTimePart(const std::string& id) {
  uint64_t millis = 0;
  for (size_t i = 0; i < 10; ++i) millis = millis * 32 + kCrockford.find(id[i]);
  return millis;
}

TEST(EventId, Is26CharactersOfCrockfordBase32) {
  for (int i = 0; i < 1000; ++i) {
    const auto id = NewEventId();
    ASSERT_EQ(id.size(), 26U) << id;
    for (const char c : id) {
      ASSERT_NE(kCrockford.find(c), std::string_view::npos) << id;
    }
    // The first character carries only 3 of the 48 time bits: a ULID never starts above 7.
    ASSERT_LE(id[0], '7') << id;
  }
}

TEST(EventId, UniqueOver100k) {
  std::vector<std::string> ids;
  ids.reserve(100'000);
  for (int i = 0; i < 100'000; ++i) ids.push_back(NewEventId());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end()) << "duplicate event id";
}

TEST(EventId, UniqueAcrossThreads) {
  // Each thread has its own generator: seeds must differ, or threads would repeat ids.
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25'000;
  std::vector<std::vector<std::string>> per_thread(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&per_thread, t] {
      for (int i = 0; i < kPerThread; ++i)
        per_thread[static_cast<size_t>(t)].push_back(NewEventId());
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<std::string> all;
  for (const auto& ids : per_thread) all.insert(ids.begin(), ids.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST(EventId, SortsByCreationTime) {
  const auto now_ms = [] {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  };
  const uint64_t before = now_ms();
  std::string previous = NewEventId();
  const uint64_t after = now_ms();
  EXPECT_GE(DecodeTimePart(previous), before);
  EXPECT_LE(DecodeTimePart(previous), after);
  for (int i = 0; i < 20; ++i) {
    // Ids from different milliseconds sort by time, whatever their random part.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const std::string next = NewEventId();
    EXPECT_LT(previous, next);
    previous = next;
  }
}

}  // namespace
}  // namespace agentwire::schemas

namespace agentwire::schemas {
namespace {

// Random UTF-8 text drawn from the places where JSON escaping differs: ASCII controls, quotes,
// backslash, < >, DEL, C1 controls, soft hyphen, zero-width and bidi marks, U+2028/2029, BOM,
// astral code points, and ordinary non-ASCII letters.
std::string RandomText(std::mt19937& random) {
  static const std::vector<uint32_t> kInteresting = {
      0x01,   0x08,   0x09,   0x0A,   0x0C,    0x0D,    0x1F,    0x22,    0x26,
      0x27,   0x2F,   0x3C,   0x3E,   0x5C,    0x7F,    0x80,    0x9F,    0xA0,
      0xAD,   0xE9,   0x600,  0x6DD,  0x200B,  0x200F,  0x2028,  0x2029,  0x202E,
      0x2060, 0x4E2D, 0xFEFF, 0xFFFD, 0x1F600, 0x1D173, 0xE0001, 0x10FFFF};
  std::string text;
  const int length = static_cast<int>(random() % 24);
  for (int i = 0; i < length; ++i) {
    uint32_t cp = random() % 3 == 0 ? kInteresting[random() % kInteresting.size()]
                                    : static_cast<uint32_t>(0x20 + random() % 0x5F);
    if (cp < 0x80) {
      text.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      text.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      text.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      text.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      text.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      text.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      text.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      text.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      text.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      text.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return text;
}

TEST(EventJsonWriter, WritesTheSameBytesAsProtobufsPrinter) {
  // At most one attribute: the printer's map order is its hash order, the writer's is sorted.
  std::mt19937 random(20261122);
  int compared = 0;
  for (int i = 0; i < 5000; ++i) {
    v1::AgentEvent event;
    event.set_event_id(RandomText(random));
    event.set_user_id(RandomText(random));
    event.set_thread_id(RandomText(random));
    event.set_run_id(RandomText(random));
    event.set_run_seq(random() % 2 ? random() : random() % 10);
    if (random() % 4 != 0) {
      event.mutable_emitted_at()->set_seconds(static_cast<int64_t>(random() % 4'000'000'000LL) -
                                              1'000'000'000LL);
      const int precision = static_cast<int>(random() % 4);
      const int32_t nanos = static_cast<int32_t>(random() % 1'000'000'000);
      event.mutable_emitted_at()->set_nanos(precision == 0   ? 0
                                            : precision == 1 ? nanos / 1'000'000 * 1'000'000
                                            : precision == 2 ? nanos / 1'000 * 1'000
                                                             : nanos);
    }
    event.set_agent_name(RandomText(random));
    event.set_trace_id(RandomText(random));
    if (random() % 2) (*event.mutable_attributes())[RandomText(random)] = RandomText(random);
    if (random() % 5 == 0) {
      auto* truncated = event.mutable_truncated();
      const int fields = static_cast<int>(random() % 3);
      for (int f = 0; f < fields; ++f) truncated->add_fields(RandomText(random));
      truncated->set_original_bytes(random());
      truncated->set_limit_bytes(random() % 2 ? random() : 0);
    }
    switch (random() % 8) {
      case 0:
        event.mutable_agent_started()->set_input(RandomText(random));
        event.mutable_agent_started()->set_model(RandomText(random));
        break;
      case 1:
        event.mutable_agent_thinking()->set_text(RandomText(random));
        break;
      case 2:
        event.mutable_tool_executing()->set_tool_name(RandomText(random));
        event.mutable_tool_executing()->set_input(RandomText(random));
        event.mutable_tool_executing()->set_tool_call_id(RandomText(random));
        break;
      case 3:
        event.mutable_tool_completed()->set_tool_name(RandomText(random));
        event.mutable_tool_completed()->set_output(RandomText(random));
        event.mutable_tool_completed()->set_error(RandomText(random));
        event.mutable_tool_completed()->set_duration_ms(random());
        event.mutable_tool_completed()->set_tool_call_id(RandomText(random));
        break;
      case 4:
        event.mutable_agent_completed()->set_result(RandomText(random));
        event.mutable_agent_completed()->set_duration_ms(random() % 100'000);
        break;
      case 5:
        event.mutable_agent_failed()->set_error_code(RandomText(random));
        event.mutable_agent_failed()->set_message(RandomText(random));
        break;
      case 6:
        event.mutable_message_delta()->set_text(RandomText(random));
        break;
      default:
        break;  // no body
    }
    ASSERT_EQ(ToJson(event), ToJsonViaProtobuf(event)) << "event " << i;
    std::string appended = "prefix";
    AppendJson(event, appended);
    ASSERT_EQ(appended, "prefix" + ToJson(event));
    ++compared;
  }
  EXPECT_EQ(compared, 5000);
}

TEST(EventJsonWriter, SortsAttributesAndFallsBackOutsideTheTimestampRange) {
  v1::AgentEvent event;
  event.set_user_id("u");
  event.mutable_agent_thinking()->set_text("x");
  for (const char* key : {"zeta", "alpha", "mid", "beta"}) (*event.mutable_attributes())[key] = key;
  const std::string json = ToJson(event);
  EXPECT_NE(json.find(R"("attributes":{"alpha":"alpha","beta":"beta","mid":"mid","zeta":"zeta"})"),
            std::string::npos)
      << json;
  EXPECT_EQ(nlohmann::json::parse(json), nlohmann::json::parse(ToJsonViaProtobuf(event)));
  // Year 10000: outside google.protobuf.Timestamp's range, so the printer's answer is used.
  event.mutable_emitted_at()->set_seconds(253'402'300'800);
  EXPECT_EQ(ToJson(event), ToJsonViaProtobuf(event));
}

}  // namespace
}  // namespace agentwire::schemas
