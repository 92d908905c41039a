// `agentwire broker` as a real process, driven and checked by other real processes (kcat):
// what local multi-process setups and every script in this repository rely on.

#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {
namespace {

using namespace std::chrono_literals;

/// A running `agentwire broker`, its bootstrap list read back from --bootstrap-file.
struct BrokerProcess {
  std::string directory;
  std::string bootstrap_file;
  std::unique_ptr<Subprocess> process;
  std::string bootstrap;

  explicit BrokerProcess(const std::vector<std::string>& extra_args) {
    directory = MakeTempDirectory("agentwire-broker-cli");
    bootstrap_file = directory + "/bootstrap";
    std::vector<std::string> argv = {AgentwireBinary(), "broker", "--bootstrap-file",
                                     bootstrap_file};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    Subprocess::Options options;
    options.unset_env = {"AGENTWIRE_BOOTSTRAP_FILE", "AGENTWIRE_LOG_FORMAT"};
    process = std::make_unique<Subprocess>(argv, options);
    if (WaitForFile(bootstrap_file, 30s)) bootstrap = ReadFirstLine(bootstrap_file);
  }
  ~BrokerProcess() {
    process.reset();
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
};

/// `kcat -L -J`: topic name -> partition count.
std::map<std::string, int> ListTopics(const std::string& bootstrap) {
  const auto result =
      agentwire::testing::Run({"kcat", "-b", bootstrap, "-L", "-J", "-m", "10"}, 30s);
  EXPECT_EQ(result.exit_code, 0) << result.stderr_text;
  std::map<std::string, int> topics;
  nlohmann::json metadata;
  try {
    metadata = nlohmann::json::parse(result.stdout_text);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "kcat -L -J printed no JSON: " << e.what() << "\n" << result.stdout_text;
    return topics;
  }
  for (const auto& topic : metadata["topics"]) {
    topics[topic["topic"].get<std::string>()] = static_cast<int>(topic["partitions"].size());
  }
  return topics;
}

class BrokerCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { broker_ = new BrokerProcess({}); }
  static void TearDownTestSuite() {
    delete broker_;
    broker_ = nullptr;
  }
  void SetUp() override {
    ASSERT_FALSE(broker_->bootstrap.empty()) << "agentwire broker wrote no bootstrap file\n"
                                             << broker_->process->Describe();
    ASSERT_TRUE(broker_->process->Running()) << broker_->process->Describe();
  }

