#pragma once

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <string>
#include <string_view>

#include "coalescing_stream.hpp"
#include "transport.hpp"

namespace agentwire::gateway {

/// What the two `text/event-stream` transports share (SseTransport, AiSdkTransport): the
/// open-ended HTTP response head (no length, closed by the server; CORS for an allowed Origin),
/// a client that has nothing to send, an end that is the end of the response, and a comment
/// line as keep-alive. Subclasses frame the events.
class EventStreamTransport : public Transport {
 public:
  /// `allow_origin`: the request's Origin when it is allowed (CORS), else empty.
  /// `extra_headers`: header lines ("Name: value\r\n") of this protocol; `preamble`: body text
  /// written right after the head.
  EventStreamTransport(boost::asio::ip::tcp::socket&& socket, const std::string& allow_origin,
                       std::string_view extra_headers, std::string_view preamble);

  boost::asio::any_io_executor GetExecutor() override { return stream_.get_executor(); }
  void Accept(const Request& request, Done done) override;
  void Read(Done done) override;
  /// Writes ClosingText(code, reason) when there is any, then ends the response.
  void Close(boost::beast::websocket::close_code code, const std::string& reason,
             Done done) override;
  void Abort() override;
  std::optional<std::chrono::milliseconds> KeepAliveInterval() const override {
    return keep_alive_interval_;
  }
  /// GatewayConfig::event_stream_keep_alive; call before Accept.
  void SetKeepAliveInterval(std::chrono::milliseconds interval) { keep_alive_interval_ = interval; }

  /// A comment line at least this often by default (the protocol promises one every 15 s).
  static constexpr std::chrono::milliseconds kKeepAliveInterval{10'000};
  static constexpr std::string_view kKeepAlive = ": keep-alive\n\n";

 protected:
  /// What the client reads last before the end of the response for close `code` ("" = nothing).
  virtual std::string ClosingText(boost::beast::websocket::close_code code,
                                  const std::string& reason) = 0;
  CoalescingStream<boost::beast::tcp_stream> stream_;

 private:
  std::string head_;
  std::chrono::milliseconds keep_alive_interval_ = kKeepAliveInterval;
  std::array<char, 512> discard_{};  // a client has nothing to send: read and dropped
};

}  // namespace agentwire::gateway
