#!/bin/bash
# A gateway under a low descriptor limit and a flood of half-open connections: its CPU and log
# lines meanwhile (docs/benchmarks.md, "Overload"). Needs prlimit, curl, /usr/bin/python3.
# usage: tests/bench/flood_measure.sh BINARY [NOFILE=128] [FLOOD_COUNT=400] [SECONDS=5]
BIN=$1; NOFILE=${2:-128}; COUNT=${3:-400}; SECS=${4:-5}
D=$(mktemp -d /tmp/flood.XXXX)
$BIN broker --bootstrap-file $D/bootstrap >/dev/null 2>$D/broker.err &
BROKER=$!
for i in $(seq 100); do [ -s $D/bootstrap ] && break; sleep 0.1; done
env -u AGENTWIRE_BROKERS prlimit --nofile=$NOFILE:$NOFILE $BIN gateway --brokers $(head -1 $D/bootstrap) --port 0 --port-file $D/port --jwt-secret agentwire-test-secret-0123456789abcdef >/dev/null 2>$D/gw.err &
GW=$!
for i in $(seq 300); do [ -s $D/port ] && break; sleep 0.1; done
PORT=$(cat $D/port)
echo "gateway pid $GW port $PORT fds $(ls /proc/$GW/fd | wc -l)"
L0=$(wc -l < $D/gw.err); B0=$(wc -c < $D/gw.err)
/usr/bin/python3 "$(dirname "$0")/../support/half_open_flood.py" 127.0.0.1 $PORT $COUNT > $D/flood.out &
FLOOD=$!
for i in $(seq 100); do [ -s $D/flood.out ] && break; sleep 0.1; done
cat $D/flood.out
T0=$(awk '{print $14+$15}' /proc/$GW/stat); L1=$(wc -l < $D/gw.err)
sleep $SECS
T1=$(awk '{print $14+$15}' /proc/$GW/stat); L2=$(wc -l < $D/gw.err); B2=$(wc -c < $D/gw.err)
TCK=$(getconf CLK_TCK)
echo "cpu over ${SECS}s: $(( (T1-T0)*100/(TCK*SECS) ))% of a core; log lines during window: $((L2-L1)); total new lines since flood: $((L2-L0)); bytes: $((B2-B0))"
curl -s -m 5 http://127.0.0.1:$PORT/readyz; echo " (readyz during flood)"
kill $FLOOD; wait $FLOOD 2>/dev/null
sleep 2
curl -s -m 5 -w ' %{http_code}' http://127.0.0.1:$PORT/readyz; echo " (readyz after flood)"
curl -s -m 5 http://127.0.0.1:$PORT/metrics | grep -E "accept_(errors|paused)|max_connections" 
echo "gateway log lines mentioning accept: $(grep -c accept $D/gw.err)"
kill $GW $BROKER; wait 2>/dev/null
rm -rf $D
