#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agentwire/core/embedded_kafka.hpp"
#include "agentwire/gateway/gateway.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "support/ws_client.hpp"

namespace agentwire::testing {

inline constexpr const char* kTestJwtSecret = "agentwire-test-secret-0123456789abcdef";

/// One received frame, parsed.
// The implicit special members are noexcept; the check follows nlohmann::json's destructor into
// throws it cannot reach.
struct Frame {       // NOLINT(bugprone-exception-escape)
  std::string type;  // event | ready | reset
  std::string cursor;
  std::string event_id;
  std::string user_id;
  std::string run_id;
  uint32_t run_seq = 0;
  uint64_t replayed = 0;
  nlohmann::json json;
};
std::optional<Frame> ParseFrame(const std::string& text);

/// An embedded Kafka, an in-process gateway replica and a publisher, for tests that drive
/// the gateway with real WebSocket clients over TCP.
class GatewayHarness final {
 public:
  explicit GatewayHarness(int partitions = 12, int brokers = 1,
                          std::string topic = "agent.lifecycle.v1");
  ~GatewayHarness();

  /// Starts (or restarts) the replica with `tweak` applied to the default config.
  void StartGateway(const std::function<void(gateway::GatewayConfig&)>& tweak = {});
  void StopGateway();
  gateway::GatewayConfig BaseConfig() const;
  uint16_t Port() const { return gateway_->Port(); }
  gateway::Gateway& Gateway() { return *gateway_; }
  kafka::EmbeddedKafka& Kafka() { return kafka_; }
  const std::string& Topic() const { return topic_; }
  int Partitions() const { return partitions_; }

  std::string Token(const std::string& user) const;
  /// Options for a client of `user`; `query` is appended to /v1/events (e.g. "cursor=...").
  WsClient::Options ClientOptions(const std::string& user, const std::string& query = {},
                                  std::optional<uint16_t> port = std::nullopt) const;

  /// Publishes an event (user, run, seq, type agent_thinking unless `type` given) and returns
  /// its event_id. Call Flush() to wait for Kafka's acknowledgement.
  std::string Publish(const std::string& user, const std::string& run, uint32_t seq,
                      const std::string& thread = "t-1");
  void Flush();

 private:
  int partitions_;
  std::string topic_;
  kafka::EmbeddedKafka kafka_;
  std::unique_ptr<producers::EventPublisher> publisher_;
  std::unique_ptr<gateway::Gateway> gateway_;
  uint64_t next_event_ = 0;
};

/// The value of an unlabelled series (or a labelled one given in full) in the replica's
/// /metrics text; -1 when absent.
double MetricValue(uint16_t port, const std::string& series);
/// Polls /metrics until `series` reaches `at_least` or `timeout` passes; returns the last value.
/// Tests wait on what the replica reports instead of sleeping.
double WaitForMetric(uint16_t port, const std::string& series, double at_least,
                     std::chrono::milliseconds timeout);

/// Reads frames until `predicate` holds for the collected list or `timeout` passes.
std::vector<Frame> ReadUntil(WsClient& client,
                             const std::function<bool(const std::vector<Frame>&)>& done,
                             std::chrono::milliseconds timeout);

}  // namespace agentwire::testing
