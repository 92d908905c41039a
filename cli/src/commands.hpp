#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace agentwire {
struct FileLimit;
}

namespace agentwire::cli {

/// Once, before any subcommand runs: raises the soft descriptor limit to the hard one and
/// routes libprotobuf's log messages through the structured logger (rate-limited).
void PrepareProcess();
/// The descriptor limit PrepareProcess found and set (long-running commands log it).
const FileLimit& StartupFileLimit();

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
CommandAction RegisterSupervisorCommand(CLI::App& app);

}  // namespace agentwire::cli
