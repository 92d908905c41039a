// `agentwire emit` and `agentwire emit simulate` as real processes against a real
// `agentwire broker` process: bad lines are reported by number and skipped, every good
// line arrives exactly once with the key and headers every consumer relies on.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/schemas/event_json.hpp"
#include "support/kafka_test_utils.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

// One topic per test, so each test sees only what it published.
const std::vector<std::pair<std::string, int>> kTopics = {
    {"emit.mixed", 4}, {"emit.good", 4},  {"emit.stdin", 4}, {"emit.sim", 6},
    {"emit.flags", 1}, {"emit.large", 2}, {"emit.cut", 2},   {"emit.hostile", 2}};

std::string GoodLine(const std::string& event_id, const std::string& user, int run_seq,
                     const std::string& type = "agent_thinking") {
  std::string body = R"({"text":"thinking hard"})";
  if (type == "agent_started") body = R"({"input":"question","model":"m"})";
  if (type == "agent_completed") body = R"({"result":"done","duration_ms":812})";
  return fmt::format(
      R"({{"event_id":"{}","type":"{}","user_id":"{}","thread_id":"t-1","run_id":"r-{}",)"
      R"("run_seq":{},"agent_name":"researcher","{}":{}}})",
      event_id, type, user, user, run_seq, type, body);
}

/// Total messages in `topic` (sum of high - low watermarks), so a test can read exactly
/// everything that is there and notice extras.
int64_t MessagesInTopic(const std::string& bootstrap, const std::string& topic) {
  auto client = kafka::MakeClient(
      RD_KAFKA_PRODUCER, kafka::MakeConf({{"bootstrap.servers", bootstrap}, {"log_level", "3"}}));
  const int partitions = kafka::PartitionCount(client.get(), topic, 10s);
  int64_t total = 0;
  for (int p = 0; p < partitions; ++p) {
    int64_t low = -1;
    int64_t high = -1;
    const auto err =
        rd_kafka_query_watermark_offsets(client.get(), topic.c_str(), p, &low, &high, 10'000);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      ADD_FAILURE() << "watermarks of " << topic << "[" << p << "]: " << kafka::ErrorText(err);
      return -1;
    }
    EXPECT_EQ(low, 0) << topic << "[" << p << "] lost its oldest messages";
    total += high - low;
  }
  return total;
}

struct Decoded {
  ConsumedRecord record;
  v1::AgentEvent event;
};

/// Everything in `topic`, decoded; fails the test on an undecodable value.
std::vector<Decoded> ReadTopic(const std::string& bootstrap, const std::string& topic) {
  const int64_t total = MessagesInTopic(bootstrap, topic);
  std::vector<Decoded> out;
  if (total <= 0) return out;
  for (auto& record : ConsumeAll(bootstrap, topic, static_cast<size_t>(total), 30s)) {
    Decoded decoded;
    EXPECT_TRUE(decoded.event.ParseFromString(record.value))
        << "value at " << record.partition << "/" << record.offset << " is not an AgentEvent";
    decoded.record = std::move(record);
    out.push_back(std::move(decoded));
  }
  EXPECT_EQ(out.size(), static_cast<size_t>(total)) << "could not read back all of " << topic;
  return out;
}

/// The line numbers of `line N: reason` reports on stderr.
std::set<int> ReportedLines(const std::string& stderr_text) {
  std::set<int> lines;
  const std::regex report(R"(^line (\d+): (.+)$)");
  std::istringstream in(stderr_text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, report)) lines.insert(std::stoi(m[1]));
  }
  return lines;
}

std::string ReasonForLine(const std::string& stderr_text, int number) {
  const std::string prefix = "line " + std::to_string(number) + ": ";
  std::istringstream in(stderr_text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
  }
  return {};
}

