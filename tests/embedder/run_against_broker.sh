#!/usr/bin/env bash
# Runs the embedder example against a fresh `agentwire broker` and checks, with `agentwire
# replay`, that the topic holds exactly the events it says were delivered.
set -euo pipefail
agentwire=$1
worker=$2
runs=25
dir=$(mktemp -d)
broker_pid=
cleanup() {
  [[ -n $broker_pid ]] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

"$agentwire" broker --bootstrap-file "$dir/bootstrap" >"$dir/broker.out" 2>"$dir/broker.err" &
broker_pid=$!
for _ in $(seq 100); do [[ -s $dir/bootstrap ]] && break; sleep 0.1; done
[[ -s $dir/bootstrap ]] || { echo "broker did not start"; cat "$dir/broker.err"; exit 1; }
brokers=$(cat "$dir/bootstrap")

"$worker" "$brokers" embedder-user "$runs"
"$agentwire" replay --brokers "$brokers" --user embedder-user --progress off >"$dir/events.jsonl"
got=$(wc -l <"$dir/events.jsonl")
runs_seen=$(grep -o '"run_id":"[^"]*"' "$dir/events.jsonl" | sort -u | wc -l)
echo "replay: $got events in $runs_seen runs (expected $((runs * 3)) in $runs)"
[[ $got -eq $((runs * 3)) && $runs_seen -eq $runs ]]
