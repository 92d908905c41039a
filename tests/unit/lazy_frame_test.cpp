// The tailer no longer decodes every record: it reads the routing fields off the protobuf wire
// (ScanRoutingFields) and the first reader builds the frame (LogEntry::Frame). These tests hold
// that to the eager path it replaced: on random events the lazy frame is byte for byte the
// frame EventFrame builds, and the wire scan agrees with protobuf on every record it accepts.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "frames.hpp"
#include "kafka_tail.hpp"

namespace agentwire::gateway {
namespace {

std::string RandomText(std::mt19937_64& rng, size_t max_length) {
  // ASCII, JSON specials, control characters and multi-byte UTF-8.
  static const std::vector<std::string> pieces = {"a",
                                                  "Z",
                                                  "0",
                                                  " ",
                                                  "\"",
                                                  "\\",
                                                  "/",
                                                  "<",
                                                  ">",
                                                  "&",
                                                  "\n",
                                                  "\t",
                                                  "\x01",
                                                  "\x1f",
                                                  "\x7f",
                                                  "é",
                                                  "€",
                                                  "😀",
                                                  "{",
                                                  "}",
                                                  "[",
                                                  "]",
                                                  ",",
                                                  ":",
                                                  "u2028",
                                                  "\xe2\x80\xa8",
                                                  std::string(1, '\0')};
  std::string text;
  const size_t length = rng() % (max_length + 1);
  while (text.size() < length) text += pieces[rng() % pieces.size()];
  return text;
}

v1::AgentEvent RandomEvent(std::mt19937_64& rng) {
  v1::AgentEvent event;
  event.set_event_id("ev-" + std::to_string(rng()));
  event.set_user_id("user-" + std::to_string(rng() % 1000) + RandomText(rng, 3));
  if (rng() % 4 != 0) event.set_thread_id(RandomText(rng, 12));
  if (rng() % 4 != 0) event.set_run_id("run-" + std::to_string(rng() % 100));
  event.set_run_seq(static_cast<uint32_t>(rng()));
  event.mutable_emitted_at()->set_seconds(1'700'000'000 +
                                          static_cast<int64_t>(rng() % 100'000'000));
  event.mutable_emitted_at()->set_nanos(static_cast<int32_t>(rng() % 1'000'000'000));
  if (rng() % 2) event.set_agent_name(RandomText(rng, 10));
  if (rng() % 3 == 0) event.set_trace_id(RandomText(rng, 32));
  for (int i = static_cast<int>(rng() % 3); i > 0; --i) {
    (*event.mutable_attributes())[RandomText(rng, 6)] = RandomText(rng, 20);
  }
  switch (rng() % 7) {
    case 0:
      event.mutable_agent_started()->set_input(RandomText(rng, 200));
      event.mutable_agent_started()->set_model("gpt-test");
      break;
    case 1:
      event.mutable_agent_thinking()->set_text(RandomText(rng, 2000));
      break;
    case 2:
      event.mutable_tool_executing()->set_tool_name("search");
      event.mutable_tool_executing()->set_input(R"({"q":")" + RandomText(rng, 50) + "\"}");
      event.mutable_tool_executing()->set_tool_call_id("c-" + std::to_string(rng() % 10));
      break;
    case 3:
      event.mutable_tool_completed()->set_output(RandomText(rng, 5000));
      event.mutable_tool_completed()->set_error(rng() % 2 ? RandomText(rng, 30) : "");
      event.mutable_tool_completed()->set_duration_ms(static_cast<uint32_t>(rng() % 100000));
      break;
    case 4:
      event.mutable_agent_completed()->set_result(RandomText(rng, 300));
      break;
    case 5:
      event.mutable_agent_failed()->set_error_code("E" + std::to_string(rng() % 100));
      event.mutable_agent_failed()->set_message(RandomText(rng, 100));
      break;
    default:
      event.mutable_message_delta()->set_text(RandomText(rng, 80));
      break;
  }
  if (rng() % 10 == 0) {
    event.mutable_truncated()->add_fields("output");
    event.mutable_truncated()->set_original_bytes(5'000'000);
    event.mutable_truncated()->set_limit_bytes(900'000);
  }
  return event;
}

TEST(LazyFrame, IsByteIdenticalToTheEagerFrameOnRandomEvents) {
  const TopicIdentity identity{"agent.lifecycle.v1", 3, TopicHash("agent.lifecycle.v1"), 12};
  std::mt19937_64 rng(20261203);
  for (int i = 0; i < 2000; ++i) {
    auto event = RandomEvent(rng);
    // Now and then an event far larger than the rest, then small ones again on the same
    // thread: what the reused frame buffer grew to must not leak into the next frame.
    if (i % 97 == 0) {
      (*event.mutable_attributes())["big"] = std::string(20'000 + i, 'x');
      event.mutable_agent_thinking()->set_text(RandomText(rng, 2000) + std::string(50'000, '"'));
    }
    const std::string value = event.SerializeAsString();
    const int partition = static_cast<int>(rng() % 12);
    const int64_t offset = static_cast<int64_t>(rng() % 1'000'000'000);
    EntryProblem problem = EntryProblem::kNone;
    const auto entry =
        MakeLogEntry(identity, partition, offset, 0, event.user_id(), value, &problem);
    ASSERT_NE(entry, nullptr) << "event " << i;
    EXPECT_EQ(entry->user_id, event.user_id());
    EXPECT_EQ(entry->thread_id, event.thread_id());
    EXPECT_EQ(entry->run_id, event.run_id());
    const std::string eager =
        EventFrame(EncodeCursor({identity.epoch, identity.topic_hash, 12,
                                 static_cast<uint32_t>(partition), offset + 1}),
                   event);
    ASSERT_NE(entry->Frame(), nullptr);
    ASSERT_EQ(*entry->Frame(), eager) << "event " << i;
    EXPECT_EQ(entry->Frame().get(), entry->Frame().get()) << "built once";
  }
}

TEST(LazyFrame, ManyReadersBuildOneFrame) {
  const TopicIdentity identity{"t", 1, TopicHash("t"), 1};
  v1::AgentEvent event;
  event.set_user_id("alice");
  event.mutable_agent_thinking()->set_text(std::string(100'000, '<'));
  const auto entry = MakeLogEntry(identity, 0, 7, 0, "alice", event.SerializeAsString());
  ASSERT_NE(entry, nullptr);
  std::vector<const std::string*> seen(8);
  std::vector<std::thread> readers;
  for (auto& slot : seen) {
    readers.emplace_back([&entry, &slot] { slot = entry->Frame().get(); });
  }
  for (auto& reader : readers) reader.join();
  for (const auto* frame : seen) EXPECT_EQ(frame, seen[0]);
}

TEST(LazyFrame, TheWireScanAgreesWithProtobufAndNeverReadsOutOfBounds) {
  std::mt19937_64 rng(7);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string value;
    if (i % 2 == 0) {
      // A valid record, then corrupted at a random byte (or cut short).
      value = RandomEvent(rng).SerializeAsString();
      if (!value.empty() && rng() % 2) value[rng() % value.size()] = static_cast<char>(rng());
      if (!value.empty() && rng() % 3 == 0) value.resize(rng() % value.size());
    } else {
      value.resize(rng() % 64);
      for (auto& c : value) c = static_cast<char>(rng());
    }
    RoutingFields fields;
    const bool scanned = ScanRoutingFields(value, fields);
    v1::AgentEvent parsed;
    if (parsed.ParseFromString(value)) {
      // Whatever protobuf accepts is well-formed wire format, with the same routing fields.
      ASSERT_TRUE(scanned) << "record " << i;
      EXPECT_EQ(fields.user_id, parsed.user_id());
      EXPECT_EQ(fields.thread_id, parsed.thread_id());
      EXPECT_EQ(fields.run_id, parsed.run_id());
      ++accepted;
    }
  }
  EXPECT_GT(accepted, 1000);
}

// The frame is printed straight from the record's wire bytes when the wire reader accepts it
// (schemas::TryAppendJsonFromWire), from the decoded message otherwise. Whatever it accepts
// must print exactly what the decoder's path prints, and what protobuf refuses it must refuse:
// records with a field twice (protobuf merges or keeps the last), fields unknown to the schema,
// a map key twice, out-of-range numbers, and random corruption.
TEST(LazyFrame, TheWireReaderPrintsWhatTheDecoderPrintsOrDeclines) {
  std::mt19937_64 rng(20261206);
  int taken = 0;
  int declined = 0;
  const std::vector<std::string> extras = {
      std::string("\x0a\x03"
                  "dup",
                  5),  // event_id again
      std::string("\x12\x03"
                  "bob",
                  5),                                // user_id again
      std::string("\x28\x07", 2),                    // run_seq again
      std::string("\x28\xff\xff\xff\xff\x1f", 6),    // run_seq over 32 bits
      std::string("\x32\x02\x08\x01", 4),            // emitted_at again (merged)
      std::string("\x32\x02\x10\x7f", 4),            // nanos only
      std::string("\x4a\x06\x0a\x01k\x12\x01v", 8),  // attributes {k: v}
      std::string("\x4a\x03\x0a\x01k", 5),           // a key without value
      std::string("\x52\x03\x0a\x01x", 5),           // truncated with one field
      std::string("\x5a\x01x", 3),                   // field 11: unknown
      std::string("\xf8\x01\x01", 3),                // field 31 varint: unknown
      std::string("\xaa\x01\x02\x0a\x00", 5),        // agent_thinking: a second body
      std::string("\xd2\x01\x00", 3),                // message_delta, empty
      std::string("\x22\x02\xc3\x28", 4),            // run_id: invalid UTF-8
      std::string("\x1a\x03\xed\xa0\x80", 5),        // thread_id: a UTF-16 surrogate
      std::string("\x0d\x01\x02\x03\x04", 5),        // event_id as fixed32: wrong type
  };
  for (int i = 0; i < 6000; ++i) {
    auto event = RandomEvent(rng);
    if (i % 5 == 0) (*event.mutable_attributes())["same"] = "first";
    if (i % 3 == 1 && i % 7 == 0) {
      // Timestamps the JSON form cannot carry: year 10000, before year 1, negative or too many
      // nanoseconds. The decoded path prints protobuf's own output for them.
      auto& at = *event.mutable_emitted_at();
      switch (rng() % 4) {
        case 0:
          at.set_seconds(253'402'300'800);
          break;
        case 1:
          at.set_seconds(-62'135'596'801);
          break;
        case 2:
          at.set_nanos(-1);
          break;
        default:
          at.set_nanos(1'000'000'000);
          break;
      }
    }
    std::string value = event.SerializeAsString();
    if (i % 3 == 1) {
      // One or two extra fields, at the end or the start (protobuf accepts either order).
      for (int n = 1 + static_cast<int>(rng() % 2); n > 0; --n) {
        const auto& extra = extras[rng() % extras.size()];
        if (rng() % 2) {
          value += extra;
        } else {
          value.insert(0, extra);
        }
      }
      if (i % 5 == 0) value += std::string("\x4a\x0e\x0a\x04same\x12\x06second", 16);
    } else if (i % 3 == 2 && !value.empty()) {
      value[rng() % value.size()] = static_cast<char>(rng());
    }
    std::string wire_json = "[";
    const bool read = schemas::TryAppendJsonFromWire(value, wire_json);
    v1::AgentEvent parsed;
    if (!parsed.ParseFromString(value)) {
      ASSERT_FALSE(read) << "record " << i << ": protobuf refuses it";
      ASSERT_EQ(wire_json, "[") << "declined, nothing left behind";
      continue;
    }
    std::string decoded_json = "[";
    schemas::AppendJson(parsed, decoded_json);
    if (read) {
      ASSERT_EQ(wire_json, decoded_json) << "record " << i;
      ++taken;
    } else {
      ASSERT_EQ(wire_json, "[");
      ++declined;
    }
    if (i % 3 == 0) {
      ASSERT_TRUE(read) << "record " << i << ": a plain record takes the wire path";
    }
  }
  EXPECT_GT(taken, 2000);
  EXPECT_GT(declined, 300);
}

TEST(LazyFrame, ARecordRoutableButNotDecodableIsDeliveredToNobody) {
  const TopicIdentity identity{"t", 1, TopicHash("t"), 1};
  // Field 2 (user_id) "alice", then field 1 (event_id) with invalid UTF-8: well-formed wire
  // format, so the scan routes it; protobuf refuses the string, so no frame is ever built.
  const std::string value = std::string("\x12\x05") + "alice" + "\x0a\x02\xff\xfe";
  const auto entry = MakeLogEntry(identity, 0, 1, 0, "alice", value);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->Frame(), nullptr);
  EntryProblem problem = EntryProblem::kNone;
  EXPECT_EQ(MakeLogEntry(identity, 0, 1, 0, "alice", std::string("\x12\x09") + "ali", &problem),
            nullptr);
  EXPECT_EQ(problem, EntryProblem::kUndecodable) << "cut short: not routable";
  EXPECT_EQ(MakeLogEntry(identity, 0, 1, 0, "bob", std::string("\x12\x05") + "alice", &problem),
            nullptr);
  EXPECT_EQ(problem, EntryProblem::kKeyMismatch);
}

}  // namespace
}  // namespace agentwire::gateway