/// Every record is keyed by its user_id and carries the two headers; event_ids are unique;
/// returns them.
std::multiset<std::string> CheckRecordsAndCollectIds(const std::vector<Decoded>& records) {
  std::multiset<std::string> ids;
  for (const auto& d : records) {
    EXPECT_EQ(d.record.key, d.event.user_id()) << "key must be the user_id";
    const auto& headers = d.record.headers;
    EXPECT_EQ(headers.count("content-type") ? headers.at("content-type") : "<missing>",
              "application/x-protobuf");
    EXPECT_EQ(headers.count("schema") ? headers.at("schema") : "<missing>",
              "agentwire.v1.AgentEvent");
    EXPECT_FALSE(schemas::Validate(d.event)) << schemas::ToJson(d.event);
    EXPECT_TRUE(d.event.has_emitted_at()) << "emit fills emitted_at";
    EXPECT_NE(d.event.emitted_at().nanos(), 0) << "sub-second emitted_at";
    ids.insert(d.event.event_id());
  }
  return ids;
}

/// Within each run, in log order (a run's events share the user's partition), emitted_at
/// never goes back.
void ExpectEmittedAtNeverDecreasesWithinARun(const std::vector<Decoded>& records) {
  std::map<int32_t, std::vector<const Decoded*>> by_partition;
  for (const auto& d : records) by_partition[d.record.partition].push_back(&d);
  std::map<std::string, std::pair<int64_t, int32_t>> last;
  for (auto& [partition, list] : by_partition) {
    std::sort(list.begin(), list.end(), [](const Decoded* a, const Decoded* b) {
      return a->record.offset < b->record.offset;
    });
    for (const auto* d : list) {
      const std::pair at(d->event.emitted_at().seconds(), d->event.emitted_at().nanos());
      auto [it, inserted] = last.try_emplace(d->event.run_id(), at);
      EXPECT_GE(at, it->second) << d->event.run_id() << " went back at run_seq "
                                << d->event.run_seq();
      it->second = at;
    }
  }
}

class EmitCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = MakeTempDirectory("agentwire-emit-cli");
    const std::string bootstrap_file = directory_ + "/bootstrap";
    std::vector<std::string> argv = {AgentwireBinary(), "broker", "--bootstrap-file",
                                     bootstrap_file};
    for (const auto& [name, partitions] : kTopics) {
      argv.emplace_back("--topic");
      argv.push_back(name + ":" + std::to_string(partitions));
    }
    broker_ = new Subprocess(argv);
    if (WaitForFile(bootstrap_file, 30s)) bootstrap_ = ReadFirstLine(bootstrap_file);
  }
  static void TearDownTestSuite() {
    delete broker_;
    broker_ = nullptr;
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  void SetUp() override {
    ASSERT_FALSE(bootstrap_.empty()) << "agentwire broker did not start\n" << broker_->Describe();
  }

  static std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = directory_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  /// `agentwire emit` with the given extra arguments; the environment cannot leak in.
  static RunResult Emit(std::vector<std::string> args, Subprocess::Options options = {}) {
    std::vector<std::string> argv = {AgentwireBinary(), "emit"};
    argv.insert(argv.end(), args.begin(), args.end());
    options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC", "AGENTWIRE_LOG_FORMAT"};
    return agentwire::testing::Run(argv, options, 120s);
  }

  static std::string directory_;
  static std::string bootstrap_;
  static Subprocess* broker_;
};

std::string EmitCli::directory_;
std::string EmitCli::bootstrap_;
Subprocess* EmitCli::broker_ = nullptr;

