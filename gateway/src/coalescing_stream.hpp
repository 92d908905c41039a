#pragma once

#include <array>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/buffers_cat.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/teardown.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>

namespace agentwire::gateway {

/// A stream layer beneath websocket::stream that lets several WebSocket frames leave in one
/// write syscall. The session calls HoldNextWrite() before a frame it knows another frame will
/// follow at once (catch-up, a burst of queued live events): that frame's bytes are copied into
/// a buffer and its write completes immediately (posted); the next write that is not held sends
/// the buffer and its own bytes in one gather write. At most `kMaxHeldBytes` are held; past that
/// a held write goes out at once. Control frames (ping, pong, close) are never held, so nothing
/// is left waiting when the session stops writing.
///
/// Like the stream it wraps, not thread-safe: use it from the session's strand only.
template <class NextLayer>
class CoalescingStream {
 public:
  using executor_type = typename NextLayer::executor_type;
  using next_layer_type = NextLayer;

  static constexpr std::size_t kMaxHeldBytes = 64 * 1024;

  template <class... Args>
  explicit CoalescingStream(Args&&... args) : next_(std::forward<Args>(args)...) {}

  executor_type get_executor() noexcept { return next_.get_executor(); }
  NextLayer& next_layer() noexcept { return next_; }
  const NextLayer& next_layer() const noexcept { return next_; }

  /// The next async_write_some only buffers its bytes (one-shot).
  void HoldNextWrite() noexcept { hold_ = true; }
  /// Write syscalls saved so far (frames that left with another frame's write).
  std::size_t CoalescedWrites() const noexcept { return coalesced_; }

  template <class MutableBufferSequence, class ReadHandler>
  auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler) {
    return next_.async_read_some(buffers, std::forward<ReadHandler>(handler));
  }

  template <class ConstBufferSequence, class WriteHandler>
  auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler) {
    return boost::asio::async_initiate<WriteHandler, void(boost::beast::error_code, std::size_t)>(
        [this](auto completion, const ConstBufferSequence& data) {
          InitiateWrite(std::move(completion), data);
        },
        handler, buffers);
  }

 private:
  template <class Handler, class ConstBufferSequence>
  void InitiateWrite(Handler handler, const ConstBufferSequence& buffers) {
    const std::size_t size = boost::asio::buffer_size(buffers);
    const bool hold = std::exchange(hold_, false);
    if (hold && held_.size() + size <= kMaxHeldBytes) {
      const auto offset = held_.size();
      held_.resize(offset + size);
      boost::asio::buffer_copy(boost::asio::buffer(held_.data() + offset, size), buffers);
      ++coalesced_;
      // Never complete inside the initiating call.
      boost::asio::post(get_executor(), boost::beast::bind_front_handler(
                                            std::move(handler), boost::beast::error_code{}, size));
      return;
    }
    if (held_.empty()) {
      next_.async_write_some(buffers, std::move(handler));
      return;
    }
    // The held frames first, then this one, in one gather write; report only this write's
    // bytes (the held ones were reported when they were accepted).
    auto executor = boost::asio::get_associated_executor(handler, get_executor());
    boost::asio::async_write(
        next_, boost::beast::buffers_cat(boost::asio::buffer(held_), buffers),
        boost::asio::bind_executor(executor, [this, size, handler = std::move(handler)](
                                                 boost::beast::error_code ec, std::size_t) mutable {
          held_.clear();
          handler(ec, ec ? 0 : size);
        }));
  }

  NextLayer next_;
  std::string held_;
  bool hold_ = false;
  std::size_t coalesced_ = 0;
};

// Beast's websocket stream tears the connection down through its next layer's teardown.
template <class NextLayer>
void teardown(boost::beast::role_type role, CoalescingStream<NextLayer>& stream,
              boost::beast::error_code& ec) {
  using boost::beast::websocket::teardown;
  teardown(role, stream.next_layer(), ec);
}

/// The server's half of a WebSocket teardown, as a lingering close: shut down sending, then
/// read and discard what the client still sends until it closes too (at most 1 MiB or 2 s),
/// then close. Closing a socket with unread input makes the kernel answer with RST, which
/// can destroy the close frame (with its code: 1009, 1012, 1013) before the client has read
/// it. Beast 1.74's own teardown reads only once (its issue 1373).
struct LingeringTeardown {
  static constexpr std::size_t kMaxDrainBytes = 1u << 20;
  static constexpr std::chrono::seconds kMaxDrainTime{2};

  boost::beast::tcp_stream& stream;
  std::unique_ptr<std::array<char, 16 * 1024>> scratch =
      std::make_unique<std::array<char, 16 * 1024>>();
  std::size_t drained = 0;
  bool started = false;

  template <class Self>
  void operator()(Self& self, boost::beast::error_code ec = {}, std::size_t bytes = 0) {
    if (!started) {
      started = true;
      boost::beast::error_code ignored;
      stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
      stream.expires_after(kMaxDrainTime);
      stream.async_read_some(boost::asio::buffer(*scratch), std::move(self));
      return;
    }
    drained += bytes;
    if (!ec && drained < kMaxDrainBytes) {
      stream.async_read_some(boost::asio::buffer(*scratch), std::move(self));
      return;
    }
    stream.close();
    self.complete({});  // EOF, timeout or reset: the connection is down either way
  }
};

template <class TeardownHandler>
auto async_teardown(boost::beast::role_type role,
                    CoalescingStream<boost::beast::tcp_stream>& stream, TeardownHandler&& handler) {
  if (role != boost::beast::role_type::server) {
    using boost::beast::websocket::async_teardown;
    return async_teardown(role, stream.next_layer(), std::forward<TeardownHandler>(handler));
  }
  return boost::asio::async_compose<TeardownHandler, void(boost::beast::error_code)>(
      LingeringTeardown{stream.next_layer()}, handler, stream.next_layer());
}

}  // namespace agentwire::gateway
