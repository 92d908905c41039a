#include "agentwire/producers/json_lines.hpp"

#include <atomic>
#include <istream>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>

#include "agentwire/schemas/event_json.hpp"

namespace agentwire::producers {

JsonLinesResult PublishJsonLines(std::istream& in, EventPublisher& publisher, std::ostream& errors,
                                 std::chrono::milliseconds flush_timeout) {
  JsonLinesResult result;
  // Shared with the delivery callbacks, which may outlive this call if the flush times out.
  struct Shared {
    std::atomic<uint64_t> delivered{0};
    std::atomic<uint64_t> failed{0};
    std::mutex errors_mutex;  // delivery failures are written from the poll thread
  };
  auto shared = std::make_shared<Shared>();
  auto& errors_mutex = shared->errors_mutex;

  std::string line;
  uint64_t line_number = 0;
  v1::AgentEvent event;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    ++result.lines;
    auto error = schemas::FromJson(line, event);
    if (!error) {
      schemas::FillDefaults(event);
      error = schemas::Validate(event);
    }
    if (error) {
      std::lock_guard lock(errors_mutex);
      errors << "line " << line_number << ": " << error->message << '\n';
      ++result.bad_lines;
      continue;
    }
    auto on_delivery = [shared, &errors, line_number](const DeliveryReport& report) {
      if (report.ok) {
        shared->delivered.fetch_add(1);
        return;
      }
      shared->failed.fetch_add(1);
      std::lock_guard lock(shared->errors_mutex);
      errors << "line " << line_number << ": not delivered: " << report.error << '\n';
    };
    // Block while the local queue is full: a CLI reading a file has nowhere else to put it.
    auto status = PublishStatus::kQueueFull;
    while (status == PublishStatus::kQueueFull) {
      status = publisher.Publish(event, on_delivery, std::chrono::seconds(1));
    }
    if (status != PublishStatus::kAccepted) {
      std::lock_guard lock(errors_mutex);
      errors << "line " << line_number << ": " << ToString(status) << '\n';
      ++result.bad_lines;
    }
  }
  result.undelivered = publisher.Flush(flush_timeout);
  result.published = shared->delivered.load();
  result.delivery_failed = shared->failed.load();
  return result;
}

}  // namespace agentwire::producers
