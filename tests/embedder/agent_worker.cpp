// The smallest agent worker that embeds agentwire's publisher: what docs/architecture.md
// promises an embedder. It is compiled with tests/embedder/poison/ first on the include path,
// so it fails to build if a public header it includes pulls in librdkafka's or CLI11's headers;
// run against a broker, it publishes whole runs and exits 0 only when every event was
// acknowledged.
//
//   agent_worker <bootstrap servers> <user id> <runs>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "agentwire/producers/event_publisher.hpp"
#include "agentwire/producers/run_emitter.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <bootstrap servers> <user id> <runs>\n", argv[0]);
    return 2;
  }
  namespace producers = agentwire::producers;
  producers::PublisherConfig config;
  config.client_properties = {{"bootstrap.servers", argv[1]}};
  producers::EventPublisher publisher(config);

  std::atomic<int> delivered{0};
  std::atomic<int> failed{0};
  const auto count = [&](const producers::DeliveryReport& report) {
    (report.ok ? delivered : failed).fetch_add(1);
  };
  const int runs = std::atoi(argv[3]);
  int published = 0;
  for (int i = 0; i < runs; ++i) {
    producers::RunIdentity identity;
    identity.user_id = argv[2];
    identity.thread_id = "thread-" + std::to_string(i);
    identity.agent_name = "embedder-example";
    producers::RunEmitter run(publisher, identity, std::chrono::seconds(5), count);
    published += run.Started("hello").Accepted();
    published += run.ToolExecuting("search", "{}").Accepted();
    published += run.Completed("done", 12).Accepted();
  }
  const size_t outstanding = publisher.Flush(std::chrono::seconds(30));
  std::printf("published %d delivered %d failed %d outstanding %zu\n", published, delivered.load(),
              failed.load(), outstanding);
  return published == runs * 3 && delivered.load() == published && failed.load() == 0 ? 0 : 1;
}
