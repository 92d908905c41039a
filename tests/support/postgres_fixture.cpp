#include "support/postgres_fixture.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support/subprocess.hpp"

namespace agentwire::testing {
namespace {

constexpr auto kCommandTimeout = std::chrono::seconds(60);
constexpr const char* kDefaultBinDir = "/usr/lib/postgresql/15/bin";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// A port the kernel considers free right now. The server binds it a moment later; the window
/// is tiny and Start() retries with another port if it was taken meanwhile.
int FreeTcpPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("cannot find a free port: " + reason);
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string Describe(const std::vector<std::string>& argv, const RunResult& result) {
  std::string text;
  for (const auto& arg : argv) text += arg + ' ';
  text += "-> " + (result.exit_code ? std::to_string(*result.exit_code) : std::string("timeout"));
  text += "\n" + result.stdout_text + result.stderr_text;
  return text;
}

/// Runs `argv` as the postgres user (the server refuses to run as root).
RunResult RunAsPostgres(std::vector<std::string> argv) {
  if (::geteuid() == 0) {
    argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  }
  return Run(std::move(argv), kCommandTimeout);
}

void RunAsPostgresOrThrow(const std::vector<std::string>& argv, const std::string& what,
                          const std::string& log_path = {}) {
  const auto result = RunAsPostgres(argv);
  if (result.exit_code != 0) {
    std::string message = what + " failed: " + Describe(argv, result);
    if (!log_path.empty()) message += "\nserver log:\n" + ReadFile(log_path);
    throw std::runtime_error(message);
  }
}

}  // namespace

PostgresCluster::PostgresCluster() {
  const char* bin_dir = std::getenv("AGENTWIRE_PG_BINDIR");
  bin_dir_ = bin_dir != nullptr && *bin_dir != '\0' ? bin_dir : kDefaultBinDir;
  if (::access((bin_dir_ + "/initdb").c_str(), X_OK) != 0) {
    throw std::runtime_error("PostgreSQL server binaries not found in " + bin_dir_ +
                             " (install postgresql-15 or set AGENTWIRE_PG_BINDIR)");
  }
  directory_ = MakeTempDirectory("agentwire-pg");
  std::filesystem::create_directories(directory_ + "/socket");
  if (::geteuid() == 0) {
    const passwd* user = ::getpwnam("postgres");
    if (user == nullptr) throw std::runtime_error("no 'postgres' user to run the server as");
    for (const auto& path : {directory_, directory_ + "/socket"}) {
      if (::chown(path.c_str(), user->pw_uid, user->pw_gid) != 0) {
        throw std::runtime_error("chown " + path + ": " + std::strerror(errno));
      }
    }
    // The server (as postgres) must reach the directory through the temp parent.
    ::chmod(directory_.c_str(), 0755);
  }
  StartWatchdog();

  InitDataDirectory();
  // Test settings: durability off (fsync, full pages) since the cluster is thrown away;
  // synchronous_commit stays on so a committed transaction is what the code under test saw.
  std::ofstream conf(directory_ + "/data/postgresql.conf", std::ios::app);
  conf << "\n# agentwire test cluster\n"
       << "listen_addresses = '127.0.0.1'\n"
       << "unix_socket_directories = '" << directory_ << "/socket'\n"
       << "fsync = off\n"
       << "full_page_writes = off\n"
       << "max_connections = 100\n"
       << "shared_buffers = 128MB\n"
       << "max_wal_size = 1GB\n"
       << "logging_collector = off\n"
       << "log_min_messages = warning\n";
  conf.close();
  if (!conf) throw std::runtime_error("cannot write postgresql.conf in " + directory_);
  Start();
}

PostgresCluster::~PostgresCluster() {
  try {
    if (running_) Stop(/*immediate=*/true);
  } catch (const std::exception&) {
    // The watchdog stops it once the directory is gone or this process exits.
  }
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

void PostgresCluster::InitDataDirectory() {
  // initdb costs a couple of CPU seconds (much more on a loaded machine), so the first cluster
  // of the machine leaves a pristine copy behind and later ones copy it. The template is built
  // aside and renamed into place, so concurrent test binaries never see half of one.
  const char* base = std::getenv("TMPDIR");
  const std::string template_dir = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                                   "/agentwire-pg15-template-" + std::to_string(::geteuid());
  if (::access((template_dir + "/data/PG_VERSION").c_str(), R_OK) != 0) {
    const std::string scratch = MakeTempDirectory("agentwire-pg-initdb");
    if (::geteuid() == 0) {
      const passwd* user = ::getpwnam("postgres");
      if (user == nullptr || ::chown(scratch.c_str(), user->pw_uid, user->pw_gid) != 0) {
        throw std::runtime_error("cannot give " + scratch + " to the postgres user");
      }
      ::chmod(scratch.c_str(), 0755);
    }
    RunAsPostgresOrThrow({bin_dir_ + "/initdb", "-D", scratch + "/data", "-U", "postgres", "-A",
                          "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"},
                         "initdb");
    if (::rename(scratch.c_str(), template_dir.c_str()) != 0) {
      std::error_code ignored;  // another process won the race: use its template
      std::filesystem::remove_all(scratch, ignored);
    }
  }
  const std::vector<std::string> copy = {"cp", "-a", template_dir + "/data", directory_ + "/data"};
  const auto result = Run(copy, kCommandTimeout);
  if (result.exit_code != 0) throw std::runtime_error("copy template: " + Describe(copy, result));
}

void PostgresCluster::StartWatchdog() {
  // A detached shell that outlives a crashed test: once this process is gone it stops the
  // server and removes the directory. It also leaves quietly when the directory disappears
  // (normal teardown).
  const std::string script =
      "while kill -0 " + std::to_string(::getpid()) + " 2>/dev/null && [ -d '" + directory_ +
      "' ]; do sleep 1; done; if [ -d '" + directory_ + "/data' ]; then runuser -u postgres -- '" +
      bin_dir_ + "/pg_ctl' stop -D '" + directory_ + "/data' -m immediate; fi; rm -rf '" +
      directory_ + "'";
  std::vector<std::string> args = {"/bin/sh", "-c", script};
  std::vector<char*> argv;
  argv.reserve(args.size());
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    // Async-signal-safe calls only: the test may run other threads.
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    const int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      ::dup2(null_fd, STDIN_FILENO);
      ::dup2(null_fd, STDOUT_FILENO);
      ::dup2(null_fd, STDERR_FILENO);
    }
    sigset_t empty;
    sigemptyset(&empty);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    ::execv("/bin/sh", argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
}

void PostgresCluster::Start() {
  if (running_) return;
  const std::string log_path = directory_ + "/server.log";
  std::string last_error;
  // The port is chosen once and kept across Stop/Start, so connection strings stay valid; a
  // collision at first start picks another.
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (port_ == 0 || (attempt > 0 && !ever_started_)) port_ = FreeTcpPort();
    const std::vector<std::string> argv = {bin_dir_ + "/pg_ctl",
                                           "start",
                                           "-w",
                                           "-t",
                                           "60",
                                           "-D",
                                           directory_ + "/data",
                                           "-l",
                                           log_path,
                                           "-o",
                                           "-p " + std::to_string(port_)};
    const auto result = RunAsPostgres(argv);
    if (result.exit_code == 0) {
      running_ = true;
      ever_started_ = true;
      return;
    }
    last_error = Describe(argv, result) + "\nserver log:\n" + ReadFile(log_path);
  }
  throw std::runtime_error("PostgreSQL did not start: " + last_error);
}

void PostgresCluster::Stop(bool immediate) {
  if (!running_) return;
  RunAsPostgresOrThrow({bin_dir_ + "/pg_ctl", "stop", "-w", "-D", directory_ + "/data", "-m",
                        immediate ? "immediate" : "fast"},
                       "pg_ctl stop", directory_ + "/server.log");
  running_ = false;
}

std::string PostgresCluster::Dsn(const std::string& database) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + database +
         " connect_timeout=5";
}

