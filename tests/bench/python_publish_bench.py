#!/usr/bin/python3
"""Events/s published from one Python process (the agentwire SDK, sdk/python) against the C++
publisher (`agentwire emit simulate --rate 0`) in the same run, on the same embedded broker.
Prints both figures and the Python/C++ ratio; asserts nothing (docs/benchmarks.md).

  PYTHONPATH=sdk/python:build/ci/tests/python/generated \
    /usr/bin/python3 tests/bench/python_publish_bench.py --events 200000
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "ci", "cli", "agentwire"))
    parser.add_argument("--brokers", help="use these brokers instead of starting agentwire broker")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each side")
    return parser.parse_args()


def start_broker(binary):
    path = tempfile.mktemp(prefix="aw-bench-bootstrap-")
    proc = subprocess.Popen([binary, "broker", "--bootstrap-file", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        if os.path.exists(path) and open(path).read().strip():
            return proc, open(path).read().strip()
        time.sleep(0.05)
    raise SystemExit("broker did not start")


def cpp_rate(binary, brokers, events, users):
    started = time.monotonic()
    result = subprocess.run([binary, "emit", "simulate", "--brokers", brokers, "--rate", "0",
                             "--duration", "0", "--max-events", str(events), "--users", str(users),
                             "--no-run-control", "--log-level", "warn"],
                            capture_output=True, text=True, check=True)
    took = time.monotonic() - started
    found = re.search(r"(\d+) events \((\d+) delivered", result.stderr + result.stdout)
    delivered = int(found.group(2)) if found else events
    return delivered / took


def python_rate(brokers, events, users):
    from agentwire import Worker
    worker = Worker(brokers, agent_name="bench", run_control=False)
    published = 0
    run_index = 0
    started = time.monotonic()
    while published < events:
        user = f"py-user-{run_index % users}"
        with worker.run(user, "summarise the news", model="bench-model") as run:
            run.thinking("planning the search")
            with run.tool("web_search", '{"q": "kafka"}') as call:
                call.output = "3 results\n- a\n- b\n- c"
            for i in range(4):
                run.delta(f"chunk {i} of the answer ")
            run.result = "done"
        published += 9
        run_index += 1
    left = worker.publisher.flush(120)
    took = time.monotonic() - started
    delivered = worker.publisher.delivered
    worker.close()
    if left or delivered != published:
        print(f"python: {left} undelivered, {delivered} of {published} delivered", file=sys.stderr)
    return delivered / took


def main():
    args = parse_args()
    broker = None
    brokers = args.brokers
    if not brokers:
        broker, brokers = start_broker(args.binary)
    try:
        cpp = max(cpp_rate(args.binary, brokers, args.events, args.users) for _ in range(args.repeat))
        py = max(python_rate(brokers, args.events, args.users) for _ in range(args.repeat))
    finally:
        if broker:
            broker.terminate()
            broker.wait()
    print(f"C++ publisher (emit simulate --rate 0): {cpp:,.0f} events/s")
    print(f"Python SDK (one process, one thread):    {py:,.0f} events/s")
    print(f"ratio Python/C++: {py / cpp:.2f}")


if __name__ == "__main__":
    main()
