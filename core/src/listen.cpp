#include "agentwire/core/listen.hpp"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/socket_base.hpp>
#include <cerrno>
#include <limits>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/metrics.hpp"

namespace agentwire {

namespace {

constexpr std::array<std::string_view, 5> kReasonNames{"emfile", "enfile", "enobufs", "enomem",
                                                       "other"};

size_t ReasonIndex(const boost::system::error_code& ec) {
  if (ec.category() == boost::system::system_category() ||
      ec.category() == boost::system::generic_category()) {
    switch (ec.value()) {
      case EMFILE:
        return 0;
      case ENFILE:
        return 1;
      case ENOBUFS:
        return 2;
      case ENOMEM:
        return 3;
      default:
        break;
    }
  }
  return 4;
}

uint64_t FromRlim(rlim_t value) {
  return value == RLIM_INFINITY ? std::numeric_limits<uint64_t>::max()
                                : static_cast<uint64_t>(value);
}

}  // namespace

FileLimit CurrentFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return {};
  return {FromRlim(limit.rlim_cur), FromRlim(limit.rlim_cur), FromRlim(limit.rlim_max)};
}

FileLimit RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return {};
  FileLimit result{FromRlim(limit.rlim_cur), FromRlim(limit.rlim_cur), FromRlim(limit.rlim_max)};
  if (limit.rlim_cur == limit.rlim_max) return result;
  rlimit raised = limit;
  raised.rlim_cur = limit.rlim_max;
  // An unlimited hard limit is capped by the kernel's nr_open: setrlimit fails with EPERM
  // above it. Fall back to the largest value Linux ships with.
  if (setrlimit(RLIMIT_NOFILE, &raised) != 0 && limit.rlim_max == RLIM_INFINITY) {
    raised.rlim_cur = 1u << 20;
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0) return result;
  }
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) result.soft = FromRlim(limit.rlim_cur);
  return result;
}

void LogFileLimit(const FileLimit& limit) {
  const auto text = [](uint64_t value) {
    return value == std::numeric_limits<uint64_t>::max() ? std::string("unlimited")
                                                         : std::to_string(value);
  };
  log::Info("descriptor limit (RLIMIT_NOFILE)", {{"soft", text(limit.soft)},
                                                 {"hard", text(limit.hard)},
                                                 {"soft_at_start", text(limit.soft_before)}});
}

void OpenListener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address,
                  uint16_t port, std::string_view what, std::string_view hint) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(address, ec);
  if (ec) throw ConfigError(fmt::format("{} '{}': not an IP address", what, address));
  const asio::ip::tcp::endpoint endpoint(ip, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw ConfigError(fmt::format("{}: cannot listen on {}:{}: {} ({})", what, address, port,
                                  ec.message(), hint));
  }
}

std::string_view AcceptErrorReason(const boost::system::error_code& ec) {
  return kReasonNames[ReasonIndex(ec)];
}

AcceptThrottle::AcceptThrottle(metrics::Registry& registry, const std::string& metric_prefix,
                               std::string listener)
    : listener_(std::move(listener)) {
  const std::string help =
      "Failed accept() calls by reason (emfile/enfile/enobufs/enomem pause accepting)";
  for (size_t i = 0; i < kReasons; ++i) {
    errors_[i] = &registry.GetCounter(metric_prefix + "accept_errors_total", help,
                                      {{"reason", std::string(kReasonNames[i])}});
  }
  paused_gauge_ = &registry.GetGauge(
      metric_prefix + "accept_paused",
      "1 while accepting is paused after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM)");
}

std::chrono::milliseconds AcceptThrottle::OnError(const boost::system::error_code& ec) {
  const size_t reason = ReasonIndex(ec);
  errors_[reason]->Inc();
  if (reason == kReasons - 1) {
    other_log_.Warn("accept failed",
                    {{"listener", listener_}, {"reason", "other"}, {"error", ec.message()}});
    return std::chrono::milliseconds::zero();
  }
  const auto delay = next_delay_;
  next_delay_ = std::min(next_delay_ * 2, kMaxDelay);
  paused_.store(true, std::memory_order_relaxed);
  last_resource_error_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                                std::memory_order_relaxed);
  paused_gauge_->Set(1);
  resource_log_.Warn(
      "accept paused: out of a resource; raise the descriptor limit (ulimit -n) or lower "
      "--max-connections",
      {{"listener", listener_},
       {"reason", kReasonNames[reason]},
       {"error", ec.message()},
       {"delay_ms", static_cast<int64_t>(delay.count())}});
  return delay;
}

bool AcceptThrottle::Overloaded() const {
  if (Paused()) return true;
  const int64_t last = last_resource_error_ns_.load(std::memory_order_relaxed);
  if (last == 0) return false;
  const auto since = std::chrono::steady_clock::now().time_since_epoch() -
                     std::chrono::steady_clock::duration(last);
  return since < kOverloadHold;
}

void AcceptThrottle::OnAccepted() {
  next_delay_ = kFirstDelay;
  if (paused_.exchange(false, std::memory_order_relaxed)) {
    paused_gauge_->Set(0);
    resume_log_.Write(log::Level::kInfo, "accepting again", {{"listener", listener_}});
  }
}

}  // namespace agentwire
