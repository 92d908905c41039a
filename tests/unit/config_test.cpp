#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agentwire/cli/app.hpp"
#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/options.hpp"

namespace agentwire {
namespace {

using std::chrono::milliseconds;

// Runs `fn`, expects a ConfigError and returns its message ("" when none was thrown).
template <typename Fn>
std::string ConfigErrorOf(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError thrown";
  return {};
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(KafkaOptions, DefaultsAreValid) {
  KafkaOptions options;
  EXPECT_NO_THROW(options.Validate());
  EXPECT_EQ(options.brokers, "127.0.0.1:9092");
  EXPECT_EQ(options.topic, "agent.lifecycle.v1");
  EXPECT_EQ(options.DeadLetterTopic(), "agent.lifecycle.v1.dlq");
}

TEST(KafkaOptions, RejectsBrokersWithoutPort) {
  for (const char* brokers : {"", "localhost", "nohostport"}) {
    KafkaOptions options;
    options.brokers = brokers;
    const auto message = ConfigErrorOf([&] { options.Validate(); });
    EXPECT_TRUE(Contains(message, "--brokers")) << message;
    EXPECT_TRUE(Contains(message, "AGENTWIRE_BROKERS")) << message;
  }
  KafkaOptions many;
  many.brokers = "127.0.0.1:9092,127.0.0.1:9093";
  EXPECT_NO_THROW(many.Validate());
}

TEST(KafkaOptions, RejectsBadTopicNames) {
  const std::string too_long(250, 'a');
  for (const std::string& topic :
       {std::string(), std::string("has space"), std::string("a/b"), std::string("ünï"),
        std::string("."), std::string(".."), too_long}) {
    KafkaOptions options;
    options.topic = topic;
    const auto message = ConfigErrorOf([&] { options.Validate(); });
    EXPECT_TRUE(Contains(message, "--topic")) << topic << ": " << message;
  }
  KafkaOptions ok;
  ok.topic = std::string(249, 'a');
  EXPECT_NO_THROW(ok.Validate());
  ok.topic = "Agent_events-v2.dlq";
  EXPECT_NO_THROW(ok.Validate());
}

TEST(KafkaOptions, RejectsMalformedExtraProperties) {
  KafkaOptions options;
  options.extra_properties = {"linger.ms=5", "novalue"};
  const auto message = ConfigErrorOf([&] { options.Validate(); });
  EXPECT_TRUE(Contains(message, "novalue")) << message;
}

TEST(KafkaOptions, ExtraPropertiesWinOverBrokers) {
  KafkaOptions options;
  options.brokers = "a:1";
  options.extra_properties = {"linger.ms=5", "bootstrap.servers=b:2"};
  const auto properties = options.ClientProperties();
  EXPECT_EQ(properties.at("bootstrap.servers"), "b:2");
  EXPECT_EQ(properties.at("linger.ms"), "5");
}

TEST(ParseDuration, AcceptsUnits) {
  EXPECT_EQ(ParseDuration("250ms", "--x"), milliseconds(250));
  EXPECT_EQ(ParseDuration("10s", "--x"), milliseconds(10'000));
  EXPECT_EQ(ParseDuration("15m", "--x"), milliseconds(15 * 60'000));
  EXPECT_EQ(ParseDuration("2h", "--x"), milliseconds(2 * 3'600'000));
  EXPECT_EQ(ParseDuration("1.5", "--x"), milliseconds(1'500));
  EXPECT_EQ(ParseDuration("0", "--x"), milliseconds(0));
  EXPECT_EQ(ParseDuration("7d", "--x"), milliseconds(7 * 86'400'000));
  EXPECT_EQ(ParseDuration("1.5w", "--x"), milliseconds(907'200'000));
}

TEST(ParseDuration, RejectsGarbageNamingTheFlag) {
  for (const char* text : {"", "abc", "10 s", "10sec", "-5s", "5y", "ms", "infh", "nan", " 5s",
                           "0x10s", "1e30h", "99999999999h"}) {
    const auto message = ConfigErrorOf([&] { (void)ParseDuration(text, "--flush-timeout"); });
    EXPECT_TRUE(Contains(message, "--flush-timeout")) << text << ": " << message;
  }
}

TEST(ParseTopicSpec, ParsesNameAndPartitions) {
  auto spec = kafka::ParseTopicSpec("custom:3");
  EXPECT_EQ(spec.name, "custom");
  EXPECT_EQ(spec.partitions, 3);
  spec = kafka::ParseTopicSpec("agent.lifecycle.v1");
  EXPECT_EQ(spec.name, "agent.lifecycle.v1");
  EXPECT_EQ(spec.partitions, 12);
}

TEST(ParseTopicSpec, RejectsBadSpecs) {
  for (const char* text :
       {"bad:0", "bad:-1", "bad:x", "bad:", "bad:3x", ":3", "bad name:3", "bad:10001"}) {
    const auto message = ConfigErrorOf([&] { (void)kafka::ParseTopicSpec(text); });
    EXPECT_TRUE(Contains(message, "--topic")) << text << ": " << message;
  }
}

TEST(DefaultTopics, AreTheTopicItsDlqAndTheRunControlTopics) {
  const auto topics = kafka::DefaultTopics();
  ASSERT_EQ(topics.size(), 4U);
  EXPECT_EQ(topics[0].name, "agent.lifecycle.v1");
  EXPECT_EQ(topics[1].name, "agent.lifecycle.v1.dlq");
  EXPECT_EQ(topics[2].name, "agent.lifecycle.v1.control");
  EXPECT_EQ(topics[3].name, "agent.lifecycle.v1.heartbeat");
  // Co-partitioned with the event topic: a user's control records sit in the partition of
  // the same number as the user's events (the supervisor relies on it).
  for (const auto& topic : topics) EXPECT_EQ(topic.partitions, 12) << topic.name;
}

TEST(ParseProperties, SplitsAtTheFirstEquals) {
  const auto properties = kafka::ParseProperties({"linger.ms=5", "sasl.password=a=b", "x="});
  EXPECT_EQ(properties.at("linger.ms"), "5");
  EXPECT_EQ(properties.at("sasl.password"), "a=b");
  EXPECT_EQ(properties.at("x"), "");
}

TEST(ParseProperties, RejectsEntriesWithoutKeyOrEquals) {
  for (const char* entry : {"linger.ms", "=5", ""}) {
    const auto message = ConfigErrorOf([&] { (void)kafka::ParseProperties({entry}); });
    EXPECT_TRUE(Contains(message, "--kafka")) << entry << ": " << message;
  }
}

TEST(MakeConf, AcceptsKnownProperties) {
  EXPECT_NO_THROW((void)kafka::MakeConf(
      {{"bootstrap.servers", "127.0.0.1:1"}, {"linger.ms", "5"}, {"enable.idempotence", "true"}}));
}

TEST(MakeConf, UnknownKeyNamesTheKey) {
  const auto message = ConfigErrorOf([] { (void)kafka::MakeConf({{"no.such.property", "1"}}); });
  EXPECT_TRUE(Contains(message, "no.such.property")) << message;
}

TEST(MakeConf, BadValueNamesTheKey) {
  const auto message = ConfigErrorOf([] { (void)kafka::MakeConf({{"linger.ms", "soon"}}); });
  EXPECT_TRUE(Contains(message, "linger.ms")) << message;
  const auto range = ConfigErrorOf([] { (void)kafka::MakeConf({{"acks", "seven"}}); });
  EXPECT_TRUE(Contains(range, "acks")) << range;
}

TEST(LogFormat, ParsesTextAndJsonOnly) {
  EXPECT_EQ(log::ParseFormat("text"), log::Format::kText);
  EXPECT_EQ(log::ParseFormat("json"), log::Format::kJson);
  for (const char* text : {"xml", "", "JSON"}) {
    const auto message = ConfigErrorOf([&] { (void)log::ParseFormat(text); });
    EXPECT_TRUE(Contains(message, "--log-format")) << message;
    EXPECT_TRUE(Contains(message, "AGENTWIRE_LOG_FORMAT")) << message;
  }
}

TEST(LogSetup, RejectsUnknownLevel) {
  const auto message = ConfigErrorOf([] { log::Setup(log::Format::kText, "loud"); });
  EXPECT_TRUE(Contains(message, "--log-level")) << message;
  log::Setup(log::Format::kText, "info");
}

TEST(LogRender, TextIsKeyValue) {
  const auto text = log::Render(log::Format::kText, "partition assigned",
                                {{"topic", "agent.lifecycle.v1"},
                                 {"partition", int32_t{3}},
                                 {"offset", int64_t{42}},
                                 {"user", "alice smith"},
                                 {"error", ""}});
  EXPECT_EQ(text,
            "partition assigned topic=agent.lifecycle.v1 partition=3 offset=42 "
            "user=\"alice smith\" error=\"\"");
}

TEST(LogRender, JsonParsesWithFixedFieldNames) {
  const std::string payload = log::Render(log::Format::kJson, "event \"published\"\n",
                                          {{"topic", "agent.lifecycle.v1"},
                                           {"partition", int32_t{3}},
                                           {"offset", int64_t{42}},
                                           {"user", "alice"},
                                           {"session", "s-1"},
                                           {"run", "r-1"},
                                           {"event_id", "01JD"},
                                           {"error", "quote \" backslash \\ tab \t"},
                                           {"count", uint64_t{7}},
                                           {"ratio", 0.5},
                                           {"ok", true}});
  // Setup() wraps the payload as {"ts":...,"level":...,<payload>}.
  const std::string line = R"({"ts":"2026-11-22T10:00:00.123Z","level":"info",)" + payload + "}";
  nlohmann::json object;
  ASSERT_NO_THROW(object = nlohmann::json::parse(line)) << line;
  EXPECT_EQ(object["msg"], "event \"published\"\n");
  EXPECT_EQ(object["topic"], "agent.lifecycle.v1");
  EXPECT_EQ(object["partition"], 3);
  EXPECT_EQ(object["offset"], 42);
  EXPECT_EQ(object["user"], "alice");
  EXPECT_EQ(object["session"], "s-1");
  EXPECT_EQ(object["run"], "r-1");
  EXPECT_EQ(object["event_id"], "01JD");
  EXPECT_EQ(object["error"], "quote \" backslash \\ tab \t");
  EXPECT_EQ(object["count"], 7);
  EXPECT_EQ(object["ratio"], 0.5);
  EXPECT_EQ(object["ok"], true);
}

// RunCli with a plain argv, as main() would call it.
int RunCli(std::initializer_list<const char*> args) {
  std::vector<std::string> storage{"agentwire"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(storage.size());
  for (auto& arg : storage) argv.push_back(arg.data());
  argv.push_back(nullptr);
  return cli::RunCli(static_cast<int>(storage.size()), argv.data());
}

TEST(RunCli, HelpExitsZero) {
  EXPECT_EQ(RunCli({"--help"}), kExitOk);
  EXPECT_EQ(RunCli({"emit", "--help"}), kExitOk);
  EXPECT_EQ(RunCli({"broker", "--help"}), kExitOk);
}

TEST(RunCli, BadFlagsExitTwo) {
  EXPECT_EQ(RunCli({}), kExitConfig) << "a subcommand is required";
  EXPECT_EQ(RunCli({"frobnicate"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "--no-such-flag"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "--brokers", "nohostport"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "--topic", "bad topic"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "--log-format", "xml"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "--flush-timeout", "soon"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "--kafka", "no.such.property=1"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "simulate", "--users", "0"}), kExitConfig);
  EXPECT_EQ(RunCli({"emit", "simulate", "--duration", "forever"}), kExitConfig);
  EXPECT_EQ(RunCli({"broker", "--topic", "bad:0"}), kExitConfig);
  EXPECT_EQ(RunCli({"broker", "--brokers", "0"}), kExitConfig);
  EXPECT_EQ(RunCli({"broker", "--log-format", "xml"}), kExitConfig);
  log::Setup(log::Format::kText, "info");  // RunCli installed its own logger
}

TEST(RunCli, EnvironmentVariablesAreValidatedToo) {
  ASSERT_EQ(::setenv("AGENTWIRE_BROKERS", "nohostport", 1), 0);
  const int brokers_env = RunCli({"emit"});
  ::unsetenv("AGENTWIRE_BROKERS");
  EXPECT_EQ(brokers_env, kExitConfig);

  ASSERT_EQ(::setenv("AGENTWIRE_LOG_FORMAT", "xml", 1), 0);
  const int log_env = RunCli({"emit", "--brokers", "127.0.0.1:1"});
  ::unsetenv("AGENTWIRE_LOG_FORMAT");
  EXPECT_EQ(log_env, kExitConfig);
  log::Setup(log::Format::kText, "info");
}

// Restores (or removes) an environment variable when the test ends.
class ScopedEnv final {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(Options, EnvironmentFillsAndFlagWins) {
  ScopedEnv brokers("AGENTWIRE_BROKERS", "env-host:1");
  ScopedEnv topic("AGENTWIRE_TOPIC", "env.topic");
  ScopedEnv format("AGENTWIRE_LOG_FORMAT", "json");
  {
    CLI::App app;
    KafkaOptions kafka;
    LogOptions log;
    AddKafkaOptions(app, kafka);
    AddLogOptions(app, log);
    app.parse("", false);
    EXPECT_EQ(kafka.brokers, "env-host:1");
    EXPECT_EQ(kafka.topic, "env.topic");
    EXPECT_EQ(log.format, "json");
  }
  {
    CLI::App app;
    KafkaOptions kafka;
    LogOptions log;
    AddKafkaOptions(app, kafka);
    AddLogOptions(app, log);
    app.parse("--brokers flag-host:2 --topic flag.topic --log-format text", false);
    EXPECT_EQ(kafka.brokers, "flag-host:2");
    EXPECT_EQ(kafka.topic, "flag.topic");
    EXPECT_EQ(log.format, "text");
  }
}

}  // namespace
}  // namespace agentwire
