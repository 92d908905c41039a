"""Hermetic checks of the SDK's wire helpers (no processes): murmur2 against Kafka's own test
vectors, event ids, the error classification."""

import time

from agentwire import PublishError, murmur2, new_event_id, partition_for_key
from agentwire.errors import is_retryable


def signed(value):
    return value - 2**32 if value >= 2**31 else value


def test_murmur2_matches_kafkas_java_test_vectors():
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2
    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
               "a-little-bit-longer-string": -1486304829,
               "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, "abc": 479470107}
    assert {k: signed(murmur2(k.encode())) for k in vectors} == vectors
    assert partition_for_key("alice", 12) == (murmur2(b"alice") & 0x7FFFFFFF) % 12


def test_event_ids_are_time_ordered_crockford_ulids():
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 and set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    millis = 0
    for c in ids[0][:10]:
        millis = millis * 32 + alphabet.index(c)
    assert abs(millis - time.time() * 1000) < 5000


def test_errors_say_retryable_or_permanent_with_librdkafkas_name():
    assert is_retryable("_MSG_TIMED_OUT") and not is_retryable("TOPIC_AUTHORIZATION_FAILED")
    error = PublishError("delivery_failed", "Local: Message timed out", "_MSG_TIMED_OUT")
    assert error.retryable and "retryable, _MSG_TIMED_OUT" in str(error)
    assert not PublishError("rejected", "x", "SOMETHING_NEW").retryable
