#!/bin/sh
# Creates (or converges the configuration of) the agentwire topics on a real Kafka cluster.
# Idempotent: existing topics keep their data and get the configs from topics.env; a partition
# count that differs from topics.env is reported as an error and never changed (that would
# move users to other partitions).
#
#   BOOTSTRAP_SERVERS=kafka-1:19092 infra/kafka/create-topics.sh
#
# Needs Kafka's CLI tools (kafka-topics.sh, kafka-configs.sh) in KAFKA_BIN (default
# /opt/kafka/bin, as in the apache/kafka image) or on PATH. Client settings for SASL/TLS:
# COMMAND_CONFIG=/path/client.properties (a path without spaces). POSIX sh, because the
# apache/kafka image is Alpine-based.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/topics.env"

: "${BOOTSTRAP_SERVERS:=${AGENTWIRE_BROKERS:-localhost:9092}}"
: "${KAFKA_BIN:=/opt/kafka/bin}"
: "${WAIT_SECONDS:=120}"
: "${READY_FILE:=/tmp/agentwire-topics-ready}"
if [ -x "$KAFKA_BIN/kafka-topics.sh" ]; then
  topics_cmd="$KAFKA_BIN/kafka-topics.sh"
  configs_cmd="$KAFKA_BIN/kafka-configs.sh"
else
  topics_cmd=kafka-topics.sh
  configs_cmd=kafka-configs.sh
fi
connection="--bootstrap-server $BOOTSTRAP_SERVERS"
if [ -n "${COMMAND_CONFIG:-}" ]; then connection="$connection --command-config $COMMAND_CONFIG"; fi

say() { echo "create-topics: $*"; }
# The connection words are split on purpose (no arrays in POSIX sh).
# shellcheck disable=SC2086
topics() { "$topics_cmd" $connection "$@"; }
# shellcheck disable=SC2086
configs() { "$configs_cmd" $connection "$@"; }

rm -f "$READY_FILE"

# Brokers answer before the controller quorum has elected a leader; wait until they list.
deadline=$(($(date +%s) + WAIT_SECONDS))
until topics --list >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    say "cluster at $BOOTSTRAP_SERVERS not reachable after ${WAIT_SECONDS}s" >&2
    exit 1
  fi
  sleep 2
done

# ensure NAME PARTITIONS RETENTION_MS
ensure() {
  name=$1
  partitions=$2
  settings="min.insync.replicas=$MIN_INSYNC_REPLICAS,retention.ms=$3"
  settings="$settings,compression.type=$COMPRESSION_TYPE,cleanup.policy=$CLEANUP_POLICY"
  if ! topics --describe --topic "$name" >/dev/null 2>&1; then
    say "creating $name: $partitions partitions, RF $REPLICATION_FACTOR"
    topics --create --if-not-exists --topic "$name" \
      --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR" \
      --config "min.insync.replicas=$MIN_INSYNC_REPLICAS" \
      --config "retention.ms=$3" \
      --config "compression.type=$COMPRESSION_TYPE" \
      --config "cleanup.policy=$CLEANUP_POLICY" >/dev/null
  fi
  actual=$(topics --describe --topic "$name" |
    sed -n 's/.*PartitionCount:[[:space:]]*\([0-9][0-9]*\).*/\1/p' | head -n 1)
  if [ "$actual" != "$partitions" ]; then
    say "$name has ${actual:-?} partitions but topics.env says $partitions; not changing it" \
      "(docs/schema.md, Topic versioning)" >&2
    return 1
  fi
  # Converge the configs of a topic that already existed (no-op for a new one).
  configs --alter --entity-type topics --entity-name "$name" --add-config "$settings" >/dev/null
  say "$name ok: $actual partitions, $settings"
}

ensure "$TOPIC" "$PARTITIONS" "$RETENTION_MS"
ensure "$DLQ_TOPIC" "$DLQ_PARTITIONS" "$DLQ_RETENTION_MS"
ensure "$CONTROL_TOPIC" "$PARTITIONS" "$CONTROL_RETENTION_MS"
ensure "$HEARTBEAT_TOPIC" "$PARTITIONS" "$HEARTBEAT_RETENTION_MS"
touch "$READY_FILE"
