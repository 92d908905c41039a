"""Event ids as schemas/src/event_id.cpp makes them: 26-character ULIDs, 10 Crockford base32
characters of Unix milliseconds, then 16 of randomness (80 bits): time-ordered, unique."""

import os
import random
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Seeded from the OS like the C++ thread_local mt19937_64, and again in a forked child so two
# processes never share a sequence.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_event_id(now_ms=None) -> str:
    millis = time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)
    rand = _random.getrandbits(80)
    chars = [_CROCKFORD[(millis >> ((9 - i) * 5)) & 31] for i in range(10)]
    chars.extend(_CROCKFORD[(rand >> ((15 - i) * 5)) & 31] for i in range(16))
    return "".join(chars)
