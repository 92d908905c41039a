#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace agentwire::testing {

/// A child process for integration tests (the `agentwire` binary, kcat, python3, ...).
///
/// stdout and stderr go to files in a private temporary directory, so they can be read at any
/// time without the child ever blocking on a full pipe. stdin is /dev/null unless `stdin_text`
/// or `stdin_file` is given.
///
/// The child leads its own process group; Kill() and the destructor kill the whole group, so
/// `sh -c "..."` leaves nothing behind. The child also gets SIGKILL when the thread that started it
/// exits (PR_SET_PDEATHSIG), so a crashed or aborted test never leaves a broker running; start
/// long-lived children from the test's main thread (or SetUpTestSuite), not from a short-lived
/// std::thread.
///
/// Not thread-safe: use one Subprocess from one thread at a time.
class Subprocess final {
 public:
  struct Options {
    /// Added to (or overriding) the parent's environment.
    std::map<std::string, std::string> env;
    /// Variables removed from the child's environment (e.g. AGENTWIRE_BROKERS).
    std::vector<std::string> unset_env;
    /// Fed to the child's stdin (through a temporary file, so it never blocks).
    std::optional<std::string> stdin_text;
    /// Opened as the child's stdin. Ignored when stdin_text is set.
    std::optional<std::string> stdin_file;
  };

  /// Starts argv[0] (searched in PATH when it has no '/'). Throws std::runtime_error when the
  /// program cannot be started (not found, not executable).
  explicit Subprocess(std::vector<std::string> argv);
  Subprocess(std::vector<std::string> argv, const Options& options);
  /// Kills (SIGKILL, the whole process group) and reaps the child if it is still running;
  /// removes the captured output.
  ~Subprocess();

  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t Pid() const { return pid_; }
  const std::vector<std::string>& Argv() const { return argv_; }

  /// Sends `signal` to the child only; a no-op once it has been reaped.
  void Signal(int signal);
  /// SIGKILL to the child's process group (the child and whatever it started).
  void Kill();

  /// Waits up to `timeout` for the child to end. Returns its exit code, or -N when signal N
  /// ended it; std::nullopt when it is still running after `timeout`. Once the child has been
  /// reaped, returns the same value immediately.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  /// True while the child has not ended (reaps it when it has).
  bool Running();

  /// Everything the child wrote so far.
  std::string StdoutText() const;
  std::string StderrText() const;
  const std::string& StdoutPath() const { return stdout_path_; }
  const std::string& StderrPath() const { return stderr_path_; }

  /// Polls stdout (or stderr) until it contains `needle`; false after `timeout` or when the
  /// child ended without writing it.
  bool WaitForStdout(const std::string& needle, std::chrono::milliseconds timeout);
  bool WaitForStderr(const std::string& needle, std::chrono::milliseconds timeout);

  /// "argv[0] argv[1] ...", plus the captured stderr: for assertion messages.
  std::string Describe() const;

 private:
  void Start(const Options& options);
  bool WaitForText(const std::string& path, const std::string& needle,
                   std::chrono::milliseconds timeout);

  std::vector<std::string> argv_;
  std::string directory_;
  std::string stdout_path_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

/// The outcome of a child that ran to completion (see Run).
struct RunResult {
  /// Exit code, -N for signal N, or std::nullopt when it was killed after the timeout.
  std::optional<int> exit_code;
  std::string stdout_text;
  std::string stderr_text;
};

/// Starts `argv`, waits up to `timeout` for it to end (SIGKILL after that) and returns its
/// output. Inside a TEST/TEST_F body gtest's Test::Run() hides this name: call it as
/// agentwire::testing::Run(...).
RunResult Run(std::vector<std::string> argv, const Subprocess::Options& options,
              std::chrono::milliseconds timeout);
RunResult Run(std::vector<std::string> argv, std::chrono::milliseconds timeout);

/// Polls until `path` exists and is not empty; false after `timeout`.
bool WaitForFile(const std::string& path, std::chrono::milliseconds timeout);

/// The first line of `path` without its newline; empty when the file is missing or empty.
std::string ReadFirstLine(const std::string& path);

/// A fresh private directory under $TMPDIR (or /tmp); the caller removes it.
std::string MakeTempDirectory(const std::string& prefix = "agentwire-test");

}  // namespace agentwire::testing
