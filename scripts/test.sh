#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the `ci` preset (warnings are
# errors) into build/ci and runs every test. Exits with ctest's status. Works from any cwd.
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

if [[ -f tests/e2e/package.json ]]; then
  echo "test: installing tests/e2e node modules"
  # Chromium comes from Debian (bootstrap); npm must never fetch a browser of its own.
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  npm_args=(--no-audit --no-fund --loglevel=error)
  if [[ -f tests/e2e/package-lock.json ]]; then
    (cd tests/e2e && npm ci "${npm_args[@]}")
  else
    (cd tests/e2e && npm install "${npm_args[@]}")
  fi
fi

exec ctest --test-dir build/ci -j "$jobs" --output-on-failure --timeout 900
