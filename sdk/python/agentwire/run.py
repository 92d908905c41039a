"""Run: one agent run, as producers/src/run_emitter.cpp's RunEmitter, and a context manager.

    with worker.run(user_id="alice", input="hi") as run:      # agent_started
        run.thinking("...")                                    # agent_thinking
        with run.tool("web_search", '{"q": "kafka"}') as call:  # tool_executing
            call.output = search(...)                          # tool_completed (timed)
        run.delta("chunk")                                     # message_delta
        run.result = "answer"
    # agent_completed on exit; agent_failed{exception} with the exception's type and message
    # (re-raised); agent_failed{cancelled} on Stop, CancelledError, KeyboardInterrupt.

Exactly one terminal event per run: run_seq 1, 2, 3, ... with no holes (only an accepted event
consumes a number), event ids are ULIDs, emitted_at is the wall clock to the microsecond and
never goes backwards within the run, oversized text is cut to fit and marked (`truncated`).
"""

import asyncio
import logging
import math
import threading
import time
import weakref

from agentwire.errors import PublishError
from agentwire.ids import new_event_id
from agentwire.size_policy import fit_to_size

log = logging.getLogger("agentwire")

_TERMINAL = ("agent_completed", "agent_failed")
_MAX_ID_BYTES = 256  # the gateway refuses longer run ids in a Stop (bad_run_id)
_UINT32_MAX = 2**32 - 1


class RunStopped(Exception):
    """Raised by Run.raise_if_stopped() after the user pressed Stop; the run ends cancelled."""


def _events_pb2():
    from agentwire.v1 import events_pb2  # generated from schemas/ by the build
    return events_pb2


def _check_id(name, value, required):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} ({value!r:.60})")
    if required and not value:
        raise ValueError(f"{name} is empty; it is required ({'the Kafka key' if name == 'user_id' else 'the run'})")
    encoded = _check_utf8(name, value)
    if len(encoded) > _MAX_ID_BYTES:
        raise ValueError(f"{name} is {len(encoded)} bytes, over {_MAX_ID_BYTES}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{name} {value!r:.80} contains a control character (NUL, newline, ...); "
                         "ids must be printable (the gateway refuses them in a Stop)")
    return value


def _check_utf8(name, value):
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid Unicode text ({e.reason} at {e.start}); "
                         "decode bytes with errors='replace' first") from None


def _check_text(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}; serialize it "
                        "(json.dumps) first")
    _check_utf8(name, value)
    return value


def _check_duration(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of milliseconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {value!r}")
    return min(int(value), _UINT32_MAX)


class ToolCall:
    """One tool call of a run: tool_executing on entry, tool_completed on exit with the time it
    took, `output` (set it) or the exception's type and message in `error` (re-raised)."""

    def __init__(self, run, tool_name, input, tool_call_id):
        self.run = run
        self.tool_name = _check_text("tool_name", tool_name)
        self.input = _check_text("input", input)
        self.tool_call_id = _check_text("tool_call_id", tool_call_id)
        self._output = ""
        self.error = ""
        self._started = None
        self.duration_ms = None

    @property
    def output(self):
        return self._output

    @output.setter
    def output(self, value):
        self._output = _check_text("output", value)

    def __enter__(self):
        self.run.tool_executing(self.tool_name, self.input, self.tool_call_id)
        self._started = time.monotonic()
        return self

    def __exit__(self, exc_type, exc, tb):
        elapsed = int((time.monotonic() - self._started) * 1000)
        if exc is not None and not self.error:
            self.error = "cancelled" if _is_cancel(exc) else _describe(exc)
        if self.run.finished:
            return False  # ended meanwhile (Stop, SIGTERM): nothing more to say about the call
        self.run.tool_completed(self.tool_name, "" if exc is not None else self._output,
                                elapsed if self.duration_ms is None else self.duration_ms,
                                error=self.error, tool_call_id=self.tool_call_id)
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb):
        return self.__exit__(exc_type, exc, tb)


def _is_cancel(exc):
    return isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit, RunStopped))


