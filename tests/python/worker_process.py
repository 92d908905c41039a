#!/usr/bin/python3
"""A worker process for the SIGTERM and kill -9 tests: opens --runs runs (half in threads with
the sync API, half as asyncio tasks), publishes a few events in each, prints
`ready <run_id> ...` and keeps the runs open (busy in a 'tool call') until it is signalled."""

import argparse
import asyncio
import sys
import threading
import time

from agentwire import Worker

parser = argparse.ArgumentParser()
parser.add_argument("--brokers", required=True)
parser.add_argument("--user-prefix", required=True)
parser.add_argument("--runs", type=int, default=10)
parser.add_argument("--lease", type=float, default=15.0)
parser.add_argument("--heartbeat", type=float, default=5.0)
parser.add_argument("--sigterm-timeout", type=float, default=5.0)
args = parser.parse_args()

worker = Worker(args.brokers, agent_name="py-worker", heartbeat_interval=args.heartbeat,
                lease=args.lease)
worker.handle_sigterm(timeout=args.sigterm_timeout)
opened = []
lock = threading.Lock()


def sync_run(i):
    with worker.run(f"{args.user_prefix}-{i}", "a long task", run_id=f"run-{args.user_prefix}-{i}") as run:
        run.thinking("working")
        with lock:
            opened.append(run.run_id)
        with run.tool("slow_tool", "{}") as call:
            while True:
                time.sleep(0.05)
                run.delta(".")  # keeps publishing while open
            call.output = "never"


async def async_run(i):
    async with worker.run(f"{args.user_prefix}-{i}", "a long task", run_id=f"run-{args.user_prefix}-{i}") as run:
        run.thinking("working")
        with lock:
            opened.append(run.run_id)
        async with run.tool("slow_tool", "{}"):
            await asyncio.sleep(3600)


async def main():
    threads = [threading.Thread(target=sync_run, args=(i,), daemon=True)
               for i in range(0, args.runs, 2)]
    for t in threads:
        t.start()
    tasks = [asyncio.create_task(async_run(i)) for i in range(1, args.runs, 2)]
    while len(opened) < args.runs:
        await asyncio.sleep(0.02)
    worker.publisher.flush(10)
    print("ready " + " ".join(sorted(opened)), flush=True)
    await asyncio.gather(*tasks)


asyncio.run(main())
sys.exit(1)  # never reached: the runs never end by themselves
