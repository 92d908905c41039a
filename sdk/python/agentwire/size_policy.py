"""The size policy of producers/src/size_policy.cpp (FitToSize): an event over the limit has its
body's free-text fields cut to equal shares (a short one stays whole), each on a UTF-8 character
boundary, and is marked in `truncated`. Ids, names, run_seq, emitted_at and attributes never
change. The same inputs give the same bytes as the C++ publisher."""

# The body's free-text fields, by body: (JSON name, ...).
_BODY_TEXTS = {
    "agent_started": ("input",),
    "agent_thinking": ("text",),
    "tool_executing": ("input",),
    "tool_completed": ("output", "error"),
    "agent_completed": ("result",),
    "agent_failed": ("message",),
    "message_delta": ("text",),
}

# An upper bound for what the Truncation record adds (as in the C++ code).
_RECORD_BYTES = 3 + 2 * 9 + 2 * 6


def _cap_for(sizes, budget):
    """The largest size every text may keep so that together they need at most `budget` bytes,
    the shorter ones staying whole ("water filling")."""
    ordered = sorted(sizes)
    remaining = budget
    for i, size in enumerate(ordered):
        share = remaining // (len(ordered) - i)
        if size > share:
            return share
        remaining -= size
    return ordered[-1] if ordered else 0


def _cut(data: bytes, size: int) -> bytes:
    if len(data) <= size:
        return data
    while size > 0 and (data[size] & 0xC0) == 0x80:
        size -= 1
    return data[:size]


def fit_to_size(event, max_bytes: int) -> bool:
    """Cuts `event` (an AgentEvent) in place to at most `max_bytes` serialized bytes. False when
    only its envelope (ids, attributes) is already over the limit: it cannot be cut."""
    original = event.ByteSize()
    if original <= max_bytes:
        return True
    first_original = event.truncated.original_bytes if event.HasField("truncated") else 0
    kind = event.WhichOneof("body")
    body = getattr(event, kind) if kind else None
    names = _BODY_TEXTS.get(kind, ())
    values = [getattr(body, name).encode("utf-8") for name in names]
    sizes = [len(v) for v in values]
    envelope = original - sum(sizes) + (0 if event.HasField("truncated") else _RECORD_BYTES)
    if envelope >= max_bytes:
        return False
    budget = max_bytes - envelope
    for _ in range(4):
        cap = _cap_for(sizes, budget)
        cut = [_cut(v, cap) for v in values]
        for name, data in zip(names, cut):
            setattr(body, name, data.decode("utf-8"))
        record = event.truncated
        del record.fields[:]
        record.fields.extend(name for name, data, size in zip(names, cut, sizes)
                             if len(data) < size)
        record.original_bytes = first_original if first_original else original
        record.limit_bytes = max_bytes
        now = event.ByteSize()
        if now <= max_bytes:
            return True
        over = now - max_bytes
        if budget <= over:
            break
        budget -= over
        values = cut
    return False
