#!/usr/bin/env bash
# Runs the gateway benchmarks of docs/benchmarks.md ("Gateway") one after the other and keeps
# every output line in $OUT (default bench-results/gateway-<time>.txt).
#   scripts/bench_gateway.sh [BUILD_DIR] [figure...]
# figures: latency baseline steps idle churn resume storm (default: all). BUILD_DIR must be an
# optimised build (release preset) with gateway_bench, beast_baseline_server and agentwire.
set -euo pipefail
build=${1:-build/release}
shift || true
figures=("$@")
[[ ${#figures[@]} -eq 0 ]] && figures=(latency baseline steps idle churn resume storm)
bench=$build/tests/bench/gateway_bench
[[ -x $bench ]] || { echo "no $bench: cmake --build $build --target gateway_bench" >&2; exit 2; }
out=${OUT:-bench-results/gateway-$(date +%Y%m%d-%H%M%S).txt}
mkdir -p "$(dirname "$out")"
# 10,000 idle connections need 10,000+ descriptors in the load generator and in the server;
# gateway_bench raises its soft limit to the hard one and the servers inherit it.
ulimit -n "$(ulimit -Hn)"

run() {
  echo "\$ $*  # $(date -u +%FT%TZ), uptime: $(uptime)" | tee -a "$out"
  "$@" 2>&1 | tee -a "$out"
}

baseline=(--target baseline --http-connections 4 --http-batch 100)
for figure in "${figures[@]}"; do
  case $figure in
    latency)   # 10,000 events/s over 1,000 connections of 1,000 users; fetch wait 5 ms and 1 ms
      run "$bench" --target gateway --rates 10000 --step-seconds 20
      run "$bench" --target gateway --rates 10000 --step-seconds 20 --fetch-wait-ms 1 ;;
    baseline)  # CPU per event: gateway and bare Beast server alternately, twice
      for _ in 1 2; do
        run "$bench" --target gateway --rates 10000 --step-seconds 20
        run "$bench" "${baseline[@]}" --rates 10000 --step-seconds 20
      done ;;
    steps)     # highest sustained rate before p99 > 100 ms
      run "$bench" --target gateway --rates 10000,12000,14000,16000,18000,20000,25000 --step-seconds 10
      run "$bench" "${baseline[@]}" --rates 10000,20000,30000,40000,50000,60000,80000 --step-seconds 10 ;;
    idle)      # RSS per idle authenticated connection
      run "$bench" --target gateway --scenario idle --connections 10000 --users 10000
      run "$bench" --target baseline --scenario idle --connections 10000 --users 10000 ;;
    churn)     # 10 % reconnect with their cursor every second, 20 s at 2,000 events/s
      run "$bench" --target gateway --scenario churn --rates 2000 --step-seconds 20 ;;
    resume)    # catch-up of one client from the cache and from Kafka (1 partition, < 5 MiB)
      run "$bench" --target gateway --scenario resume --resume-events 100000 ;;
    storm)     # mass reconnect: a replica of N clients killed at 2,000 events/s (issue 8)
      for n in 1000 5000 10000; do
        run "$bench" --scenario storm --connections "$n" --users "$n" --rate 2000 \
          --storm-after-seconds 12 --storm-tail-seconds 3 --storm-signal kill
      done
      run "$bench" --scenario storm --connections 10000 --users 10000 --rate 2000 \
        --storm-after-seconds 12 --storm-tail-seconds 3 --storm-signal term
      # every client from Kafka (no cache) after 8 s of downtime, under a 128 KiB budget
      run "$bench" --scenario storm --connections 2000 --users 1800 --rate 1000 \
        --storm-after-seconds 5 --storm-tail-seconds 3 --storm-signal kill --cache-bytes 0 \
        --storm-downtime-seconds 8 --gateway-arg --catchup-buffer-bytes --gateway-arg 131072 \
        --gateway-arg --catchup-session-bytes --gateway-arg 65536 ;;
    *) echo "unknown figure $figure" >&2; exit 2 ;;
  esac
done
echo "results in $out"
