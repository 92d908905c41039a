#pragma once
// What the multi-replica tests share: one user's events published at a steady pace, what a
// client saw across its connections, and the audit of one against the other.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agentwire/producers/event_publisher.hpp"
#include "support/gateway_harness.hpp"
#include "support/subprocess.hpp"
#include "support/ws_client.hpp"

namespace agentwire::testing {

/// An `agentwire gateway` process and its port.
struct GatewayProcess {
  std::unique_ptr<Subprocess> process;
  uint16_t port = 0;
};
/// Starts `agentwire gateway` on a free port against `bootstrap` (HS256 with kTestJwtSecret,
/// 2 I/O threads, `extra_args` last), the environment's AGENTWIRE_* settings unset, and waits
/// until /readyz answers 200. `name` names its port file in `directory`.
GatewayProcess StartGatewayProcess(const std::string& bootstrap, const std::string& directory,
                                   const std::string& name,
                                   const std::vector<std::string>& extra_args);
/// A WebSocket client of `user` on `port`, resuming from `cursor` (empty: cursor=earliest).
WsClient::Options ResumeOptions(uint16_t port, const std::string& user, const std::string& cursor);

struct StreamAudit {
  size_t lost = 0;
  size_t duplicated = 0;
  size_t reordered = 0;  // first copies out of publish order
};
StreamAudit CompareStreams(const std::vector<std::string>& expected,
                           const std::vector<std::string>& received);
/// gtest expectations: `total` events were published, and `received` has each of them exactly
/// once, in publish order.
void ExpectExactlyOnceInOrder(const std::vector<std::string>& published, size_t total,
                              const std::vector<std::string>& received);

/// One user's events (event ids "<user>-<n>", one thread and run) published from a thread,
/// 10 at a time every 20 ms, so the stream is live while replicas change.
class PacedPublisher final {
 public:
  PacedPublisher(const std::string& bootstrap, std::string user, int total,
                 std::string topic = "agent.lifecycle.v1");
  ~PacedPublisher();
  void Join();
  bool Done() const { return done_; }
  const std::vector<std::string>& Published() const { return published_; }  // after Join()

 private:
  void Run();

  std::string user_;
  int total_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  std::vector<std::string> published_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

/// What one client saw across its connections: event ids, the last cursor, `ready` frames.
struct ClientLog {
  std::vector<std::string> events;
  std::string cursor;
  int ready_frames = 0;

  void Take(const Frame& frame);
  /// Reads until `count` events in total, the connection closes, or `timeout`.
  void ReadEvents(WsClient& client, size_t count, std::chrono::milliseconds timeout);
  /// Reads whatever was still buffered until the server's close.
  void ReadUntilClosed(WsClient& client, std::chrono::milliseconds timeout);
  /// Reads until `total` events (at most 60 s), waits for `publisher` to finish, then reads
  /// 500 ms more: anything after the last event would be a duplicate.
  void ReadToTheEnd(WsClient& client, PacedPublisher& publisher, size_t total);
};

}  // namespace agentwire::testing
