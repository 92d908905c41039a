#include "support/gateway_harness.hpp"

#include <fmt/format.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "agentwire/gateway/auth.hpp"
#include "agentwire/schemas/event_json.hpp"

namespace agentwire::testing {

std::optional<Frame> ParseFrame(const std::string& text) {
  auto json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  Frame frame;
  frame.type = json.value("type", "");
  frame.cursor = json.value("cursor", "");
  frame.replayed = json.value("replayed", uint64_t{0});
  if (json.contains("event")) {
    const auto& event = json["event"];
    frame.event_id = event.value("event_id", "");
    frame.user_id = event.value("user_id", "");
    frame.run_id = event.value("run_id", "");
    frame.run_seq = event.value("run_seq", 0U);
  }
  frame.json = std::move(json);
  return frame;
}

GatewayHarness::GatewayHarness(int partitions, int brokers, std::string topic)
    : partitions_(partitions), topic_(std::move(topic)), kafka_(brokers) {
  // The topic, its .dlq and the run-control topics (Stop, heartbeats), as `agentwire broker`.
  for (const auto& spec : kafka::DefaultTopics(topic_, partitions_)) kafka_.CreateTopic(spec);
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", kafka_.BootstrapServers()}, {"linger.ms", "1"}};
  config.topic = topic_;
  publisher_ = std::make_unique<producers::EventPublisher>(config);
}

GatewayHarness::~GatewayHarness() {
  StopGateway();
  publisher_.reset();
}

gateway::GatewayConfig GatewayHarness::BaseConfig() const {
  gateway::GatewayConfig config;
  config.port = 0;
  config.io_threads = 2;
  config.client_properties = {{"bootstrap.servers", kafka_.BootstrapServers()}};
  config.topic = topic_;
  config.auth.hs256_secret = kTestJwtSecret;
  config.drain_grace = std::chrono::seconds(3);
  return config;
}

void GatewayHarness::StartGateway(const std::function<void(gateway::GatewayConfig&)>& tweak) {
  StopGateway();
  auto config = BaseConfig();
  if (tweak) tweak(config);
  gateway_ = std::make_unique<gateway::Gateway>(config);
  gateway_->Start();
  // Readiness is reached asynchronously (after the tailer's first poll round), the same way
  // a load balancer sees it: wait for /readyz like one would before sending traffic.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (HttpGet(gateway_->Port(), "/readyz").status != 200) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("gateway did not report ready on /readyz within 20 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void GatewayHarness::StopGateway() {
  if (!gateway_) return;
  gateway_->Drain();
  gateway_.reset();
}

std::string GatewayHarness::Token(const std::string& user) const {
  return gateway::MintHs256Token(kTestJwtSecret, user, std::chrono::hours(1));
}

WsClient::Options GatewayHarness::ClientOptions(const std::string& user, const std::string& query,
                                                std::optional<uint16_t> port) const {
  WsClient::Options options;
  options.port = port.value_or(gateway_ ? gateway_->Port() : 0);
  options.target = query.empty() ? "/v1/events" : "/v1/events?" + query;
  options.bearer = Token(user);
  return options;
}

std::string GatewayHarness::Publish(const std::string& user, const std::string& run, uint32_t seq,
                                    const std::string& thread) {
  v1::AgentEvent event;
  event.set_event_id(fmt::format("ev-{}-{}", user, ++next_event_));
  event.set_user_id(user);
  event.set_run_id(run);
  event.set_thread_id(thread);
  event.set_run_seq(seq);
  event.set_agent_name("tester");
  event.mutable_agent_thinking()->set_text(fmt::format("step {}", seq));
  schemas::FillDefaults(event);
  const auto status = publisher_->Publish(event, {}, std::chrono::seconds(10));
  if (status != producers::PublishStatus::kAccepted) {
    throw std::runtime_error(std::string("publish: ") + producers::ToString(status));
  }
  return event.event_id();
}

void GatewayHarness::Flush() {
  if (publisher_->Flush(std::chrono::seconds(30)) != 0) throw std::runtime_error("flush timed out");
}

std::vector<Frame> ReadUntil(WsClient& client,
                             const std::function<bool(const std::vector<Frame>&)>& done,
                             std::chrono::milliseconds timeout) {
  std::vector<Frame> frames;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done(frames)) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || client.Closed()) break;
    auto text = client.Read(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
    if (!text) continue;
    if (auto frame = ParseFrame(*text)) frames.push_back(std::move(*frame));
  }
  return frames;
}

double MetricValue(uint16_t port, const std::string& series) {
  const auto body = HttpGet(port, "/metrics").body;
  const std::string needle = series + " ";
  size_t at = 0;
  while ((at = body.find(needle, at)) != std::string::npos) {
    if (at == 0 || body[at - 1] == '\n') return std::stod(body.substr(at + needle.size()));
    at += needle.size();
  }
  return -1;
}

double WaitForMetric(uint16_t port, const std::string& series, double at_least,
                     std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  double value = MetricValue(port, series);
  while (value < at_least && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    value = MetricValue(port, series);
  }
  return value;
}

}  // namespace agentwire::testing
