"""Operator chaining: a linear run of loop nodes handles its items in one task.

Flink's term. A node is chained to its parent when it is the parent's only
child, the parent is its only input (no dead letters come to it), both run
on the ``loop`` executor with one worker, neither holds items back
(``holding``, ``deadline``), neither says ``chain: false``, and the parent
is not a source. In place of the channel between them, the parent's outputs
hold the child's :class:`ChainedInput`: a batch sent to it goes through the
child's handler at once, in the parent's task, and on to the child's own
outputs, which may be chained in turn. So a chain of ten nodes hands each
batch over once, not ten times. The chain's head, fed from its own inbox,
has a :class:`ChainedInput` too, through which its items go down the chain.

Consecutive chained nodes with a plain ``process_item`` go further: they
run fused (:class:`FusedStages`), each item through all of them in one
loop, with no list between two nodes.

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
import sys
import time
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any, NoReturn

import trio

from .._graph import NanoStreamGraph, Node, holds_items
from ._acks import Tickets
from ._batches import Batch, Piece, parts
from ._errors import NodeError
from ._outbox import Outputs
from ._stats import NodeStats, WorkerCounter
from ._styles import LOOP_HOLD_WARNING
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
    Consecutive nodes whose ``process_item`` is a plain function run fused
    (see :class:`FusedStages`).
    :meth:`close` (the parent has ended) lets the node's own task go on to
    ``finish`` and teardown. A failure of a node under ``fail`` is raised in
    that node's own task, as it would be unchained, and the task the chain
    runs in waits to be cancelled meanwhile.
    """

    def __init__(self, stats: NodeStats, max_batch: int, head: bool = False) -> None:
        #: Whether this is the head's own link, run in the head's own task.
        self._head = head
        self._stats = stats
        self._max_batch = max_batch
        self._workers: Workers | None = None
        self._context: contextvars.ContextVar | None = None
        self._node: object = None
        self._process_item: Callable[[Any], Any] | None = None
        self._stage: tuple[Callable[[Any], Any], str] | None = None
        self._counter = WorkerCounter(stats, 0)
        self._ended = trio.Event()
        self._failure: NodeError | None = None
        self._following: ChainedInput | None = None
        self._fused: FusedStages | None = None
        self._fused_looked_for = False

    def attach(self, workers: Workers, context: contextvars.ContextVar, node: object) -> None:
        """Hand batches to ``workers``' handler and outbox from now on, with
        ``context`` set to ``node`` while the node's code runs, so that it
        sees its own node (:func:`node_nursery`) though it runs in another
        node's task."""
        self._workers = workers
        self._context = context
        self._node = node
        self._process_item = workers.styles.plain_process_item()
        self._stage = workers.styles.fused_stage()
        children = workers.outbox.outputs.children
        only = children[0][0] if len(children) == 1 else None
        self._following = only if isinstance(only, ChainedInput) else None

    async def send(self, batch: Batch) -> None:
        items, tickets = batch
        self._stats.waiting -= len(items)
        await self._run(items, tickets)

    async def run_taken(self, piece: Piece) -> None:
        """Handle ``piece``, which the chain's head took from its own inbox
        (and counted in progress), here and down the chain."""
        self._stats.in_progress -= len(piece.items)
        await self._run(piece.items, piece.tickets)

    async def _run(self, items: list, tickets: Tickets) -> None:
        """Handle ``items`` here and down the chain, as far as it goes.

        A node is handed at most its ``max_batch`` items at a time. For a
        node with a plain ``process_item`` (fused or not), the results of
        all the parts go on to the next node together, so that a batch
        thinned by a filter still reaches a sink whole, rather than in as
        many small parts as the batch was cut into. Any other node may send
        results on while it handles a part (a generator sends them a chunk
        at a time), so each of its parts goes down the whole chain before
        the next, and its results keep their order.
        """
        node = self
        while True:
            size = node._max_batch
            if len(items) > size and node._stage is None:
                for part in parts(Batch(items, tickets), size):
                    await node._run(*part)
                return
            fused = node._fused_from_here()
            stage = node if fused is None else fused
            if len(items) <= size:
                results = await stage.handle(items, tickets)
            else:
                results = []
                for start in range(0, len(items), size):
                    results += await stage.handle(items[start : start + size], tickets)
            last = node if fused is None else fused.last
            following = last._following
            if following is None or not results:
                # One worker: the outbox is unordered, so the results go straight out.
                await last._outputs().send(results, tickets)
                return
            # What Outputs.send would do, less the hand-over to the child.
            last._stats.emitted += len(results)
            node, items = following, results

    def _fused_from_here(self) -> FusedStages | None:
        """The fused stages that begin at this node, if there are (found
        once, at the first batch, when every node of the chain is attached)."""
        if not self._fused_looked_for:
            self._fused_looked_for = True
            nodes = [self]
            while nodes[-1]._stage is not None and nodes[-1]._following is not None:
                nodes.append(nodes[-1]._following)
            if nodes[-1]._stage is None:
                nodes.pop()
            self._fused = FusedStages(nodes) if len(nodes) > 1 else None
        return self._fused

    async def handle(self, items: list, tickets: Tickets) -> list:
        """This node's handler on ``items``, as it runs unchained; its results."""
        workers = self._workers
        context = self._context
        assert workers is not None and context is not None, (
            "a chained node is attached before its parent sends"
        )
        self._stats.in_progress += len(items)
        token = context.set(self._node)
        try:
            return await workers.handler(Piece(items, tickets, 0), self._counter)
        except NodeError as failure:
            await self.fail(failure)
        finally:
            context.reset(token)

    async def recover_item(self, item: Any, error: Exception, tickets: Tickets) -> list:
        """This node's error policy on ``item``, on which its ``process_item``
        raised ``error`` in a fused loop; what a successful retry produced."""
        assert self._workers is not None and self._context is not None
        assert self._process_item is not None
        token = self._context.set(self._node)
        try:
            return await self._workers.styles.recover_item(self._process_item, item, error, tickets)
        except NodeError as failure:
            await self.fail(failure)
        finally:
            self._context.reset(token)

    async def fail(self, failure: NodeError) -> NoReturn:
        """Hand ``failure`` to this node's own task, which raises it, and wait
        to be cancelled; raise it at once in the head, whose own task this is."""
        if self._head:
            raise failure
        self._failure = failure
        self._ended.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    def _outputs(self) -> Outputs:
        assert self._workers is not None
        return self._workers.outbox.outputs

    def close(self) -> None:
        self._ended.set()

    async def wait_until_ended(self) -> None:
        """Return once the parent has ended; raise the node's failure if it failed."""
        await self._ended.wait()
        if self._failure is not None:
            raise self._failure


