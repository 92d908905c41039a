#pragma once

#include <array>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/teardown.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "fifo.hpp"

namespace agentwire::gateway {

/// The one writer of a connection's socket. Two parties write to it:
/// - the session, through Send(): frames whose bytes the transport built itself (WebSocket
///   frame headers included), so a catch-up of hundreds of events costs one write syscall and
///   no per-frame Beast write operation;
/// - the layer above, through async_write_some(): Beast's WebSocket handshake response, pings,
///   pongs and close frame, which it may start at any moment (a pong while it reads).
/// Every write goes to the socket whole and in the order it was started; a write that arrives
/// while another is on the wire waits for it. So the two never interleave inside a frame.
///
/// Send(…, hold = true) only appends to a buffer and completes at once (posted): the session
/// says so when it knows another frame follows. The next Send without hold, or any write of
/// the layer above (a close frame: nothing may be left behind it), takes the held bytes with
/// it. At most `kMaxHeldBytes` are held; past that a held Send goes out at once.
///
/// Like the stream it wraps, not thread-safe: use it from the connection's strand only.
template <class NextLayer>
class CoalescingStream {
 public:
  using executor_type = typename NextLayer::executor_type;
  using next_layer_type = NextLayer;
  using Done = std::function<void(boost::beast::error_code)>;

  static constexpr std::size_t kMaxHeldBytes = 64 * 1024;

  template <class... Args>
  explicit CoalescingStream(Args&&... args) : next_(std::forward<Args>(args)...) {}
  /// The owner may be destroyed from inside a write's completion (its last reference was the
  /// handler); a write started just before (the next waiting one) then completes, aborted, on a
  /// stream that is gone: it must not touch it.
  ~CoalescingStream() { *alive_ = false; }
  CoalescingStream(const CoalescingStream&) = delete;
  CoalescingStream& operator=(const CoalescingStream&) = delete;

  executor_type get_executor() noexcept { return next_.get_executor(); }
  NextLayer& next_layer() noexcept { return next_; }
  const NextLayer& next_layer() const noexcept { return next_; }

  /// Writes the concatenation of `parts` (the caller may free them once Send returns). `done`
  /// runs once the bytes are on the socket, or at once (posted) when they were held.
  void Send(std::initializer_list<std::string_view> parts, bool hold, Done done) {
    if (!hold && TrySendNow(parts, done)) return;
    for (const auto part : parts) held_.append(part);
    if (hold && held_.size() < kMaxHeldBytes) {
      ++coalesced_;
      // Never complete inside the initiating call.
      boost::asio::post(get_executor(), [done = std::move(done)] { done({}); });
      return;
    }
    Enqueue({std::exchange(held_, {}), std::move(done), nullptr});
  }

  /// Frames that left in another frame's write syscall so far.
  std::size_t CoalescedWrites() const noexcept { return coalesced_; }

  template <class MutableBufferSequence, class ReadHandler>
  auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler) {
    return next_.async_read_some(buffers, std::forward<ReadHandler>(handler));
  }

