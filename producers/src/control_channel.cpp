#include "agentwire/producers/control_channel.hpp"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <thread>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/producers/event_publisher.hpp"

namespace agentwire::producers {

namespace {
constexpr const char* kSchemaName = "agentwire.v1.ControlRecord";
constexpr const char* kContentType = "application/x-protobuf";
}  // namespace

class ControlPublisher::Impl {
 public:
  Impl(const kafka::Properties& client_properties, const std::string& client_id) {
    auto properties = DefaultProducerProperties();
    properties["client.id"] = client_id;
    // A Stop is waited on by a person: no batching delay.
    properties["linger.ms"] = "0";
    properties["compression.type"] = "none";
    for (const auto& [key, value] : client_properties) properties[key] = value;
    auto conf = kafka::MakeConf(properties);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &Impl::OnDelivery);
    producer_ = kafka::MakeClient(RD_KAFKA_PRODUCER, std::move(conf));
    poll_thread_ = std::thread([this] {
      while (!stopping_.load(std::memory_order_acquire)) rd_kafka_poll(producer_.get(), 50);
    });
  }

  ~Impl() {
    rd_kafka_flush(producer_.get(), 5000);
    stopping_.store(true, std::memory_order_release);
    poll_thread_.join();
    // What is left is dropped with the handle: its callbacks are freed by the purge below.
    rd_kafka_purge(producer_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(producer_.get(), 0);
  }

  bool Publish(const std::string& topic, const v1::ControlRecord& record, Done done,
               std::string* error) {
    const std::string value = record.SerializeAsString();
    auto* opaque = new Done(std::move(done));
    const auto err = rd_kafka_producev(
        producer_.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_KEY(record.user_id().data(), record.user_id().size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADER("content-type", kContentType, -1),
        RD_KAFKA_V_HEADER("schema", kSchemaName, -1), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      delete opaque;
      if (error != nullptr) *error = kafka::ErrorText(err);
      return false;
    }
    return true;
  }

  int Flush(std::chrono::milliseconds timeout) {
    rd_kafka_flush(producer_.get(), static_cast<int>(timeout.count()));
    return rd_kafka_outq_len(producer_.get());
  }

  void CheckTopic(const std::string& topic, std::chrono::milliseconds timeout) {
    (void)kafka::PartitionCount(producer_.get(), topic, timeout);
  }

 private:
  static void OnDelivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* message, void* /*opaque*/) {
    std::unique_ptr<Done> done(static_cast<Done*>(message->_private));
    if (!done || !*done) return;
    (*done)(message->err == RD_KAFKA_RESP_ERR_NO_ERROR ? std::string()
                                                       : kafka::ErrorText(message->err));
  }

  kafka::HandlePtr producer_;
  std::atomic<bool> stopping_{false};
  std::thread poll_thread_;
};

ControlPublisher::ControlPublisher(const kafka::Properties& client_properties,
                                   const std::string& client_id)
    : impl_(std::make_unique<Impl>(client_properties, client_id)) {}

ControlPublisher::~ControlPublisher() = default;

bool ControlPublisher::Publish(const std::string& topic, const v1::ControlRecord& record, Done done,
                               std::string* error) {
  return impl_->Publish(topic, record, std::move(done), error);
}

int ControlPublisher::Flush(std::chrono::milliseconds timeout) { return impl_->Flush(timeout); }

void ControlPublisher::CheckTopic(const std::string& topic, std::chrono::milliseconds timeout) {
  impl_->CheckTopic(topic, timeout);
}

}  // namespace agentwire::producers
