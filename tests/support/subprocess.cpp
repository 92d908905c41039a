#include "support/subprocess.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace agentwire::testing {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(5);

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// PATH lookup happens in the parent: between fork and exec only async-signal-safe calls are
/// allowed (the test process runs librdkafka threads that may hold the malloc lock).
std::string ResolveProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  std::string directories = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::istringstream in(directories);
  std::string directory;
  while (std::getline(in, directory, ':')) {
    if (directory.empty()) directory = ".";
    std::string candidate = directory;
    candidate.append("/").append(program);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error("Subprocess: " + program + " not found in PATH");
}

std::vector<std::string> ChildEnvironment(const Subprocess::Options& options) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const auto equals = text.find('=');
    if (equals == std::string::npos) continue;
    variables[text.substr(0, equals)] = text.substr(equals + 1);
  }
  for (const auto& name : options.unset_env) variables.erase(name);
  for (const auto& [name, value] : options.env) variables[name] = value;
  std::vector<std::string> result;
  result.reserve(variables.size());
  for (const auto& [name, value] : variables)
    result.push_back(std::string(name).append("=").append(value));
  return result;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

/// In the child, after fork: report errno through the pipe and exit without running atexit
/// handlers or destructors that belong to the parent.
[[noreturn]] void ChildFail(int error_pipe) {
  const int error = errno;
  [[maybe_unused]] const auto written = ::write(error_pipe, &error, sizeof(error));
  ::_exit(127);
}

}  // namespace

std::string MakeTempDirectory(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
  }
  return pattern;
}

Subprocess::Subprocess(std::vector<std::string> argv) : Subprocess(std::move(argv), Options{}) {}

Subprocess::Subprocess(std::vector<std::string> argv, const Options& options)
    : argv_(std::move(argv)) {
  if (argv_.empty()) throw std::invalid_argument("Subprocess: empty argv");
  directory_ = MakeTempDirectory("agentwire-subprocess");
  stdout_path_ = directory_ + "/stdout";
  stderr_path_ = directory_ + "/stderr";
  try {
    Start(options);
  } catch (...) {
    // The destructor does not run for a constructor that throws.
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
    throw;
  }
}

