"""Worker: one per process. A Publisher, a RunControl (heartbeats and Stop), the open runs, and
a SIGTERM handler that ends them and flushes within a bound (Cloud Run gives 10 s)."""

import logging
import os
import signal
import threading
import time
import weakref

from agentwire.control import RunControl
from agentwire.publisher import DEFAULT_TOPIC, Publisher
from agentwire.run import Run

log = logging.getLogger("agentwire")


class Worker:
    """brokers / topic default to AGENTWIRE_BROKERS / AGENTWIRE_TOPIC. With run_control (the
    default) runs declare a lease, are heartbeated every `heartbeat_interval` seconds and
    receive their user's Stop; the topic's .control and .heartbeat topics must exist."""

    def __init__(self, brokers=None, topic=None, agent_name="", kafka=None, run_control=True,
                 heartbeat_interval=5.0, lease=15.0, max_pending=100_000, close_timeout=10.0,
                 worker_id=None):
        brokers = brokers or os.environ.get("AGENTWIRE_BROKERS")
        topic = topic or os.environ.get("AGENTWIRE_TOPIC") or DEFAULT_TOPIC
        self.agent_name = agent_name
        self.publisher = Publisher(brokers, topic, kafka=kafka, max_pending=max_pending,
                                   close_timeout=close_timeout)
        self.control = None
        if run_control:
            try:
                self.control = RunControl(brokers, topic, kafka=kafka,
                                          heartbeat_interval=heartbeat_interval, lease=lease,
                                          worker_id=worker_id)
            except BaseException:
                self.publisher.close(0)
                raise
        self._open = weakref.WeakSet()
        self._open_lock = threading.Lock()
        self._closed = False
        self.shutting_down = threading.Event()

    def run(self, user_id, input="", **kwargs) -> Run:
        """A Run of this worker: `with worker.run(...) as run:` or `async with`."""
        kwargs.setdefault("agent_name", self.agent_name)
        return Run(self.publisher, user_id, input, control=self.control,
                   registry=_Registry(self), **kwargs)

    def open_runs(self):
        with self._open_lock:
            return [run for run in self._open if not run.finished]

    def end_open_runs(self, error_code="worker_shutdown",
                      message="the worker was shut down (SIGTERM) before the run ended"):
        """Ends every open run (a run the user stopped ends cancelled). Returns how many."""
        return sum(1 for run in self.open_runs() if run.end_for_shutdown(error_code, message))

    def shutdown(self, timeout=8.0):
        """Ends the open runs and waits up to `timeout` seconds in all for Kafka's
        acknowledgements. Returns the events left unacknowledged."""
        deadline = time.monotonic() + timeout
        self.shutting_down.set()
        ended = self.end_open_runs()
        left = self.publisher.flush(max(0.0, deadline - time.monotonic()))
        log.warning("agentwire: worker shutdown: %d open runs ended, %d events unacknowledged",
                    ended, left)
        return left

    def handle_sigterm(self, timeout=8.0, exit_code=143, signals=(signal.SIGTERM,)):
        """On SIGTERM: end the open runs and flush, within `timeout` seconds (keep it under the
        platform's grace: Cloud Run's is 10 s), then exit the process with `exit_code` (None: do
        not exit; the previous handler, if any, is called instead). Call from the main thread."""
        previous = {}

        def on_signal(signum, frame):
            if self.shutting_down.is_set():
                return
            self.shutting_down.set()

            # Not in the handler itself: it interrupts the main thread, which may hold a run's
            # lock in the middle of an event.
            def finish():
                left = self.shutdown(timeout)
                if exit_code is not None:
                    logging.shutdown()
                    os._exit(exit_code if left == 0 else exit_code)
                handler = previous.get(signum)
                if callable(handler):
                    handler(signum, frame)

            threading.Thread(target=finish, name="agentwire-sigterm", daemon=False).start()

        for signum in signals:
            previous[signum] = signal.signal(signum, on_signal)

    def close(self, timeout=None):
        """Ends open runs (worker_shutdown), flushes and stops the threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.end_open_runs()
        if self.control is not None:
            self.control.close()
        self.publisher.close(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()


class _Registry:
    """What a Run tells its Worker: it opened / it ended."""
    __slots__ = ("worker",)

    def __init__(self, worker):
        self.worker = worker

    def add(self, run):
        with self.worker._open_lock:
            self.worker._open.add(run)

    def discard(self, run):
        with self.worker._open_lock:
            self.worker._open.discard(run)
