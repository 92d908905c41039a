#include "support/replica_stream.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "agentwire/gateway/auth.hpp"
#include "support/test_paths.hpp"

namespace agentwire::testing {

using namespace std::chrono_literals;

GatewayProcess StartGatewayProcess(const std::string& bootstrap, const std::string& directory,
                                   const std::string& name,
                                   const std::vector<std::string>& extra_args) {
  const std::string port_file = directory + "/" + name + ".port";
  std::filesystem::remove(port_file);
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS",    "AGENTWIRE_JWT_SECRET",      "PORT",
                       "AGENTWIRE_TOPIC",      "AGENTWIRE_DRAIN_GRACE",     "AGENTWIRE_TAIL",
                       "AGENTWIRE_WARM_START", "AGENTWIRE_TAIL_WARM_WINDOW"};
  std::vector<std::string> argv{
      AgentwireBinary(), "gateway", "--brokers",    bootstrap,      "--port",    "0",
      "--port-file",     port_file, "--jwt-secret", kTestJwtSecret, "--threads", "2"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  GatewayProcess gateway;
  gateway.process = std::make_unique<Subprocess>(argv, options);
  EXPECT_TRUE(WaitForFile(port_file, 30s)) << gateway.process->Describe();
  gateway.port = static_cast<uint16_t>(std::stoi(ReadFirstLine(port_file)));
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (HttpGet(gateway.port, "/readyz").status != 200 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(HttpGet(gateway.port, "/readyz").status, 200) << gateway.process->Describe();
  return gateway;
}

WsClient::Options ResumeOptions(uint16_t port, const std::string& user, const std::string& cursor) {
  WsClient::Options options;
  options.port = port;
  options.target = "/v1/events?cursor=" + (cursor.empty() ? std::string("earliest") : cursor);
  options.bearer = gateway::MintHs256Token(kTestJwtSecret, user, std::chrono::hours(1));
  return options;
}

StreamAudit CompareStreams(const std::vector<std::string>& expected,
                           const std::vector<std::string>& received) {
  StreamAudit audit;
  std::set<std::string> seen;
  std::vector<std::string> firsts;
  for (const auto& id : received) {
    if (seen.insert(id).second) {
      firsts.push_back(id);
    } else {
      ++audit.duplicated;
    }
  }
  for (const auto& id : expected) audit.lost += !seen.contains(id) ? 1 : 0;
  // The first copies must follow publish order: count those out of step.
  size_t j = 0;
  for (const auto& id : expected) {
    if (j < firsts.size() && firsts[j] == id) ++j;
  }
  audit.reordered = firsts.size() - j;
  return audit;
}

void ExpectExactlyOnceInOrder(const std::vector<std::string>& published, size_t total,
                              const std::vector<std::string>& received) {
  const auto audit = CompareStreams(published, received);
  EXPECT_EQ(published.size(), total);
  EXPECT_EQ(audit.lost, 0U);
  EXPECT_EQ(audit.duplicated, 0U);
  EXPECT_EQ(audit.reordered, 0U);
}

PacedPublisher::PacedPublisher(const std::string& bootstrap, std::string user, int total,
                               std::string topic)
    : user_(std::move(user)), total_(total) {
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", bootstrap}, {"linger.ms", "1"}};
  config.topic = std::move(topic);
  publisher_ = std::make_unique<producers::EventPublisher>(config);
  thread_ = std::thread([this] { Run(); });
}

PacedPublisher::~PacedPublisher() { Join(); }

void PacedPublisher::Join() {
  if (thread_.joinable()) thread_.join();
}

void PacedPublisher::Run() {
  for (int i = 1; i <= total_; ++i) {
    v1::AgentEvent event;
    event.set_event_id(user_ + "-" + std::to_string(i));
    event.set_user_id(user_);
    event.set_thread_id("t-1");
    event.set_run_id("r-1");
    event.set_run_seq(static_cast<uint32_t>(i));
    event.mutable_agent_thinking()->set_text("step " + std::to_string(i));
    if (publisher_->Publish(event, {}, 10s) != producers::PublishStatus::kAccepted) break;
    published_.push_back(event.event_id());
    if (i % 10 == 0) {
      publisher_->Flush(10s);
      std::this_thread::sleep_for(20ms);
    }
  }
  publisher_->Flush(30s);
  done_ = true;
}

void ClientLog::Take(const Frame& frame) {
  if (frame.type == "event") {
    events.push_back(frame.event_id);
    cursor = frame.cursor;
  } else if (frame.type == "ready") {
    ++ready_frames;
    cursor = frame.cursor;
  } else {
    ADD_FAILURE() << "unexpected frame " << frame.json.dump();
  }
}

void ClientLog::ReadEvents(WsClient& client, size_t count, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (events.size() < count && !client.Closed() && std::chrono::steady_clock::now() < deadline) {
    auto text = client.Read(200ms);
    if (!text) continue;
    if (auto frame = ParseFrame(*text)) Take(*frame);
  }
}

void ClientLog::ReadUntilClosed(WsClient& client, std::chrono::milliseconds timeout) {
  ReadEvents(client, SIZE_MAX, timeout);
}

void ClientLog::ReadToTheEnd(WsClient& client, PacedPublisher& publisher, size_t total) {
  ReadEvents(client, total, 60s);
  publisher.Join();
  ReadEvents(client, SIZE_MAX, 500ms);
}

}  // namespace agentwire::testing