TEST_F(EmitCli, BadLinesAreReportedByNumberAndTheRestIsPublished) {
  // line -> content; the bad ones are the lines the user must be told about.
  const std::vector<std::string> lines = {
      GoodLine("emit-mixed-01", "alice", 1, "agent_started"),                        // 1
      R"({"type":"agent_thinking","user_id":"alice","run_id":)",                     // 2 bad JSON
      "",                                                                            // 3 blank
      GoodLine("emit-mixed-02", "alice", 2),                                         // 4
      R"({"type":"agent_dreaming","user_id":"bob","run_id":"r-bob"})",               // 5 bad type
      R"({"type":"agent_thinking","run_id":"r-x","agent_thinking":{"text":"a"}})",   // 6 no user
      "   \t ",                                                                      // 7 blank
      R"({"type":"agent_thinking","user_id":"bob","run_id":"r","run_seq":"five"})",  // 8 bad value
      GoodLine("emit-mixed-03", "bob", 1, "agent_started"),                          // 9
      R"([1,2,3])",                                                                // 10 not object
      R"({"type":"agent_thinking","user_id":"bob","run_id":"r","colour":"red"})",  // 11 unknown
      GoodLine("emit-mixed-04", "alice", 3, "agent_completed"),                    // 12
      R"({"user_id":"carol","run_id":"r"})",                                       // 13 no type
      GoodLine("emit-mixed-05", "carol", 1, "agent_started"),                      // 14
  };
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  const std::string file = WriteFile("mixed.jsonl", text);

  const auto result = Emit({"--brokers", bootstrap_, "--topic", "emit.mixed", "--file", file});
  ASSERT_TRUE(result.exit_code.has_value()) << "emit did not finish";
  EXPECT_EQ(*result.exit_code, kExitFailure) << result.stderr_text;
  EXPECT_EQ(ReportedLines(result.stderr_text), (std::set<int>{2, 5, 6, 8, 10, 11, 13}))
      << result.stderr_text;
  EXPECT_NE(ReasonForLine(result.stderr_text, 2).find("invalid JSON"), std::string::npos);
  EXPECT_NE(ReasonForLine(result.stderr_text, 5).find("agent_dreaming"), std::string::npos);
  EXPECT_NE(ReasonForLine(result.stderr_text, 6).find("user_id"), std::string::npos);
  EXPECT_NE(ReasonForLine(result.stderr_text, 8).find("run_seq"), std::string::npos);
  EXPECT_NE(ReasonForLine(result.stderr_text, 11).find("colour"), std::string::npos);
  EXPECT_NE(ReasonForLine(result.stderr_text, 13).find("type"), std::string::npos);
  EXPECT_NE(result.stderr_text.find("5 published"), std::string::npos) << result.stderr_text;

  const auto records = ReadTopic(bootstrap_, "emit.mixed");
  const auto ids = CheckRecordsAndCollectIds(records);
  EXPECT_EQ(ids, (std::multiset<std::string>{"emit-mixed-01", "emit-mixed-02", "emit-mixed-03",
                                             "emit-mixed-04", "emit-mixed-05"}))
      << "exactly the good lines, once each";

  // alice's three events share a partition and keep their order.
  std::vector<uint32_t> alice_seqs;
  std::set<int32_t> alice_partitions;
  std::map<int32_t, std::vector<const Decoded*>> by_partition;
  for (const auto& d : records) by_partition[d.record.partition].push_back(&d);
  for (auto& [partition, list] : by_partition) {
    for (const auto* d : list) {
      if (d->event.user_id() != "alice") continue;
      alice_partitions.insert(partition);
      alice_seqs.push_back(d->event.run_seq());
    }
  }
  EXPECT_EQ(alice_partitions.size(), 1U);
  EXPECT_EQ(alice_seqs, (std::vector<uint32_t>{1, 2, 3}));
  for (const auto& d : records) {
    if (d.event.event_id() == "emit-mixed-04") {
      EXPECT_EQ(d.event.agent_completed().duration_ms(), 812U);
      EXPECT_EQ(d.event.agent_name(), "researcher");
      EXPECT_EQ(d.event.thread_id(), "t-1");
    }
  }
}

