"""1,000 users' runs from the Python SDK and from the C++ publisher land in the same partitions
(murmur2 of the user, as the gateway computes it), and a WebSocket client of the gateway
receives each user's events from both, in log order, exactly once, also after resuming on
another replica."""

import json
import time
import uuid

import pytest

from agentwire import Publisher, Worker, partition_for_key
from agentwire.size_policy import fit_to_size
from aw_support import Gateway, WebSocket, by_run, cpp_emit, read_topic, token, wait_for

USERS = [f"user-{i}-{uuid.uuid4().hex[:6]}" for i in range(1000)]
PARTITIONS = 12


def cpp_run(user, tag, events=3):
    run_id = f"cpp-{tag}-{user}"
    bodies = [("agent_started", {"input": f"hello {user}"}),
              ("agent_thinking", {"text": "thinking ✓"}),
              ("agent_completed", {"result": "done"})][:events]
    return [{"type": kind, "user_id": user, "run_id": run_id, "run_seq": seq, kind: body}
            for seq, (kind, body) in enumerate(bodies, 1)]


def python_run(worker, user, tag):
    with worker.run(user, f"hello {user}", run_id=f"py-{tag}-{user}") as run:
        run.thinking("thinking ✓")
        run.delta("Here is 日本語 🚀")
        run.result = "done"


@pytest.fixture(scope="module")
def published(broker):
    worker = Worker(broker.servers, agent_name="py", run_control=False)
    for user in USERS:
        python_run(worker, user, "a")
    worker.close()
    cpp_emit(broker, [e for user in USERS for e in cpp_run(user, "a")])
    return read_topic(broker)


def test_python_and_cpp_events_of_a_user_share_its_murmur2_partition(published):
    partitions = {}
    for record in published:
        assert record.key == record.event.user_id.encode()
        assert record.headers == {"content-type": b"application/x-protobuf",
                                  "schema": b"agentwire.v1.AgentEvent"}
        partitions.setdefault(record.event.user_id, set()).add(record.partition)
    wrong = [u for u in USERS if partitions.get(u) != {partition_for_key(u, PARTITIONS)}]
    assert wrong == [], f"{len(wrong)} users outside their murmur2 partition, e.g. {wrong[:3]}"
    runs = by_run(published)
    lost = duplicated = reordered = 0
    for user in USERS:
        for run_id, count in ((f"py-a-{user}", 4), (f"cpp-a-{user}", 3)):
            seqs = [e.run_seq for e in runs.get((user, run_id), [])]
            lost += count - len(set(seqs))
            duplicated += len(seqs) - len(set(seqs))
            reordered += sum(1 for a, b in zip(seqs, seqs[1:]) if b < a)
    assert (lost, duplicated, reordered) == (0, 0, 0)
    ids = [r.event.event_id for r in published]
    assert len(ids) == len(set(ids)) == 7000


def test_python_events_look_like_run_emitters(published):
    py = [r.event for r in published if r.event.run_id.startswith("py-")]
    assert all(len(e.event_id) == 26 and e.event_id.isalnum() for e in py)
    runs = by_run([r for r in published if r.event.run_id.startswith("py-")])
    for events in runs.values():
        assert [e.run_seq for e in events] == [1, 2, 3, 4]
        assert [e.WhichOneof("body") for e in events] == [
            "agent_started", "agent_thinking", "message_delta", "agent_completed"]
        stamps = [(e.emitted_at.seconds, e.emitted_at.nanos) for e in events]
        assert stamps == sorted(stamps)
        assert all(n % 1000 == 0 for _, n in stamps)  # microseconds


def test_size_policy_cuts_like_the_cpp_publisher_byte_for_byte(broker):
    from agentwire.v1 import events_pb2
    user = "size-" + uuid.uuid4().hex[:6]
    output = ("é" * 700_000) + ("x" * 1_500_001)  # 2.9 MB, a multibyte prefix
    error = "e" * 600_000  # over half the budget: both are cut to equal shares
    cpp_emit(broker, [{"type": "tool_completed", "user_id": user, "run_id": "r", "run_seq": 1,
                       "event_id": "01JDQ8Z5YQ7B9F0M6W1T3K2X4C", "agent_name": "a",
                       "emitted_at": "2026-11-22T10:00:00.123456Z",
                       "tool_completed": {"tool_name": "fetch", "output": output, "error": error,
                                          "duration_ms": 5, "tool_call_id": "c"}}])
    record = [r for r in read_topic(broker) if r.event.user_id == user][0]
    ours = events_pb2.AgentEvent()
    ours.CopyFrom(record.event)
    ours.ClearField("truncated")
    ours.tool_completed.output = output
    ours.tool_completed.error = error
    assert fit_to_size(ours, 900_000)
    assert list(ours.truncated.fields) == ["output", "error"]
    assert ours.SerializeToString() == record.value


def collect(ws, until_ready=True, want=None, timeout=20.0):
    """Event frames (and the last cursor) until `ready` (catch-up) or until `want` events."""
    events, cursor = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if frame is None:
            break
        if frame["type"] == "event":
            events.append(frame["event"])
            cursor = frame["cursor"]
            if want is not None and len(events) >= want:
                return events, cursor
        elif frame["type"] == "ready":
            cursor = cursor or frame["cursor"]
            if until_ready:
                return events, frame["cursor"]
        elif frame["type"] == "reset":
            raise AssertionError(f"unexpected reset: {frame}")
    if want is not None:
        raise AssertionError(f"got {len(events)} of {want} events")
    return events, cursor


def test_websocket_client_gets_both_publishers_events_in_order_exactly_once_across_replicas(
        broker, published):
    first = Gateway(broker)
    second = Gateway(broker)
    worker = Worker(broker.servers, agent_name="py", run_control=False)
    try:
        sample = USERS[:12]
        clients = {}
        received = {u: [] for u in sample}
        cursors = {}
        for user in sample:
            clients[user] = WebSocket(first.port, "/v1/events?cursor=earliest", token(user))
            events, cursors[user] = collect(clients[user])
            received[user] += events
        # Live on replica 1: a Python run and a C++ run per user, interleaved in the log.
        for user in sample:
            python_run(worker, user, "b")
        assert worker.publisher.flush(30) == 0
        cpp_emit(broker, [e for u in sample for e in cpp_run(u, "b")])
        for user in sample:
            events, cursors[user] = collect(clients[user], until_ready=False, want=7)
            received[user] += events
            clients[user].close()
        # Offline: more from both publishers; then the client resumes on replica 2.
        for user in sample:
            python_run(worker, user, "c")
        assert worker.publisher.flush(30) == 0
        cpp_emit(broker, [e for u in sample for e in cpp_run(u, "c")])
        for user in sample:
            ws = WebSocket(second.port, f"/v1/events?cursor={cursors[user]}", token(user))
            events, _ = collect(ws)
            received[user] += events
            ws.close()
        log = read_topic(broker)
        lost = duplicated = reordered = 0
        for user in sample:
            expected = [r.event.event_id for r in log if r.event.user_id == user]
            got = [e["event_id"] for e in received[user]]
            assert len(expected) == 21  # 3 python runs of 4 events, 3 C++ runs of 3
            lost += len(set(expected) - set(got))
            duplicated += len(got) - len(set(got))
            reordered += 0 if [i for i in got if i in set(expected)] == expected else 1
            assert all(e["user_id"] == user for e in received[user])
        assert (lost, duplicated, reordered) == (0, 0, 0)
    finally:
        worker.close()
        first.stop()
        second.stop()
