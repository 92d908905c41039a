#include "agentwire/core/kafka_config.hpp"

#include <fmt/format.h>

#include <array>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/logging.hpp"

namespace agentwire::kafka {
namespace {

// syslog levels: 0-3 error, 4 warning, 5-6 notice/info, 7 debug.
void OnClientLog(const rd_kafka_t* client, int level, const char* facility, const char* text) {
  const log::Fields fields = {{"client", rd_kafka_name(client)}, {"facility", facility}};
  const std::string message = std::string("kafka: ") + text;
  if (level <= 3) {
    log::Error(message, fields);
  } else if (level == 4) {
    log::Warn(message, fields);
  } else if (level <= 6) {
    log::Info(message, fields);
  } else {
    log::Debug(message, fields);
  }
}

}  // namespace

Properties ParseProperties(const std::vector<std::string>& entries) {
  Properties properties;
  for (const auto& entry : entries) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw ConfigError(
          fmt::format("--kafka '{}': expected key=value, e.g. --kafka linger.ms=5", entry));
    }
    properties[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return properties;
}

ConfPtr MakeConf(const Properties& properties) {
  ConfPtr conf(rd_kafka_conf_new());
  rd_kafka_conf_set_log_cb(conf.get(), OnClientLog);
  std::array<char, 512> errstr{};
  for (const auto& [key, value] : properties) {
    if (rd_kafka_conf_set(conf.get(), key.c_str(), value.c_str(), errstr.data(), errstr.size()) !=
        RD_KAFKA_CONF_OK) {
      throw ConfigError(fmt::format("kafka property {}={}: {}", key, value, errstr.data()));
    }
  }
  return conf;
}

HandlePtr MakeClient(rd_kafka_type_t type, ConfPtr conf) {
  std::array<char, 512> errstr{};
  rd_kafka_t* client = rd_kafka_new(type, conf.get(), errstr.data(), errstr.size());
  if (client == nullptr) {
    throw ConfigError(fmt::format("cannot create Kafka client: {}", errstr.data()));
  }
  (void)conf.release();  // owned by the client now
  return HandlePtr(client);
}

std::string ErrorText(rd_kafka_resp_err_t err) {
  return fmt::format("{} ({})", rd_kafka_err2str(err), rd_kafka_err2name(err));
}

std::optional<int> FindPartitionCount(rd_kafka_t* client, const std::string& topic,
                                      std::chrono::milliseconds timeout) {
  // The whole cluster's metadata, not the topic's: a request naming a missing topic makes
  // brokers with auto.create.topics.enable (and the embedded Kafka) create it, and a typo in
  // --topic must never create a topic.
  const rd_kafka_metadata_t* raw = nullptr;
  const auto err =
      rd_kafka_metadata(client, /*all_topics=*/1, nullptr, &raw, static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw KafkaError(fmt::format("cluster metadata (looking for topic {}): {}. Hint: check "
                                 "--brokers / AGENTWIRE_BROKERS and that the cluster is up",
                                 topic, ErrorText(err)),
                     /*retryable=*/true);
  }
  MetadataPtr metadata(raw);
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    const auto& t = metadata->topics[i];
    if (topic != t.topic) continue;
    if (t.err != RD_KAFKA_RESP_ERR_NO_ERROR || t.partition_cnt == 0) {
      throw KafkaError(fmt::format("topic {}: {}", topic, ErrorText(t.err)),
                       t.err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
    }
    return t.partition_cnt;
  }
  return std::nullopt;
}

std::string MissingTopicText(const std::string& topic) {
  return fmt::format(
      "no such topic on the cluster. Hint: check the name, or create it (agentwire broker "
      "--topic {}:12, or infra/kafka on a real cluster)",
      topic);
}

int PartitionCount(rd_kafka_t* client, const std::string& topic,
                   std::chrono::milliseconds timeout) {
  if (const auto count = FindPartitionCount(client, topic, timeout)) return *count;
  throw KafkaError(fmt::format("topic {}: {}", topic, MissingTopicText(topic)),
                   /*retryable=*/false);
}

void ValidateTopicName(std::string_view name, std::string_view what) {
  const bool length_ok = !name.empty() && name.size() <= 249;
  bool chars_ok = true;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    chars_ok = chars_ok && ok;
  }
  if (!length_ok || !chars_ok || name == "." || name == "..") {
    throw ConfigError(fmt::format(
        "{} '{}': a Kafka topic name is 1-249 characters of letters, digits, '.', '_' and '-'",
        what, name));
  }
}

}  // namespace agentwire::kafka
