#include "support/kafka_test_utils.hpp"

#include <agentwire/v1/events.pb.h>
#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/hashing.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"

namespace agentwire::testing {
namespace {

kafka::HandlePtr MakePlainConsumer(const std::string& bootstrap) {
  // librdkafka 2.0 wants a group.id even for assign(); a fresh one per reader, never
  // joined (no subscribe) and never committed to, so readers cannot disturb each other.
  static std::atomic<uint64_t> readers{0};
  auto conf = kafka::MakeConf({
      {"bootstrap.servers", bootstrap},
      {"group.id", fmt::format("agentwire-test-reader-{}-{}", ::getpid(), readers.fetch_add(1))},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"enable.partition.eof", "false"},
      // The embedded Kafka holds an empty fetch for the full wait, even when data arrives.
      {"fetch.wait.max.ms", "10"},
      {"fetch.max.bytes", "52428800"},
      {"max.partition.fetch.bytes", "4194304"},
      {"log_level", "3"},
  });
  return kafka::MakeClient(RD_KAFKA_CONSUMER, std::move(conf));
}

ConsumedRecord ToRecord(const rd_kafka_message_t& message) {
  ConsumedRecord record;
  if (message.key != nullptr) {
    record.key.assign(static_cast<const char*>(message.key), message.key_len);
  }
  if (message.payload != nullptr) {
    record.value.assign(static_cast<const char*>(message.payload), message.len);
  }
  record.partition = message.partition;
  record.offset = message.offset;
  rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  record.timestamp_ms = rd_kafka_message_timestamp(&message, &type);
  rd_kafka_headers_t* headers = nullptr;  // owned by the message
  if (rd_kafka_message_headers(&message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    for (size_t i = 0;
         rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      record.headers[name] =
          value == nullptr ? std::string() : std::string(static_cast<const char*>(value), size);
    }
  }
  return record;
}

}  // namespace

std::vector<ConsumedRecord> ConsumeAll(const std::string& bootstrap, const std::string& topic,
                                       size_t expected, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto consumer = MakePlainConsumer(bootstrap);
  const int partitions = kafka::PartitionCount(consumer.get(), topic, timeout);

  kafka::TopicPartitionListPtr assignment(rd_kafka_topic_partition_list_new(partitions));
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(assignment.get(), topic.c_str(), p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  }
  if (const auto err = rd_kafka_assign(consumer.get(), assignment.get())) {
    throw KafkaError(fmt::format("assign {}: {}", topic, kafka::ErrorText(err)), false);
  }

  std::vector<ConsumedRecord> records;
  records.reserve(expected);
  std::vector<int64_t> next_offset(static_cast<size_t>(partitions), 0);
  // Filled once `expected` records arrived: where each partition ended at that moment.
  std::vector<int64_t> end_offset;
  const auto caught_up = [&] {
    for (int p = 0; p < partitions; ++p) {
      if (next_offset[p] < end_offset[p]) return false;
    }
    return true;
  };
  while (std::chrono::steady_clock::now() < deadline) {
    if (records.size() >= expected) {
      if (end_offset.empty()) {
        end_offset.resize(static_cast<size_t>(partitions), 0);
        for (int p = 0; p < partitions; ++p) {
          int64_t low = 0;
          const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
              deadline - std::chrono::steady_clock::now());
          if (rd_kafka_query_watermark_offsets(
                  consumer.get(), topic.c_str(), p, &low, &end_offset[p],
                  static_cast<int>(std::max<int64_t>(1, remaining.count()))) !=
              RD_KAFKA_RESP_ERR_NO_ERROR) {
            end_offset[p] = 0;  // unknown: do not wait for this partition
          }
        }
      }
      if (caught_up()) break;
    }
    kafka::MessagePtr message(rd_kafka_consumer_poll(consumer.get(), 20));
    if (!message) continue;
    // Errors on the consumer's own queue (a broker going away) are transient here.
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    if (message->partition >= 0 && message->partition < partitions) {
      next_offset[message->partition] = message->offset + 1;
    }
    records.push_back(ToRecord(*message));
  }
  (void)rd_kafka_assign(consumer.get(), nullptr);
  return records;
}

