#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/core/errors.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/core/signals.hpp"
#include "commands.hpp"
#include "embedded_setup.hpp"

namespace agentwire::cli {

void WriteBootstrapFile(const std::string& path, const std::string& bootstrap) {
  if (path.empty()) return;
  // Write then rename, so a script polling for the file never reads half of it.
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << bootstrap << '\n';
    if (!out) throw ConfigError(fmt::format("--bootstrap-file {}: cannot write", path));
  }
  std::filesystem::rename(temporary, path);
}

std::unique_ptr<kafka::EmbeddedKafka> StartEmbeddedKafka(
    int brokers, const std::vector<kafka::TopicSpec>& topics) {
  auto cluster = std::make_unique<kafka::EmbeddedKafka>(brokers);
  for (const auto& topic : topics) cluster->CreateTopic(topic);
  log::Info("embedded kafka up", {{"bootstrap", cluster->BootstrapServers()},
                                  {"brokers", brokers},
                                  {"topics", static_cast<uint64_t>(topics.size())}});
  return cluster;
}

CommandAction RegisterBrokerCommand(CLI::App& app) {
  struct Options {
    int brokers = 3;
    std::vector<std::string> topics;
    std::string bootstrap_file;
    LogOptions log;
  };
  auto options = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "broker",
      "Standalone embedded Kafka (librdkafka mock cluster) for local multi-process setups and "
      "tests. Prints its bootstrap servers on stdout; runs until SIGINT/SIGTERM.");
  cmd->add_option("--brokers", options->brokers, "Number of brokers")->capture_default_str();
  cmd->add_option("--topic", options->topics,
                  "Topic to create as NAME:PARTITIONS (repeatable; default "
                  "agent.lifecycle.v1:12 and agent.lifecycle.v1.dlq:12)");
  cmd->add_option("--bootstrap-file", options->bootstrap_file,
                  "Also write the bootstrap servers to this file")
      ->envname("AGENTWIRE_BOOTSTRAP_FILE");
  AddLogOptions(*cmd, options->log);

  return [options]() {
    options->log.Apply();
    std::vector<kafka::TopicSpec> topics;
    for (const auto& text : options->topics) topics.push_back(kafka::ParseTopicSpec(text));
    if (topics.empty()) topics = kafka::DefaultTopics();

    BlockTerminationSignals();  // before the cluster starts its threads
    auto cluster = StartEmbeddedKafka(options->brokers, topics);
    std::cout << cluster->BootstrapServers() << std::endl;
    WriteBootstrapFile(options->bootstrap_file, cluster->BootstrapServers());

    const int signal = *WaitForTerminationSignal();
    log::Info("embedded kafka stopping", {{"signal", signal}});
    if (!options->bootstrap_file.empty()) std::remove(options->bootstrap_file.c_str());
    return kExitOk;
  };
}

}  // namespace agentwire::cli