  template <class ConstBufferSequence, class WriteHandler>
  auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler) {
    return boost::asio::async_initiate<WriteHandler, void(boost::beast::error_code, std::size_t)>(
        [this](auto completion, const ConstBufferSequence& data) {
          // Held frames go first; the whole write is reported, so the caller never continues a
          // frame later (its rest could land after someone else's write).
          const std::size_t size = boost::asio::buffer_size(data);
          std::string bytes = std::exchange(held_, {});
          const auto offset = bytes.size();
          bytes.resize(offset + size);
          boost::asio::buffer_copy(boost::asio::buffer(bytes.data() + offset, size), data);
          Enqueue({std::move(bytes), nullptr,
                   std::make_unique<HandlerCompletion<decltype(completion)>>(
                       std::move(completion), size, get_executor())});
        },
        handler, buffers);
  }

 private:
  /// What to run when a Beast write is on the socket (type-erased: Beast's handlers are
  /// move-only and of many types).
  struct Completion {
    virtual ~Completion() = default;
    virtual void Complete(boost::beast::error_code ec) = 0;
  };
  template <class Handler>
  struct HandlerCompletion final : Completion {
    HandlerCompletion(Handler h, std::size_t n, executor_type fallback)
        : handler(std::move(h)), size(n), executor(std::move(fallback)) {}
    void Complete(boost::beast::error_code ec) override {
      // Runs on the connection's strand already: dispatch invokes it in place.
      auto target = boost::asio::get_associated_executor(handler, executor);
      boost::asio::dispatch(
          target, boost::beast::bind_front_handler(std::move(handler), ec, ec ? 0 : size));
    }
    Handler handler;
    std::size_t size;
    executor_type executor;
  };
  /// A write and whom to tell when it is on the socket: the session's `done` (every event:
  /// stored as is, no allocation of its own) or Beast's handler (a handshake, ping or close).
  struct Write {
    std::string bytes;
    Done done;
    std::unique_ptr<Completion> beast;

    void Complete(boost::beast::error_code ec) {
      if (beast) {
        beast->Complete(ec);
      } else {
        done(ec);
      }
    }
  };

  /// The live path: one frame, nothing on the wire. The frame goes to the socket in one
  /// non-blocking gather write from where it lies (no copy, no asynchronous write operation);
  /// whatever the socket did not take continues as an ordinary queued write. false when this
  /// stream cannot (another write in progress, a next layer without non-blocking writes).
  bool TrySendNow(std::initializer_list<std::string_view> parts, Done& done) {
    if constexpr (requires(NextLayer & socket, boost::beast::error_code & ec) {
                    socket.non_blocking(true, ec);
                  }) {
      std::array<boost::asio::const_buffer, 4> buffers;
      if (on_wire_ || !waiting_.empty() || parts.size() + 1 > buffers.size()) return false;
      boost::beast::error_code ec;
      if (!next_.non_blocking()) next_.non_blocking(true, ec);
      if (ec) return false;
      std::size_t count = 0;
      std::size_t total = 0;
      if (!held_.empty()) buffers[count++] = boost::asio::buffer(held_);
      for (const auto part : parts) buffers[count++] = boost::asio::buffer(part);
      for (std::size_t i = 0; i < count; ++i) total += buffers[i].size();
      const std::size_t written =
          next_.write_some(std::span<const boost::asio::const_buffer>(buffers.data(), count), ec);
      if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
        ec = {};
      }
      if (ec || written == total) {
        held_ = std::string();
        // Never complete inside the initiating call.
        boost::asio::post(get_executor(), [done = std::move(done), ec] { done(ec); });
        return true;
      }
      // The socket's buffer is full: the rest goes out asynchronously, as any write would.
      std::string rest;
      rest.reserve(total - written);
      std::size_t skip = written;
      for (std::size_t i = 0; i < count; ++i) {
        const std::string_view bytes(static_cast<const char*>(buffers[i].data()),
                                     buffers[i].size());
        const std::size_t from = std::min(skip, bytes.size());
        rest.append(bytes.substr(from));
        skip -= from;
      }
      held_ = std::string();
      Enqueue({std::move(rest), std::move(done), nullptr});
      return true;
    } else {
      return false;
    }
  }

  void Enqueue(Write write) {
    // The usual case, nothing on the wire: straight to the socket, the queue untouched (it
    // would allocate its storage for one write and free it again).
    if (!on_wire_ && waiting_.empty()) {
      StartWrite(std::move(write));
      return;
    }
    waiting_.push_back(std::move(write));
    Pump();
  }

  void Pump() {
    if (on_wire_ || waiting_.empty()) return;
    Write next = std::move(waiting_.front());
    waiting_.pop_front();
    StartWrite(std::move(next));
  }

  void StartWrite(Write write) {
    on_wire_ = true;
    on_wire_bytes_ = std::move(write.bytes);
    // The pending operation owns the completion (and so whatever it keeps alive), as a
    // handler passed to the socket would.
    boost::asio::async_write(next_, boost::asio::buffer(on_wire_bytes_),
                             [this, alive = alive_, write = std::move(write)](
                                 boost::beast::error_code ec, std::size_t) mutable {
                               if (!*alive) {
                                 write.Complete(ec ? ec : boost::asio::error::operation_aborted);
                                 return;
                               }
                               on_wire_ = false;
                               // Freed, not kept for the next write: an idle connection holds no
                               // write buffer.
                               on_wire_bytes_ = std::string();
                               // The next write starts first: whatever the completion writes queues
                               // behind it. After an error, each waiting write fails in turn.
                               Pump();
                               write.Complete(ec);
                             });
  }

  NextLayer next_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // false once destroyed
  std::string held_;
  std::string on_wire_bytes_;
  Fifo<Write> waiting_;  // allocates nothing until a write has to wait
  bool on_wire_ = false;
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

  boost::asio::ip::tcp::socket& socket;
  std::unique_ptr<std::array<char, 16 * 1024>> scratch =
      std::make_unique<std::array<char, 16 * 1024>>();
  // Made at the start, like the scratch buffer: the connection needs it only while closing.
  std::unique_ptr<boost::asio::steady_timer> deadline = nullptr;
  std::size_t drained = 0;

  template <class Self>
  void operator()(Self& self, boost::beast::error_code ec = {}, std::size_t bytes = 0) {
    if (!deadline) {
      boost::beast::error_code ignored;
      socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
      deadline = std::make_unique<boost::asio::steady_timer>(socket.get_executor());
      deadline->expires_after(kMaxDrainTime);
      // Ends the drain by cancelling the read. Destroyed with this operation, after which it
      // completes with operation_aborted and touches nothing.
      deadline->async_wait([&socket = socket](boost::beast::error_code wait_ec) {
        if (!wait_ec) socket.cancel();
      });
      socket.async_read_some(boost::asio::buffer(*scratch), std::move(self));
      return;
    }
    drained += bytes;
    if (!ec && drained < kMaxDrainBytes) {
      socket.async_read_some(boost::asio::buffer(*scratch), std::move(self));
      return;
    }
    deadline->cancel();
    boost::beast::error_code ignored;
    socket.close(ignored);
    self.complete({});  // EOF, timeout or reset: the connection is down either way
  }
};

template <class NextLayer, class TeardownHandler>
void async_teardown(boost::beast::role_type role, CoalescingStream<NextLayer>& stream,
                    TeardownHandler&& handler) {
  using boost::beast::websocket::async_teardown;
  async_teardown(role, stream.next_layer(), std::forward<TeardownHandler>(handler));
}

template <class TeardownHandler>
auto async_teardown(boost::beast::role_type role,
                    CoalescingStream<boost::asio::ip::tcp::socket>& stream,
                    TeardownHandler&& handler) {
  if (role != boost::beast::role_type::server) {
    using boost::beast::websocket::async_teardown;
    return async_teardown(role, stream.next_layer(), std::forward<TeardownHandler>(handler));
  }
  return boost::asio::async_compose<TeardownHandler, void(boost::beast::error_code)>(
      LingeringTeardown{stream.next_layer()}, handler, stream.next_layer());
}

}  // namespace agentwire::gateway