  static BrokerProcess* broker_;
};

BrokerProcess* BrokerCli::broker_ = nullptr;

TEST_F(BrokerCli, PrintsTheBootstrapListOnStdoutAndInTheFile) {
  // Three brokers by default, all on 127.0.0.1.
  const auto& bootstrap = broker_->bootstrap;
  std::vector<std::string> servers;
  std::istringstream in(bootstrap);
  for (std::string server; std::getline(in, server, ',');) servers.push_back(server);
  ASSERT_EQ(servers.size(), 3U) << bootstrap;
  for (const auto& server : servers) EXPECT_EQ(server.rfind("127.0.0.1:", 0), 0U) << server;
  ASSERT_TRUE(broker_->process->WaitForStdout(bootstrap, 5s));
  // stdout carries exactly the data (logs go to stderr), so scripts can read it.
  EXPECT_EQ(broker_->process->StdoutText(), bootstrap + "\n");
}

TEST_F(BrokerCli, CreatesTheDefaultTopicsWith12Partitions) {
  const auto topics = ListTopics(broker_->bootstrap);
  ASSERT_TRUE(topics.count("agent.lifecycle.v1")) << "topics: " << topics.size();
  ASSERT_TRUE(topics.count("agent.lifecycle.v1.dlq"));
  EXPECT_EQ(topics.at("agent.lifecycle.v1"), 12);
  EXPECT_EQ(topics.at("agent.lifecycle.v1.dlq"), 12);
  EXPECT_EQ(topics.at("agent.lifecycle.v1.control"), 12);
  EXPECT_EQ(topics.at("agent.lifecycle.v1.heartbeat"), 12);

  // The same through librdkafka, which is how agentwire's own components ask.
  auto client = kafka::MakeClient(
      RD_KAFKA_PRODUCER,
      kafka::MakeConf({{"bootstrap.servers", broker_->bootstrap}, {"log_level", "3"}}));
  EXPECT_EQ(kafka::PartitionCount(client.get(), "agent.lifecycle.v1", 10s), 12);
  EXPECT_EQ(kafka::PartitionCount(client.get(), "agent.lifecycle.v1.dlq", 10s), 12);
}

TEST_F(BrokerCli, KcatProducesAndAnotherKcatConsumesEverything) {
  // 10 users x 10 messages, keyed, through one kcat process; read back by another.
  constexpr int kUsers = 10;
  constexpr int kPerUser = 10;
  std::string input;
  for (int i = 0; i < kPerUser; ++i) {
    for (int u = 0; u < kUsers; ++u) {
      input += "user-" + std::to_string(u) + ":msg-" + std::to_string(u) + "-" + std::to_string(i) +
               "\n";
    }
  }
  const std::string topic = "agent.lifecycle.v1";
  Subprocess::Options producer_options;
  producer_options.stdin_text = input;
  const auto produced = agentwire::testing::Run(
      {"kcat", "-b", broker_->bootstrap, "-t", topic, "-P", "-K:", "-X", "enable.idempotence=true"},
      producer_options, 60s);
  ASSERT_EQ(produced.exit_code, 0) << produced.stderr_text;

  const auto consumed =
      agentwire::testing::Run({"kcat", "-b", broker_->bootstrap, "-t", topic, "-C", "-e", "-o",
                               "beginning", "-q", "-f", "%k %p %o %s\\n"},
                              60s);
  ASSERT_EQ(consumed.exit_code, 0) << consumed.stderr_text;

  std::map<std::string, int> copies;                // value -> times seen
  std::map<std::string, std::set<int>> partitions;  // key -> partitions
  std::map<std::string, std::vector<int>> order;    // key -> message index in offset order
  std::map<int, int64_t> last_offset;               // partition -> offset
  size_t lines = 0;
  std::istringstream in(consumed.stdout_text);
  for (std::string line; std::getline(in, line);) {
    ++lines;
    std::istringstream fields(line);
    std::string key;
    std::string value;
    int partition = -1;
    int64_t offset = -1;
    fields >> key >> partition >> offset >> value;
    ASSERT_FALSE(value.empty()) << line;
    ++copies[value];
    partitions[key].insert(partition);
    EXPECT_GT(offset, last_offset.count(partition) ? last_offset[partition] : -1) << line;
    last_offset[partition] = offset;
    // A key lives in one partition and offsets order a partition, so each key's messages
    // must come out in the order they went in.
    order[key].push_back(std::stoi(value.substr(value.rfind('-') + 1)));
  }
  EXPECT_EQ(lines, static_cast<size_t>(kUsers * kPerUser)) << consumed.stdout_text;
  for (int u = 0; u < kUsers; ++u) {
    const std::string key = "user-" + std::to_string(u);
    EXPECT_EQ(partitions[key].size(), 1U) << key << " is spread over partitions";
    std::vector<int> expected(kPerUser);
    for (int i = 0; i < kPerUser; ++i) {
      expected[static_cast<size_t>(i)] = i;
      const std::string value = "msg-" + std::to_string(u) + "-" + std::to_string(i);
      EXPECT_EQ(copies[value], 1) << value << (copies[value] == 0 ? " lost" : " duplicated");
    }
    EXPECT_EQ(order[key], expected) << key << " reordered";
  }
}

TEST(BrokerCliStandalone, CustomTopicAndSigtermExitZero) {
  BrokerProcess broker({"--brokers", "1", "--topic", "custom:3"});
  ASSERT_FALSE(broker.bootstrap.empty()) << broker.process->Describe();
  EXPECT_EQ(broker.bootstrap.find(','), std::string::npos) << "one broker: " << broker.bootstrap;

  const auto topics = ListTopics(broker.bootstrap);
  ASSERT_EQ(topics.count("custom"), 1U);
  EXPECT_EQ(topics.at("custom"), 3);
  EXPECT_EQ(topics.count("agent.lifecycle.v1"), 0U) << "--topic replaces the defaults";
  EXPECT_EQ(topics.count("agent.lifecycle.v1.dlq"), 0U);

  broker.process->Signal(SIGTERM);
  const auto exit_code = broker.process->Wait(20s);
  ASSERT_TRUE(exit_code.has_value()) << "still running 20 s after SIGTERM";
  EXPECT_EQ(*exit_code, 0) << broker.process->Describe();
  EXPECT_FALSE(std::filesystem::exists(broker.bootstrap_file))
      << "a stopped broker leaves no stale bootstrap file";
}

TEST(BrokerCliStandalone, SigintAlsoStopsItCleanly) {
  BrokerProcess broker({"--brokers", "1", "--topic", "t:1"});
  ASSERT_FALSE(broker.bootstrap.empty()) << broker.process->Describe();
  broker.process->Signal(SIGINT);
  const auto exit_code = broker.process->Wait(20s);
  ASSERT_TRUE(exit_code.has_value()) << "still running 20 s after SIGINT";
  EXPECT_EQ(*exit_code, 0) << broker.process->Describe();
}

TEST(BrokerCliStandalone, RepeatedTopicFlagCreatesEach) {
  BrokerProcess broker({"--brokers", "2", "--topic", "a.one:1", "--topic", "b-two:5"});
  ASSERT_FALSE(broker.bootstrap.empty()) << broker.process->Describe();
  const auto topics = ListTopics(broker.bootstrap);
  EXPECT_EQ(topics, (std::map<std::string, int>{{"a.one", 1}, {"b-two", 5}}));
}

struct BadFlags {
  std::vector<std::string> args;
  std::string mentions;
};

TEST(BrokerCliStandalone, BadFlagsExitTwoWithOneLine) {
  for (const auto& c : std::vector<BadFlags>{{{"--brokers", "0"}, "--brokers"},
                                             {{"--brokers", "x"}, "--brokers"},
                                             {{"--topic", "bad:0"}, "--topic"},
                                             {{"--topic", "bad name:3"}, "--topic"},
                                             {{"--log-format", "xml"}, "--log-format"},
                                             {{"--no-such-flag"}, "--no-such-flag"}}) {
    std::vector<std::string> argv = {AgentwireBinary(), "broker"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const auto result = agentwire::testing::Run(argv, 30s);
    SCOPED_TRACE(c.args.front() + " " + (c.args.size() > 1 ? c.args[1] : ""));
    ASSERT_TRUE(result.exit_code.has_value()) << "did not exit";
    EXPECT_EQ(*result.exit_code, kExitConfig) << result.stderr_text;
    EXPECT_NE(result.stderr_text.find(c.mentions), std::string::npos) << result.stderr_text;
    EXPECT_EQ(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'), 1)
        << "one clear line:\n"
        << result.stderr_text;
    EXPECT_EQ(result.stdout_text, "") << "no bootstrap list when nothing started";
  }
}

}  // namespace
}  // namespace agentwire::testing
