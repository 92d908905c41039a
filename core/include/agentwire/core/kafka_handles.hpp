#pragma once

// Move-only RAII holders for librdkafka C handles. Each is a unique_ptr with the
// matching destroy function, so ownership is explicit and nothing leaks on a throw.

#include <librdkafka/rdkafka.h>

#include <memory>

namespace agentwire::kafka {

template <typename T, void (*Destroy)(T*)>
struct HandleDeleter {
  void operator()(T* handle) const noexcept {
    if (handle != nullptr) Destroy(handle);
  }
};

/// rd_kafka_t. Destroying a consumer here does not close it: call rd_kafka_consumer_close
/// first when a group is involved.
using HandlePtr = std::unique_ptr<rd_kafka_t, HandleDeleter<rd_kafka_t, rd_kafka_destroy>>;
/// rd_kafka_conf_t: only released by us until rd_kafka_new succeeds, which takes it over.
using ConfPtr =
    std::unique_ptr<rd_kafka_conf_t, HandleDeleter<rd_kafka_conf_t, rd_kafka_conf_destroy>>;
using TopicConfPtr =
    std::unique_ptr<rd_kafka_topic_conf_t,
                    HandleDeleter<rd_kafka_topic_conf_t, rd_kafka_topic_conf_destroy>>;
using TopicPartitionListPtr = std::unique_ptr<
    rd_kafka_topic_partition_list_t,
    HandleDeleter<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy>>;
using QueuePtr =
    std::unique_ptr<rd_kafka_queue_t, HandleDeleter<rd_kafka_queue_t, rd_kafka_queue_destroy>>;
using MessagePtr = std::unique_ptr<rd_kafka_message_t,
                                   HandleDeleter<rd_kafka_message_t, rd_kafka_message_destroy>>;
using MetadataPtr =
    std::unique_ptr<const rd_kafka_metadata_t,
                    HandleDeleter<const rd_kafka_metadata_t, rd_kafka_metadata_destroy>>;
/// rd_kafka_topic_t (the legacy simple-consumer topic handle replay's offset search uses).
using TopicPtr =
    std::unique_ptr<rd_kafka_topic_t, HandleDeleter<rd_kafka_topic_t, rd_kafka_topic_destroy>>;
/// rd_kafka_error_t, as returned by the newer APIs (incremental assign, transactions).
using ErrorPtr =
    std::unique_ptr<rd_kafka_error_t, HandleDeleter<rd_kafka_error_t, rd_kafka_error_destroy>>;
using HeadersPtr = std::unique_ptr<rd_kafka_headers_t,
                                   HandleDeleter<rd_kafka_headers_t, rd_kafka_headers_destroy>>;

}  // namespace agentwire::kafka