TEST_F(EmitCli, AllGoodFileExitsZero) {
  std::string text;
  std::multiset<std::string> expected;
  for (int i = 1; i <= 50; ++i) {
    const std::string id = fmt::format("emit-good-{:03}", i);
    text += GoodLine(id, "user-" + std::to_string(i % 7), i) + "\n";
    expected.insert(id);
  }
  // One event without event_id / emitted_at: emit fills them in.
  text += R"({"type":"agent_thinking","user_id":"user-x","run_id":"r-x","agent_thinking":{}})";
  text += "\n";
  const std::string file = WriteFile("good.jsonl", text);

  const auto result = Emit({"--brokers", bootstrap_, "--topic", "emit.good", "--file", file});
  ASSERT_TRUE(result.exit_code.has_value());
  EXPECT_EQ(*result.exit_code, kExitOk) << result.stderr_text;
  EXPECT_TRUE(ReportedLines(result.stderr_text).empty()) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("51 published, 0 failed"), std::string::npos)
      << result.stderr_text;

  const auto good_records = ReadTopic(bootstrap_, "emit.good");
  ExpectEmittedAtNeverDecreasesWithinARun(good_records);
  auto ids = CheckRecordsAndCollectIds(good_records);
  ASSERT_EQ(ids.size(), 51U);
  std::string generated;
  for (const auto& id : ids) {
    if (id.rfind("emit-good-", 0) != 0) generated = id;
  }
  EXPECT_EQ(generated.size(), 26U) << "a generated ULID event_id";
  ids.erase(generated);
  EXPECT_EQ(ids, expected);
}

TEST_F(EmitCli, ReadsStdin) {
  Subprocess::Options options;
  options.stdin_text = GoodLine("emit-stdin-1", "dave", 1, "agent_started") + "\n" + "not json\n" +
                       GoodLine("emit-stdin-2", "dave", 2, "agent_completed");
  // (no newline at the end of the last line: it still counts)
  const auto result = Emit({"--brokers", bootstrap_, "--topic", "emit.stdin"}, options);
  ASSERT_TRUE(result.exit_code.has_value());
  EXPECT_EQ(*result.exit_code, kExitFailure) << result.stderr_text;
  EXPECT_EQ(ReportedLines(result.stderr_text), (std::set<int>{2})) << result.stderr_text;
  const auto ids = CheckRecordsAndCollectIds(ReadTopic(bootstrap_, "emit.stdin"));
  EXPECT_EQ(ids, (std::multiset<std::string>{"emit-stdin-1", "emit-stdin-2"}));
}

TEST_F(EmitCli, BrokersAndTopicFromEnvironment) {
  Subprocess::Options options;
  options.stdin_text = GoodLine("emit-env-1", "erin", 1, "agent_started") + "\n";
  std::vector<std::string> argv = {AgentwireBinary(), "emit"};
  options.env = {{"AGENTWIRE_BROKERS", bootstrap_}, {"AGENTWIRE_TOPIC", "emit.flags"}};
  const auto result = agentwire::testing::Run(argv, options, 120s);
  ASSERT_TRUE(result.exit_code.has_value());
  EXPECT_EQ(*result.exit_code, kExitOk) << result.stderr_text;
  const auto ids = CheckRecordsAndCollectIds(ReadTopic(bootstrap_, "emit.flags"));
  EXPECT_EQ(ids, (std::multiset<std::string>{"emit-env-1"}));
}

