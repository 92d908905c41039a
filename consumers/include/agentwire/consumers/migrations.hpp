#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace agentwire::consumers {

/// One file of infra/sql/, compiled into the binary: `NNNN_name.sql` -> {NNNN, "name", text}.
struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
};

/// Every migration of infra/sql/, ascending by version (generated at build time).
const std::vector<Migration>& EmbeddedMigrations();

/// Applies the embedded migrations the database lacks, each in its own transaction, recorded in
/// schema_migrations(version, name, applied_at). A session advisory lock serializes processes
/// that start together, so each migration runs exactly once. Forward-only: a recorded version
/// whose name differs from the embedded one is an error. Returns how many were applied.
/// Throws ConfigError when the database cannot be reached or a migration fails.
int ApplyMigrations(const std::string& dsn);

/// Throws ConfigError (naming --migrate) unless every embedded migration has been applied.
void RequireSchema(const std::string& dsn);

}  // namespace agentwire::consumers
