#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "agentwire/core/kafka_properties.hpp"
#include "agentwire/core/options.hpp"
#include "agentwire/producers/event_sink.hpp"

namespace agentwire::producers {

struct PublisherConfig {
  /// bootstrap.servers and any librdkafka overrides (`--kafka k=v`).
  kafka::Properties client_properties;
  std::string topic = kDefaultTopic;
  /// Events accepted but not yet reported; past it Publish() answers kQueueFull.
  size_t max_pending = 200'000;
  /// How long the destructor waits for outstanding deliveries.
  std::chrono::milliseconds close_timeout{10'000};
  /// Opt-in: no internal poll thread; delivery reports, and so the callbacks, run inside
  /// Publish(), Poll() and Flush() on the caller's thread. Publish must then be called from one
  /// thread at a time, and a caller that stops publishing for a while calls Poll() or Flush(),
  /// or reports wait. Since the default mode frees each event's memory on the publishing
  /// thread too, this mode saves little more (docs/benchmarks.md §"Publisher throughput").
  bool serve_reports_in_caller = false;
};

struct PublisherStats {
  uint64_t accepted = 0;
  uint64_t delivered = 0;
  uint64_t failed = 0;
  uint64_t producer_recreations = 0;  // after fatal (idempotence) errors
};

/// Publishes AgentEvents to Kafka with the guarantees agentwire's contract needs:
/// idempotent producer (enable.idempotence, acks=all) so broker faults neither lose nor
/// reorder a user's events; key = user_id with the Java-compatible murmur2_random
/// partitioner; value = serialized AgentEvent; headers content-type and schema.
///
/// Publish refuses an event it can never deliver (too large, unknown topic, invalid) with a
/// permanent status that names librdkafka's error and what to change; only kQueueFull is
/// retryable. Delivery reports carry the same classification.
///
/// Delivery reports, and so the callbacks, run on an internal poll thread, never inside
/// Publish. The memory of a reported event (ours and librdkafka's) is freed by the next
/// Publish, Poll or Flush, on the publishing thread, which allocated it: a block freed on
/// another thread takes glibc's slow, locked path (a third of the publisher's throughput).
/// When no thread publishes, polls or flushes for ~0.1 s, the poll thread frees it.
///
/// When librdkafka raises a fatal error (an idempotence invariant broken on the broker side),
/// the publisher builds a new producer and re-sends every event not yet acknowledged, in the
/// original order; events that were in flight at that moment may be stored twice (consumers
/// dedupe by event_id).
///
/// Thread-safe: Publish may be called from any number of threads.
class EventPublisher final : public EventSink {
 public:
  /// Throws ConfigError on bad properties or topic.
  explicit EventPublisher(PublisherConfig config);
  /// Flushes up to close_timeout and logs how many events were left undelivered.
  ~EventPublisher() override;
  EventPublisher(const EventPublisher&) = delete;
  EventPublisher& operator=(const EventPublisher&) = delete;

  PublishStatus Publish(const v1::AgentEvent& event, DeliveryCallback on_delivery = {},
                        std::chrono::milliseconds wait_for_space = {}) override;

  /// Waits until every accepted event has been reported; returns how many are still
  /// outstanding when `timeout` expires (0 = all done).
  size_t Flush(std::chrono::milliseconds timeout);

  /// With serve_reports_in_caller: serves the delivery reports that are ready, waiting up to
  /// `timeout` for the first. Without: frees the memory of reported events, if any, and
  /// returns at once (the poll thread serves the reports).
  void Poll(std::chrono::milliseconds timeout);

  size_t Pending() const;
  PublisherStats Stats() const;
  const std::string& Topic() const;

  /// The largest serialized event Publish takes with room to spare: nine tenths of the
  /// producer's message.max.bytes (900,000 by default), leaving room for the key and headers.
  /// RunEmitter cuts its events to fit it.
  size_t MaxEventBytes() const override;

  /// Asks the cluster whether the topic exists (the producer never creates topics). Throws
  /// KafkaError: permanent when it does not exist, retryable when the cluster did not answer
  /// within `timeout`. For CLIs, so a mistyped --topic fails at start instead of per event.
  void CheckTopic(std::chrono::milliseconds timeout);

  /// Test hook: raises a librdkafka fatal error as if the broker had broken idempotence,
  /// to exercise producer recreation.
  void InjectFatalErrorForTesting();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

/// The producer properties agentwire always sets (idempotence, acks, partitioner,
/// compression, small linger). Exposed so tests and docs show one truth.
kafka::Properties DefaultProducerProperties();

}  // namespace agentwire::producers