TEST_F(EmitCli, BadFlagsExitTwoAndPublishNothing) {
  const std::string file = WriteFile("one.jsonl", GoodLine("emit-flags-x", "frank", 1) + "\n");
  const std::vector<std::vector<std::string>> cases = {
      {"--brokers", "nohostport", "--topic", "emit.flags", "--file", file},
      {"--brokers", bootstrap_, "--topic", "bad topic", "--file", file},
      {"--brokers", bootstrap_, "--topic", "emit.flags", "--file", directory_ + "/missing.jsonl"},
      {"--brokers", bootstrap_, "--topic", "emit.flags", "--file", file, "--log-format", "xml"},
      {"--brokers", bootstrap_, "--topic", "emit.flags", "--file", file, "--no-such-flag"},
      {"--brokers", bootstrap_, "--topic", "emit.flags", "--file", file, "--flush-timeout", "x"},
      {"--brokers", bootstrap_, "--topic", "emit.flags", "--file", file, "--kafka", "nope=1"},
  };
  const int64_t before = MessagesInTopic(bootstrap_, "emit.flags");
  for (const auto& args : cases) {
    const auto result = Emit(args);
    ASSERT_TRUE(result.exit_code.has_value());
    EXPECT_EQ(*result.exit_code, kExitConfig) << args.back() << ": " << result.stderr_text;
    EXPECT_FALSE(result.stderr_text.empty());
  }
  EXPECT_EQ(MessagesInTopic(bootstrap_, "emit.flags"), before);
}

TEST_F(EmitCli, SimulatePublishesGaplessRunsEachWithOneTerminalEvent) {
  const auto result =
      Emit({"simulate", "--brokers", bootstrap_, "--topic", "emit.sim", "--users", "20", "--rate",
            "0", "--duration", "0", "--max-events", "2000", "--seed", "11", "--no-run-control"});
  ASSERT_TRUE(result.exit_code.has_value());
  ASSERT_EQ(*result.exit_code, kExitOk) << result.stderr_text;

  const auto records = ReadTopic(bootstrap_, "emit.sim");
  ASSERT_GE(records.size(), 2000U);
  CheckRecordsAndCollectIds(records);
  ExpectEmittedAtNeverDecreasesWithinARun(records);

  // Per run, in log order (a run's events share the user's partition, so offset order is
  // publish order).
  std::map<int32_t, std::vector<const Decoded*>> by_partition;
  for (const auto& d : records) by_partition[d.record.partition].push_back(&d);
  struct Run {
    std::vector<uint32_t> seqs;
    int terminals = 0;
    bool terminal_last = true;
    std::string first_type;
  };
  std::map<std::string, Run> runs;
  std::set<std::string> ids;
  for (auto& [partition, list] : by_partition) {
    std::sort(list.begin(), list.end(), [](const Decoded* a, const Decoded* b) {
      return a->record.offset < b->record.offset;
    });
    for (const auto* d : list) {
      EXPECT_TRUE(ids.insert(d->event.event_id()).second) << "duplicate " << d->event.event_id();
      auto& run = runs[d->event.run_id()];
      if (run.seqs.empty()) run.first_type = std::string(schemas::EventType(d->event));
      if (run.terminals > 0) run.terminal_last = false;
      run.seqs.push_back(d->event.run_seq());
      if (schemas::IsTerminal(d->event)) ++run.terminals;
    }
  }
  std::set<std::string> users;
  for (const auto& d : records) users.insert(d.event.user_id());
  EXPECT_EQ(users.size(), 20U);
  size_t gapped = 0;
  size_t without_one_terminal = 0;
  for (const auto& [run_id, run] : runs) {
    bool gapless = true;
    for (size_t i = 0; i < run.seqs.size(); ++i) gapless = gapless && run.seqs[i] == i + 1;
    if (!gapless) {
      ++gapped;
      ADD_FAILURE() << run_id << " run_seq not 1..N in log order";
    }
    if (run.terminals != 1 || !run.terminal_last) {
      ++without_one_terminal;
      ADD_FAILURE() << run_id << ": " << run.terminals << " terminal events";
    }
    EXPECT_EQ(run.first_type, "agent_started") << run_id;
  }
  EXPECT_EQ(gapped, 0U);
  EXPECT_EQ(without_one_terminal, 0U);
  EXPECT_GT(runs.size(), 20U);
}

