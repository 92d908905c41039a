#pragma once

namespace agentwire::cli {

/// Parses the command line, runs the chosen subcommand and returns the process exit code:
/// 0 ok, 1 the work partly failed, 2 bad flags or configuration (one clear line on stderr).
int RunCli(int argc, char** argv);

}  // namespace agentwire::cli
