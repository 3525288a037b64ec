"""Operator chaining: a linear run of loop nodes handles its items in one task.

Flink's term. A node is chained to its parent when it is the parent's only
child, the parent is its only input (no dead letters come to it), both run
on the ``loop`` executor with one worker, neither holds items back
(``holding``, ``deadline``), neither says ``chain: false``, and the parent
is not a source. In place of the channel between them, the parent's outputs
hold the child's :class:`ChainedInput`: a batch sent to it goes through the
child's handler at once, in the parent's task, and on to the child's own
outputs, which may be chained in turn. So a chain of ten nodes hands each
batch over once, not ten times.

Everything else stays per node: each keeps its lifecycle task (setup,
``finish``, teardown, in the same order as unchained), its counters, its
error policy and dead letters; tickets travel with the batch as through a
channel, and a slow child holds its parent up just as a full channel would
(back-pressure).

Sources never chain: stopping a pipeline cancels its sources' tasks, which
would cut short the items their children were handling in them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator

import trio

from .._graph import NanoStreamGraph, Node, holds_items
from ._acks import Tickets
from ._batches import Batch, Piece, split
from ._errors import NodeError
from ._stats import NodeStats, WorkerCounter
from ._workers import Workers


def chained_parents(graph: NanoStreamGraph) -> dict[str, str]:
    """The parent of every node chained to its parent, by the node's name."""
    children: dict[str, list[str]] = {name: [] for name in graph.nodes}
    dead_letter_targets = set()
    for node in graph:
        for parent in node.parents:
            if parent in children:
                children[parent].append(node.name)
        if node.options.dead_letter is not None:
            dead_letter_targets.add(node.options.dead_letter)
    links = {}
    for node in graph:
        if len(node.parents) != 1 or node.name in dead_letter_targets:
            continue
        [parent_name] = node.parents
        parent = graph.nodes.get(parent_name)
        if parent is None or parent.is_source or children[parent_name] != [node.name]:
            continue
        if _chainable(parent) and _chainable(node):
            links[node.name] = parent_name
    return links


def _chainable(node: Node) -> bool:
    options = node.options
    return (
        options.chain
        and options.executor == "loop"
        and options.workers == 1
        and not holds_items(node.processor)
    )


class ChainedInput:
    """A chained node's input, in its parent's outputs where a channel would be.

    :meth:`send` handles a batch with the node's handler there and then, and
    with the handler of each node chained after it in turn, in one loop
    rather than a call per node, until a node's results go elsewhere than a
    chained child (a channel, a fan-out, nowhere) or nothing is left.
    :meth:`close` (the parent has ended) lets the node's own task go on to
    ``finish`` and teardown. A failure of a node under ``fail`` is raised in
    that node's own task, as it would be unchained, and the task the chain
    runs in waits to be cancelled meanwhile.
    """

    def __init__(self, stats: NodeStats, max_batch: int) -> None:
        self._stats = stats
        self._max_batch = max_batch
        self._workers: Workers | None = None
        self._context: contextvars.ContextVar | None = None
        self._node: object = None
        self._counter = WorkerCounter(stats, 0)
        self._ended = trio.Event()
        self._failure: NodeError | None = None
        self._following: ChainedInput | None = None

    def attach(self, workers: Workers, context: contextvars.ContextVar, node: object) -> None:
        """Hand batches to ``workers``' handler and outbox from now on, with
        ``context`` set to ``node`` while the node's code runs, so that it
        sees its own node (:func:`node_nursery`) though it runs in another
        node's task."""
        self._workers = workers
        self._context = context
        self._node = node
        children = workers.outbox.outputs.children
        only = children[0][0] if len(children) == 1 else None
        self._following = only if isinstance(only, ChainedInput) else None

    async def send(self, batch: Batch) -> None:
        items, tickets = batch
        self._stats.waiting -= len(items)
        if len(items) <= self._max_batch:
            await self._run(items, tickets)
            return
        for part in self._parts(batch):
            await self._run(*part)

    async def _run(self, items: list, tickets: Tickets) -> None:
        """Handle ``items`` here and down the chain, as far as it goes."""
        node = self
        while True:
            workers = node._workers
            context = node._context
            assert workers is not None and context is not None, (
                "a chained node is attached before its parent sends"
            )
            stats = node._stats
            stats.in_progress += len(items)
            token = context.set(node._node)
            try:
                results = await workers.handler(Piece(items, tickets, 0), node._counter)
            except NodeError as failure:
                node._failure = failure
                node._ended.set()
                await trio.sleep_forever()
            finally:
                context.reset(token)
            following = node._following
            if following is None or not results or len(results) > following._max_batch:
                # One worker: the outbox is unordered, so the results go straight out.
                await workers.outbox.outputs.send(results, tickets)
                return
            # What Outputs.send would do, less the hand-over to the child.
            stats.emitted += len(results)
            node, items = following, results

    def _parts(self, batch: Batch) -> Iterator[Batch]:
        """``batch`` in parts of at most ``max_batch`` items."""
        while len(batch.items) > self._max_batch:
            part, batch = split(batch, self._max_batch)
            yield part
        yield batch

    def close(self) -> None:
        self._ended.set()

    async def wait_until_ended(self) -> None:
        """Return once the parent has ended; raise the node's failure if it failed."""
        await self._ended.wait()
        if self._failure is not None:
            raise self._failure
