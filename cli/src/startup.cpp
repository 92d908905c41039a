// Process-wide set-up every subcommand shares: the descriptor limit and libprotobuf's logging.
#include <google/protobuf/stubs/logging.h>

#include "agentwire/core/listen.hpp"
#include "agentwire/core/logging.hpp"
#include "commands.hpp"

namespace agentwire::cli {
namespace {

FileLimit g_file_limit;

// libprotobuf writes "[libprotobuf ERROR ...]" lines to stderr by itself, e.g. once per record
// whose string field holds invalid UTF-8: one per message in a poison stream. Here they become
// structured lines, at most one per second per level.
void ProtobufLogHandler(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  static log::RateLimited info_limit;
  static log::RateLimited warning_limit;
  static log::RateLimited error_limit;
  const log::Fields fields = {{"error", message},
                              {"source", filename == nullptr ? "" : filename},
                              {"line", static_cast<int64_t>(line)}};
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO:
      info_limit.Write(log::Level::kInfo, "libprotobuf", fields);
      break;
    case google::protobuf::LOGLEVEL_WARNING:
      warning_limit.Write(log::Level::kWarn, "libprotobuf", fields);
      break;
    default:  // ERROR; FATAL aborts inside libprotobuf after this returns
      error_limit.Write(log::Level::kError, "libprotobuf", fields);
      break;
  }
}

}  // namespace

void PrepareProcess() {
  g_file_limit = RaiseFileLimit();
  google::protobuf::SetLogHandler(&ProtobufLogHandler);
}

const FileLimit& StartupFileLimit() { return g_file_limit; }

}  // namespace agentwire::cli
