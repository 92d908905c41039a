#include "agentwire/consumers/migrations.hpp"

#include <fmt/format.h>

#include <map>
#include <pqxx/pqxx>

#include "agentwire/core/errors.hpp"
#include "agentwire/core/logging.hpp"

namespace agentwire::consumers {
namespace {

// pg_advisory_lock key shared by every agentwire process migrating this database
// ("agentwir" as ASCII).
constexpr int64_t kMigrationLockKey = 0x6167656e74776972;

/// libpq messages span lines; a ConfigError is printed as one.
std::string OneLine(std::string text) {
  for (auto& c : text) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

std::map<int, std::string> AppliedMigrations(pqxx::connection& connection) {
  pqxx::nontransaction tx(connection);
  const auto exists = tx.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
  std::map<int, std::string> applied;
  if (!exists[0][0].as<bool>()) return applied;
  for (const auto& row : tx.exec("SELECT version, name FROM schema_migrations")) {
    applied[row[0].as<int>()] = row[1].as<std::string>();
  }
  return applied;
}

}  // namespace

int ApplyMigrations(const std::string& dsn) {
  int applied_now = 0;
  try {
    pqxx::connection connection(dsn);
    {
      pqxx::nontransaction tx(connection);
      tx.exec(fmt::format("SELECT pg_advisory_lock({})", kMigrationLockKey));
      tx.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations ("
          " version integer PRIMARY KEY, name text NOT NULL,"
          " applied_at timestamptz NOT NULL DEFAULT now())");
    }
    const auto applied = AppliedMigrations(connection);
    for (const auto& migration : EmbeddedMigrations()) {
      const auto found = applied.find(migration.version);
      if (found != applied.end()) {
        if (found->second != migration.name) {
          throw ConfigError(fmt::format(
              "--migrate: the database recorded migration {} as '{}' but this binary has '{}': "
              "migrations are forward-only, never rename or reuse a number",
              migration.version, found->second, migration.name));
        }
        continue;
      }
      pqxx::work tx(connection);
      tx.exec(std::string(migration.sql));
      tx.exec_params("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                     migration.version, std::string(migration.name));
      tx.commit();
      ++applied_now;
      log::Info("migration applied",
                {{"version", migration.version}, {"name", std::string(migration.name)}});
    }
    const int newest = EmbeddedMigrations().empty() ? 0 : EmbeddedMigrations().back().version;
    for (const auto& [version, name] : applied) {
      if (version > newest) {
        log::Warn(
            "the database has a migration this binary does not know (a newer release "
            "applied it)",
            {{"version", version}, {"name", name}});
      }
    }
    pqxx::nontransaction tx(connection);
    tx.exec(fmt::format("SELECT pg_advisory_unlock({})", kMigrationLockKey));
  } catch (const pqxx::broken_connection& e) {
    throw ConfigError(fmt::format("--pg / AGENTWIRE_PG_DSN: cannot connect to PostgreSQL: {}",
                                  OneLine(e.what())));
  } catch (const pqxx::sql_error& e) {
    throw ConfigError(fmt::format("--migrate: migration failed: {} (query: {:.200})",
                                  OneLine(e.what()), OneLine(e.query())));
  }
  return applied_now;
}

void RequireSchema(const std::string& dsn) {
  std::map<int, std::string> applied;
  try {
    pqxx::connection connection(dsn);
    applied = AppliedMigrations(connection);
  } catch (const pqxx::broken_connection& e) {
    throw ConfigError(fmt::format("--pg / AGENTWIRE_PG_DSN: cannot connect to PostgreSQL: {}",
                                  OneLine(e.what())));
  }
  for (const auto& migration : EmbeddedMigrations()) {
    if (!applied.contains(migration.version)) {
      throw ConfigError(fmt::format(
          "the database lacks migration {:04}_{}: run once with --migrate (or apply infra/sql/)",
          migration.version, migration.name));
    }
  }
}

}  // namespace agentwire::consumers
