#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "agentwire/core/cursor.hpp"
#include "agentwire/core/kafka_properties.hpp"

namespace agentwire::consumers {

using TimePoint = std::chrono::system_clock::time_point;

/// kAuto: the archive for what Kafka's retention deleted, then Kafka (needs both).
enum class ReplaySource { kKafka, kPostgres, kAuto };
enum class ReplayFormat { kJsonl, kTable };
enum class ReplayProgress { kBar, kLines, kOff };

/// Which events a replay prints. Every selector that is set must match (AND).
struct ReplaySelection {
  std::string user_id;
  std::string run_id;
  std::string thread_id;
  std::vector<std::string> types;  // any of these event types; empty = all
  std::optional<TimePoint> since;  // emitted_at >= since
  std::optional<TimePoint> until;  // emitted_at < until
  /// The gateway's cursor: events of its partition at or after its next_offset.
  std::optional<Cursor> from_cursor;
  uint64_t limit = 0;  // 0 = no limit
};

struct ReplayConfig {
  ReplaySelection selection;
  ReplaySource source = ReplaySource::kKafka;

  /// Kafka source (and cursor identity for both sources).
  kafka::Properties client_properties;  // bootstrap.servers and --kafka extras
  std::string topic = "agent.lifecycle.v1";
  uint32_t topic_epoch = 1;
  /// Producer clock skew and produce delay tolerated between an event's emitted_at and its
  /// Kafka timestamp. Time lookups start this much earlier and stop this much later than
  /// --since/--until (the events themselves are filtered exactly by emitted_at).
  std::chrono::milliseconds time_slack{60'000};

  /// PostgreSQL source (the archive's agent_events table).
  std::string pg_dsn;
  /// Partition count written into output cursors; 0 = ask Kafka's metadata. The archive
  /// source needs it (or a reachable Kafka) to print resumable cursors.
  int32_t partition_count = 0;
  /// The archive's consumer group (`agentwire archive --group`), whose committed positions
  /// (consumer_offsets) say how far the archive is complete. kAuto only.
  std::string archive_group = "agentwire-archive";

  ReplayFormat format = ReplayFormat::kJsonl;
  /// Keep tailing after the end of the log until stopped (Kafka and auto sources).
  bool follow = false;
  /// Print the gap report (always printed in table mode).
  bool gap_report = false;
  ReplayProgress progress = ReplayProgress::kLines;

  /// Re-drive the selection to this topic (keys, headers and values byte-for-byte).
  std::string republish_to;
  double republish_rate = 0;  // events per second; 0 = unlimited
  bool allow_same_topic = false;
};

struct ReplayStats {
  uint64_t scanned = 0;      // messages (or rows) read from the source
  uint64_t matched = 0;      // of those, the ones the selection kept
  uint64_t emitted = 0;      // written to the output (matched, capped by --limit)
  uint64_t undecodable = 0;  // messages that are not a valid AgentEvent (skipped)
  uint64_t republished = 0;  // acknowledged by the target topic
  uint64_t republish_failed = 0;
  uint64_t runs = 0;
  uint64_t runs_with_holes = 0;
  uint64_t runs_without_terminal = 0;
  double seconds = 0;
};

/// Parses --since / --until: RFC 3339 ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00.250+01:00"),
/// "now", or a relative age ("90s", "15m", "2h", "7d") meaning `now` minus that. Throws
/// ConfigError naming `flag`.
TimePoint ParseTimeArgument(std::string_view text, std::string_view flag, TimePoint now);

/// RFC 3339 in UTC with milliseconds: "2026-11-22T10:00:00.123Z".
std::string FormatTimeMillis(TimePoint time);

/// Checks everything that can be checked without a broker or a database (time order, known
/// event types, source settings, republish target). Throws ConfigError with one line.
void ValidateReplayConfig(const ReplayConfig& config);

/// Runs a replay: reads the selection from the source, writes it to `out` (jsonl or table),
/// progress, warnings and the summary line to `progress_out`, and re-drives it when
/// `republish_to` is set. Never joins a consumer group and never commits offsets.
///
/// Order: each partition in offset order; partitions merged by the events' emitted_at (ties:
/// lower partition first). Every source gives the same order, so their outputs agree. With
/// `follow`, once the log's end (as seen at start) is reached, new events are printed as they
/// arrive (still in offset order per partition).
///
/// Throws ConfigError for settings only the source can refute (a cursor of another topic or
/// epoch, a missing topic), before anything is written. Returns when the selection is
/// exhausted, the limit is reached, or `stop` is requested.
ReplayStats RunReplay(const ReplayConfig& config, std::ostream& out, std::ostream& progress_out,
                      std::stop_token stop = {});

}  // namespace agentwire::consumers
