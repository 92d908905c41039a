#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the `ci` preset (release build,
# warnings are errors) into build/ci and runs every test. Exits with ctest's status. Works from any cwd.
# Extra arguments go to ctest, e.g. scripts/test.sh -R infra, scripts/test.sh -L integration.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"

# ccache keys on paths relative to the repo, so every clone shares one cache.
export CCACHE_BASEDIR="$root"
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

exec ctest --test-dir build/ci -j "$jobs" --output-on-failure --timeout 900 "$@"
