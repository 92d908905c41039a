#include "agentwire/core/listen.hpp"

#include <fmt/format.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/socket_base.hpp>

#include "agentwire/core/errors.hpp"

namespace agentwire {

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

}  // namespace agentwire
