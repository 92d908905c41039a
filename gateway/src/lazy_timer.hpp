#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>

namespace agentwire::gateway {

/// A steady_timer made the first time it is armed. A timer costs 112 bytes inline whether it
/// is ever armed or not, and most of a session's timers never are (an idle WebSocket session
/// arms none of the close, keep-alive, catch-up progress and retry timers): at 10,000
/// connections that was ~4 MiB. Use it from its executor's strand only, like the timer.
class LazyTimer {
 public:
  /// The timer, made now on `executor` if it never was.
  boost::asio::steady_timer& Get(const boost::asio::any_io_executor& executor) {
    if (!timer_) timer_ = std::make_unique<boost::asio::steady_timer>(executor);
    return *timer_;
  }
  /// Cancels its wait, if it was ever armed.
  void cancel() {
    if (timer_) timer_->cancel();
  }
  /// Frees the timer when its job is over; a wait still pending completes with
  /// operation_aborted, as on cancel.
  void Release() { timer_.reset(); }

 private:
  std::unique_ptr<boost::asio::steady_timer> timer_;
};

}  // namespace agentwire::gateway