std::string LargeThinkingLine(const std::string& event_id, size_t bytes) {
  return fmt::format(
      R"({{"event_id":"{}","type":"agent_thinking","user_id":"gina","run_id":"r-gina",)"
      R"("run_seq":2,"agent_thinking":{{"text":"{}"}}}})",
      event_id, std::string(bytes, 'x'));
}

// Issue: a 3 MB line made emit spin forever and never publish the line after it.
TEST_F(EmitCli, AnEventOverTheLimitIsReportedWithItsSizeAndTheRestIsPublished) {
  const std::string file =
      WriteFile("large.jsonl", GoodLine("emit-large-1", "gina", 1, "agent_started") + "\n" +
                                   LargeThinkingLine("emit-large-2", 3'000'000) + "\n" +
                                   GoodLine("emit-large-3", "gina", 3, "agent_completed") + "\n");
  const auto result = Emit({"--brokers", bootstrap_, "--topic", "emit.large", "--file", file});
  ASSERT_TRUE(result.exit_code.has_value()) << "emit did not finish";
  EXPECT_EQ(*result.exit_code, kExitFailure) << result.stderr_text;
  EXPECT_EQ(ReportedLines(result.stderr_text), (std::set<int>{2})) << result.stderr_text;
  const std::string reason = ReasonForLine(result.stderr_text, 2);
  EXPECT_TRUE(std::regex_search(reason, std::regex(R"(\b30000\d\d bytes)")))
      << "names the event's size: " << reason;
  EXPECT_NE(reason.find("1000000"), std::string::npos) << "and the limit: " << reason;
  EXPECT_NE(reason.find("message.max.bytes"), std::string::npos) << reason;
  EXPECT_NE(reason.find("--truncate"), std::string::npos) << "and what to change: " << reason;
  EXPECT_NE(reason.find("permanent"), std::string::npos) << reason;
  EXPECT_NE(result.stderr_text.find("2 published, 1 failed"), std::string::npos)
      << result.stderr_text;
  const auto ids = CheckRecordsAndCollectIds(ReadTopic(bootstrap_, "emit.large"));
  EXPECT_EQ(ids, (std::multiset<std::string>{"emit-large-1", "emit-large-3"}));
}

TEST_F(EmitCli, TruncateCutsTheLargeEventToFitAndMarksIt) {
  const std::string file =
      WriteFile("cut.jsonl", GoodLine("emit-cut-1", "gina", 1, "agent_started") + "\n" +
                                 LargeThinkingLine("emit-cut-2", 3'000'000) + "\n" +
                                 GoodLine("emit-cut-3", "gina", 3, "agent_completed") + "\n");
  const auto result =
      Emit({"--brokers", bootstrap_, "--topic", "emit.cut", "--file", file, "--truncate"});
  ASSERT_TRUE(result.exit_code.has_value()) << "emit did not finish";
  EXPECT_EQ(*result.exit_code, kExitOk) << result.stderr_text;
  EXPECT_TRUE(ReportedLines(result.stderr_text).empty()) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("line 2 cut to fit"), std::string::npos) << result.stderr_text;
  const auto records = ReadTopic(bootstrap_, "emit.cut");
  const auto ids = CheckRecordsAndCollectIds(records);
  EXPECT_EQ(ids, (std::multiset<std::string>{"emit-cut-1", "emit-cut-2", "emit-cut-3"}));
  for (const auto& d : records) {
    if (d.event.event_id() != "emit-cut-2") {
      EXPECT_FALSE(d.event.has_truncated());
      continue;
    }
    ASSERT_TRUE(d.event.has_truncated());
    EXPECT_EQ(d.event.truncated().fields_size(), 1);
    EXPECT_GT(d.event.truncated().original_bytes(), 3'000'000U);
    EXPECT_EQ(d.event.truncated().limit_bytes(), 900'000U);
    EXPECT_LE(d.record.value.size(), 900'000U);
    EXPECT_GT(d.event.agent_thinking().text().size(), 800'000U);
    EXPECT_EQ(d.event.run_seq(), 2U);
  }
}

TEST_F(EmitCli, AnUnknownTopicFailsAtStartWithOneClearLine) {
  const std::string file =
      WriteFile("nosuch.jsonl", GoodLine("emit-nosuch-1", "hank", 1, "agent_started") + "\n" +
                                    LargeThinkingLine("emit-nosuch-2", 3'000'000) + "\n" +
                                    GoodLine("emit-nosuch-3", "hank", 3) + "\n");
  const auto result = Emit({"--brokers", bootstrap_, "--topic", "emit.no.such", "--file", file});
  ASSERT_TRUE(result.exit_code.has_value()) << "emit did not finish";
  EXPECT_EQ(*result.exit_code, kExitConfig) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("emit.no.such"), std::string::npos) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("does not exist"), std::string::npos) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("create topic"), std::string::npos) << result.stderr_text;
  EXPECT_TRUE(ReportedLines(result.stderr_text).empty()) << "one line, not one per event";
}

