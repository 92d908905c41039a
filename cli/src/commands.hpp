#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace agentwire::cli {

/// Runs a parsed subcommand; returns its exit code. Throws ConfigError for bad settings.
using CommandAction = std::function<int()>;

// Each registers its subcommand on `app` and returns what to run when it was chosen.
CommandAction RegisterBrokerCommand(CLI::App& app);
CommandAction RegisterEmitCommand(CLI::App& app);
CommandAction RegisterDevCommand(CLI::App& app);
CommandAction RegisterGatewayCommand(CLI::App& app);
CommandAction RegisterTokenCommand(CLI::App& app);
CommandAction RegisterReplayCommand(CLI::App& app);
CommandAction RegisterArchiveCommand(CLI::App& app);
CommandAction RegisterAnalyticsCommand(CLI::App& app);

}  // namespace agentwire::cli
