#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <string>
#include <string_view>

namespace agentwire {

/// Opens, binds (SO_REUSEADDR) and listens on `address`:`port` (0 = any free port). Throws
/// ConfigError naming `what` (the flag, e.g. "--listen / AGENTWIRE_LISTEN") and saying what
/// to change; `hint` ends the message when the port cannot be bound.
void OpenListener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address,
                  uint16_t port, std::string_view what, std::string_view hint);

}  // namespace agentwire
