"""Publisher: confluent_kafka's Producer set up like producers/src/event_publisher.cpp.

Idempotent (acks=all), murmur2_random (the partition of a user is the one the gateway, the C++
publisher and Java clients compute), key = UTF-8 user_id, headers content-type and schema. A
background thread serves delivery reports; a full queue makes publish wait a bounded time."""

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from confluent_kafka import KafkaError, KafkaException, Producer

from agentwire.errors import ConfigError, PublishError, hint, is_retryable

log = logging.getLogger("agentwire")

DEFAULT_TOPIC = "agent.lifecycle.v1"
CONTENT_TYPE = b"application/x-protobuf"
EVENT_SCHEMA = b"agentwire.v1.AgentEvent"
# What librdkafka adds to key + value when it checks message.max.bytes (event_publisher.cpp).
RECORD_OVERHEAD_BYTES = 64 + 2 * 4 + 12 + 22 + 6 + 23


def default_producer_properties():
    """DefaultProducerProperties() of the C++ publisher."""
    return {
        "enable.idempotence": "true",
        "acks": "all",
        # The Java client's default, so workers in any language agree on a user's partition.
        # confluent_kafka's own default (consistent_random, CRC32) puts users elsewhere.
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": "5",
        "client.id": "agentwire-publisher",
        "allow.auto.create.topics": "false",
    }


@dataclass
class DeliveryReport:
    """What Kafka said about one event. ok: stored at (partition, offset). Otherwise `error` is
    a PublishError (code "delivery_failed") with librdkafka's name, retryable and a hint."""
    event_id: str
    user_id: str
    ok: bool
    partition: int = -1
    offset: int = -1
    error: Optional[PublishError] = None


def _error_name(error) -> str:
    try:
        return error.name()
    except Exception:  # pragma: no cover - an error object without a name
        return str(error)


