#include "agentwire/core/topic_reader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "agentwire/core/kafka_config.hpp"

namespace agentwire::kafka {
namespace {

TopicPartitionListPtr ListOf(const std::string& topic, const std::vector<PartitionStart>& starts) {
  TopicPartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(starts.size())));
  for (const auto& start : starts) {
    rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), start.partition)->offset =
        start.offset;
  }
  return list;
}

std::string TextOf(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR_NO_ERROR ? std::string() : ErrorText(err);
}

std::string TextOf(ErrorPtr error) {
  return error ? std::string(rd_kafka_error_string(error.get())) : std::string();
}

}  // namespace

Record::Record(rd_kafka_message_s* message) noexcept : message_(message) {}

Record::~Record() {
  if (message_ != nullptr) rd_kafka_message_destroy(message_);
}

Record::Record(Record&& other) noexcept : message_(std::exchange(other.message_, nullptr)) {}

Record& Record::operator=(Record&& other) noexcept {
  if (this != &other) {
    if (message_ != nullptr) rd_kafka_message_destroy(message_);
    message_ = std::exchange(other.message_, nullptr);
  }
  return *this;
}

Record::Error Record::ErrorKind() const noexcept {
  switch (message_->err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
      return Error::kNone;
    case RD_KAFKA_RESP_ERR__PARTITION_EOF:
      return Error::kPartitionEnd;
    case RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET:
    case RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
      return Error::kOutOfRange;
    default:
      return Error::kOther;
  }
}

std::string Record::ErrorText() const { return kafka::ErrorText(message_->err); }
int Record::Partition() const noexcept { return message_->partition; }
int64_t Record::Offset() const noexcept { return message_->offset; }

int64_t Record::TimestampMs() const noexcept {
  rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  return rd_kafka_message_timestamp(message_, &type);
}

std::string_view Record::Key() const noexcept {
  if (message_->key == nullptr) return {};
  return {static_cast<const char*>(message_->key), message_->key_len};
}

std::string_view Record::Value() const noexcept {
  if (message_->payload == nullptr) return {};
  return {static_cast<const char*>(message_->payload), message_->len};
}

struct TopicReader::Impl {
  std::string topic;
  HandlePtr consumer;
  QueuePtr queue;                          // the consumer's queue, yielded by Wake
  std::vector<rd_kafka_message_t*> batch;  // PollBatch's buffer
};

TopicReader::TopicReader(const Properties& properties, std::string topic)
    : impl_(std::make_unique<Impl>()) {
  impl_->topic = std::move(topic);
  impl_->consumer = MakeClient(RD_KAFKA_CONSUMER, MakeConf(properties));
  impl_->queue.reset(rd_kafka_queue_get_consumer(impl_->consumer.get()));
}

TopicReader::~TopicReader() {
  impl_->queue.reset();
  rd_kafka_assign(impl_->consumer.get(), nullptr);
}

const std::string& TopicReader::Topic() const noexcept { return impl_->topic; }

int TopicReader::PartitionCount(std::chrono::milliseconds timeout) const {
  return kafka::PartitionCount(impl_->consumer.get(), impl_->topic, timeout);
}

std::string TopicReader::Assign(const std::vector<PartitionStart>& starts) {
  if (starts.empty()) return TextOf(rd_kafka_assign(impl_->consumer.get(), nullptr));
  return TextOf(rd_kafka_assign(impl_->consumer.get(), ListOf(impl_->topic, starts).get()));
}

std::string TopicReader::AddPartitions(const std::vector<PartitionStart>& starts) {
  return TextOf(ErrorPtr(
      rd_kafka_incremental_assign(impl_->consumer.get(), ListOf(impl_->topic, starts).get())));
}

std::string TopicReader::RemovePartitions(const std::vector<int>& partitions) {
  std::vector<PartitionStart> starts;
  starts.reserve(partitions.size());
  for (const int partition : partitions) starts.push_back({partition, RD_KAFKA_OFFSET_INVALID});
  return TextOf(ErrorPtr(
      rd_kafka_incremental_unassign(impl_->consumer.get(), ListOf(impl_->topic, starts).get())));
}

std::optional<Watermarks> TopicReader::QueryWatermarks(int partition,
                                                       std::chrono::milliseconds timeout,
                                                       std::string* error) const {
  Watermarks marks;
  const auto err =
      rd_kafka_query_watermark_offsets(impl_->consumer.get(), impl_->topic.c_str(), partition,
                                       &marks.low, &marks.high, static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (error != nullptr) *error = ErrorText(err);
    return std::nullopt;
  }
  return marks;
}

std::optional<Watermarks> TopicReader::CachedWatermarks(int partition) const {
  Watermarks marks;
  if (rd_kafka_get_watermark_offsets(impl_->consumer.get(), impl_->topic.c_str(), partition,
                                     &marks.low, &marks.high) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      marks.high < 0) {
    return std::nullopt;
  }
  return marks;
}

std::optional<int64_t> TopicReader::Position(int partition) const {
  const auto where = ListOf(impl_->topic, {{partition, RD_KAFKA_OFFSET_INVALID}});
  if (rd_kafka_position(impl_->consumer.get(), where.get()) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      where->elems[0].offset < 0) {
    return std::nullopt;
  }
  return where->elems[0].offset;
}

std::optional<Record> TopicReader::Poll(std::chrono::milliseconds timeout) {
  rd_kafka_message_t* message =
      rd_kafka_consumer_poll(impl_->consumer.get(), static_cast<int>(timeout.count()));
  if (message == nullptr) return std::nullopt;
  return Record(message);
}

size_t TopicReader::PollBatch(std::chrono::milliseconds timeout, size_t max,
                              std::vector<Record>& out) {
  if (max == 0) return 0;
  rd_kafka_message_t* first =
      rd_kafka_consumer_poll(impl_->consumer.get(), static_cast<int>(timeout.count()));
  if (first == nullptr) return 0;
  out.emplace_back(first);
  impl_->batch.resize(max - 1);
  // Timeout 0: only what is queued now (rd_kafka_consume_batch_queue would otherwise wait
  // until the batch is full).
  const ssize_t more =
      max == 1 ? 0
               : rd_kafka_consume_batch_queue(impl_->queue.get(), 0, impl_->batch.data(), max - 1);
  for (ssize_t i = 0; i < more; ++i) out.emplace_back(impl_->batch[static_cast<size_t>(i)]);
  return 1 + static_cast<size_t>(std::max<ssize_t>(more, 0));
}

void TopicReader::Wake() const { rd_kafka_queue_yield(impl_->queue.get()); }

}  // namespace agentwire::kafka