std::string PostgresCluster::CreateDatabase(const std::string& hint) {
  std::string name;
  for (const char c : hint) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0) {
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!name.empty() && name.back() != '_') {
      name += '_';
    }
    if (name.size() >= 40) break;
  }
  name = "t" + std::to_string(++database_counter_) + "_" + name;
  Query(Dsn(), "CREATE DATABASE \"" + name + "\"");
  return Dsn(name);
}

std::string PostgresCluster::Query(const std::string& dsn, const std::string& sql) const {
  const std::vector<std::string> argv = {
      bin_dir_ + "/psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v",
      "ON_ERROR_STOP=1",  "-d", dsn,  "-c", sql};
  Subprocess::Options options;
  options.unset_env = {"PGPASSWORD", "PGSERVICE", "PGOPTIONS"};
  const auto result = Run(argv, options, kCommandTimeout);
  if (result.exit_code != 0) {
    throw std::runtime_error("psql failed: " + sql + "\n" + result.stderr_text);
  }
  std::string text = result.stdout_text;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

std::vector<std::vector<std::string>> PostgresCluster::QueryRows(const std::string& dsn,
                                                                 const std::string& sql) const {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(Query(dsn, sql));
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<std::string> columns;
    size_t start = 0;
    while (true) {
      const size_t tab = line.find('\t', start);
      columns.push_back(line.substr(start, tab == std::string::npos ? tab : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    rows.push_back(std::move(columns));
  }
  return rows;
}

int64_t PostgresCluster::QueryInt(const std::string& dsn, const std::string& sql) const {
  const std::string text = Query(dsn, sql);
  try {
    size_t used = 0;
    const int64_t value = std::stoll(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  throw std::runtime_error("expected one number from: " + sql + "\ngot: '" + text + "'");
}

std::string PostgresCluster::ServerLog() const { return ReadFile(directory_ + "/server.log"); }

PostgresCluster& SharedPostgres() {
  static std::unique_ptr<PostgresCluster> cluster;
  if (!cluster) cluster = std::make_unique<PostgresCluster>();
  return *cluster;
}

}  // namespace agentwire::testing
