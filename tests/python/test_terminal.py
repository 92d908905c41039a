"""Exactly one terminal event per run, whatever happens: an exception, a CancelledError,
KeyboardInterrupt, a run dropped without an end, SIGTERM (the SDK ends it and flushes within a
bound) and kill -9 (the supervisor ends it as worker_lost)."""

import asyncio
import signal
import time
import uuid

import pytest

from agentwire import Worker
from aw_support import BINARY, Process, by_run, read_topic, run_python, terminals, wait_for


def ends(broker, prefix):
    runs = {key: events for key, events in by_run(read_topic(broker)).items()
            if key[0].startswith(prefix)}
    return runs


def assert_one_end_each(runs, expected_runs):
    assert len(runs) == expected_runs, f"{len(runs)} runs in the log, expected {expected_runs}"
    counts = {key: len(terminals(events)) for key, events in runs.items()}
    bad = {k: c for k, c in counts.items() if c != 1}
    assert bad == {}, f"runs without exactly one terminal: {bad}"
    for events in runs.values():
        seqs = [e.run_seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), seqs  # 0 lost, duplicated, reordered


def test_exception_cancelled_error_keyboard_interrupt_and_abandoned(broker):
    prefix = "term-" + uuid.uuid4().hex[:6]
    worker = Worker(broker.servers, agent_name="py", run_control=False)
    for i in range(20):
        with pytest.raises(ValueError, match="bad tool input"):
            with worker.run(f"{prefix}-exc-{i}", "q") as run:
                run.thinking("about to fail")
                with run.tool("calc", "1/0"):
                    raise ValueError(f"bad tool input {i}")

    async def stopped_from_outside(i):
        async with worker.run(f"{prefix}-cancel-{i}", "q") as run:
            run.thinking("waiting for the model")
            await asyncio.sleep(3600)

    async def cancel_all():
        tasks = [asyncio.create_task(stopped_from_outside(i)) for i in range(20)]
        await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)

    asyncio.run(cancel_all())
    for i in range(5):
        with pytest.raises(KeyboardInterrupt):
            with worker.run(f"{prefix}-kbd-{i}", "q") as run:
                run.delta("partial")
                raise KeyboardInterrupt()
    for i in range(5):
        run = worker.run(f"{prefix}-drop-{i}", "q")
        run.started()
        run.thinking("forgot the end")
        del run
    for i in range(5):
        with worker.run(f"{prefix}-ok-{i}", "q") as run:
            run.complete("early")  # an explicit end: exit adds nothing
    assert worker.publisher.flush(30) == 0
    worker.close()
    runs = ends(broker, prefix)
    assert_one_end_each(runs, 55)
    for (user, _), events in runs.items():
        end = terminals(events)[0]
        kind = user.split("-")[2]
        if kind == "exc":
            assert end.agent_failed.error_code == "exception"
            assert end.agent_failed.message.startswith("ValueError: bad tool input")
            tool = [e for e in events if e.WhichOneof("body") == "tool_completed"][0]
            assert tool.tool_completed.error.startswith("ValueError: bad tool input")
        elif kind in ("cancel", "kbd"):
            assert end.agent_failed.error_code == "cancelled", end
        elif kind == "drop":
            assert end.agent_failed.error_code == "run_abandoned"
        else:
            assert end.WhichOneof("body") == "agent_completed"
            assert end.agent_completed.result == "early"
        assert events[-1].event_id == end.event_id  # nothing after the end


def test_sigterm_ends_open_runs_and_flushes_within_the_bound(broker):
    prefix = "sigterm-" + uuid.uuid4().hex[:6]
    proc = run_python("worker_process.py", "--brokers", broker.servers, "--user-prefix", prefix,
                      "--runs", "20", "--sigterm-timeout", "5")
    line = proc.stdout.readline()
    assert line.startswith("ready "), proc.stderr.read()
    time.sleep(0.3)  # mid-run: deltas are flowing
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(15)
    took = time.monotonic() - sent
    assert code == 143, proc.stderr.read()
    assert took < 6.0, f"exit {took:.1f} s after SIGTERM, bound 5 s"
    runs = ends(broker, prefix)
    assert_one_end_each(runs, 20)
    for events in runs.values():
        end = terminals(events)[0]
        assert end.agent_failed.error_code == "worker_shutdown"
        assert events[-1].event_id == end.event_id  # nothing after the end


def test_kill_9_leaves_the_end_to_the_supervisor_once(broker):
    prefix = "kill9-" + uuid.uuid4().hex[:6]
    supervisor = Process([BINARY, "supervisor", "--brokers", broker.servers, "--metrics-port", "0",
                          "--check-interval", "200ms", "--group", "sup-" + prefix], "supervisor")
    try:
        proc = run_python("worker_process.py", "--brokers", broker.servers, "--user-prefix",
                          prefix, "--runs", "10", "--lease", "3", "--heartbeat", "0.5")
        line = proc.stdout.readline()
        assert line.startswith("ready "), proc.stderr.read()
        time.sleep(4)  # past the lease: the heartbeats keep the runs alive
        assert all(len(terminals(e)) == 0 for e in ends(broker, prefix).values())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: sum(len(terminals(e)) for e in ends(broker, prefix).values()) >= 10,
                 40, "the supervisor's ends")
        time.sleep(2)  # a second end would come now
        runs = ends(broker, prefix)
        assert_one_end_each(runs, 10)
        for events in runs.values():
            end = terminals(events)[0]
            assert end.agent_failed.error_code == "worker_lost"
            assert end.attributes["ended_by"] == "supervisor"
    finally:
        supervisor.stop()
