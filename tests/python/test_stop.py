"""The user's Stop, sent through the gateway (POST /v1/runs/{id}/cancel and the WebSocket cancel
frame), reaches a Python run's code, which ends the run cancelled, once. A cancel naming another
user is ignored."""

import asyncio
import threading
import time
import uuid

from agentwire import Worker
from agentwire.v1 import control_pb2
from aw_support import Gateway, WebSocket, by_run, read_topic, terminals, token, wait_for
from confluent_kafka import Producer


def stop_through_gateway(gateway, user, run_id):
    bearer = token(user)

    def accepted():
        status, body = gateway.http("POST", f"/v1/runs/{run_id}/cancel", bearer)
        assert status in (202, 404), (status, body)  # 404 until the replica read the start
        return status == 202

    wait_for(accepted, 20, "202 from the gateway's cancel", interval=0.1)


def test_stop_reaches_async_and_sync_runs_which_end_cancelled(broker):
    gateway = Gateway(broker)
    worker = Worker(broker.servers, agent_name="py")
    prefix = "stop-" + uuid.uuid4().hex[:6]
    seen = {}
    try:
        async def agent(user):
            async with worker.run(user, "write a long essay", run_id=f"{user}-async") as run:
                run.thinking("calling the model")
                started = asyncio.get_running_loop().time()
                try:
                    await asyncio.sleep(3600)  # the LLM call Stop aborts
                finally:
                    seen["async"] = (run.stopped.is_set(), asyncio.get_running_loop().time() - started)
            return "after the run"  # Stop ended the run; the caller goes on

        def sync_agent(user, ready):
            with worker.run(user, "count", run_id=f"{user}-sync") as run:
                fired = []
                run.on_cancel(lambda: fired.append(time.monotonic()))
                ready.set()
                while True:
                    run.raise_if_stopped()  # the agent polls the flag between steps
                    run.delta(".")
                    time.sleep(0.05)
            seen["sync"] = fired

        async def main():
            task = asyncio.create_task(agent(f"{prefix}-a"))
            ready = threading.Event()
            thread = threading.Thread(target=lambda: _swallow(sync_agent, f"{prefix}-s", ready))
            thread.start()
            ready.wait(10)
            await asyncio.sleep(0.2)
            await asyncio.to_thread(stop_through_gateway, gateway, f"{prefix}-a", f"{prefix}-a-async")
            # The sync run through the WebSocket cancel frame.
            ws = WebSocket(gateway.port, "/v1/events", token(f"{prefix}-s"))
            ws.send_text('{"type":"cancel","run_id":"%s-s-sync"}' % prefix)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                frame = await asyncio.to_thread(ws.receive, 1.0)
                if frame and frame["type"] == "cancel_result":
                    assert frame["result"] == "requested", frame
                    break
            ws.close()
            assert await asyncio.wait_for(task, 20) == "after the run"
            await asyncio.to_thread(thread.join, 20)

        asyncio.run(main())
        assert seen["async"][0] is True and seen["async"][1] < 15
        assert worker.control.cancels_honoured == 2
        assert worker.publisher.flush(10) == 0
        runs = {k: v for k, v in by_run(read_topic(broker)).items() if k[0].startswith(prefix)}
        assert len(runs) == 2
        for events in runs.values():
            ends = terminals(events)
            assert len(ends) == 1
            assert ends[0].agent_failed.error_code == "cancelled"
            assert ends[0].agent_failed.message == "stopped by the user"
            assert events[-1].event_id == ends[0].event_id
    finally:
        worker.close()
        gateway.stop()


def _swallow(function, *args):
    from agentwire import RunStopped
    try:
        function(*args)
    except RunStopped:
        pass


def test_a_cancel_naming_another_user_is_ignored(broker):
    worker = Worker(broker.servers, agent_name="py")
    user = "victim-" + uuid.uuid4().hex[:6]
    try:
        with worker.run(user, "q", run_id=f"{user}-run") as run:
            forged = control_pb2.ControlRecord(user_id="mallory", run_id=f"{user}-run")
            forged.cancel.request_id = "forged-1"
            forged.cancel.requested_by = "gateway"
            producer = Producer({"bootstrap.servers": broker.servers,
                                 "partitioner": "murmur2_random"})
            producer.produce("agent.lifecycle.v1.control", key=b"mallory",
                             value=forged.SerializeToString())
            producer.flush(10)
            wait_for(lambda: worker.control.forged_cancels == 1, 10, "the forged cancel to be read")
            assert not run.stop_requested
            run.result = "finished anyway"
        worker.publisher.flush(10)
        events = by_run(read_topic(broker))[(user, f"{user}-run")]
        assert [e.WhichOneof("body") for e in terminals(events)] == ["agent_completed"]
    finally:
        worker.close()
