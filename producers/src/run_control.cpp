#include "agentwire/producers/run_control.hpp"

#include <agentwire/v1/control.pb.h>
#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/kafka_config.hpp"
#include "agentwire/core/kafka_handles.hpp"
#include "agentwire/core/logging.hpp"
#include "agentwire/producers/control_channel.hpp"
#include "agentwire/schemas/event_json.hpp"

namespace agentwire::producers {

namespace {

std::string DefaultWorkerId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return fmt::format("{}-{}", host[0] != '\0' ? host : "worker", getpid());
}

void Stamp(google::protobuf::Timestamp& at) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  at.set_seconds(micros / 1'000'000);
  at.set_nanos(static_cast<int32_t>((micros % 1'000'000) * 1000));
}

// The control topic's partitions must exist before a worker takes runs: a Stop sent while the
// reader was not there would be lost to this worker (the supervisor still ends the run later).
int RequiredPartitions(rd_kafka_t* client, const std::string& topic) {
  const auto count = kafka::FindPartitionCount(client, topic, std::chrono::seconds(10));
  if (!count) {
    throw ConfigError(fmt::format(
        "run control: topic '{}' does not exist. Hint: create it with the event topic's "
        "partition count (infra/kafka, or `agentwire broker` creates it), or publish without "
        "run control (emit simulate --no-run-control)",
        topic));
  }
  return *count;
}

}  // namespace