// Issue: hostile lines aborted emit (std::terminate, SIGSEGV) and lost the good line before.
TEST_F(EmitCli, HostileLinesAreReportedByNumberAndNeverAbort) {
  const std::string deep = std::string(200'000, '[') + std::string(200'000, ']');
  const std::vector<std::string> lines = {
      GoodLine("emit-hostile-1", "ivy", 1, "agent_started"),                                // 1
      R"({"type":"agent_thinking","user_id":"ivy","run_id":"r-ivy","run_seq":1e400})",      // 2
      deep,                                                                                 // 3
      R"({"type":"agent_thinking","user_id":"ivy","user_id":"mallory","run_id":"r-ivy"})",  // 4
      GoodLine("emit-hostile-5", "ivy", 2),                                                 // 5
      R"({"type":"agent_thinking","user_id":"ivy","run_id":"r","run_seq":1e10})",           // 6
      "{\"type\":\"agent_thinking\",\"user_id\":\"ivy\xff\",\"run_id\":\"r\"}",             // 7
      "{\"a\":" + std::string(100'000, '{'),                                                // 8
      GoodLine("emit-hostile-9", "ivy", 3, "agent_completed"),                              // 9
  };
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  const std::string file = WriteFile("hostile.jsonl", text);
  // (In the opt-in mode that serves delivery reports on emit's own thread.)
  const auto result = Emit({"--brokers", bootstrap_, "--topic", "emit.hostile", "--file", file,
                            "--serve-reports-in-caller"});
  ASSERT_TRUE(result.exit_code.has_value()) << "emit did not finish";
  EXPECT_EQ(*result.exit_code, kExitFailure)
      << "not a crash: " << result.stderr_text.substr(0, 2000);
  EXPECT_EQ(ReportedLines(result.stderr_text), (std::set<int>{2, 3, 4, 6, 7, 8}))
      << result.stderr_text.substr(0, 2000);
  EXPECT_NE(ReasonForLine(result.stderr_text, 2).find("1e400"), std::string::npos);
  EXPECT_NE(ReasonForLine(result.stderr_text, 3).find("nested deeper"), std::string::npos);
  EXPECT_NE(ReasonForLine(result.stderr_text, 4).find(R"(duplicate key "user_id")"),
            std::string::npos)
      << ReasonForLine(result.stderr_text, 4);
  EXPECT_NE(ReasonForLine(result.stderr_text, 6).find("run_seq"), std::string::npos)
      << ReasonForLine(result.stderr_text, 6);
  const auto ids = CheckRecordsAndCollectIds(ReadTopic(bootstrap_, "emit.hostile"));
  EXPECT_EQ(ids,
            (std::multiset<std::string>{"emit-hostile-1", "emit-hostile-5", "emit-hostile-9"}));
}

}  // namespace
}  // namespace agentwire::testing
