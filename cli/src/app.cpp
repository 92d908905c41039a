#include "agentwire/cli/app.hpp"

#include <CLI/CLI.hpp>
#include <iostream>
#include <map>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "commands.hpp"

namespace agentwire::cli {

int RunCli(int argc, char** argv) {
  CLI::App app{"agentwire: durable, resumable agent lifecycle events (Kafka -> WebSocket)",
               "agentwire"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "agentwire 0.1.0");

  std::map<CLI::App*, CommandAction> actions;
  auto add = [&](CommandAction (*registrar)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    CommandAction action = registrar(app);
    actions[app.get_subcommands({}).at(before)] = std::move(action);
  };
  add(&RegisterBrokerCommand);
  add(&RegisterEmitCommand);
  add(&RegisterDevCommand);
  add(&RegisterGatewayCommand);
  add(&RegisterTokenCommand);
  add(&RegisterReplayCommand);
  add(&RegisterArchiveCommand);
  add(&RegisterAnalyticsCommand);
  add(&RegisterSupervisorCommand);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "agentwire: " << e.what() << " (see agentwire --help)\n";
    return kExitConfig;
  }

  PrepareProcess();
  for (auto& [subcommand, action] : actions) {
    if (!subcommand->parsed()) continue;
    try {
      return action();
    } catch (const ConfigError& e) {
      std::cerr << "agentwire " << subcommand->get_name() << ": " << e.what() << '\n';
      return kExitConfig;
    } catch (const KafkaError& e) {
      std::cerr << "agentwire " << subcommand->get_name() << ": " << e.what() << '\n';
      return kExitFailure;
    } catch (const std::exception& e) {
      // Anything else a command lets escape. Being caught here unwinds the command's stack
      // first, so its publisher flushes what it had accepted (an uncaught exception would
      // terminate without unwinding and lose it).
      std::cerr << "agentwire " << subcommand->get_name() << ": unexpected error: " << e.what()
                << '\n';
      return kExitFailure;
    } catch (...) {
      std::cerr << "agentwire " << subcommand->get_name() << ": unexpected error\n";
      return kExitFailure;
    }
  }
  return kExitConfig;
}

}  // namespace agentwire::cli
