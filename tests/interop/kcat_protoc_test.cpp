// Standard tools read what agentwire writes: after the C++ EventPublisher published a known set
// of events to an `agentwire broker`, kcat reads the whole topic and `protoc --decode` decodes
// every value with nothing but schemas/agentwire/v1/events.proto. What an SRE or another team
// does with the contract alone.

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "agentwire/core/hashing.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "agentwire/v1/events.pb.h"
#include "interop/interop_processes.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing::interop {
namespace {

using namespace std::chrono_literals;

/// One record as kcat printed it.
struct KcatRecord {
  int32_t partition = -1;
  int64_t offset = -1;
  std::string key;
  std::string value;
  std::string headers;  // kcat's "name=value,name=value"
};

// Lengths first, then the bytes: exact whatever the key and value contain (a serialized
// AgentEvent starts with 0x0a, a newline, and bodies may hold any byte).
constexpr const char* kKcatFormat = "%p %o %K %S %k%s %h\\n";

std::optional<int64_t> ReadNumber(std::string_view text, size_t& pos) {
  const auto space = text.find(' ', pos);
  if (space == std::string_view::npos) return std::nullopt;
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data() + pos, text.data() + space, value);
  if (error != std::errc() || end != text.data() + space) return std::nullopt;
  pos = space + 1;
  return value;
}

/// Parses kKcatFormat output; on a framing error adds a failure and returns what it had.
std::vector<KcatRecord> ParseKcat(std::string_view text) {
  std::vector<KcatRecord> records;
  size_t pos = 0;
  while (pos < text.size()) {
    KcatRecord record;
    const auto partition = ReadNumber(text, pos);
    const auto offset = ReadNumber(text, pos);
    const auto key_size = ReadNumber(text, pos);
    const auto value_size = ReadNumber(text, pos);
    if (!partition || !offset || !key_size || !value_size || *key_size < 0 || *value_size < 0 ||
        pos + static_cast<size_t>(*key_size + *value_size) >= text.size()) {
      ADD_FAILURE() << "kcat output framing broken at byte " << pos << " of " << text.size();
      return records;
    }
    record.partition = static_cast<int32_t>(*partition);
    record.offset = *offset;
    record.key = std::string(text.substr(pos, static_cast<size_t>(*key_size)));
    pos += static_cast<size_t>(*key_size);
    record.value = std::string(text.substr(pos, static_cast<size_t>(*value_size)));
    pos += static_cast<size_t>(*value_size);
    const auto newline = text.find('\n', pos);
    if (text[pos] != ' ' || newline == std::string_view::npos) {
      ADD_FAILURE() << "kcat output framing broken after the value at byte " << pos;
      return records;
    }
    record.headers = std::string(text.substr(pos + 1, newline - pos - 1));
    pos = newline + 1;
    records.push_back(std::move(record));
  }
  return records;
}

