#pragma once

#include <chrono>
#include <optional>

namespace agentwire {

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later, so
/// they can be taken synchronously with WaitForTerminationSignal. Call first in main-like
/// code, before any library starts threads.
void BlockTerminationSignals();

/// Waits for SIGINT or SIGTERM (blocked beforehand); returns the signal number, or
/// nullopt when `timeout` passed first.
std::optional<int> WaitForTerminationSignal(
    std::optional<std::chrono::milliseconds> timeout = std::nullopt);

}  // namespace agentwire
