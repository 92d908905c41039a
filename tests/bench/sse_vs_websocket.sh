#!/usr/bin/env bash
# Gateway CPU per delivered event over SSE vs WebSocket (issue 10's benchmark): the same load
# (1,000 connections of 1,000 users, 10,000 events/s, 10 s per run), the two transports
# alternating for ROUNDS rounds in one invocation, so both see the same machine. Prints
# gateway_bench's row per run; compare server_us_per_event pair by pair.
# Usage: tests/bench/sse_vs_websocket.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
build="${1:-build/ci}"
rounds="${2:-3}"
ulimit -n 20000
for round in $(seq 1 "$rounds"); do
  for transport in websocket sse; do
    "$build/tests/bench/gateway_bench" --transport "$transport" --connections 1000 --users 1000 \
      --rates 10000 --step-seconds 10 2>&1 |
      grep -E '^rate=|^# clean|lost [1-9]' | sed "s/^/$transport round=$round /"
  done
done