void Subprocess::Start(const Options& options) {
  std::string stdin_path = "/dev/null";
  if (options.stdin_text) {
    stdin_path = directory_ + "/stdin";
    std::ofstream out(stdin_path, std::ios::binary);
    out << *options.stdin_text;
    if (!out) throw std::runtime_error("Subprocess: cannot write " + stdin_path);
  } else if (options.stdin_file) {
    stdin_path = *options.stdin_file;
  }

  // Everything the child needs is prepared before fork.
  const std::string program = ResolveProgram(argv_.front());
  std::vector<std::string> argv_copy = argv_;
  std::vector<std::string> env = ChildEnvironment(options);
  std::vector<char*> c_argv = CStrings(argv_copy);
  std::vector<char*> c_env = CStrings(env);

  const int stdin_fd = ::open(stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (stdin_fd < 0) {
    throw std::runtime_error("Subprocess: cannot open stdin " + stdin_path + ": " +
                             std::strerror(errno));
  }
  const int stdout_fd =
      ::open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int stderr_fd =
      ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int error_pipe[2] = {-1, -1};
  if (stdout_fd < 0 || stderr_fd < 0 || ::pipe2(error_pipe, O_CLOEXEC) != 0) {
    const std::string reason = std::strerror(errno);
    for (int fd : {stdin_fd, stdout_fd, stderr_fd, error_pipe[0], error_pipe[1]}) {
      if (fd >= 0) ::close(fd);
    }
    throw std::runtime_error("Subprocess: cannot set up output files: " + reason);
  }

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) ChildFail(error_pipe[1]);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    // Its own process group, so Kill() also reaches what the child started (sh -c ...).
    ::setpgid(0, 0);
    // The test may block or ignore signals (e.g. SIGTERM for sigwait, SIGPIPE); those
    // settings survive exec, and the child must start with the defaults.
    sigset_t empty;
    sigemptyset(&empty);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD}) {
      ::sigaction(sig, &default_action, nullptr);
    }
    if (::dup2(stdin_fd, STDIN_FILENO) < 0 || ::dup2(stdout_fd, STDOUT_FILENO) < 0 ||
        ::dup2(stderr_fd, STDERR_FILENO) < 0) {
      ChildFail(error_pipe[1]);
    }
    // Do not leak the test's sockets and files into the child.
    ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    ::execve(program.c_str(), c_argv.data(), c_env.data());
    ChildFail(error_pipe[1]);
  }

  const int fork_errno = errno;
  ::close(stdin_fd);
  ::close(stdout_fd);
  ::close(stderr_fd);
  ::close(error_pipe[1]);
  if (pid < 0) {
    ::close(error_pipe[0]);
    throw std::runtime_error(std::string("Subprocess: fork: ") + std::strerror(fork_errno));
  }
  pid_ = pid;
  ::setpgid(pid, pid);  // also in the parent: no race with Kill() right after the start

  // The pipe closes on a successful exec; otherwise it carries the child's errno.
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(error_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    Wait(std::chrono::seconds(5));
    throw std::runtime_error("Subprocess: cannot start " + program + ": " +
                             std::strerror(child_errno));
  }
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !exit_code_) {
    ::kill(-pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

void Subprocess::Signal(int signal) {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, signal);
}

void Subprocess::Kill() {
  if (pid_ > 0 && !exit_code_) ::kill(-pid_, SIGKILL);
}

std::optional<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t result = ::waitpid(pid_, &status, WNOHANG);
    if (result == pid_) {
      if (WIFEXITED(status)) {
        exit_code_ = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        exit_code_ = -WTERMSIG(status);
      } else {
        continue;  // stopped/continued: not an end
      }
      return exit_code_;
    }
    if (result < 0 && errno != EINTR) {
      throw std::runtime_error(std::string("Subprocess: waitpid: ") + std::strerror(errno));
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollInterval);
  }
}

bool Subprocess::Running() { return !Wait(std::chrono::milliseconds(0)).has_value(); }

std::string Subprocess::StdoutText() const { return ReadWholeFile(stdout_path_); }
std::string Subprocess::StderrText() const { return ReadWholeFile(stderr_path_); }

bool Subprocess::WaitForText(const std::string& path, const std::string& needle,
                             std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (ReadWholeFile(path).find(needle) != std::string::npos) return true;
    // One last read after the child ended: it may have written just before exiting.
    if (!Running()) return ReadWholeFile(path).find(needle) != std::string::npos;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval * 4);
  }
}

bool Subprocess::WaitForStdout(const std::string& needle, std::chrono::milliseconds timeout) {
  return WaitForText(stdout_path_, needle, timeout);
}

bool Subprocess::WaitForStderr(const std::string& needle, std::chrono::milliseconds timeout) {
  return WaitForText(stderr_path_, needle, timeout);
}

std::string Subprocess::Describe() const {
  std::string text;
  for (const auto& arg : argv_) {
    if (!text.empty()) text += ' ';
    text += arg;
  }
  if (exit_code_) text += "\n(exit " + std::to_string(*exit_code_) + ")";
  text += "\nstderr:\n" + StderrText();
  return text;
}

RunResult Run(std::vector<std::string> argv, const Subprocess::Options& options,
              std::chrono::milliseconds timeout) {
  Subprocess process(std::move(argv), options);
  RunResult result;
  result.exit_code = process.Wait(timeout);
  if (!result.exit_code) {
    process.Kill();
    process.Wait(std::chrono::seconds(10));
  }
  result.stdout_text = process.StdoutText();
  result.stderr_text = process.StderrText();
  return result;
}

RunResult Run(std::vector<std::string> argv, std::chrono::milliseconds timeout) {
  return Run(std::move(argv), Subprocess::Options{}, timeout);
}

bool WaitForFile(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    struct stat info {};
    if (::stat(path.c_str(), &info) == 0 && info.st_size > 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval * 4);
  }
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace agentwire::testing
