"""A broker outage mid-run (the embedded Kafka frozen with SIGSTOP: connections stay open and
nothing answers). Events wait and arrive in order once it is back; with a short
message.timeout.ms the caller gets retryable _MSG_TIMED_OUT reports it can see. Nothing is
reported delivered that is not in the log at the reported offset."""

import threading
import time
import uuid

from agentwire import Worker
from aw_support import by_run, read_topic, terminals


def reports_against_log(broker, reports):
    log = {(r.partition, r.offset): r.event.event_id for r in read_topic(broker)}
    delivered = [r for r in reports if r.ok]
    phantom = [r for r in delivered if log.get((r.partition, r.offset)) != r.event_id]
    return delivered, phantom


def test_events_wait_through_an_outage_and_arrive_in_order(broker):
    reports = []
    lock = threading.Lock()

    def on_delivery(report):
        with lock:
            reports.append(report)

    worker = Worker(broker.servers, agent_name="py", run_control=False)
    user = "outage-" + uuid.uuid4().hex[:6]
    try:
        with worker.run(user, "q", run_id="r", on_delivery=on_delivery) as run:
            run.thinking("before")
            assert worker.publisher.flush(10) == 0
            broker.pause()
            try:
                for i in range(200):
                    run.delta(f"during {i}")
                time.sleep(3)
                assert worker.publisher.pending > 0  # nothing acknowledged while frozen
            finally:
                broker.resume()
            run.thinking("after")
        assert worker.publisher.flush(60) == 0
    finally:
        worker.close()
    events = by_run(read_topic(broker))[(user, "r")]
    assert [e.run_seq for e in events] == list(range(1, 205))  # 0 lost, duplicated, reordered
    assert len(terminals(events)) == 1
    delivered, phantom = reports_against_log(broker, reports)
    assert len(delivered) == len(reports) == 204 and phantom == []


def test_a_long_outage_reports_retryable_timeouts_and_nothing_false(broker):
    reports = []
    lock = threading.Lock()

    def on_delivery(report):
        with lock:
            reports.append(report)

    worker = Worker(broker.servers, agent_name="py", run_control=False,
                    kafka={"message.timeout.ms": 2000}, close_timeout=5)
    user = "timeout-" + uuid.uuid4().hex[:6]
    try:
        run = worker.run(user, "q", run_id="r", on_delivery=on_delivery)
        with run:
            assert worker.publisher.flush(10) == 0
            broker.pause()
            try:
                for i in range(50):
                    run.delta(f"during {i}")
                time.sleep(4)  # past message.timeout.ms
            finally:
                broker.resume()
            worker.publisher.flush(10)
            run.fail("timeout", "the model did not answer")
        worker.publisher.flush(30)
    finally:
        worker.close()
    failed = [r for r in reports if not r.ok]
    assert failed, "expected timed-out deliveries"
    for report in failed:
        assert report.error.error_name == "_MSG_TIMED_OUT"
        assert report.error.retryable is True
        assert "Hint:" in str(report.error)
    delivered, phantom = reports_against_log(broker, reports)
    assert phantom == []
    assert len(delivered) + len(failed) == len(reports) == 52
