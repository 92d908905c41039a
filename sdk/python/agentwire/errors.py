"""Errors a caller can act on: librdkafka's error name, retryable or permanent, and a hint that
says what to change (the same classification and hints as producers/src/event_publisher.cpp)."""


class ConfigError(ValueError):
    """Bad configuration (missing brokers, a topic that does not exist): fix it and restart."""


# Delivery failures that publishing the same event again may cure: librdkafka gave up after its
# own retries, or the publisher closed first. Everything else, including names this set does
# not know, is permanent.
RETRYABLE_ERROR_NAMES = frozenset({
    "_MSG_TIMED_OUT", "_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_QUEUE_FULL",
    "_PURGE_QUEUE", "_PURGE_INFLIGHT", "REQUEST_TIMED_OUT", "NETWORK_EXCEPTION",
    "LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION", "NOT_LEADER_OR_FOLLOWER",
    "BROKER_NOT_AVAILABLE", "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "KAFKA_STORAGE_ERROR",
})


def is_retryable(error_name: str) -> bool:
    return error_name in RETRYABLE_ERROR_NAMES


def hint(error_name: str, topic: str) -> str:
    """What to change, for the errors a user can act on ("" for the others)."""
    if error_name == "MSG_SIZE_TOO_LARGE":
        return (" Hint: the event is over the producer's message.max.bytes (Publisher("
                "kafka={'message.max.bytes': N})) or the topic's max.message.bytes on the broker;"
                " Run cuts large text fields to fit")
    if error_name in ("_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_OR_PART"):
        return (f" Hint: create topic {topic} (agentwire broker --topic {topic}:12, or "
                "infra/kafka on a real cluster) or fix the topic / AGENTWIRE_TOPIC")
    if error_name in ("TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED",
                      "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"):
        return (f" Hint: the client's principal needs Write on topic {topic} and "
                "IdempotentWrite on the cluster")
    if error_name in ("_MSG_TIMED_OUT", "_TIMED_OUT"):
        return (" Hint: not acknowledged within message.timeout.ms; check that the brokers are "
                "reachable (brokers / AGENTWIRE_BROKERS), then publish the event again")
    if error_name in ("_PURGE_QUEUE", "_PURGE_INFLIGHT"):
        return (" Hint: the publisher closed before Kafka acknowledged the event (close_timeout);"
                " publish it again")
    if error_name == "_QUEUE_FULL":
        return (" Hint: more events await delivery than max_pending; wait for deliveries, raise "
                "max_pending or wait_for_space, or check that the brokers are reachable")
    return ""


class PublishError(Exception):
    """An event was not published (raised by publish) or not delivered (DeliveryReport.error).

    `code`: "queue_full", "invalid_event", "too_large", "unknown_topic", "rejected", "closed",
    or "delivery_failed". `error_name`: librdkafka's name ("_MSG_TIMED_OUT", ...), "" when the
    refusal is agentwire's own. `retryable`: whether publishing the same event again may work.
    """

    def __init__(self, code, message, error_name="", retryable=None):
        if retryable is None:
            retryable = code == "queue_full" or is_retryable(error_name)
        self.code = code
        self.error_name = error_name
        self.retryable = retryable
        self.detail = message
        kind = "retryable" if retryable else "permanent"
        name = f", {error_name}" if error_name else ""
        super().__init__(f"{code.replace('_', ' ')} ({kind}{name}): {message}")
