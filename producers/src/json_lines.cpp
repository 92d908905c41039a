#include "agentwire/producers/json_lines.hpp"

#include <fmt/format.h>

#include <atomic>
#include <istream>
#include <memory>
#include <mutex>
#include <new>
#include <ostream>
#include <string>

#include "agentwire/producers/size_policy.hpp"
#include "agentwire/schemas/event_json.hpp"

namespace agentwire::producers {
namespace {

// Where `line N: ...` reports go. Shared with the delivery callbacks, which run on the
// publisher's poll thread and may outlive PublishJsonLines (a flush that timed out): Close()
// detaches the stream so a late report never writes to a stream that may be gone.
class Reports {
 public:
  explicit Reports(std::ostream& errors) : errors_(&errors) {}

  void Line(uint64_t number, std::string_view reason) {
    std::lock_guard lock(mutex_);
    if (errors_ != nullptr) *errors_ << "line " << number << ": " << reason << '\n';
  }
  void Note(std::string_view text) {
    std::lock_guard lock(mutex_);
    if (errors_ != nullptr) *errors_ << text << '\n';
  }
  void Close() {
    std::lock_guard lock(mutex_);
    if (errors_ != nullptr) errors_->flush();
    errors_ = nullptr;
  }

  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> failed{0};

 private:
  std::mutex mutex_;
  std::ostream* errors_;
};

// One line without its '\n'; at most `max_bytes` of it are kept, `length` counts all of it.
// False at the end of the input when nothing was read.
bool ReadLine(std::istream& in, std::string& line, size_t max_bytes, size_t& length) {
  line.clear();
  length = 0;
  std::streambuf* buffer = in.rdbuf();
  bool any = false;
  for (;;) {
    const int c = buffer->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      in.setstate(std::ios::eofbit);
      return any;
    }
    any = true;
    if (c == '\n') return true;
    if (++length <= max_bytes) line.push_back(static_cast<char>(c));
  }
}

}  // namespace

JsonLinesResult PublishJsonLines(std::istream& in, EventPublisher& publisher, std::ostream& errors,
                                 const JsonLinesOptions& options) {
  JsonLinesResult result;
  auto reports = std::make_shared<Reports>(errors);
  const size_t max_event_bytes = publisher.MaxEventBytes();

  std::string line;
  size_t length = 0;
  uint64_t line_number = 0;
  v1::AgentEvent event;
  google::protobuf::Timestamp clock;  // emitted_at never decreases over the input
  while (!result.stalled && ReadLine(in, line, options.max_line_bytes, length)) {
    ++line_number;
    if (length > options.max_line_bytes) {
      ++result.lines;
      ++result.bad_lines;
      reports->Line(line_number,
                    fmt::format("{} bytes, over the line limit of {} bytes (--max-line-bytes)",
                                length, options.max_line_bytes));
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    ++result.lines;
    try {
      auto error = schemas::FromJson(line, event);
      if (!error) {
        schemas::FillDefaults(event, clock);
        error = schemas::Validate(event);
      }
      if (error) {
        reports->Line(line_number, error->message);
        ++result.bad_lines;
        continue;
      }
      if (options.truncate && event.ByteSizeLong() > max_event_bytes &&
          FitToSize(event, max_event_bytes)) {
        ++result.truncated;
        std::string fields;
        for (const auto& field : event.truncated().fields()) {
          fields += (fields.empty() ? "" : ",") + field;
        }
        reports->Note(fmt::format("emit: line {} cut to fit: {} ({} -> {} bytes, limit {})",
                                  line_number, fields, event.truncated().original_bytes(),
                                  event.ByteSizeLong(), max_event_bytes));
      }
      auto on_delivery = [reports, line_number](const DeliveryReport& report) {
        if (report.ok) {
          reports->delivered.fetch_add(1);
          return;
        }
        reports->failed.fetch_add(1);
        reports->Line(line_number, "not delivered: " + report.error);
      };
      // A file has nowhere else to go while the local queue is full: wait, but only while
      // deliveries make progress (a cluster that is down would otherwise hold emit forever).
      auto status = publisher.Publish(event, on_delivery, std::chrono::seconds(1));
      auto progress = publisher.Stats().delivered + publisher.Stats().failed;
      auto last_progress = std::chrono::steady_clock::now();
      while (status == PublishStatus::kQueueFull) {
        const auto now_progress = publisher.Stats().delivered + publisher.Stats().failed;
        if (now_progress != progress) {
          progress = now_progress;
          last_progress = std::chrono::steady_clock::now();
        } else if (std::chrono::steady_clock::now() - last_progress > options.flush_timeout) {
          result.stalled = true;
          break;
        }
        status = publisher.Publish(event, on_delivery, std::chrono::seconds(1));
      }
      if (result.stalled) {
        reports->Line(line_number,
                      fmt::format("not published: {}; no delivery for {} ms (--flush-timeout), "
                                  "so the rest of the input is not read. Hint: check that the "
                                  "cluster is reachable (--brokers / AGENTWIRE_BROKERS)",
                                  ToString(status), options.flush_timeout.count()));
        ++result.bad_lines;
      } else if (status != PublishStatus::kAccepted) {
        reports->Line(line_number, ToString(status));
        ++result.bad_lines;
      }
    } catch (const std::exception& e) {
      // Nothing a line contains may end the run: this line fails, the others go on.
      reports->Line(line_number, fmt::format("cannot publish: {}", e.what()));
      ++result.bad_lines;
    }
  }
  result.undelivered = publisher.Flush(options.flush_timeout);
  result.published = reports->delivered.load();
  result.delivery_failed = reports->failed.load();
  reports->Close();
  return result;
}

}  // namespace agentwire::producers
