"""agentwire for Python agent workers: publish agent runs with the C++ publisher's wire contract.

    from agentwire import Worker

    with Worker(brokers="127.0.0.1:9092", agent_name="researcher") as worker:
        with worker.run(user_id="alice", input="find kafka papers") as run:
            run.thinking("searching")
            with run.tool("web_search", '{"q": "kafka"}') as call:
                call.output = "3 results"
            run.delta("Here is what I found")
        # agent_completed on exit; agent_failed on an exception; cancelled on Stop,
        # CancelledError or KeyboardInterrupt. Exactly one terminal event per run.

See docs/python.md. The protobuf classes (agentwire.v1.events_pb2, control_pb2) are generated
from schemas/ by the build (CMake, or setup.py when pip installs the package).
"""

import pkgutil

# agentwire.v1 (protoc's output) may live in another sys.path entry: the build tree's
# generated directory when the package is used from PYTHONPATH.
__path__ = pkgutil.extend_path(__path__, __name__)  # noqa: F821

from agentwire.errors import PublishError, ConfigError  # noqa: E402
from agentwire.hashing import murmur2, partition_for_key  # noqa: E402
from agentwire.ids import new_event_id  # noqa: E402
from agentwire.publisher import Publisher, DeliveryReport, default_producer_properties  # noqa: E402
from agentwire.run import Run, ToolCall, RunStopped  # noqa: E402
from agentwire.control import RunControl  # noqa: E402
from agentwire.worker import Worker  # noqa: E402

__all__ = [
    "ConfigError", "DeliveryReport", "PublishError", "Publisher", "Run", "RunControl",
    "RunStopped", "ToolCall", "Worker", "default_producer_properties", "murmur2",
    "new_event_id", "partition_for_key",
]
__version__ = "0.1.0"
