"""Test support for the Python SDK tests: real agentwire processes (broker, gateway, supervisor,
the C++ `emit`), a topic reader, and a minimal RFC 6455 WebSocket client (Debian's base has no
Python WebSocket library)."""

import base64
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, TopicPartition

from agentwire.v1 import control_pb2, events_pb2

BINARY = os.environ.get("AGENTWIRE_BINARY") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "ci", "cli", "agentwire")
TOPIC = "agent.lifecycle.v1"
SECRET = "python-sdk-tests-secret-0123456789abcdef"
HERE = os.path.dirname(os.path.abspath(__file__))


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Process:
    def __init__(self, args, name, env=None):
        self.name = name
        self.log_path = tempfile.mktemp(prefix=f"aw-{name}-", suffix=".log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Broker:
    """`agentwire broker`: the embedded Kafka with the event, .dlq, .control, .heartbeat topics."""

    def __init__(self):
        fd, self.bootstrap_file = tempfile.mkstemp(prefix="aw-bootstrap-")
        os.close(fd)
        os.unlink(self.bootstrap_file)
        self.process = Process([BINARY, "broker", "--bootstrap-file", self.bootstrap_file], "broker")
        self.servers = wait_for(self._read, 30, "the broker's bootstrap file")

    def _read(self):
        try:
            with open(self.bootstrap_file) as f:
                text = f.read().strip()
            return text or None
        except FileNotFoundError:
            if self.process.proc.poll() is not None:
                raise AssertionError("broker exited: " + self.process.output())
            return None

    def pause(self):
        self.process.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.resume()
        self.process.stop()


class Gateway:
    def __init__(self, broker, *extra):
        self.port_file = tempfile.mktemp(prefix="aw-port-")
        self.process = Process([BINARY, "gateway", "--brokers", broker.servers, "--port", "0",
                                "--port-file", self.port_file, "--jwt-secret", SECRET,
                                "--threads", "1", *extra], "gateway")
        self.port = int(wait_for(self._port, 30, "the gateway's port file"))
        wait_for(lambda: self.http("GET", "/readyz")[0] == 200, 60, "the gateway's /readyz")

    def _port(self):
        if self.process.proc.poll() is not None:
            raise AssertionError("gateway exited: " + self.process.output())
        try:
            with open(self.port_file) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def http(self, method, path, token=None, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode()
        except OSError:
            return 0, ""
        finally:
            connection.close()

    def stop(self):
        self.process.stop()


def token(user):
    return subprocess.run([BINARY, "token", "--user", user, "--ttl", "1h"], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "AGENTWIRE_JWT_SECRET": SECRET}).stdout.strip()


def cpp_emit(broker, events):
    """Publishes JSON events with the C++ publisher (`agentwire emit`, RunEmitter's size
    policy with --truncate). Returns its stderr."""
    lines = "".join(json.dumps(e) + "\n" for e in events)
    result = subprocess.run([BINARY, "emit", "--brokers", broker.servers, "--truncate"],
                            input=lines, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stderr


class Record:
    __slots__ = ("partition", "offset", "key", "value", "event", "headers")

    def __init__(self, message, parse):
        self.partition = message.partition()
        self.offset = message.offset()
        self.key = message.key()
        self.value = message.value()
        self.headers = dict(message.headers() or [])
        self.event = parse(self.value)


def _parse_event(value):
    event = events_pb2.AgentEvent()
    event.ParseFromString(value)
    return event


def _parse_control(value):
    record = control_pb2.ControlRecord()
    record.ParseFromString(value)
    return record


def read_topic(broker, topic=TOPIC, control=False):
    """Every record of `topic` up to its current end, in (partition, offset) order."""
    consumer = Consumer({"bootstrap.servers": broker.servers, "group.id": "aw-test-reader",
                         "enable.auto.commit": "false", "enable.partition.eof": "false"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        records = []
        positions = {p: 0 for p in ends}
        deadline = time.monotonic() + 60
        while any(positions[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, "reading the topic timed out"
            for message in consumer.consume(1000, 0.5):
                if message.error():
                    continue
                records.append(Record(message, _parse_control if control else _parse_event))
                positions[message.partition()] = message.offset() + 1
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()


def by_run(records):
    runs = {}
    for record in records:
        runs.setdefault((record.event.user_id, record.event.run_id), []).append(record.event)
    return runs


def terminals(events):
    return [e for e in events if e.WhichOneof("body") in ("agent_completed", "agent_failed")]


def run_python(script, *args, env=None):
    """Starts a Python worker script (Debian's interpreter, this PYTHONPATH)."""
    return subprocess.Popen([sys.executable, os.path.join(HERE, script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


class WebSocket:
    """A minimal RFC 6455 client: text frames, masked sends, ping answered, close."""

    def __init__(self, port, path, token):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n")
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed during the handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise AssertionError(f"handshake refused: {head.decode(errors='replace')}")

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_text(self, text, opcode=1):
        payload = text.encode() if isinstance(text, str) else text
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self, timeout=10.0):
        """The next text message as JSON; None on timeout."""
        self.sock.settimeout(timeout)
        message = b""
        try:
            while True:
                first, second = self._read(2)
                opcode = first & 0x0F
                n = second & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read(8))[0]
                payload = self._read(n)
                if opcode == 9:
                    self.send_text(payload, opcode=10)
                    continue
                if opcode == 8:
                    raise EOFError(f"closed by the server: {payload[2:].decode(errors='replace')}")
                if opcode in (0, 1, 2):
                    message += payload
                    if first & 0x80:
                        return json.loads(message)
        except socket.timeout:
            return None

    def close(self):
        try:
            self.send_text(struct.pack(">H", 1000), opcode=8)
        except OSError:
            pass
        self.sock.close()