class Publisher:
    """Publishes AgentEvents. Thread-safe.

    brokers: bootstrap servers; kafka: extra librdkafka properties (they win over the
    defaults); max_pending: events accepted and not yet acknowledged before publish waits;
    close_timeout: how long close() waits for acknowledgements."""

    def __init__(self, brokers=None, topic=DEFAULT_TOPIC, kafka=None, max_pending=100_000,
                 close_timeout=10.0, check_topic=True):
        if not isinstance(topic, str) or not topic:
            raise ConfigError("publisher: topic must be a non-empty string")
        if max_pending < 1:
            raise ConfigError("publisher: max_pending must be at least 1")
        properties = default_producer_properties()
        properties["queue.buffering.max.messages"] = str(max_pending + 1024)
        if brokers:
            properties["bootstrap.servers"] = brokers
        for key, value in (kafka or {}).items():
            properties[key] = str(value)
        if not properties.get("bootstrap.servers"):
            raise ConfigError("publisher: bootstrap.servers is not set (brokers= / AGENTWIRE_BROKERS)")
        properties["error_cb"] = self._on_error
        self.topic = topic
        self.properties = {k: v for k, v in properties.items() if k != "error_cb"}
        self.max_pending = max_pending
        self.close_timeout = close_timeout
        self.max_message_bytes = int(properties.get("message.max.bytes", 1_000_000))
        self.accepted = 0
        self.delivered = 0
        self.failed = 0
        self.fatal_error = None
        self._pending = 0
        self._space = threading.Condition()
        self._closing = False
        self._closed = False
        try:
            self._producer = Producer(properties)
        except KafkaException as e:
            raise ConfigError(f"publisher: {e.args[0].str()}") from None
        if check_topic:
            self.check_topic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="agentwire-publisher",
                                        daemon=True)
        self._thread.start()

    @property
    def max_event_bytes(self) -> int:
        """The size events are cut to: nine tenths of message.max.bytes (900,000 by default)."""
        return self.max_message_bytes // 10 * 9

    @property
    def pending(self) -> int:
        return self._pending

    def check_topic(self, timeout=10.0):
        """Raises ConfigError when the topic does not exist (permanent), PublishError when the
        cluster does not answer (retryable)."""
        try:
            metadata = self._producer.list_topics(timeout=timeout)
        except KafkaException as e:
            raise PublishError("unavailable", f"cluster metadata: {e.args[0].str()}. Hint: check "
                               "the brokers and that the cluster is up",
                               _error_name(e.args[0]), retryable=True) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ConfigError(f"topic {self.topic} does not exist on the cluster."
                              f"{hint('_UNKNOWN_TOPIC', self.topic)}")

    def partition_count(self, topic=None, timeout=10.0) -> int:
        metadata = self._producer.list_topics(topic or self.topic, timeout=timeout)
        return len(metadata.topics[topic or self.topic].partitions)

    def publish(self, event, on_delivery: Optional[Callable[[DeliveryReport], None]] = None,
                wait_for_space: float = 5.0, value: bytes = None):
        """Queues `event` (an AgentEvent with user_id, run_id and a body). Returns when librdkafka
        holds it; `on_delivery` runs (on the publisher's thread) when Kafka acknowledged it or
        gave up. Raises PublishError: queue_full (retryable) after `wait_for_space` seconds with
        max_pending events unacknowledged, closed, invalid_event, too_large, unknown_topic."""
        if self._closing:
            raise PublishError("closed", "the publisher is shutting down")
        if not event.user_id:
            raise PublishError("invalid_event", "missing user_id (it is the Kafka key)")
        if not event.run_id:
            raise PublishError("invalid_event", "missing run_id")
        if event.WhichOneof("body") is None:
            raise PublishError("invalid_event", "missing body (agent_started, agent_thinking, ...)")
        key = event.user_id.encode("utf-8")
        if value is None:
            value = event.SerializeToString()
        if len(key) + len(value) + RECORD_OVERHEAD_BYTES > self.max_message_bytes:
            raise self._too_large(len(key) + len(value))
        self._reserve(wait_for_space)
        event_id = event.event_id
        user_id = event.user_id
        topic = self.topic

        def report(err, msg):
            try:
                if err is None:
                    self.delivered += 1
                    result = DeliveryReport(event_id, user_id, True, msg.partition(), msg.offset())
                else:
                    self.failed += 1
                    name = _error_name(err)
                    result = DeliveryReport(event_id, user_id, False, error=PublishError(
                        "delivery_failed", f"{err.str()} ({'retryable' if is_retryable(name) else 'permanent'})."
                        f"{hint(name, topic)}", name))
                if on_delivery is not None:
                    try:
                        on_delivery(result)
                    except Exception:
                        log.exception("agentwire: a delivery callback raised; ignored")
            finally:
                self._release()

        headers = [("content-type", CONTENT_TYPE), ("schema", EVENT_SCHEMA)]
        deadline = None
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers,
                                       on_delivery=report)
                break
            except BufferError:
                # librdkafka's own queue (queue.buffering.max.kbytes) is full: wait, bounded.
                now = time.monotonic()
                deadline = deadline or now + max(0.0, wait_for_space)
                if now < deadline:
                    time.sleep(0.005)  # the publisher's thread serves the reports meanwhile
                    continue
                self._release()
                raise PublishError("queue_full", "librdkafka's queue is full "
                                       "(queue.buffering.max.messages / .kbytes); wait for "
                                       "deliveries" + hint("_QUEUE_FULL", topic),
                                       "_QUEUE_FULL") from None
            except KafkaException as e:
                self._release()
                error = e.args[0]
                name = _error_name(error)
                if name == "MSG_SIZE_TOO_LARGE":
                    raise self._too_large(len(key) + len(value), name) from None
                code = "unknown_topic" if name in ("_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_OR_PART") else "rejected"
                raise PublishError(code, error.str() + "." + hint(name, topic), name) from None
        self.accepted += 1

    def flush(self, timeout: float) -> int:
        """Waits up to `timeout` seconds for every accepted event's report; returns how many are
        still unacknowledged."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._space:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._space.wait(min(left, 0.05))
            return self._pending

    def close(self, timeout: float = None):
        """Flushes (up to `timeout`, default close_timeout), then reports what is left as failed
        (_PURGE_QUEUE, retryable) and stops the thread. Idempotent."""
        if self._closed:
            return
        self._closing = True
        left = self.flush(self.close_timeout if timeout is None else timeout)
        if left:
            log.error("agentwire: publisher closing with %d undelivered events; they are reported "
                      "as failed", left)
            try:
                self._producer.purge(in_queue=True, in_flight=True)
            except Exception:  # pragma: no cover - purge needs librdkafka >= 1.4
                pass
            self.flush(5.0)
        self._stop.set()
        self._thread.join()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _too_large(self, size, name=""):
        return PublishError("too_large", f"event is {size} bytes (key and value), over the limit "
                            f"of {self.max_message_bytes} bytes (message.max.bytes, with "
                            f"{RECORD_OVERHEAD_BYTES} bytes of record overhead). Hint: raise it "
                            "with kafka={'message.max.bytes': N} (the topic's max.message.bytes "
                            "must allow it too), or let Run cut large text fields to fit", name,
                            retryable=False)

    def _reserve(self, wait):
        with self._space:
            if self._pending < self.max_pending:
                self._pending += 1
                return
            deadline = time.monotonic() + max(0.0, wait)
            while self._pending >= self.max_pending:
                left = deadline - time.monotonic()
                if self._closing:
                    raise PublishError("closed", "the publisher is shutting down")
                if left <= 0:
                    raise PublishError("queue_full", f"{self._pending} events await delivery "
                                       "(max_pending); wait for deliveries" + hint("_QUEUE_FULL", self.topic))
                self._space.wait(min(left, 0.05))
            self._pending += 1

    def _release(self):
        with self._space:
            self._pending -= 1
            if self._pending == 0 or self._pending == self.max_pending - 1:
                self._space.notify_all()

    def _poll_loop(self):
        while not self._stop.is_set():
            self._producer.poll(0.05)
        self._producer.poll(0)

    def _on_error(self, error):
        name = _error_name(error)
        if error.fatal():
            self.fatal_error = PublishError("rejected", f"fatal producer error: {error.str()}", name,
                                            retryable=False)
            log.error("agentwire: kafka producer fatal error: %s: %s", name, error.str())
        else:
            # Brokers down, timeouts: librdkafka retries by itself.
            log.warning("agentwire: kafka producer error: %s: %s", name, error.str())
