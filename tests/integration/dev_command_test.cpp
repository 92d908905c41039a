// `agentwire dev --pg DSN`: the one-machine demo also runs archive and analytics in-process.
// Every event the simulator published (printed with --print-events) must be in agent_events
// exactly once, and every run in agent_runs, by the time dev exits.

#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "support/postgres_fixture.hpp"
#include "support/subprocess.hpp"
#include "support/test_paths.hpp"

namespace agentwire {
namespace {

using std::chrono::seconds;
using testing::SharedPostgres;
using testing::Subprocess;

TEST(DevCommandTest, WithPgArchivesAndAnalyzesEveryPublishedEvent) {
  auto& pg = SharedPostgres();
  const std::string dsn = pg.CreateDatabase("dev");

  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC", "AGENTWIRE_PG_DSN", "PORT"};
  Subprocess dev({testing::AgentwireBinary(), "dev", "--pg", dsn, "--port", "0", "--users", "6",
                  "--rate", "60", "--duration", "4s", "--print-events"},
                 options);
  const auto exit_code = dev.Wait(seconds(120));
  ASSERT_TRUE(exit_code.has_value()) << dev.Describe();
  ASSERT_EQ(*exit_code, 0) << dev.Describe();

  std::set<std::string> event_ids;
  std::set<std::string> run_ids;
  size_t lines = 0;
  std::istringstream out(dev.StdoutText());
  for (std::string line; std::getline(out, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto event = nlohmann::json::parse(line);
    ++lines;
    event_ids.insert(event.at("event_id").get<std::string>());
    run_ids.insert(event.at("run_id").get<std::string>());
  }
  ASSERT_GT(lines, 50U) << dev.Describe();
  ASSERT_EQ(event_ids.size(), lines) << "the simulator printed an event twice";

  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_events"), static_cast<int64_t>(lines))
      << dev.Describe();
  const auto rows = pg.QueryRows(dsn, "SELECT event_id FROM agent_events");
  std::set<std::string> archived;
  for (const auto& row : rows) archived.insert(row[0]);
  EXPECT_EQ(archived, event_ids);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM dead_letters"), 0);
  EXPECT_EQ(pg.QueryInt(dsn, "SELECT count(*) FROM agent_runs"),
            static_cast<int64_t>(run_ids.size()));
}

TEST(DevCommandTest, UnreachablePostgresIsOneClearErrorBeforeAnythingStarts) {
  Subprocess::Options options;
  options.unset_env = {"AGENTWIRE_BROKERS", "AGENTWIRE_TOPIC", "AGENTWIRE_PG_DSN", "PORT"};
  Subprocess dev({testing::AgentwireBinary(), "dev", "--pg",
                  "host=127.0.0.1 port=1 dbname=nothing connect_timeout=2", "--port", "0",
                  "--duration", "30s"},
                 options);
  const auto exit_code = dev.Wait(seconds(60));
  ASSERT_TRUE(exit_code.has_value()) << dev.Describe();
  EXPECT_NE(*exit_code, 0) << dev.Describe();
  EXPECT_NE(dev.StderrText().find("PostgreSQL"), std::string::npos) << dev.Describe();
  EXPECT_EQ(dev.StderrText().find("agentwire dev\n"), std::string::npos)
      << "the banner must not appear when the database is unreachable";
}

}  // namespace
}  // namespace agentwire