std::string DeliveryAudit::Summary() const {
  return fmt::format(
      "consumed={} lost={} duplicated={} reordered={} users_in_multiple_partitions={} "
      "wrong_partition={} unknown={}",
      consumed, lost, duplicated, reordered, users_in_multiple_partitions, wrong_partition,
      unknown);
}

DeliveryAudit AuditDelivery(const PublishedByUser& published,
                            const std::vector<ConsumedRecord>& consumed, int32_t partition_count) {
  DeliveryAudit audit;
  audit.consumed = consumed.size();

  // Where each published event sits in its user's sequence.
  std::unordered_map<std::string, size_t> position;
  for (const auto& [user, ids] : published) {
    for (size_t i = 0; i < ids.size(); ++i) position.emplace(ids[i], i);
  }

  struct Seen {
    int32_t partition;
    int64_t offset;
    size_t position;
  };
  std::map<std::string, std::vector<Seen>> by_user;
  std::map<std::string, std::set<int32_t>> partitions_of_user;
  std::unordered_set<std::string> seen_ids;
  seen_ids.reserve(consumed.size());

  v1::AgentEvent event;
  for (const auto& record : consumed) {
    if (!event.ParseFromString(record.value)) {
      ++audit.unknown;
      continue;
    }
    const auto& user = event.user_id();
    partitions_of_user[user].insert(record.partition);
    if (partition_count > 0 && record.partition != PartitionForKey(user, partition_count)) {
      ++audit.wrong_partition;
    }
    const auto found = position.find(event.event_id());
    if (found == position.end()) {
      ++audit.unknown;
      continue;
    }
    if (!seen_ids.insert(event.event_id()).second) {
      ++audit.duplicated;
      continue;
    }
    by_user[user].push_back({record.partition, record.offset, found->second});
  }

  for (const auto& [user, partitions] : partitions_of_user) {
    if (partitions.size() > 1) ++audit.users_in_multiple_partitions;
  }
  for (auto& [user, seen] : by_user) {
    std::sort(seen.begin(), seen.end(), [](const Seen& a, const Seen& b) {
      return a.partition != b.partition ? a.partition < b.partition : a.offset < b.offset;
    });
    size_t highest = 0;
    bool any = false;
    for (const auto& s : seen) {
      if (any && s.position < highest) {
        ++audit.reordered;
      } else {
        highest = s.position;
        any = true;
      }
    }
  }
  for (const auto& [user, ids] : published) {
    for (const auto& id : ids) {
      if (!seen_ids.contains(id)) ++audit.lost;
    }
  }
  return audit;
}

std::map<int32_t, PartitionWatermarks> Watermarks(const std::string& bootstrap,
                                                  const std::string& topic,
                                                  std::chrono::milliseconds timeout) {
  auto client = MakePlainConsumer(bootstrap);
  const int partitions = kafka::PartitionCount(client.get(), topic, timeout);
  std::map<int32_t, PartitionWatermarks> watermarks;
  for (int32_t p = 0; p < partitions; ++p) {
    auto& w = watermarks[p];
    const auto err = rd_kafka_query_watermark_offsets(client.get(), topic.c_str(), p, &w.low,
                                                      &w.high, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw KafkaError(fmt::format("watermarks of {} [{}]: {}", topic, p, kafka::ErrorText(err)),
                       true);
    }
  }
  return watermarks;
}

std::map<int32_t, int64_t> LowWatermarks(const std::string& bootstrap, const std::string& topic,
                                         std::chrono::milliseconds timeout) {
  std::map<int32_t, int64_t> low;
  for (const auto& [partition, w] : Watermarks(bootstrap, topic, timeout)) low[partition] = w.low;
  return low;
}

int ProduceRaw(rd_kafka_t* producer, const std::string& topic, const std::string& key,
               const std::string& value, int32_t partition) {
  rd_kafka_resp_err_t err;
  do {
    err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_poll(producer, 10);
  } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
  return err;
}

std::string IncompressibleText(size_t bytes) {
  static std::atomic<uint64_t> state{0x9E3779B97F4A7C15ULL};
  uint64_t x = state.fetch_add(0x632BE59BD9B4E019ULL);
  std::string text(bytes, ' ');
  for (auto& c : text) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>('!' + (x >> 33) % 90);
  }
  return text;
}

}  // namespace agentwire::testing
