"""Wiring: one bounded channel per node input, a send end per sender; or,
for a node chained to its parent, a :class:`ChainedInput` in its place.

A node that names its parents in parameters (a join, see
:func:`parent_parameters`) gets its parents' items wrapped in
:class:`FromParent` on the way in, so that it knows which sent what."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from .._graph import NanoStreamGraph
from .._processor import FromParent, parent_parameters
from ._batches import Batch
from ._chaining import ChainedInput, chained_parents
from ._dead_letters import DeadLetterRoute
from ._node import NodePorts
from ._stats import NodeStats


def wire(graph: NanoStreamGraph, stats: Mapping[str, NodeStats]) -> dict[str, NodePorts]:
    """Every node's ports: an input channel for each node with senders
    (``buffer_size`` batches), a clone of its send end for each parent and
    each node whose dead letters it takes. A node chained to its parent
    (see ``_chaining``) gets a :class:`ChainedInput` instead, and the head
    of each chain one of its own, fed from its inbox."""
    ports = {node.name: NodePorts(stats, stats[node.name]) for node in graph}
    chained = chained_parents(graph)
    for name in graph.topological_order():
        senders = graph.inputs(name)
        if not senders:
            continue
        node = graph.nodes[name]
        tagged = bool(parent_parameters(node.processor))
        if name in chained:
            parent = chained[name]
            ports[name].chained = ChainedInput(stats[name], node.options.max_batch)
            child: Any = ports[name].chained
            ports[parent].outputs.add_child(
                _Tagging(parent, child) if tagged else child, stats[name]
            )
            if parent not in chained:
                max_batch = graph.nodes[parent].options.max_batch
                ports[parent].head = ChainedInput(stats[parent], max_batch, head=True)
            continue
        send, receive = trio.open_memory_channel(node.options.buffer_size)
        ports[name].inbox = receive
        stats[name].watch_input(receive, node.options.buffer_size)
        for parent in node.parents:
            child = _Tagging(parent, send.clone()) if tagged else send.clone()
            ports[parent].outputs.add_child(child, stats[name])
        for sender in senders[len(node.parents) :]:
            ports[sender].dead_letters = DeadLetterRoute(
                sender, send.clone(), stats[sender], stats[name]
            )
        send.close()
    return ports


class _Tagging:
    """A child's input as one parent sends to it: each item wrapped in a
    :class:`FromParent` naming that parent."""

    def __init__(self, parent: str, channel: Any) -> None:
        self._parent = parent
        self._channel = channel

    async def send(self, batch: Batch) -> None:
        parent = self._parent
        items = [FromParent(parent, item) for item in batch.items]
        await self._channel.send(Batch(items, batch.tickets))

    def close(self) -> None:
        self._channel.close()