def _describe(exc):
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Run:
    """One agent run. Thread-safe (calls are serialized so run_seq order is publish order).

    Each event method returns once the publisher holds the event and raises PublishError when
    it does not (run_seq is then not consumed); after the terminal event they raise
    PublishError("closed"). Use it as a context manager (sync or async) so the run always ends;
    a Run collected without an end publishes agent_failed{run_abandoned} like RunEmitter."""

    def __init__(self, publisher, user_id, input="", *, model="", thread_id="", run_id=None,
                 agent_name="", trace_id="", attributes=None, control=None, lease=None,
                 wait_for_space=5.0, end_timeout=10.0, on_delivery=None, max_event_bytes=0,
                 cancel_task=True, registry=None):
        self._pb = _events_pb2()
        self.user_id = _check_id("user_id", user_id, True)
        self.thread_id = _check_id("thread_id", thread_id, False)
        self.run_id = _check_id("run_id", new_event_id() if run_id is None else run_id, True)
        self.agent_name = _check_text("agent_name", agent_name)
        self.trace_id = _check_text("trace_id", trace_id)
        self.attributes = {}
        for key, value in (attributes or {}).items():
            self.attributes[_check_text("attribute key", key)] = _check_text(f"attributes[{key!r}]", value)
        self.input = _check_text("input", input)
        self.model = _check_text("model", model)
        self.publisher = publisher
        self.control = control
        self.lease_ms = 0
        if control is not None:
            self.lease_ms = _check_duration("lease", (lease if lease is not None else control.lease) * 1000)
        self.wait_for_space = wait_for_space
        self.end_timeout = end_timeout
        self.on_delivery = on_delivery
        self.max_event_bytes = max_event_bytes or publisher.max_event_bytes
        self.cancel_task = cancel_task
        self.result = ""
        self.end = None  # ("agent_completed" | "agent_failed", error_code, message) once ended
        self.stop_event = threading.Event()  # set when the user pressed Stop
        self.stop_request_id = ""
        self._async_stop = None
        self._loop = None
        self._task = None
        self._cancelled_task = False
        self._handlers = []
        self._lock = threading.RLock()
        self._next_seq = 1
        self._last_us = 0
        self._started_at = None
        self._finished = False
        self._registration = 0
        self._registry = registry
        self._tool_seq = 0

    # --- state -------------------------------------------------------------------------------
    @property
    def finished(self):
        return self._finished

    @property
    def next_seq(self):
        return self._next_seq

    @property
    def stop_requested(self):
        """True once the user pressed Stop (poll it between steps)."""
        return self.stop_event.is_set()

    @property
    def stopped(self):
        """An asyncio.Event set when the user pressed Stop (inside `async with` only)."""
        if self._async_stop is None:
            raise RuntimeError("run.stopped is an asyncio.Event for `async with` runs; use "
                               "run.stop_event (threading.Event) or run.stop_requested")
        return self._async_stop

    def raise_if_stopped(self):
        if self.stop_event.is_set():
            raise RunStopped(f"run {self.run_id} stopped by the user")

    def on_cancel(self, handler):
        """handler() runs once when the user presses Stop (on the control thread: keep it short,
        e.g. abort the LLM call), or at once if Stop came already."""
        with self._lock:
            if not self.stop_event.is_set():
                self._handlers.append(handler)
                return
        handler()

    # --- events ------------------------------------------------------------------------------
    def started(self):
        body = self._pb.AgentEvent()
        body.agent_started.input = self.input
        body.agent_started.model = self.model
        body.agent_started.lease_ms = self.lease_ms
        self._emit(body)
        if self._started_at is None:
            self._started_at = time.monotonic()

    def thinking(self, text):
        event = self._pb.AgentEvent()
        event.agent_thinking.text = _check_text("text", text)
        self._emit(event)

    def delta(self, text):
        """A chunk of the streamed answer (message_delta)."""
        event = self._pb.AgentEvent()
        event.message_delta.text = _check_text("text", text)
        self._emit(event)

    message_delta = delta

    def tool(self, tool_name, input="", tool_call_id=None):
        """A context manager (sync and async) around one tool call."""
        if tool_call_id is None:
            with self._lock:
                self._tool_seq += 1
                tool_call_id = f"call-{self._tool_seq}"
        return ToolCall(self, tool_name, input, tool_call_id)

    def tool_executing(self, tool_name, input="", tool_call_id=""):
        event = self._pb.AgentEvent()
        body = event.tool_executing
        body.tool_name = _check_text("tool_name", tool_name)
        body.input = _check_text("input", input)
        body.tool_call_id = _check_text("tool_call_id", tool_call_id)
        self._emit(event)

    def tool_completed(self, tool_name, output="", duration_ms=0, error="", tool_call_id=""):
        event = self._pb.AgentEvent()
        body = event.tool_completed
        body.tool_name = _check_text("tool_name", tool_name)
        body.output = _check_text("output", output)
        body.error = _check_text("error", error)
        body.duration_ms = _check_duration("duration_ms", duration_ms)
        body.tool_call_id = _check_text("tool_call_id", tool_call_id)
        self._emit(event)

    def complete(self, result=None, duration_ms=None):
        """Ends the run now with agent_completed (the context manager does it on exit)."""
        event = self._pb.AgentEvent()
        event.agent_completed.result = _check_text("result", self.result if result is None else result)
        event.agent_completed.duration_ms = _check_duration(
            "duration_ms", self._elapsed_ms() if duration_ms is None else duration_ms)
        self._emit(event)

    def fail(self, error_code, message):
        """Ends the run now with agent_failed (error_code: "tool_error", "timeout", ...)."""
        event = self._pb.AgentEvent()
        event.agent_failed.error_code = _check_text("error_code", error_code)
        event.agent_failed.message = _check_text("message", message)
        self._emit(event)

    def cancel(self, message="stopped by the user"):
        """The user's Stop, confirmed: agent_failed{cancelled}."""
        self.fail("cancelled", message)

    # --- context managers --------------------------------------------------------------------
    def __enter__(self):
        self.started()
        if self._registry is not None:
            self._registry.add(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        self._end_on_exit(exc)
        return False

    async def __aenter__(self):
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._async_stop = asyncio.Event()
        self.__enter__()
        if self.stop_event.is_set():
            self._async_stop.set()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self._end_on_exit(exc)
        if self._cancelled_task and isinstance(exc, asyncio.CancelledError):
            # Our own task.cancel() after a Stop: the run ended cancelled, the caller goes on.
            if self._task is not None and hasattr(self._task, "uncancel"):
                self._task.uncancel()
            return True
        return False

    def _end_on_exit(self, exc):
        if self._registry is not None:
            self._registry.discard(self)
        if self._finished:
            return
        try:
            if exc is None:
                self._end_with(self.complete)
            elif self.stop_event.is_set() or _is_cancel(exc):
                message = "stopped by the user" if self.stop_event.is_set() else (
                    f"cancelled: {_describe(exc)}")
                self._end_with(lambda: self.cancel(message))
            else:
                self._end_with(lambda: self.fail("exception", _describe(exc)))
        except PublishError as e:
            self._give_up(e)
            if exc is None:
                raise
            log.error("agentwire: could not publish the end of run %s (user %s): %s", self.run_id,
                      self.user_id, e)

    def _end_with(self, publish_end):
        """A terminal event waits longer than the others for room: it is the one that matters."""
        deadline = time.monotonic() + self.end_timeout
        while True:
            try:
                publish_end()
                return
            except PublishError as e:
                if self._finished or not e.retryable or time.monotonic() >= deadline:
                    if self._finished:
                        return
                    raise

    def _give_up(self, error):
        # Not even the end got out: stop heartbeating, so the supervisor ends the run.
        self._unregister()

    def end_for_shutdown(self, error_code="worker_shutdown",
                         message="the worker was shut down (SIGTERM) before the run ended"):
        """Ends the run (if open) for a worker going away. Returns True if it published an end."""
        if self._finished:
            return False
        try:
            if self.stop_event.is_set():
                self._end_with(lambda: self.cancel("stopped by the user"))
            else:
                self._end_with(lambda: self.fail(error_code, message))
            return True
        except PublishError as e:
            if self._finished:
                return False
            log.error("agentwire: could not end run %s at shutdown: %s", self.run_id, e)
            self._give_up(e)
            return False

    def __del__(self):
        try:
            if self._started_at is not None and not self._finished:
                self._end_with(lambda: self.fail(
                    "run_abandoned", "run abandoned: the agent stopped without completing or failing"))
        except Exception:
            pass

    # --- internals ---------------------------------------------------------------------------
    def _elapsed_ms(self):
        if self._started_at is None:
            return 0
        return int((time.monotonic() - self._started_at) * 1000)

    def _emit(self, event):
        unregister = 0
        with self._lock:
            if self._finished:
                kind, code, _ = self.end
                raise PublishError("closed", f"run {self.run_id} has ended ({kind}"
                                   f"{' ' + code if code else ''}); no more events")
            event.user_id = self.user_id
            event.thread_id = self.thread_id
            event.run_id = self.run_id
            event.agent_name = self.agent_name
            event.trace_id = self.trace_id
            if self.attributes:
                event.attributes.update(self.attributes)
            event.run_seq = self._next_seq
            event.event_id = new_event_id()
            now_us = time.time_ns() // 1000
            if now_us < self._last_us:
                now_us = self._last_us  # the wall clock was stepped back: never go backwards
            self._last_us = now_us
            event.emitted_at.seconds = now_us // 1_000_000
            event.emitted_at.nanos = (now_us % 1_000_000) * 1000
            if not fit_to_size(event, self.max_event_bytes):
                raise PublishError("too_large", f"event envelope alone ({event.ByteSize()} bytes: "
                                   "ids, trace_id, attributes) is over the size limit of "
                                   f"{self.max_event_bytes} bytes; it cannot be cut")
            if event.HasField("truncated"):
                log.warning("agentwire: event over the size limit: large text fields cut to fit "
                            "(user=%s run=%s event_id=%s bytes=%d limit=%d)", self.user_id,
                            self.run_id, event.event_id, event.truncated.original_bytes,
                            self.max_event_bytes)
            self.publisher.publish(event, self.on_delivery, self.wait_for_space)
            self._next_seq += 1  # only an accepted event consumes a sequence number
            kind = event.WhichOneof("body")
            if kind in _TERMINAL:
                self._finished = True
                failed = event.agent_failed if kind == "agent_failed" else None
                self.end = (kind, failed.error_code if failed else "", failed.message if failed else "")
                unregister = self._registration
                self._registration = 0
            elif kind == "agent_started" and self.control is not None and not self._registration:
                ref = weakref.ref(self)

                def on_cancel(request_id, requested_by):
                    run = ref()
                    if run is not None:
                        run._fire_stop(request_id)

                self._registration = self.control.register(
                    self.user_id, self.thread_id, self.run_id, self.lease_ms, on_cancel)
        if unregister:
            self.control.unregister(unregister)

    def _unregister(self):
        with self._lock:
            registration, self._registration = self._registration, 0
        if registration:
            self.control.unregister(registration)

    def _fire_stop(self, request_id):
        with self._lock:
            if self.stop_event.is_set():
                return
            self.stop_request_id = request_id
            self.stop_event.set()
            handlers, self._handlers = self._handlers, []
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._async_stop.set)
                if self.cancel_task and self._task is not None and not self._finished:
                    self._cancelled_task = True
                    self._loop.call_soon_threadsafe(self._cancel_task)
            except RuntimeError:
                pass  # the loop is closed
        for handler in handlers:
            try:
                handler()
            except Exception:
                log.exception("agentwire: an on_cancel handler raised")

    def _cancel_task(self):
        if not self._finished and self._task is not None and not self._task.done():
            self._task.cancel(msg=f"agentwire: run {self.run_id} stopped by the user")
