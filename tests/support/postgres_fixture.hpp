#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace agentwire::testing {

/// A throwaway PostgreSQL 15 cluster for integration tests: `initdb` into a private temporary
/// directory (owned by the `postgres` user, since the server refuses to run as root), trust
/// authentication, fsync off, a private unix socket directory and a free TCP port on
/// 127.0.0.1. Starting takes about half a second.
///
/// Clients connect over TCP as user `postgres` (see Dsn), so the `agentwire` binary under test
/// needs nothing but the connection string. A watchdog process stops the server and removes the
/// directory if the test process dies without running the destructor (crash, SIGKILL).
///
/// Queries go through `psql` so the test support library needs no PostgreSQL client library.
///
/// The PostgreSQL binaries come from /usr/lib/postgresql/15/bin, or from $AGENTWIRE_PG_BINDIR.
/// Not thread-safe: use one cluster from one thread at a time.
class PostgresCluster final {
 public:
  /// initdb + start. Throws std::runtime_error (with the server log) on failure.
  PostgresCluster();
  /// Stops the server (immediately) and removes its directory.
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  /// Stops the server; `immediate` = crash-like (no checkpoint), otherwise a fast shutdown.
  /// Existing client connections are cut either way. The port stays reserved for Start().
  void Stop(bool immediate = false);
  /// Starts the server again on the same port (after Stop). Waits until it accepts connections.
  void Start();
  bool Running() const noexcept { return running_; }

  int Port() const noexcept { return port_; }
  const std::string& Directory() const noexcept { return directory_; }

  /// libpq connection string, e.g. "host=127.0.0.1 port=54012 user=postgres dbname=postgres".
  std::string Dsn(const std::string& database = "postgres") const;

  /// CREATE DATABASE with a fresh unique name (the `hint`, sanitized, is part of it, e.g. the
  /// test's name) and returns its connection string.
  std::string CreateDatabase(const std::string& hint = "test");

  /// Runs `sql` through psql against `dsn` and returns the rows, one per line, columns separated
  /// by a tab, no header, no trailing newline. Throws std::runtime_error with psql's message
  /// when the statement fails.
  std::string Query(const std::string& dsn, const std::string& sql) const;
  /// The rows of Query split into lines, each split into columns.
  std::vector<std::vector<std::string>> QueryRows(const std::string& dsn,
                                                  const std::string& sql) const;
  /// The single number `sql` returns (e.g. SELECT count(*) ...).
  int64_t QueryInt(const std::string& dsn, const std::string& sql) const;

  /// The server log (for assertion messages).
  std::string ServerLog() const;

 private:
  void InitDataDirectory();
  void StartWatchdog();

  std::string bin_dir_;
  std::string directory_;  // holds data/, socket/ and server.log
  int port_ = 0;
  bool running_ = false;
  bool ever_started_ = false;
  int database_counter_ = 0;
};

/// One cluster per test process, started on first use and stopped at exit. Tests take a fresh
/// database each (CreateDatabase), so they never see each other's rows.
PostgresCluster& SharedPostgres();

}  // namespace agentwire::testing
