"""Running a graph: one trio nursery, a lifecycle per node, channels between them.

Each node that has inputs owns one bounded memory channel; every node that
sends to it holds a clone of the send end. Items travel in batches (items
with the tickets of their acknowledgements): a node's workers take pieces
of what is waiting, up to ``max_batch`` items, handle them with the node's
code wherever its executor runs it, and hand the results to the outbox,
which sends them on, in order unless the node says otherwise. An idle
pipeline therefore moves single items with no delay, and a loaded one moves
ever larger batches, which is where the throughput comes from.
``process_item`` never sees a batch.

One module per concern: ``_wiring`` (channels), ``_graph_run`` (the run,
stopping), ``_signals``, ``_control`` (what nodes share), ``_node`` (a
node's lifecycle), ``_sources``, ``_batches`` and ``_inbox`` (batching),
``_workers``, ``_styles`` (call-style adapters), ``_executors``,
``_outbox``, ``_policy`` (error policies), ``_dead_letters``, ``_acks``,
``_held`` (tickets of held items), ``_stats`` (counters) and ``_heap``
(the garbage collector while a graph runs).
"""

from ._control import TEARDOWN_GRACE, TEARDOWN_TIMEOUT
from ._errors import NodeError, short_repr
from ._graph_run import GraphRun, run, run_graph
from ._node import node_nursery
from ._stats import NodeStats

__all__ = [
    "TEARDOWN_GRACE",
    "TEARDOWN_TIMEOUT",
    "GraphRun",
    "NodeError",
    "NodeStats",
    "node_nursery",
    "run",
    "run_graph",
    "short_repr",
]
