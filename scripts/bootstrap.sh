#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages agentwire needs to build and test, and only
# the ones that are missing. Idempotent; prints nothing when everything is present, one line
# per action otherwise. Works as root on a bare Debian 12 image, or through sudo.
#   scripts/bootstrap.sh               everything for building and testing
#   scripts/bootstrap.sh --build-only  just what building the agentwire binary needs
set -euo pipefail

# What building the `agentwire` binary needs (also all the Dockerfile's builder installs, via
# --build-only).
readonly BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  librdkafka-dev libprotobuf-dev protobuf-compiler
  libboost-dev libboost-system-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libjwt-dev libssl-dev libpqxx-dev libpq-dev
)
# What the tests and the developer tools add: ccache, GoogleTest, kcat, a PostgreSQL server,
# Debian's python3 with confluent-kafka, chromium for the browser tests, clang-format and
# clang-tidy for scripts/lint.sh. ca-certificates: npm and curl need it for HTTPS and it is only a
# recommendation of the packages here, which are installed without recommendations.
readonly TEST_PACKAGES=(
  ccache git ca-certificates libgtest-dev libgmock-dev
  postgresql kcat python3 python3-confluent-kafka python3-protobuf python3-yaml python3-pytest python3-pip
  chromium procps curl clang-format clang-tidy
)

say() { echo "bootstrap: $*"; }

# The browser tests (tests/e2e) need Node.js 20 or newer; Debian 12's nodejs is 18. Called last,
# after whatever was installed: an old node fails with one line that says what to install.
readonly NODE_MAJOR_MIN=20
check_node() {
  ((build_only)) && return 0
  local version major
  version="$(node --version 2>/dev/null || true)"
  major="${version#v}"
  major="${major%%.*}"
  if [[ ! "$major" =~ ^[0-9]+$ ]] || ((major < NODE_MAJOR_MIN)); then
    echo "bootstrap: node ${version:-(none)} found, the browser tests need Node.js >= ${NODE_MAJOR_MIN}: install nodejs ${NODE_MAJOR_MIN}.x from NodeSource (https://github.com/nodesource/distributions) or nvm, then run this again" >&2
    exit 1
  fi
}

build_only=0
case "${1:-}" in
  "") ;;
  --build-only) build_only=1 ;;
  *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac

wanted=("${BUILD_PACKAGES[@]}")
if ((build_only)); then
  :
elif command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    && node --version >/dev/null 2>&1 && npm --version >/dev/null 2>&1; then
  # Some machine images ship Node 20 from NodeSource; Debian's npm would conflict with it.
  wanted+=("${TEST_PACKAGES[@]}")
else
  wanted+=("${TEST_PACKAGES[@]}" nodejs npm)
fi

# One dpkg-query for all packages; a package dpkg has never heard of prints nothing.
declare -A installed=()
while read -r name status; do
  [[ "$status" == "installed" ]] && installed["${name%%:*}"]=1
done < <(dpkg-query -W -f='${binary:Package} ${db:Status-Status}\n' "${wanted[@]}" 2>/dev/null || true)

missing=()
for package in "${wanted[@]}"; do
  [[ -n "${installed[$package]:-}" ]] || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  check_node
  exit 0
fi

if ((EUID == 0)); then
  as_root=(env)
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo env)
else
  echo "bootstrap: missing packages: ${missing[*]}" >&2
  echo "bootstrap: run this script as root or install sudo" >&2
  exit 1
fi

log="${TMPDIR:-/tmp}/agentwire-bootstrap.log"
apt() {
  # Wait for another apt/dpkg (unattended-upgrades) instead of failing on its lock.
  if ! "${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get -q -y \
      -o DPkg::Lock::Timeout=600 "$@" >>"$log" 2>&1; then
    echo "bootstrap: 'apt-get $*' failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}

: >"$log"
say "apt-get update"
apt update
say "installing ${missing[*]}"
apt install --no-install-recommends "${missing[@]}"
say "done (${#missing[@]} packages; apt-get output in $log)"
check_node
