#include "dead_letter_queue.hpp"

#include <fmt/format.h>

#include "agentwire/core/logging.hpp"
#include "pg_batch_consumer.hpp"

namespace agentwire::consumers::internal {
namespace {

constexpr const char* kReasonHeader = "agentwire-dlq-reason";
constexpr const char* kSourceHeader = "agentwire-dlq-source";
constexpr const char* kGroupHeader = "agentwire-dlq-group";
constexpr auto kFlushTimeout = std::chrono::seconds(10);

void OnDeliveryReport(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
  static_cast<DeadLetterQueue*>(opaque)->OnDelivery(message);
}

}  // namespace

DeadLetterQueue::DeadLetterQueue(const kafka::Properties& client_properties,
                                 std::string source_topic, std::string dead_letter_topic,
                                 std::string group_id, metrics::Counter& failures)
    : source_topic_(std::move(source_topic)),
      dead_letter_topic_(std::move(dead_letter_topic)),
      group_id_(std::move(group_id)),
      failures_(failures) {
  kafka::Properties properties = client_properties;
  properties["enable.idempotence"] = "true";
  properties["acks"] = "all";
  properties["linger.ms"] = "5";
  properties["message.timeout.ms"] = "10000";
  auto conf = kafka::MakeConf(properties);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), OnDeliveryReport);
  rd_kafka_conf_set_opaque(conf.get(), this);
  producer_ = kafka::MakeClient(RD_KAFKA_PRODUCER, std::move(conf));
}

DeadLetterQueue::~DeadLetterQueue() {
  if (producer_) rd_kafka_flush(producer_.get(), 10'000);
}

void DeadLetterQueue::OnDelivery(const rd_kafka_message_t* message) {
  if (!message->err) return;
  failures_.Inc();
  ++failed_;
  log::Error(
      "dead letter not delivered to the DLQ topic: the batch is not committed and will be "
      "retried",
      {{"topic", dead_letter_topic_}, {"error", kafka::ErrorText(message->err)}});
}

void DeadLetterQueue::Produce(const rd_kafka_message_t* message, const std::string& reason) {
  rd_kafka_headers_t* original = nullptr;
  rd_kafka_headers_t* headers = nullptr;
  // rd_kafka_message_headers keeps ownership; the copy is handed to producev.
  if (rd_kafka_message_headers(message, &original) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    headers = rd_kafka_headers_copy(original);
  } else {
    headers = rd_kafka_headers_new(3);
  }
  const std::string source =
      fmt::format("{}/{}/{}", source_topic_, message->partition, message->offset);
  rd_kafka_header_add(headers, kReasonHeader, -1, reason.data(),
                      static_cast<ssize_t>(reason.size()));
  rd_kafka_header_add(headers, kSourceHeader, -1, source.data(),
                      static_cast<ssize_t>(source.size()));
  rd_kafka_header_add(headers, kGroupHeader, -1, group_id_.data(),
                      static_cast<ssize_t>(group_id_.size()));
  const size_t key_size = message->key == nullptr ? 0 : message->key_len;
  const size_t value_size = message->payload == nullptr ? 0 : message->len;
  const rd_kafka_resp_err_t err = rd_kafka_producev(
      producer_.get(), RD_KAFKA_V_TOPIC(dead_letter_topic_.c_str()),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(message->key, key_size),
      RD_KAFKA_V_VALUE(message->payload, value_size), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
  ++queued_;
  if (err) {
    rd_kafka_headers_destroy(headers);
    failures_.Inc();
    ++failed_;
    log::Error("cannot produce to the DLQ topic",
               {{"topic", dead_letter_topic_}, {"error", kafka::ErrorText(err)}});
  }
  rd_kafka_poll(producer_.get(), 0);
}

void DeadLetterQueue::FlushOrThrow() {
  if (queued_ == 0) return;
  const bool flushed =
      rd_kafka_flush(producer_.get(),
                     static_cast<int>(std::chrono::milliseconds(kFlushTimeout).count())) ==
      RD_KAFKA_RESP_ERR_NO_ERROR;
  const uint64_t queued = queued_;
  const uint64_t failed = failed_;
  queued_ = 0;
  failed_ = 0;
  if (flushed && failed == 0) return;
  throw BatchNotCommitted(fmt::format(
      "the DLQ topic {} did not acknowledge the batch's {} dead letters ({}): the batch is not "
      "committed and will be retried; check that the topic exists and accepts writes",
      dead_letter_topic_, queued,
      !flushed ? fmt::format("no answer within {} s", kFlushTimeout.count())
               : fmt::format("{} failed", failed)));
}

}  // namespace agentwire::consumers::internal
