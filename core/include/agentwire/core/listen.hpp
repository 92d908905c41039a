#pragma once

#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "agentwire/core/logging.hpp"

namespace agentwire {

namespace metrics {
class Counter;
class Gauge;
class Registry;
}  // namespace metrics

/// Opens, binds (SO_REUSEADDR) and listens on `address`:`port` (0 = any free port). Throws
/// ConfigError naming `what` (the flag, e.g. "--listen / AGENTWIRE_LISTEN") and saying what
/// to change; `hint` ends the message when the port cannot be bound.
void OpenListener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address,
                  uint16_t port, std::string_view what, std::string_view hint);

/// The process's descriptor limit (RLIMIT_NOFILE) before and after RaiseFileLimit.
struct FileLimit {
  uint64_t soft_before = 0;
  uint64_t soft = 0;
  uint64_t hard = 0;  // RLIM_INFINITY is reported as UINT64_MAX
};

/// Raises the soft RLIMIT_NOFILE to the hard limit (as Go programs do at start): a server's
/// connections are descriptors, and the soft default (often 1024) is far below what the
/// hard limit allows. Idempotent; never lowers the limit. Does not log (call it before the
/// logger is set up; LogFileLimit reports it).
FileLimit RaiseFileLimit();
/// The current limit (soft_before = soft).
FileLimit CurrentFileLimit();
/// One info line with both numbers (and what was raised), for long-running commands.
void LogFileLimit(const FileLimit& limit);

/// The `reason` label of an accept() error: "emfile", "enfile", "enobufs" and "enomem" when the
/// process or the system ran out of a resource (accepting again at once would fail again and
/// spin), "other" for anything else (e.g. ECONNABORTED: that one connection is gone).
std::string_view AcceptErrorReason(const boost::system::error_code& ec);

/// The bookkeeping of an accept loop that must never spin. On a resource error (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM) the loop pauses accepting for a delay that starts at 10 ms and doubles per
/// consecutive error up to 1 s, then tries again on its own; a successful accept resets it.
/// Errors are counted in `<metric_prefix>accept_errors_total{reason}`, the paused state is
/// exported as `<metric_prefix>accept_paused` (1 while paused), and the log gets at most one
/// line per second per kind, with the number suppressed.
///
/// OnError/OnAccepted are called from the loop's handlers (one at a time, e.g. on the acceptor's
/// strand); Paused() is thread-safe.
class AcceptThrottle final {
 public:
  static constexpr std::chrono::milliseconds kFirstDelay{10};
  static constexpr std::chrono::milliseconds kMaxDelay{1000};

  /// `listener` names the loop in logs ("gateway", "metrics").
  AcceptThrottle(metrics::Registry& registry, const std::string& metric_prefix,
                 std::string listener);

  /// After a failed accept: the delay before accepting again; zero when the error concerned
  /// one connection only (accept the next one right away).
  std::chrono::milliseconds OnError(const boost::system::error_code& ec);
  /// After a successful accept: the next resource error starts at the first delay again.
  void OnAccepted();
  /// True from a resource error until the next successful accept.
  bool Paused() const { return paused_.load(std::memory_order_relaxed); }
  /// Paused, or was within the last kOverloadHold: a readiness probe that got through in a
  /// moment when a descriptor was free must still hear that the replica is out of them.
  bool Overloaded() const;
  static constexpr std::chrono::seconds kOverloadHold{5};

 private:
  static constexpr size_t kReasons = 5;
  std::string listener_;
  std::array<metrics::Counter*, kReasons> errors_{};
  metrics::Gauge* paused_gauge_ = nullptr;
  std::atomic<bool> paused_{false};
  std::atomic<int64_t> last_resource_error_ns_{0};  // steady_clock; 0 = never
  std::chrono::milliseconds next_delay_ = kFirstDelay;
  log::RateLimited resource_log_;
  log::RateLimited other_log_;
  log::RateLimited resume_log_;
};

}  // namespace agentwire
