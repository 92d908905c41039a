"""A 3 MB tool output is cut and marked; hostile values get a clear error and the run still
ends (exactly once)."""

import math
import uuid

import pytest

from agentwire import PublishError, Worker
from aw_support import by_run, read_topic, terminals


@pytest.fixture(scope="module")
def worker(broker):
    w = Worker(broker.servers, agent_name="py", run_control=False)
    yield w
    w.close()


def test_three_megabyte_tool_output_is_cut_and_marked(broker, worker):
    user = "big-" + uuid.uuid4().hex[:6]
    output = "résultat ✓ " * 300_000  # 3.9 MB of multibyte text
    with worker.run(user, "fetch a page", run_id="big") as run:
        with run.tool("fetch", '{"url": "https://example.com"}') as call:
            call.output = output
    assert worker.publisher.flush(10) == 0
    records = [r for r in read_topic(broker) if r.event.user_id == user]
    assert [r.event.run_seq for r in records] == [1, 2, 3, 4]
    cut = records[2]
    assert cut.event.WhichOneof("body") == "tool_completed"
    assert list(cut.event.truncated.fields) == ["output"]
    assert cut.event.truncated.original_bytes > 3_000_000
    assert cut.event.truncated.limit_bytes == 900_000
    assert len(cut.value) <= 900_000
    kept = cut.event.tool_completed.output
    assert len(kept.encode()) > 850_000 and output.startswith(kept)
    assert all(not r.event.HasField("truncated") for r in records if r is not cut)


HOSTILE_IN_RUN = [
    ("thinking bytes", lambda run: run.thinking(b"\x00raw bytes"), TypeError, "text must be a str"),
    ("delta dict", lambda run: run.delta({"a": 1}), TypeError, "text must be a str"),
    ("NaN duration", lambda run: run.tool_completed("t", "out", math.nan), ValueError,
     "finite number"),
    ("negative duration", lambda run: run.tool_completed("t", "out", -5), ValueError,
     "finite number"),
    ("lone surrogate", lambda run: run.delta("bad \udc80 text"), ValueError, "not valid Unicode"),
    ("tool output int", lambda run: setattr(run.tool("t").__enter__(), "output", 42), TypeError,
     "output must be a str"),
]


@pytest.mark.parametrize("name,action,error,text", HOSTILE_IN_RUN, ids=[h[0] for h in HOSTILE_IN_RUN])
def test_hostile_values_inside_a_run_raise_clearly_and_the_run_still_ends(broker, worker, name,
                                                                          action, error, text):
    user = "hostile-" + uuid.uuid4().hex[:6]
    with pytest.raises(error, match=text):
        with worker.run(user, "q", run_id="r") as run:
            run.delta("NUL \x00 inside text is fine")  # valid UTF-8, kept as is
            run.delta("huge " * 400_000)  # 2 MB: cut, not refused
            action(run)
    assert worker.publisher.flush(10) == 0
    events = by_run(read_topic(broker))[(user, "r")]
    ends = terminals(events)
    assert len(ends) == 1 and ends[0].agent_failed.error_code == "exception"
    assert ends[0].agent_failed.message.startswith(error.__name__)
    assert events[1].message_delta.text == "NUL \x00 inside text is fine"
    assert list(events[2].truncated.fields) == ["text"]
    assert [e.run_seq for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("kwargs,error,text", [
    ({"user_id": 123}, TypeError, "user_id must be a str"),
    ({"user_id": ""}, ValueError, "user_id is empty"),
    ({"user_id": "a\x00b"}, ValueError, "control character"),
    ({"user_id": "u", "run_id": "r\n1"}, ValueError, "control character"),
    ({"user_id": "u", "run_id": "r" * 300}, ValueError, "over 256"),
    ({"user_id": "u", "thread_id": 5}, TypeError, "thread_id must be a str"),
    ({"user_id": "u", "attributes": {"k": 1}}, TypeError, "must be a str"),
], ids=["int-user", "empty-user", "nul-user", "newline-run", "long-run", "int-thread", "int-attr"])
def test_hostile_ids_are_refused_before_anything_is_published(worker, kwargs, error, text):
    before = worker.publisher.accepted
    with pytest.raises(error, match=text):
        worker.run(**kwargs)
    assert worker.publisher.accepted == before


def test_an_envelope_over_the_limit_is_a_permanent_error_and_consumes_no_run_seq(worker):
    with pytest.raises(PublishError) as raised:
        with worker.run("u-env", "q", trace_id="t" * 1_000_000):
            pass
    assert raised.value.code == "too_large" and raised.value.retryable is False
    assert "cannot be cut" in str(raised.value)
