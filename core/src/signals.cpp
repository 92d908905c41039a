#include "agentwire/core/signals.hpp"

#include <pthread.h>

#include <cerrno>
#include <csignal>
#include <ctime>

namespace agentwire {
namespace {

sigset_t TerminationSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  const sigset_t set = TerminationSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

std::optional<int> WaitForTerminationSignal(std::optional<std::chrono::milliseconds> timeout) {
  const sigset_t set = TerminationSet();
  if (!timeout) {
    int signal = 0;
    while (sigwait(&set, &signal) != 0) {
    }
    return signal;
  }
  const auto ms = timeout->count();
  timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>((ms % 1000) * 1000000)};
  for (;;) {
    const int signal = sigtimedwait(&set, nullptr, &ts);
    if (signal > 0) return signal;
    if (errno == EAGAIN) return std::nullopt;
    // EINTR: another signal interrupted the wait; try again.
  }
}

}  // namespace agentwire
