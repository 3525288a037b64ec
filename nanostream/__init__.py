"""NanoStream: sources, processors and sinks in a directed acyclic graph, in one process.

The public API is re-exported here; every other module is private. The
built-in nodes other than the basic ones, and :func:`serve_metrics`, are
imported when first used, so that ``import nanostream`` does not import
kafka-python, watchdog, prometheus-client or rich for a program that never
uses them.
"""

import importlib as _importlib

from ._durations import Duration, duration
from ._graph import GraphError, GraphProblem, NanoStreamGraph, Node
from ._options import NodeOptions
from ._processor import (
    DeadLetter,
    FailedItems,
    FromParent,
    NanoStreamProcessor,
    Rejected,
    WithAck,
)
from ._runtime import GraphRun, NodeError, NodeStats, node_nursery, run, run_graph
from ._state import KeyedState, NoKeyError
from .nodes import BUILTIN_NODES as _BUILTIN_NODES
from .nodes import (
    BlackHole,
    ChannelSink,
    ChannelSource,
    ConstantEmitter,
    PrintStreamProcessor,
    SequenceEmitter,
)

__version__ = "0.1.0"

#: Public names loaded on first use, as ``module:name``: every built-in node,
#: the items some of them emit, and the metrics server.
_LAZY = {
    **_BUILTIN_NODES,
    "FileData": "nanostream.nodes.files:FileData",
    "KafkaRecord": "nanostream.nodes.kafka:KafkaRecord",
    "LateItem": "nanostream.nodes.window:LateItem",
    "serve_metrics": "nanostream.observe._metrics:serve_metrics",
}


def __getattr__(name: str) -> object:
    path = _LAZY.get(name)
    if path is None:
        raise AttributeError(f"module 'nanostream' has no attribute {name!r}")
    module, _, attribute = path.partition(":")
    value = getattr(_importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BlackHole",
    "ChannelSink",
    "ChannelSource",
    "ConstantEmitter",
    "DeadLetter",
    "Duration",
    "FailedItems",
    "FromParent",
    "GraphError",
    "GraphProblem",
    "GraphRun",
    "KeyedState",
    "NanoStreamGraph",
    "NanoStreamProcessor",
    "NoKeyError",
    "Node",
    "NodeError",
    "NodeOptions",
    "NodeStats",
    "PrintStreamProcessor",
    "Rejected",
    "SequenceEmitter",
    "WithAck",
    "__version__",
    "duration",
    "node_nursery",
    "run",
    "run_graph",
]
__all__ += sorted(set(_LAZY) - set(__all__))
