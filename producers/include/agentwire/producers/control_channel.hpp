#pragma once

#include <agentwire/v1/control.pb.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "agentwire/core/kafka_properties.hpp"

namespace agentwire::producers {

/// Publishes run-control records (docs/runs.md): cancel requests to `<topic>.control` (the
/// gateway) and heartbeats to `<topic>.heartbeat` (RunControl). Keyed by the record's user_id
/// with the murmur2 partitioner, so a user's control records sit in the partition of the same
/// number as the user's events; value = serialized ControlRecord, header `schema:
/// agentwire.v1.ControlRecord`. Idempotent producer. Delivery reports run on an internal
/// poll thread. Thread-safe.
class ControlPublisher final {
 public:
  /// Called once per accepted record, on the poll thread: empty error = stored in Kafka.
  using Done = std::function<void(const std::string& error)>;

  /// Throws ConfigError on bad properties.
  ControlPublisher(const kafka::Properties& client_properties, const std::string& client_id);
  /// Flushes for up to 5 s.
  ~ControlPublisher();
  ControlPublisher(const ControlPublisher&) = delete;
  ControlPublisher& operator=(const ControlPublisher&) = delete;

  /// Queues `record` for `topic`; false (with `error` set) when librdkafka refused it at once
  /// (queue full, unknown topic). `done` is then never called.
  bool Publish(const std::string& topic, const v1::ControlRecord& record, Done done,
               std::string* error = nullptr);
  /// Waits until everything queued was reported, up to `timeout`; returns what is left.
  int Flush(std::chrono::milliseconds timeout);

  /// Throws KafkaError (permanent) when `topic` does not exist on the cluster: the control
  /// topics come from infra/ (or `agentwire broker`) like the event topic.
  void CheckTopic(const std::string& topic, std::chrono::milliseconds timeout);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentwire::producers
