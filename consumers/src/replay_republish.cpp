// `agentwire replay --republish-to TOPIC`: re-drives the selected messages to another topic
// with their keys, headers and values unchanged (byte-for-byte), so a staging gateway or
// consumer sees exactly what production saw. The producer is idempotent and uses the same
// murmur2_random partitioner as every agentwire producer, so a user's events keep their order
// and, with the same partition count, their partition. Timestamps are new (now): copying old
// ones would let the target's time-based retention delete them at once.

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <thread>
#include <utility>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/producers/event_publisher.hpp"
#include "replay_internal.hpp"

namespace agentwire::consumers::replay {

class Republisher::Impl {
 public:
  explicit Impl(const ReplayConfig& config)
      : topic_(config.republish_to), rate_(config.republish_rate) {
    kafka::Properties properties = producers::DefaultProducerProperties();
    properties["client.id"] = "agentwire-replay-republish";
    for (const auto& [key, value] : config.client_properties) properties[key] = value;
    auto conf = kafka::MakeConf(properties);
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &Impl::OnDelivery);
    producer_ = kafka::MakeClient(RD_KAFKA_PRODUCER, std::move(conf));
    (void)ExistingTopicPartitions(producer_.get(), topic_, "--republish-to",
                                  std::chrono::seconds(10));
    next_send_ = std::chrono::steady_clock::now();
  }

  ~Impl() {
    if (sent_ > delivered_ + failed_) {
      rd_kafka_purge(producer_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_flush(producer_.get(), 5000);
    }
  }

  bool Send(const Record& record, const std::stop_token& stop) {
    if (!Pace(stop)) return false;
    rd_kafka_headers_t* headers = rd_kafka_headers_new(record.headers.size());
    for (const auto& [name, value] : record.headers) {
      rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()), value.data(),
                          static_cast<ssize_t>(value.size()));
    }
    while (true) {
      const auto err = rd_kafka_producev(
          producer_.get(), RD_KAFKA_V_TOPIC(topic_.c_str()),
          RD_KAFKA_V_KEY(record.key.data(), record.key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(record.value.data()), record.value.size()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;  // the message owns `headers` now
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !stop.stop_requested()) {
        rd_kafka_poll(producer_.get(), 50);
        continue;
      }
      rd_kafka_headers_destroy(headers);
      if (stop.stop_requested()) return false;
      ++failed_;
      NoteError(kafka::ErrorText(err));
      return true;
    }
    ++sent_;
    rd_kafka_poll(producer_.get(), 0);
    return true;
  }

  void Finish(std::chrono::milliseconds timeout) {
    (void)rd_kafka_flush(producer_.get(), static_cast<int>(timeout.count()));
    rd_kafka_poll(producer_.get(), 0);
    if (sent_ > delivered_ + failed_) {
      const uint64_t left = sent_ - delivered_ - failed_;
      NoteError(fmt::format("{} messages still unacknowledged after {} ms", left, timeout.count()));
      failed_ += left;
      sent_ = delivered_ + failed_;
    }
    if (!first_error_.empty()) {
      log::Error("replay: republishing failed for some events",
                 {{"topic", topic_}, {"count", failed_}, {"error", first_error_}});
    }
  }

  uint64_t Delivered() const { return delivered_; }
  uint64_t Failed() const { return failed_; }

 private:
  // Token bucket of one: event i may go at start + i / rate. After a stall (slow broker) the
  // schedule restarts from now rather than bursting to catch up.
  bool Pace(const std::stop_token& stop) {
    if (rate_ <= 0) return !stop.stop_requested();
    const auto now = std::chrono::steady_clock::now();
    if (now > next_send_ + std::chrono::seconds(1)) next_send_ = now;
    while (std::chrono::steady_clock::now() < next_send_) {
      if (stop.stop_requested()) return false;
      rd_kafka_poll(producer_.get(), 0);
      std::this_thread::sleep_until(
          std::min(next_send_, std::chrono::steady_clock::now() + std::chrono::milliseconds(50)));
    }
    next_send_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(1.0 / rate_));
    return !stop.stop_requested();
  }

  void NoteError(std::string error) {
    if (first_error_.empty()) first_error_ = std::move(error);
  }

  // Runs inside rd_kafka_poll/flush on the replay thread.
  static void OnDelivery(rd_kafka_t* /*producer*/, const rd_kafka_message_t* message,
                         void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++self->delivered_;
    } else {
      ++self->failed_;
      self->NoteError(kafka::ErrorText(message->err));
    }
  }

  std::string topic_;
  double rate_;
  kafka::HandlePtr producer_;
  std::chrono::steady_clock::time_point next_send_;
  uint64_t sent_ = 0;
  uint64_t delivered_ = 0;
  uint64_t failed_ = 0;
  std::string first_error_;
};

Republisher::Republisher(const ReplayConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Republisher::~Republisher() = default;
bool Republisher::Send(const Record& record, const std::stop_token& stop) {
  return impl_->Send(record, stop);
}
void Republisher::Finish(std::chrono::milliseconds timeout) { impl_->Finish(timeout); }
uint64_t Republisher::Delivered() const { return impl_->Delivered(); }
uint64_t Republisher::Failed() const { return impl_->Failed(); }

}  // namespace agentwire::consumers::replay
