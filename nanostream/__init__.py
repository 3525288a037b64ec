"""NanoStream: sources, processors and sinks in a directed acyclic graph, in one process.

The public API is re-exported here; every other module is private.
"""

from ._graph import GraphError, GraphProblem, NanoStreamGraph, Node
from ._options import NodeOptions
from ._processor import DeadLetter, FailedItems, NanoStreamProcessor, Rejected, WithAck
from ._runtime import GraphRun, NodeError, NodeStats, node_nursery, run, run_graph
from .nodes import (
    BlackHole,
    ChannelSink,
    ChannelSource,
    ConstantEmitter,
    PrintStreamProcessor,
    SequenceEmitter,
)
from .observe import serve_metrics

__version__ = "0.1.0"

__all__ = [
    "BlackHole",
    "ChannelSink",
    "ChannelSource",
    "ConstantEmitter",
    "DeadLetter",
    "FailedItems",
    "GraphError",
    "GraphProblem",
    "GraphRun",
    "NanoStreamGraph",
    "NanoStreamProcessor",
    "Node",
    "NodeError",
    "NodeOptions",
    "NodeStats",
    "PrintStreamProcessor",
    "Rejected",
    "SequenceEmitter",
    "WithAck",
    "__version__",
    "node_nursery",
    "run",
    "run_graph",
    "serve_metrics",
]
