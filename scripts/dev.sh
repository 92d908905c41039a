#!/usr/bin/env bash
# The README's first command: installs what is missing, builds the `release` preset and runs
# `agentwire dev` (embedded Kafka, gateway on 127.0.0.1:8080, simulated agent runs).
# Extra arguments go to `agentwire dev`, e.g. scripts/dev.sh --users 5 --rate 20.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"

export CCACHE_BASEDIR="$root"
export CCACHE_DIR="${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}"

cd "$root"
cmake --preset release --log-level=WARNING
cmake --build --preset release -j "${AGENTWIRE_JOBS:-$(nproc)}" --target agentwire
exec "$root/build/release/cli/agentwire" dev "$@"
