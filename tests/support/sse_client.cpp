#include "support/sse_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace agentwire::testing {

SseClient::~SseClient() { Close(); }

void SseClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool SseClient::Fill(std::chrono::steady_clock::time_point deadline) {
  if (fd_ < 0 || ended_) return false;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  char chunk[65536];
  const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0) {
    ended_ = true;
    return false;
  }
  buffer_.append(chunk, static_cast<size_t>(n));
  return true;
}

SseClient::Head SseClient::Connect(const Options& options) {
  Head head;
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(options.port);
  ::inet_pton(AF_INET, options.host.c_str(), &address.sin_addr);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    Close();
    return head;
  }
  std::string request =
      options.method + " " + options.target + " HTTP/1.1\r\nHost: " + options.host + "\r\n";
  if (!options.accept.empty()) request += "Accept: " + options.accept + "\r\n";
  if (!options.bearer.empty()) request += "Authorization: Bearer " + options.bearer + "\r\n";
  if (!options.last_event_id.empty()) request += "Last-Event-ID: " + options.last_event_id + "\r\n";
  if (!options.origin.empty()) request += "Origin: " + options.origin + "\r\n";
  request += "\r\n";
  if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    Close();
    return head;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  size_t end = std::string::npos;
  while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill(deadline)) return head;
  }
  head.headers = buffer_.substr(0, end);
  buffer_.erase(0, end + 4);
  // "HTTP/1.1 200 OK"
  const auto space = head.headers.find(' ');
  if (space != std::string::npos) head.status = std::atoi(head.headers.c_str() + space + 1);
  if (head.status != 200) {
    // A refusal: a JSON body, then the server closes (or keeps alive: stop at its length).
    const auto length_at = head.headers.find("Content-Length: ");
    const size_t length = length_at == std::string::npos
                              ? std::string::npos
                              : std::strtoul(head.headers.c_str() + length_at + 16, nullptr, 10);
    while (buffer_.size() < length && Fill(deadline)) {
    }
    head.body = buffer_.substr(0, length);
  }
  return head;
}

std::optional<SseEvent> SseClient::Next(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    // One block = lines up to a blank line. The gateway writes "\n" line ends.
    const auto end = buffer_.find("\n\n");
    if (end == std::string::npos) {
      if (!Fill(deadline)) return std::nullopt;
      continue;
    }
    const std::string block = buffer_.substr(0, end + 1);
    buffer_.erase(0, end + 2);
    SseEvent event;
    bool has_fields = false;
    bool has_data = false;
    size_t at = 0;
    while (at < block.size()) {
      const auto eol = block.find('\n', at);
      const std::string line = block.substr(at, eol - at);
      at = eol + 1;
      if (line.empty()) continue;
      if (line[0] == ':') {
        ++comments_;
        continue;
      }
      const auto colon = line.find(':');
      const std::string field = line.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      if (!value.empty() && value[0] == ' ') value.erase(0, 1);
      if (field == "id") {
        event.id = value;
        last_event_id_ = value;
        has_fields = true;
      } else if (field == "event") {
        event.event = value;
        has_fields = true;
      } else if (field == "data") {
        if (has_data) event.data += "\n";
        event.data += value;
        has_data = true;
        has_fields = true;
      } else if (field == "retry") {
        retry_ms_ = std::atoi(value.c_str());
      }
    }
    if (!has_fields || !has_data) continue;  // comments, retry hints
    if (event.event.empty()) event.event = "message";
    return event;
  }
}

}  // namespace agentwire::testing