class FusedStages:
    """Consecutive chained nodes whose ``process_item`` is a plain function,
    run as one loop: each item goes through every node's ``process_item``
    in turn, and stops at a ``None``, with no list between two nodes.

    Every per-node behaviour is kept. An item on which a node's code
    raises goes to that node's error policy (retries, ``skip``, dead
    letters, ``fail``) as it would unfused, and whatever that gives goes on
    through the nodes after it; the other items go on meanwhile, in order.
    Each node's counters are exact: the loop notes only which node dropped
    an item (returned ``None``) or failed on one, and the rest is derived
    per batch.

    Busy time is estimated: one batch in :data:`SAMPLE_EVERY` (the second,
    then every :data:`SAMPLE_EVERY` th after it) runs node by node, each
    node timed as unfused, and the time of every fused batch is shared
    among the nodes by what the last such sample says an item costs each
    (before the first sample, by the items each handled).

    The nodes' code runs with the context variable of :func:`node_nursery`
    set to this object, which finds the nursery of the node whose code is
    running only when asked (see :meth:`running_node`).
    """

    #: One batch in this many runs node by node, to time each node.
    SAMPLE_EVERY = 64

    def __init__(self, nodes: list[ChainedInput]) -> None:
        self.nodes = nodes
        self.last = nodes[-1]
        self.stages = tuple(node._stage for node in nodes)
        #: The fused loops from each node on (the first node, or after a
        #: retry), made when first needed; for each, the node at each line.
        self._loops: dict[int, Callable[[Iterator, Callable, list], Any]] = {}
        self._stage_at: dict[CodeType, dict[int, int]] = {}
        self._stats = [node._stats for node in nodes]
        self._cost_per_item = [0.0] * len(nodes)
        #: Each node's share of a batch's time when every item goes through
        #: every node: its cost per item over the sum of them.
        self._shares = [1 / len(nodes)] * len(nodes)
        self._batches = 0
        first = nodes[0]
        assert first._context is not None
        self._context = first._context

    async def handle(self, items: list, tickets: Tickets) -> list:
        """Run ``items`` through every node; what the last one sends on."""
        self._batches += 1
        if self._batches % self.SAMPLE_EVERY == 2 % self.SAMPLE_EVERY:
            return await self._handle_node_by_node(items, tickets)
        first = self.nodes[0]._stats
        count = len(items)
        changes = [0] * len(self.nodes)
        first.in_progress += count
        token = self._context.set(self)
        started = time.perf_counter()
        try:
            results = await self._loop(0, items, tickets, changes)
        finally:
            spent = time.perf_counter() - started
            self._context.reset(token)
            first.in_progress -= count
        self._count(count, changes, spent)
        return results

    async def _loop(self, start: int, items: list, tickets: Tickets, changes: list[int]) -> list:
        """``items`` through the nodes from node ``start`` on.

        ``changes[i]`` gains, for node ``i``, what its results number
        beyond its items: minus one for each item dropped or given up on,
        plus what a retry produced.
        """
        results: list = []
        append = results.append
        remaining = iter(items)
        run = self._loops.get(start)
        if run is None:
            run, stage_at = _fused_loop(self.stages, start)
            self._loops[start] = run
            self._stage_at[run.__code__] = stage_at
        while (failed := run(remaining, append, changes)) is not None:
            stage, item, error = failed
            recovered = await self.nodes[stage].recover_item(item, error, tickets)
            changes[stage] += len(recovered) - 1
            if recovered and stage + 1 < len(self.nodes):
                recovered = await self._loop(stage + 1, recovered, tickets, changes)
            results += recovered
        return results

    def _count(self, count: int, changes: list[int], spent: float) -> None:
        """Each node's counters for a fused batch of ``count`` items, and its
        share of the ``spent`` seconds."""
        if any(changes):
            received = []
            for change in changes:
                received.append(count)
                count += change
            weights = [cost * n for cost, n in zip(self._cost_per_item, received, strict=True)]
            total = sum(weights)
            if total <= 0:
                weights, total = received, sum(received) or 1
            shares = [weight / total for weight in weights]
        else:  # every item went through every node: the common case, made quick
            received = [count] * len(changes)
            shares = self._shares
        # The last node's results are counted as emitted as they leave.
        for stats, handled, sent, share in zip(
            self._stats, received, [*received[1:], 0], shares, strict=True
        ):
            busy = spent * share
            stats.received += handled
            stats.emitted += sent
            stats.busy_seconds += busy
            stats.worker_busy_seconds[0] += busy
        if spent > LOOP_HOLD_WARNING:
            for node, handled, share in zip(self.nodes, received, shares, strict=True):
                assert node._workers is not None
                watch = node._workers.styles.hold_watch
                watch.check_held("process_item", spent * share, handled)

    async def _handle_node_by_node(self, items: list, tickets: Tickets) -> list:
        """Run ``items`` through each node's own handler in turn, and take
        what each node's item costs from its busy time."""
        last = len(self.nodes) - 1
        for index, node in enumerate(self.nodes):
            stats = node._stats
            before = stats.busy_seconds
            results = await node.handle(items, tickets)
            if items:
                self._cost_per_item[index] = (stats.busy_seconds - before) / len(items)
            if index < last:
                stats.emitted += len(results)
            items = results
        total = sum(self._cost_per_item)
        if total > 0:
            self._shares = [cost / total for cost in self._cost_per_item]
        return items

    def running_node(self) -> object:
        """The node (its nursery) whose code is running in this loop: the
        one whose line the innermost fused loop on the stack is at. Looked
        up only when asked, so the loop pays nothing for it."""
        frame = sys._getframe(1)
        while frame is not None:
            stage_at = self._stage_at.get(frame.f_code)
            if stage_at is not None:
                return self.nodes[stage_at[frame.f_lineno]]._node
            frame = frame.f_back
        raise RuntimeError("node_nursery() is only available in a node's own code")


