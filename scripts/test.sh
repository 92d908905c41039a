#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the `ci` preset (release build,
# warnings are errors) into build/ci and runs every test, then clang-format and clang-tidy over
# the product's sources (scripts/lint.sh --tidy), then the gateway and publisher tests again
# under ThreadSanitizer (build/tsan). Exits non-zero when any of the three failed. Works from
# any cwd.
# Extra arguments go to ctest, e.g. scripts/test.sh -R infra, scripts/test.sh -L integration.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"

# ccache keys on paths relative to the repo, so every clone shares one cache.
export CCACHE_BASEDIR="$root"
# ...and ignores the build directory's absolute path (debug info would otherwise key every
# object on it, so a fresh clone in another folder, as CI uses, would miss the whole cache).
export CCACHE_NOHASHDIR=1
export CCACHE_DIR="${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}"
jobs="${AGENTWIRE_JOBS:-$(nproc)}"

cd "$root"
cmake --preset ci --log-level=WARNING
cmake --build --preset ci -j "$jobs"

# The browser tests' node modules; skipped when node_modules is newer than the manifests
# (npm writes node_modules/.package-lock.json on every install).
e2e=tests/e2e
if [[ -f $e2e/package.json ]] && ! [[ -f $e2e/node_modules/.package-lock.json &&
      $e2e/node_modules/.package-lock.json -nt $e2e/package.json &&
      ! $e2e/package-lock.json -nt $e2e/node_modules/.package-lock.json ]]; then
  echo "test: installing $e2e node modules"
  # Chromium comes from Debian (bootstrap); npm must never fetch a browser of its own.
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  npm_args=(--no-audit --no-fund --loglevel=error)
  if [[ -f $e2e/package-lock.json ]]; then
    (cd "$e2e" && npm ci "${npm_args[@]}")
  else
    (cd "$e2e" && npm install "${npm_args[@]}")
  fi
fi

status=0
ctest --test-dir build/ci -j "$jobs" --output-on-failure --timeout 900 "$@" || status=$?

# The house style and clang-tidy's checks (.clang-tidy) on the product's sources: a finding
# fails the run. AGENTWIRE_SKIP_TIDY=1 skips this part.
if [[ "${AGENTWIRE_SKIP_TIDY:-0}" != 1 ]]; then
  echo "test: scripts/lint.sh --tidy"
  started=$SECONDS
  bash "$root/scripts/lint.sh" --tidy || status=$?
  echo "test: lint took $((SECONDS - started)) s"
fi

# The gateway's, the publisher's and the supervisor's tests (and the unit tests of the gateway's
# state machines and of RunEmitter) again under ThreadSanitizer: a Debug build with -fsanitize=thread of just those targets. Debian's librdkafka starts its threads with
# C11 thrd_create, which TSan does not intercept, so the tests run with a shim that maps C11
# threads onto pthreads (tests/tsan/). AGENTWIRE_SKIP_TSAN=1 skips this part.
if [[ "${AGENTWIRE_SKIP_TSAN:-0}" != 1 ]]; then
  echo "test: ThreadSanitizer build (preset tsan) of the gateway and publisher tests"
  cmake --preset tsan --log-level=WARNING >/dev/null
  # The supervisor: its consumer thread and the publisher's delivery reports share state.
  tsan_targets=(agentwire agentwire_unit_tests agentwire_tsan_shim publisher_test supervisor_test)
  tsan_suites=(PartitionHubTest PublisherTest LazyFrame SseFrames HandOff CoalescingStream
    SupervisorTest RunEmitter SessionTest SessionArchiveTest CatchupBudgetTest AiSdkTransportTest)
  # Every gateway integration test but the descriptor flood (it asserts low CPU, which a
  # TSan build cannot promise).
  for source in tests/integration/gateway_*_test.cpp; do
    name=$(basename "$source" .cpp)
    [[ $name == gateway_overload_test ]] && continue
    tsan_targets+=("$name")
    tsan_suites+=($(grep -ohE '^TEST(_F)?\(\w+' "$source" | sed -E 's/^TEST(_F)?\(//' | sort -u))
  done
  # Tests whose pass depends on the speed of the test process itself, which TSan slows 5-15x:
  # the healthy client of the stalled-client test cannot keep up with the burst, and the
  # producer-fault test's timeouts fire at other moments (under TSan it once saw 2 of 100,000
  # events acknowledged with offset -1001 and absent from the log: noted in the issue).
  # The teardown stress test runs ~110 s under TSan against its own 120 s watchdog, and the
  # retention test needs the replica to stay behind retention for a moment TSan can stretch
  # (once seen reading the record retention was about to delete). Both run in the main suite.
  tsan_timing='GatewayLimits\.StalledClient|PublisherTest\.ProduceErrorsNotLeaderAndRequestTimedOut|PartitionHubTest\.ConcurrentTeardownOfOneUsersListenersNeverDeadlocks|GatewayRetention\.ReplicaBehindRetentionSendsResetAndKeepsDelivering'
  cmake --build build/tsan -j "$jobs" --target "${tsan_targets[@]}"
  LD_PRELOAD="$root/build/tsan/tests/libagentwire_tsan_shim.so" \
    TSAN_OPTIONS="suppressions=$root/tests/tsan/suppressions.txt halt_on_error=1 second_deadlock_stack=1" \
    ctest --test-dir build/tsan -R "^($(IFS='|'; echo "${tsan_suites[*]}"))\." -E "$tsan_timing" \
    -j "$jobs" --output-on-failure --timeout 900 "$@" ||
    status=$?
fi
exit "$status"