class RunControl::Impl {
 public:
  explicit Impl(RunControlConfig config)
      : config_(std::move(config)),
        control_topic_(ControlTopicFor(config_.topic)),
        heartbeat_topic_(HeartbeatTopicFor(config_.topic)),
        worker_id_(config_.worker_id.empty() ? DefaultWorkerId() : config_.worker_id) {
    if (config_.heartbeat_interval.count() <= 0 || config_.lease.count() <= 0) {
      throw ConfigError("run control: the heartbeat interval and the lease must be positive");
    }
    if (config_.heartbeat_interval * 2 > config_.lease) {
      throw ConfigError(fmt::format(
          "run control: heartbeat interval {} ms is over half the lease {} ms: one late "
          "heartbeat would end live runs. Hint: keep it at a third of the lease or less",
          config_.heartbeat_interval.count(), config_.lease.count()));
    }
    kafka::Properties properties = {
        // librdkafka 2.0 refuses assign() without a group.id; the group is never joined.
        {"group.id", "agentwire-run-control-unjoined"},
        {"enable.auto.commit", "false"},
        {"enable.partition.eof", "false"},
        // A Stop is waited on by a person; the control topic is nearly empty.
        {"fetch.wait.max.ms", "10"},
        {"client.id", "agentwire-run-control"},
        {"allow.auto.create.topics", "false"},
    };
    for (const auto& [key, value] : config_.client_properties) properties[key] = value;
    consumer_ = kafka::MakeClient(RD_KAFKA_CONSUMER, kafka::MakeConf(properties));
    const int partitions = RequiredPartitions(consumer_.get(), control_topic_);
    (void)RequiredPartitions(consumer_.get(), heartbeat_topic_);
    // From where each partition ends now: exact offsets, not OFFSET_END, which would resolve at
    // the first fetch and could skip a Stop published in between.
    kafka::TopicPartitionListPtr assignment(rd_kafka_topic_partition_list_new(partitions));
    for (int p = 0; p < partitions; ++p) {
      int64_t low = 0;
      int64_t high = 0;
      const auto err = rd_kafka_query_watermark_offsets(consumer_.get(), control_topic_.c_str(), p,
                                                        &low, &high, 10'000);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw KafkaError(fmt::format("run control: watermarks of {} [{}]: {}", control_topic_, p,
                                     kafka::ErrorText(err)),
                         true);
      }
      rd_kafka_topic_partition_list_add(assignment.get(), control_topic_.c_str(), p)->offset = high;
    }
    if (const auto err = rd_kafka_assign(consumer_.get(), assignment.get());
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw KafkaError(
          fmt::format("run control: assign {}: {}", control_topic_, kafka::ErrorText(err)), true);
    }
    kafka::Properties producer_properties = config_.client_properties;
    publisher_ = std::make_unique<ControlPublisher>(producer_properties, "agentwire-run-control");
  }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }

  void Stop() {
    stopping_.store(true, std::memory_order_release);
    if (thread_.joinable()) thread_.join();
    publisher_->Flush(std::chrono::seconds(2));
    rd_kafka_assign(consumer_.get(), nullptr);
    rd_kafka_consumer_close(consumer_.get());
  }

  uint64_t Register(const std::string& user_id, const std::string& thread_id,
                    const std::string& run_id, std::chrono::milliseconds lease,
                    CancelHandler on_cancel) {
    std::lock_guard lock(mutex_);
    const uint64_t id = next_id_++;
    runs_.emplace(id,
                  Run{user_id, thread_id, run_id,
                      static_cast<uint32_t>((lease.count() > 0 ? lease : config_.lease).count()),
                      std::move(on_cancel), false});
    by_run_.emplace(run_id, id);
    return id;
  }

  void Unregister(uint64_t id) {
    {
      std::lock_guard lock(mutex_);
      const auto it = runs_.find(id);
      if (it == runs_.end()) return;
      const auto range = by_run_.equal_range(it->second.run_id);
      for (auto r = range.first; r != range.second; ++r) {
        if (r->second == id) {
          by_run_.erase(r);
          break;
        }
      }
      runs_.erase(it);
    }
    // A handler of this registration may be running now: wait for it, unless it is the caller
    // (a handler that ends its run from inside the callback).
    if (std::this_thread::get_id() != thread_.get_id()) std::lock_guard wait(handler_mutex_);
  }

  RunControlStats Stats() const {
    RunControlStats stats;
    {
      std::lock_guard lock(mutex_);
      stats.open_runs = runs_.size();
    }
    stats.heartbeats_sent = heartbeats_sent_.load();
    stats.heartbeat_failures = heartbeat_failures_.load();
    stats.cancels_honoured = cancels_honoured_.load();
    stats.forged_cancels = forged_cancels_.load();
    stats.cancels_for_others = cancels_for_others_.load();
    return stats;
  }

  const RunControlConfig& Config() const { return config_; }

 private:
  struct Run {
    std::string user_id;
    std::string thread_id;
    std::string run_id;
    uint32_t lease_ms = 0;
    CancelHandler on_cancel;
    bool cancelled = false;
  };

  void Loop() {
    auto next_heartbeat = std::chrono::steady_clock::now() + config_.heartbeat_interval;
    while (!stopping_.load(std::memory_order_acquire)) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_heartbeat) {
        SendHeartbeats();
        next_heartbeat = now + config_.heartbeat_interval;
      }
      const auto wait = std::min<std::chrono::steady_clock::duration>(
          next_heartbeat - now, std::chrono::milliseconds(100));
      kafka::MessagePtr message(rd_kafka_consumer_poll(
          consumer_.get(),
          static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(wait).count())));
      if (!message) continue;
      if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        static log::RateLimited error_log(std::chrono::seconds(10));
        error_log.Warn("run control: reading the control topic failed; retrying",
                       {{"topic", control_topic_}, {"error", kafka::ErrorText(message->err)}});
        continue;
      }
      HandleControl(*message);
    }
  }

  void HandleControl(const rd_kafka_message_t& message) {
    v1::ControlRecord record;
    if (!record.ParseFromArray(message.payload, static_cast<int>(message.len)) ||
        !record.has_cancel()) {
      return;  // heartbeats of other tools, or records this version does not know
    }
    std::vector<CancelHandler> handlers;
    CancelNotice notice{record.cancel().request_id(), record.cancel().requested_by()};
    {
      std::lock_guard lock(mutex_);
      const auto range = by_run_.equal_range(record.run_id());
      if (range.first == range.second) {
        cancels_for_others_.fetch_add(1);
        return;
      }
      for (auto r = range.first; r != range.second; ++r) {
        auto& run = runs_.at(r->second);
        if (run.user_id != record.user_id()) {
          forged_cancels_.fetch_add(1);
          static log::RateLimited forged_log(std::chrono::seconds(10));
          forged_log.Warn("run control: ignored a cancel naming another user than the run's",
                          {{"run", run.run_id},
                           {"user", run.user_id},
                           {"claimed_user", record.user_id()},
                           {"partition", message.partition},
                           {"offset", message.offset}});
          continue;
        }
        if (run.cancelled) continue;  // a flood of Stops is one Stop
        run.cancelled = true;
        cancels_honoured_.fetch_add(1);
        handlers.push_back(run.on_cancel);
        log::Info("run control: the user stopped a run",
                  {{"user", run.user_id}, {"run", run.run_id}, {"request", notice.request_id}});
      }
    }
    std::lock_guard running(handler_mutex_);
    for (const auto& handler : handlers) {
      if (!handler) continue;
      try {
        handler(notice);
      } catch (const std::exception& e) {
        log::Error("run control: a cancel handler threw", {{"error", e.what()}});
      }
    }
  }

  void SendHeartbeats() {
    std::vector<v1::ControlRecord> records;
    {
      std::lock_guard lock(mutex_);
      records.reserve(runs_.size());
      for (const auto& [id, run] : runs_) {
        auto& record = records.emplace_back();
        record.set_user_id(run.user_id);
        record.set_run_id(run.run_id);
        Stamp(*record.mutable_sent_at());
        auto* heartbeat = record.mutable_heartbeat();
        heartbeat->set_worker_id(worker_id_);
        heartbeat->set_lease_ms(run.lease_ms);
        heartbeat->set_thread_id(run.thread_id);
      }
    }
    for (const auto& record : records) {
      std::string error;
      const bool queued = publisher_->Publish(
          heartbeat_topic_, record,
          [this](const std::string& delivery_error) {
            (delivery_error.empty() ? heartbeats_sent_ : heartbeat_failures_).fetch_add(1);
            if (!delivery_error.empty()) {
              static log::RateLimited failed_log(std::chrono::seconds(10));
              failed_log.Warn(
                  "run control: a heartbeat was not delivered; runs may be ended as "
                  "worker_lost if this lasts longer than their lease",
                  {{"topic", heartbeat_topic_}, {"error", delivery_error}});
            }
          },
          &error);
      if (!queued) {
        heartbeat_failures_.fetch_add(1);
        static log::RateLimited refused_log(std::chrono::seconds(10));
        refused_log.Warn("run control: a heartbeat was refused",
                         {{"topic", heartbeat_topic_}, {"error", error}});
      }
    }
  }

  const RunControlConfig config_;
  const std::string control_topic_;
  const std::string heartbeat_topic_;
  const std::string worker_id_;
  kafka::HandlePtr consumer_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mutex_;
  std::mutex handler_mutex_;  // held while cancel handlers run (Unregister waits on it)
  uint64_t next_id_ = 1;
  std::map<uint64_t, Run> runs_;
  std::multimap<std::string, uint64_t> by_run_;

  std::atomic<uint64_t> heartbeats_sent_{0};
  std::atomic<uint64_t> heartbeat_failures_{0};
  std::atomic<uint64_t> cancels_honoured_{0};
  std::atomic<uint64_t> forged_cancels_{0};
  std::atomic<uint64_t> cancels_for_others_{0};
  // Last, so it goes first: its delivery callbacks use the counters above.
  std::unique_ptr<ControlPublisher> publisher_;
};

RunControl::RunControl(RunControlConfig config) : impl_(std::make_shared<Impl>(std::move(config))) {
  impl_->Start();
}

RunControl::~RunControl() { impl_->Stop(); }

std::chrono::milliseconds RunControl::DefaultLease() const { return impl_->Config().lease; }

RunControlStats RunControl::Stats() const { return impl_->Stats(); }

uint64_t RunControl::Register(const std::string& user_id, const std::string& thread_id,
                              const std::string& run_id, std::chrono::milliseconds lease,
                              CancelHandler on_cancel) {
  return impl_->Register(user_id, thread_id, run_id, lease, std::move(on_cancel));
}

void RunControl::Unregister(uint64_t registration) { impl_->Unregister(registration); }

}  // namespace agentwire::producers