/// The known set: 5 users x 2 runs, every body type, text with newlines, NUL, quotes, '%'.
std::vector<v1::AgentEvent> KnownEvents() {
  const std::vector<std::string> users = {"kcat-alice", "kcat-bob", "kcat user with spaces",
                                          "kcat-d", "kcat-\xc3\xa9ric"};
  static constexpr char kAwkward[] = "line1\nline2\r\n\0nul %s %p \"q\" \\ \xe2\x9c\x93";
  const std::string awkward(kAwkward, sizeof kAwkward - 1);
  std::vector<v1::AgentEvent> events;
  int n = 0;
  for (int run = 0; run < 2; ++run) {
    for (const auto& user : users) {
      const std::string run_id = "kcat-run-" + std::to_string(run) + "-" + user;
      for (uint32_t seq = 1; seq <= 7; ++seq) {
        v1::AgentEvent event;
        event.set_event_id("kcat-ev-" + std::to_string(++n));
        event.set_user_id(user);
        event.set_thread_id("kcat-thread");
        event.set_run_id(run_id);
        event.set_run_seq(seq);
        event.mutable_emitted_at()->set_seconds(1'790'000'000 + n);
        event.mutable_emitted_at()->set_nanos(123'000'000);
        event.set_agent_name("kcat-agent");
        (*event.mutable_attributes())["note"] = awkward;
        switch (seq) {
          case 1:
            event.mutable_agent_started()->set_input("start\n" + awkward);
            break;
          case 2:
            event.mutable_agent_thinking()->set_text(awkward);
            break;
          case 3:
            event.mutable_tool_executing()->set_tool_name("search");
            event.mutable_tool_executing()->set_input("{\"q\":\"\n\"}");
            break;
          case 4:
            event.mutable_tool_completed()->set_output(awkward);
            event.mutable_tool_completed()->set_duration_ms(10);
            break;
          case 5:
            event.mutable_message_delta()->set_text("\n\n\n");
            break;
          case 6:
            event.mutable_agent_failed()->set_error_code("tool_error");
            break;
          default:
            event.mutable_agent_completed()->set_result(awkward);
            break;
        }
        events.push_back(std::move(event));
      }
    }
  }
  return events;
}

/// `text` as protoc's text format prints a string field (C escapes, octal for bytes outside
/// printable ASCII). Enough for the ids used here, which hold no control characters.
std::string ProtoString(const std::string& text) {
  std::string out;
  for (const unsigned char c : text) {
    if (c == '"' || c == '\\' || c == '\'') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\%03o", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

TEST(KcatProtoc, KcatReadsEveryValueAndProtocDecodesIt) {
  for (const auto& [path, what, package] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {AGENTWIRE_INTEROP_KCAT, "kcat", "kcat"},
           {AGENTWIRE_INTEROP_PROTOC, "protoc", "protobuf-compiler"}}) {
    const auto missing = MissingTool(path, what, package);
    ASSERT_TRUE(missing.empty()) << missing;
  }
  BrokerProcess broker;
  ASSERT_FALSE(broker.bootstrap.empty()) << "agentwire broker did not start\n"
                                         << broker.process->Describe();

  const auto events = KnownEvents();
  {
    producers::PublisherConfig config;
    config.client_properties = {{"bootstrap.servers", broker.bootstrap}};
    config.topic = kTopic;
    producers::EventPublisher publisher(config);
    for (const auto& event : events) {
      ASSERT_EQ(publisher.Publish(event, {}, 10s), producers::PublishStatus::kAccepted)
          << event.event_id();
    }
    ASSERT_EQ(publisher.Flush(60s), 0U) << "events not acknowledged within 60 s";
    ASSERT_EQ(publisher.Stats().delivered, events.size());
    ASSERT_EQ(publisher.Stats().failed, 0U);
  }

  const auto read =
      agentwire::testing::Run({AGENTWIRE_INTEROP_KCAT, "-b", broker.bootstrap, "-t", kTopic, "-C",
                               "-e", "-q", "-o", "beginning", "-f", kKcatFormat},
                              60s);
  ASSERT_EQ(read.exit_code, 0) << "kcat failed:\n" << read.stderr_text;
  const auto records = ParseKcat(read.stdout_text);

  std::map<std::string, const v1::AgentEvent*> by_id;
  for (const auto& event : events) by_id[event.event_id()] = &event;
  const auto directory = MakeTempDirectory("agentwire-interop-kcat");
  const auto source = SourceDir();
  std::map<std::string, int> copies;
  size_t decode_failures = 0, unknown = 0, missing_fields = 0, changed = 0, wrong_key = 0,
         wrong_partition = 0, bad_headers = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& record = records[i];
    const std::string value_file = directory + "/value-" + std::to_string(i) + ".bin";
    std::ofstream(value_file, std::ios::binary) << record.value;
    Subprocess::Options options;
    options.stdin_file = value_file;
    const auto decoded = agentwire::testing::Run(
        {AGENTWIRE_INTEROP_PROTOC, "--decode=agentwire.v1.AgentEvent", "-I", source + "/schemas",
         source + "/schemas/agentwire/v1/events.proto"},
        options, 30s);
    const std::string where = "partition " + std::to_string(record.partition) + " offset " +
                              std::to_string(record.offset);
    if (decoded.exit_code != 0) {
      ++decode_failures;
      ADD_FAILURE() << where << ": protoc --decode failed: " << decoded.stderr_text;
      continue;
    }
    const v1::AgentEvent* expected = nullptr;
    for (const auto& [id, event] : by_id) {
      if (decoded.stdout_text.find("event_id: \"" + id + "\"\n") != std::string::npos) {
        expected = event;
        break;
      }
    }
    if (expected == nullptr) {
      ++unknown;
      ADD_FAILURE() << where << ": decoded an event nobody published:\n" << decoded.stdout_text;
      continue;
    }
    ++copies[expected->event_id()];
    const auto type = std::string(schemas::EventType(*expected));
    for (const auto& needle :
         {"user_id: \"" + ProtoString(expected->user_id()) + "\"\n",
          "run_id: \"" + ProtoString(expected->run_id()) + "\"\n",
          "run_seq: " + std::to_string(expected->run_seq()) + "\n", "\n" + type + " {\n"}) {
      if (decoded.stdout_text.find(needle) == std::string::npos) {
        ++missing_fields;
        ADD_FAILURE() << where << ": decoded text lacks '" << needle << "':\n"
                      << decoded.stdout_text;
      }
    }
    v1::AgentEvent parsed;
    if (!parsed.ParseFromString(record.value) ||
        !google::protobuf::util::MessageDifferencer::Equals(parsed, *expected)) {
      ++changed;
    }
    wrong_key += record.key == expected->user_id() ? 0 : 1;
    wrong_partition +=
        record.partition == PartitionForKey(expected->user_id(), kPartitions) ? 0 : 1;
    bad_headers +=
        record.headers == "content-type=application/x-protobuf,schema=agentwire.v1.AgentEvent" ? 0
                                                                                               : 1;
  }
  std::error_code ignored;
  std::filesystem::remove_all(directory, ignored);

  size_t lost = 0, duplicated = 0;
  for (const auto& event : events) {
    const auto it = copies.find(event.event_id());
    if (it == copies.end()) {
      ++lost;
    } else {
      duplicated += static_cast<size_t>(it->second - 1);
    }
  }
  std::ostringstream summary;
  summary << "published=" << events.size() << " read=" << records.size() << " lost=" << lost
          << " duplicated=" << duplicated << " unknown=" << unknown
          << " decode_failures=" << decode_failures << " missing_fields=" << missing_fields
          << " changed=" << changed << " wrong_key=" << wrong_key
          << " wrong_partition=" << wrong_partition << " bad_headers=" << bad_headers;
  std::cout << "kcat + protoc --decode: " << summary.str() << "\n";
  EXPECT_EQ(records.size(), events.size()) << summary.str();
  EXPECT_EQ(lost + duplicated + unknown + decode_failures + missing_fields + changed + wrong_key +
                wrong_partition + bad_headers,
            0U)
      << summary.str();
}

}  // namespace
}  // namespace agentwire::testing::interop
