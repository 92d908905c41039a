#!/usr/bin/env bash
# Publish -> frame-received latency through the gateway for the producer's linger.ms (issue 9
# item 5): every cell is gateway_bench's steps scenario (1,000 WebSocket clients of 1,000
# users standing in for browsers, in their own process; the embedded Kafka; one gateway) at
# one rate for STEP seconds with EventPublisher's linger.ms set. Prints one row per cell.
# Usage: tests/bench/linger_latency.sh [BUILD_DIR] [STEP_SECONDS]
set -euo pipefail
build="${1:-build/ci}"
step="${2:-10}"
ulimit -n 20000
for rate in 1000 10000; do
  for linger in 0 1 5; do
    "$build/tests/bench/gateway_bench" --connections 1000 --users 1000 --rates "$rate" \
      --step-seconds "$step" --linger-ms "$linger" 2>&1 |
      grep -E '^rate=' | sed "s/^/linger_ms=$linger /"
  done
done
