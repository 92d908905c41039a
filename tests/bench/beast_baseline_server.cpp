// A bare Boost.Beast WebSocket broadcast server: the baseline the gateway's CPU cost is
// compared with (docs/benchmarks.md, "Gateway"). No Kafka, no auth, no cursors.
//
//   GET  /ws?user=U        WebSocket upgrade; the connection receives U's frames
//   POST /publish?user=U   body = one text frame, forwarded to every connection of U (204)
//   POST /publish-batch    body = lines "U<TAB>frame", each forwarded like /publish (204)
//
// Sessions follow the gateway's (and Beast chat-multi's) shape: a strand per connection, one
// write in flight, a queue behind it, one shared_ptr<const std::string> per frame shared by
// every receiver. Usage: beast_baseline_server [--port N] [--port-file F] [--threads T]
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

std::string QueryParam(std::string_view target, std::string_view name) {
  const auto query = target.find('?');
  if (query == std::string_view::npos) return {};
  auto rest = target.substr(query + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const auto pair = rest.substr(0, amp);
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
      return std::string(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return {};
}

class WsSession;

/// Which sessions listen to which user. Thread-safe.
class Registry final {
 public:
  void Add(const std::string& user, const std::shared_ptr<WsSession>& session) {
    std::lock_guard lock(mutex_);
    users_[user].push_back(session);
  }
  void Remove(const std::string& user, const WsSession* session) {
    std::lock_guard lock(mutex_);
    auto it = users_.find(user);
    if (it == users_.end()) return;
    auto& list = it->second;
    std::erase_if(list, [&](const std::weak_ptr<WsSession>& weak) {
      auto locked = weak.lock();
      return !locked || locked.get() == session;
    });
    if (list.empty()) users_.erase(it);
  }
  std::vector<std::shared_ptr<WsSession>> Snapshot(const std::string& user) {
    std::vector<std::shared_ptr<WsSession>> out;
    std::lock_guard lock(mutex_);
    auto it = users_.find(user);
    if (it == users_.end()) return out;
    for (const auto& weak : it->second) {
      if (auto locked = weak.lock()) out.push_back(std::move(locked));
    }
    return out;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::vector<std::weak_ptr<WsSession>>> users_;
};

class WsSession final : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, Registry& registry, std::string user)
      : ws_(std::move(socket)), registry_(registry), user_(std::move(user)) {}
  ~WsSession() { registry_.Remove(user_, this); }

  void Run(const http::request<http::string_body>& request) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.auto_fragment(false);
    beast::get_lowest_layer(ws_).expires_never();
    ws_.async_accept(request, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      self->ws_.text(true);
      self->registry_.Add(self->user_, self);
      self->ReadLoop();
    });
  }

  /// Any thread.
  void Send(std::shared_ptr<const std::string> frame) {
    asio::dispatch(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)] {
      self->queue_.push_back(frame);
      if (!self->writing_) self->WriteNext();
    });
  }

 private:
  void ReadLoop() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) {
        self->closed_ = true;
        return;
      }
      self->buffer_.consume(self->buffer_.size());
      self->ReadLoop();
    });
  }
  void WriteNext() {
    if (queue_.empty() || closed_) return;
    writing_ = true;
    ws_.async_write(asio::buffer(*queue_.front()),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      self->writing_ = false;
                      self->queue_.pop_front();
                      if (ec) {
                        self->closed_ = true;
                        self->queue_.clear();
                        return;
                      }
                      self->WriteNext();
                    });
  }

  websocket::stream<beast::tcp_stream> ws_;
  Registry& registry_;
  std::string user_;
  beast::flat_buffer buffer_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  bool writing_ = false;
  bool closed_ = false;
};

class HttpSession final : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, Registry& registry)
      : stream_(std::move(socket)), registry_(registry) {}

  void Read() {
    request_ = {};
    stream_.expires_after(std::chrono::seconds(60));
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return;
                       self->Handle();
                     });
  }

 private:
  void Handle() {
    const std::string target(request_.target());
    const std::string user = QueryParam(target, "user");
    if (websocket::is_upgrade(request_)) {
      std::make_shared<WsSession>(stream_.release_socket(), registry_, user)
          ->Run(std::move(request_));
      return;
    }
    auto response = std::make_shared<http::response<http::string_body>>();
    response->version(request_.version());
    response->keep_alive(request_.keep_alive());
    if (request_.method() == http::verb::post && target.starts_with("/publish-batch")) {
      // Lines "user\tframe\n": one request for many frames, like one Kafka fetch carries
      // many records, so the HTTP cost per event does not dominate the comparison.
      std::string_view body = request_.body();
      while (!body.empty()) {
        const auto end = std::min(body.find('\n'), body.size());
        const auto line = body.substr(0, end);
        body.remove_prefix(std::min(end + 1, body.size()));
        const auto tab = line.find('\t');
        if (tab == std::string_view::npos) continue;
        auto frame = std::make_shared<const std::string>(line.substr(tab + 1));
        for (const auto& session : registry_.Snapshot(std::string(line.substr(0, tab)))) {
          session->Send(frame);
        }
      }
      response->result(http::status::no_content);
    } else if (request_.method() == http::verb::post && target.starts_with("/publish")) {
      auto frame = std::make_shared<const std::string>(std::move(request_.body()));
      for (const auto& session : registry_.Snapshot(user)) session->Send(frame);
      response->result(http::status::no_content);
    } else {
      response->result(http::status::not_found);
    }
    response->prepare_payload();
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code ec, std::size_t) {
                        if (ec || !response->keep_alive()) return;
                        self->Read();
                      });
  }

  beast::tcp_stream stream_;
  Registry& registry_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
};

void Accept(tcp::acceptor& acceptor, asio::io_context& io, Registry& registry) {
  acceptor.async_accept(asio::make_strand(io), [&](beast::error_code ec, tcp::socket socket) {
    if (!ec) {
      socket.set_option(tcp::no_delay(true));
      std::make_shared<HttpSession>(std::move(socket), registry)->Read();
    }
    Accept(acceptor, io, registry);
  });
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  int threads = 2;
  std::string port_file;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--port" && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else if (arg == "--threads" && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--port-file" && i + 1 < argc) {
      port_file = argv[++i];
    } else {
      std::cerr << "usage: beast_baseline_server [--port N] [--port-file F] [--threads T]\n";
      return 2;
    }
  }
  asio::io_context io(threads);
  Registry registry;
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)});
  acceptor.listen(asio::socket_base::max_listen_connections);
  const auto bound = acceptor.local_endpoint().port();
  std::cout << "http://127.0.0.1:" << bound << std::endl;
  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << bound << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }
  Accept(acceptor, io, registry);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) { io.stop(); });
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& thread : pool) thread.join();
  return 0;
}
