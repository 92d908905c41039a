#pragma once

// The DLQ producer archive and analytics share: copies a message they cannot use to
// `<topic>.dlq` with the reason, and waits for the acknowledgements before the batch's
// PostgreSQL commit. Private to agentwire_consumers.

#include <chrono>
#include <cstdint>
#include <string>

#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/metrics.hpp"

namespace agentwire::consumers::internal {

/// Not thread-safe: the consumer's thread only (delivery reports are served by Flush).
class DeadLetterQueue final {
 public:
  /// `failures` counts dead letters the DLQ topic did not acknowledge. Throws ConfigError for
  /// bad Kafka properties.
  DeadLetterQueue(const kafka::Properties& client_properties, std::string source_topic,
                  std::string dead_letter_topic, std::string group_id, metrics::Counter& failures);
  ~DeadLetterQueue();
  DeadLetterQueue(const DeadLetterQueue&) = delete;
  DeadLetterQueue& operator=(const DeadLetterQueue&) = delete;

  /// Queues a copy of `message` (key, value, headers) with the reason, source and group
  /// headers.
  void Produce(const rd_kafka_message_t* message, const std::string& reason);
  /// Waits until every queued copy is acknowledged; throws BatchNotCommitted (so the batch is
  /// rolled back and retried) when one could not be produced, failed, or got no answer in time.
  void FlushOrThrow();

  /// Called by the delivery report callback.
  void OnDelivery(const rd_kafka_message_t* message);

 private:
  std::string source_topic_;
  std::string dead_letter_topic_;
  std::string group_id_;
  metrics::Counter& failures_;
  uint64_t queued_ = 0;
  uint64_t failed_ = 0;
  kafka::HandlePtr producer_;
};

}  // namespace agentwire::consumers::internal
