#!/usr/bin/python3
"""An agent worker written in Python: publishes complete agent runs to agentwire's topic with
confluent-kafka and protoc-generated classes, the way a team outside the C++ code base would.

It does what docs/schema.md asks of any producer: key = UTF-8 user_id, value = serialized
agentwire.v1.AgentEvent, headers content-type and schema, idempotent, acks=all and the
Java-compatible murmur2 partitioner. Nothing here comes from agentwire's C++ code.

Writes one JSON line per event to --report, in publish order:
  {"event_id", "user_id", "partition", "offset", "event": <the event as the gateway's JSON>}
where "event" is json_format's rendering with proto field names and default values, plus
"type" (the body's name), i.e. what a WebSocket client should receive unchanged.

Exit codes: 0 everything delivered, 1 a delivery failed or timed out, 2 bad usage / imports.
Run with Debian's /usr/bin/python3 (python3-confluent-kafka, python3-protobuf) and
PYTHONPATH (or --proto-dir) pointing at `protoc --python_out` of schemas/agentwire/v1/events.proto.
"""

import argparse
import json
import sys
import time
import uuid

CONTENT_TYPE = b"application/x-protobuf"
SCHEMA = b"agentwire.v1.AgentEvent"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="agent.lifecycle.v1")
    parser.add_argument("--users", required=True, help="comma-separated user ids")
    parser.add_argument("--runs-per-user", type=int, default=2)
    parser.add_argument("--short-runs", action="store_true",
                        help="two events per run (started, completed) instead of a full run")
    parser.add_argument("--report", required=True, help="JSON-lines file of what was published")
    parser.add_argument("--proto-dir", help="directory holding agentwire/v1/events_pb2.py")
    parser.add_argument("--flush-timeout", type=float, default=60.0)
    return parser.parse_args()


def import_modules(proto_dir):
    if proto_dir:
        sys.path.insert(0, proto_dir)
    try:
        from confluent_kafka import Producer  # noqa: F401
        from google.protobuf import json_format  # noqa: F401
        from agentwire.v1 import events_pb2  # noqa: F401
    except ImportError as error:
        print(f"python_worker: {error} (interpreter {sys.executable}; needs python3-confluent-kafka, "
              "python3-protobuf and events_pb2 from protoc --python_out on PYTHONPATH/--proto-dir)",
              file=sys.stderr)
        sys.exit(2)
    return Producer, json_format, events_pb2


def run_events(events_pb2, user, run_index, short):
    """The events of one run, run_seq 1..n, bodies with text that JSON and protobuf must carry
    byte for byte (quotes, newlines, non-ASCII)."""
    run_id = f"py-run-{user}-{run_index}-{uuid.uuid4().hex[:8]}"
    thread_id = f"py-thread-{user}-{run_index % 2}"
    trace_id = uuid.uuid4().hex
    bodies = []
    if short:
        bodies = [("agent_started", {"input": f"short run {run_index}", "model": "py-model"}),
                  ("agent_completed", {"result": "done", "duration_ms": 7})]
    else:
        call_id = f"call-{run_index}"
        bodies = [
            ("agent_started", {"input": f"Résumé the \"news\" for {user}\nplease", "model": "py-model"}),
            ("agent_thinking", {"text": "thinking… ✓ tabs\tand\r\nnewlines"}),
            ("tool_executing", {"tool_name": "web_search", "input": '{"q": "kafka \\"murmur2\\""}',
                                "tool_call_id": call_id}),
            ("tool_completed", {"tool_name": "web_search", "output": "3 results\n- a\n- b\n- c",
                                "duration_ms": 812 + run_index, "tool_call_id": call_id}),
            ("message_delta", {"text": "Here is 日本語 and emoji 🚀"}),
        ]
        if run_index % 3 == 2:
            bodies.append(("agent_failed", {"error_code": "tool_error", "message": "quota\nexceeded"}))
        else:
            bodies.append(("agent_completed", {"result": "ok", "duration_ms": 4321}))

    events = []
    for seq, (body_name, fields) in enumerate(bodies, start=1):
        event = events_pb2.AgentEvent()
        event.event_id = f"py-{uuid.uuid4().hex}"
        event.user_id = user
        event.thread_id = thread_id
        event.run_id = run_id
        event.run_seq = seq
        # Microseconds, so the RFC 3339 rendering carries 6 fractional digits.
        event.emitted_at.FromMicroseconds(int(time.time() * 1_000_000) + seq)
        event.agent_name = "python-researcher"
        event.trace_id = trace_id
        event.attributes["language"] = "python"
        event.attributes["client"] = "confluent-kafka"
        body = getattr(event, body_name)
        for name, value in fields.items():
            setattr(body, name, value)
        events.append((body_name, event))
    return events


def main():
    args = parse_args()
    Producer, json_format, events_pb2 = import_modules(args.proto_dir)
    users = [u for u in args.users.split(",") if u]
    if not users or args.runs_per_user < 1:
        print("python_worker: need --users and --runs-per-user >= 1", file=sys.stderr)
        return 2

    producer = Producer({
        "bootstrap.servers": args.brokers,
        "enable.idempotence": True,
        "acks": "all",
        # The Java client's default partitioner; librdkafka's default (consistent_random, CRC32)
        # would put users in other partitions than agentwire's gateway and replay expect.
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "client.id": "agentwire-python-worker",
    })

    # Runs of different users interleave, as they would on a busy worker; each user's own
    # events keep their order (idempotent producer, one partition per user).
    runs = [run_events(events_pb2, user, run_index, args.short_runs)
            for run_index in range(args.runs_per_user) for user in users]
    published = []  # in publish order
    reports = {}    # event_id -> (partition, offset, error)

    position = [0] * len(runs)
    remaining = sum(len(r) for r in runs)
    while remaining:
        for index, run in enumerate(runs):
            if position[index] >= len(run):
                continue
            body_name, event = run[position[index]]
            position[index] += 1
            remaining -= 1
            event_id = event.event_id
            while True:
                try:
                    producer.produce(
                        args.topic, key=event.user_id.encode("utf-8"),
                        value=event.SerializeToString(),
                        headers=[("content-type", CONTENT_TYPE), ("schema", SCHEMA)],
                        on_delivery=lambda error, message, event_id=event_id: reports.__setitem__(
                            event_id, (message.partition(), message.offset(),
                                       str(error) if error else None)))
                    break
                except BufferError:
                    producer.poll(0.1)
            rendered = json_format.MessageToDict(event, preserving_proto_field_name=True,
                                                 including_default_value_fields=True)
            rendered["type"] = body_name
            published.append((event, rendered))
            producer.poll(0)

    left = producer.flush(args.flush_timeout)
    failed = 0
    with open(args.report, "w", encoding="utf-8") as out:
        for event, rendered in published:
            partition, offset, error = reports.get(event.event_id, (-1, -1, "no delivery report"))
            if error:
                failed += 1
                print(f"python_worker: {event.event_id} user={event.user_id}: {error}",
                      file=sys.stderr)
            out.write(json.dumps({"event_id": event.event_id, "user_id": event.user_id,
                                  "partition": partition, "offset": offset, "event": rendered},
                                 ensure_ascii=False) + "\n")
    print(f"python_worker: published={len(published)} delivered={len(published) - failed} "
          f"failed={failed} undelivered_after_flush={left}", file=sys.stderr)
    return 0 if failed == 0 and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