def _fused_loop(
    stages: tuple[tuple[Callable[[Any], Any], str], ...], start: int
) -> tuple[Callable[[Iterator, Callable, list], Any], dict[int, int]]:
    """A function that runs each item of an iterator through ``stages``
    from index ``start`` on, unrolled: one line per stage, no loop over the
    stages per item, so that an item pays for the calls and little else
    (Spark's whole-stage code generation, in small).

    A stage is ``(function, kind)``: a ``"map"`` stage replaces the item
    with what the function returns and drops it at ``None``; a ``"keep"``
    (``"drop"``) stage calls the function as a test and drops the item
    when it is false (true), with no wrapper call between (see
    :meth:`~nanostream._runtime._styles.LoopStyles.fused_stage`).

    The function appends what comes out of the last stage, takes one off
    ``dropped[i]`` for each item stage ``i`` drops, and stops at the first
    exception, returning (the index of the stage, the item it was given,
    the exception), to be called again for the items left. Also returns,
    by line number, the index of the stage called there.
    """
    indices = range(start, len(stages))
    count_back = [f"    dropped[{index}] -= d{index}" for index in indices]
    lines = ["def fused(remaining, append, dropped):"]
    lines += [f"    d{index} = 0" for index in indices]
    lines.append("    for item in remaining:")
    stage_at = {}
    for index in indices:
        call = f"f{index}(item)"
        test = {"map": f"(item := {call}) is None", "keep": f"not {call}", "drop": call}
        lines += ["        try:", f"            if {test[stages[index][1]]}:"]
        stage_at[len(lines)] = index
        lines += [
            f"                d{index} += 1",
            "                continue",
            "        except Exception as error:",
            *(f"        {line}" for line in count_back),
            f"            return {index}, item, error",
        ]
    lines.append("        append(item)")
    lines += count_back
    namespace = {f"f{index}": function for index, (function, _) in enumerate(stages)}
    exec(compile("\n".join(lines), "<fused stages>", "exec"), namespace)
    return namespace["fused"], stage_at
