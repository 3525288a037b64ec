"""Running a graph: one trio nursery, one task per node, channels between them.

Each node that has inputs owns one bounded memory channel; every node that
sends to it holds a clone of the send end. Items travel in batches
(``(items, tickets)`` tuples): a node takes one batch, plus whatever else is
already waiting, up to ``max_batch`` items, and sends its results on at
once. An idle pipeline therefore moves single items with no delay, and a
loaded one moves ever larger batches, which is where the throughput comes
from. ``process_item`` never sees a batch.

End of stream is the channels closing: a source that is exhausted closes its
send ends, and a node whose every sender has closed runs ``finish``, closes
its own outputs and tears down.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
import logging
import math
import reprlib
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing, closing
from functools import partial
from types import NoneType
from typing import Any

import attrs
import trio

from ._acks import Ticket, Tickets, combine, release, retain
from ._graph import NanoStreamGraph, Node
from ._processor import (
    DeadLetter,
    FailedItems,
    Rejected,
    WithAck,
    call_hook,
    call_style,
    rejected_if_none,
)

logger = logging.getLogger("nanostream")

#: How long a node's teardown may take once the graph is cancelled.
TEARDOWN_TIMEOUT = 10.0

#: How long past the drain deadline a teardown may still take.
TEARDOWN_GRACE = 0.5

_NO_ITEM = object()

#: The nursery of the node whose task is running; see :func:`node_nursery`.
_current_node_nursery: contextvars.ContextVar[trio.Nursery] = contextvars.ContextVar(
    "nanostream node nursery"
)


def node_nursery() -> trio.Nursery:
    """The nursery of the node being run, for tasks that live as long as it.

    A node that serves connections or keeps one open starts those tasks
    here from ``setup`` (or later), and they run beside its items until its
    ``teardown`` has returned; then they are cancelled. An exception in one
    of them fails the node, like one in ``process_item`` under ``fail``.
    Called anywhere but in a node's own code, it raises ``RuntimeError``.
    """
    try:
        return _current_node_nursery.get()
    except LookupError:
        raise RuntimeError("node_nursery() is only available in a node's own code") from None


_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80
_short.maxlist = 5


#: Whether error messages show the failed item: a pipeline's ``log_items``.
_log_items: contextvars.ContextVar[bool] = contextvars.ContextVar("log_items", default=True)


def short_repr(item: Any) -> str:
    """A repr of ``item`` short enough for an error message."""
    return _short.repr(item)


class NodeError(Exception):
    """A node failed. Names the node, what it was doing, and the item.

    The original exception is the ``__cause__``.
    """

    def __init__(self, node: str, during: str, error: BaseException, item: Any = _NO_ITEM):
        self.node = node
        self.during = during
        self.error = error
        self.item = None if item is _NO_ITEM else item
        message = f"node {node!r} failed in {during}: {type(error).__name__}: {error}"
        if item is not _NO_ITEM and not _log_items.get():  # the error may quote the item
            message = f"node {node!r} failed in {during}: {type(error).__name__} (its message "
            message += "and the item are not shown: log_items is off)"
        elif item is not _NO_ITEM:
            message += f" (item: {short_repr(item)})"
        super().__init__(message)


@attrs.define
class NodeStats:
    """What one node has done so far; read them live from :class:`GraphRun`.

    Counts are of items. ``errors`` counts every exception the node's code
    raised, including those a retry then overcame; ``skipped`` the items
    given up on under ``skip`` (or a retry's ``skip`` fallback), of which
    ``dead_lettered`` were sent to a dead-letter node. ``busy_seconds`` is
    the time spent in the node's own code. The input queue is counted in
    batches: ``queued`` of ``queue_capacity`` (both 0 for a source).
    ``state`` goes starting, running, then finished, failed or cancelled.
    """

    received: int = 0
    emitted: int = 0
    skipped: int = 0
    retries: int = 0
    errors: int = 0
    dead_lettered: int = 0
    acknowledged: int = 0
    busy_seconds: float = 0.0
    state: str = "starting"
    queue_capacity: int = 0
    _inbox: trio.MemoryReceiveChannel | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def queued(self) -> int:
        """Batches waiting in this node's input queue right now."""
        if self._inbox is None:
            return 0
        return self._inbox.statistics().current_buffer_used


class GraphRun:
    """A graph while it runs: its counters, and the means to stop it.

    ``await nursery.start(run_graph, graph)`` returns one once every node's
    setup is done.
    """

    def __init__(self, graph: NanoStreamGraph, drain_timeout: float | None) -> None:
        self.graph = graph
        self.drain_timeout = drain_timeout
        self.stats: dict[str, NodeStats] = {node.name: NodeStats() for node in graph}
        self.errors: list[NodeError] = []
        self.drained = True
        self._scope = trio.CancelScope()
        self._source_scopes: list[trio.CancelScope] = []
        self._teardown_scopes: set[trio.CancelScope] = set()
        self._teardown_deadline = math.inf
        self._waiting_for_setup = len(graph)
        self._all_set_up = trio.Event()
        self._consumers_running = sum(not node.is_source for node in graph)
        self._consumers_done = trio.Event()
        if not self._consumers_running:
            self._consumers_done.set()
        self._stopping = False
        self._skip_log = _RateLimitedLog(graph.name)
        self._cancelled = False

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` or :meth:`cancel` has been called."""
        return self._stopping

    def stop(self) -> None:
        """Stop the sources and let what is in flight drain through.

        Every node then finishes as at a normal end of stream. If
        ``drain_timeout`` passes first, the rest is cancelled.
        """
        if not self._all_set_up.is_set():
            self.cancel()  # nothing flows yet: nothing to drain
            return
        self._stopping = True
        for scope in self._source_scopes:
            scope.cancel()
        if self.drain_timeout is not None:
            deadline = trio.current_time() + self.drain_timeout
            self._scope.deadline = min(self._scope.deadline, deadline)
            self._teardown_deadline = self._scope.deadline + TEARDOWN_GRACE

    def cancel(self) -> None:
        """Stop everything at once; teardowns are cut short too."""
        self._stopping = True
        self._cancelled = True
        self._scope.cancel()
        for scope in self._teardown_scopes:
            scope.cancel()

    def _fail(self, error: NodeError) -> None:
        self.errors.append(error)
        self._scope.cancel()

    def _set_up(self) -> None:
        self._waiting_for_setup -= 1
        if self._waiting_for_setup == 0:
            self._all_set_up.set()

    def _consumer_done(self) -> None:
        self._consumers_running -= 1
        if self._consumers_running == 0:
            self._consumers_done.set()

    async def _run(self, handle_signals: bool, task_status: trio.TaskStatus) -> None:
        tasks = _NodeTask.for_graph(self)
        with self._scope:
            async with trio.open_nursery() as watchers:
                if handle_signals:
                    await watchers.start(self._watch_signals)
                async with trio.open_nursery() as nodes:
                    for task in tasks:
                        nodes.start_soon(task.run, name=f"nanostream node {task.name}")
                    await self._all_set_up.wait()
                    task_status.started(self)
                watchers.cancel_scope.cancel()
        if not self._all_set_up.is_set() and not self.errors:  # stopped while setting up
            task_status.started(self)
        self._skip_log.flush()
        if self._scope.cancelled_caught and not self.errors:
            self.drained = False
            if not self._cancelled:
                logger.warning(
                    "pipeline %r: the drain timeout of %ss passed; the rest was cancelled",
                    self.graph.name,
                    self.drain_timeout,
                    extra={"pipeline": self.graph.name, "event": "drain_timeout"},
                )
        if self.errors:
            first = self.errors[0]
            for other in self.errors[1:]:
                first.add_note(f"also: {other}")
            raise first

    async def _watch_signals(self, task_status: trio.TaskStatus) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                extra = {"pipeline": self.graph.name, "signal": name}
                if self._stopping:
                    logger.warning(
                        "second %s: stopping at once", name, extra={**extra, "event": "cancel"}
                    )
                    self.cancel()
                else:
                    logger.info("%s: draining", name, extra={**extra, "event": "drain"})
                    self.stop()


async def run_graph(
    graph: NanoStreamGraph,
    *,
    drain_timeout: float | None = 30.0,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[GraphRun] = trio.TASK_STATUS_IGNORED,
) -> GraphRun:
    """Run ``graph`` until every node has finished, and return its :class:`GraphRun`.

    Works inside any trio program. With ``await nursery.start(run_graph,
    graph)`` it returns the :class:`GraphRun` once every node's setup is
    done, and the graph goes on in the background; ``GraphRun.stop()``
    drains it.

    With ``handle_signals``, SIGINT and SIGTERM stop the sources and let the
    items in flight drain (at most ``drain_timeout`` seconds); a second
    signal cancels at once. Only the main thread can handle signals.

    Errors: under a node's ``fail`` policy, an exception cancels the graph
    and is raised here as a :class:`NodeError` naming the node and the
    item. A graph that cannot run raises :class:`GraphError` before any
    node starts. Run as a task (``nursery.start``), the error reaches the
    caller as trio delivers every task's error, in an ``ExceptionGroup``
    from the nursery: ``except* NodeError`` catches it in both styles.

    Cancellation: cancelling the surrounding scope cancels every node; each
    node that was set up still runs its teardown (for at most
    ``TEARDOWN_TIMEOUT`` seconds) before the cancellation propagates.
    """
    graph.validate()
    run = GraphRun(graph, drain_timeout)
    await run._run(handle_signals, task_status)
    return run


def run(graph: NanoStreamGraph, *, drain_timeout: float | None = 30.0) -> GraphRun:
    """Run ``graph`` in a new trio event loop, draining on SIGINT/SIGTERM.

    The entry point for a script; inside a trio program use :func:`run_graph`.
    """
    return trio.run(lambda: run_graph(graph, drain_timeout=drain_timeout, handle_signals=True))


class _NodeTask:
    """The runtime side of one node: its channels, counters and loop.

    Kept apart from the user's processor so that the processor holds only
    the parameters its class declares.
    """

    def __init__(self, run: GraphRun, node: Node) -> None:
        self.graph_run = run
        self.node = node
        self.name = node.name
        self.processor = node.processor
        self.options = node.options
        self.stats = run.stats[node.name]
        self.inbox: trio.MemoryReceiveChannel | None = None
        self.outputs: list[trio.MemorySendChannel] = []
        self.dead_letters: trio.MemorySendChannel | None = None
        self.tickets: Tickets = None
        # A node that keeps items back (``holding``) gets its tickets kept
        # back with them: one ``[tickets, count]`` per batch still held, in
        # arrival order. Such a node sends its output whole, never in chunks.
        self.held: deque[list] | None = None
        self.held_count = 0
        self.chunk = self.options.max_batch
        if callable(getattr(self.processor, "holding", None)):
            self.held = deque()
            self.chunk = math.inf

    @classmethod
    def for_graph(cls, run: GraphRun) -> list[_NodeTask]:
        """A task per node, wired with a channel per node input."""
        graph = run.graph
        tasks = {node.name: cls(run, node) for node in graph}
        for name in graph.topological_order():
            senders = graph.inputs(name)
            if not senders:
                continue
            send, receive = trio.open_memory_channel(tasks[name].options.buffer_size)
            tasks[name].inbox = receive
            tasks[name].stats._inbox = receive
            tasks[name].stats.queue_capacity = tasks[name].options.buffer_size
            for sender in graph.nodes[name].parents:
                tasks[sender].outputs.append(send.clone())
            for sender in graph.inputs(name)[len(graph.nodes[name].parents) :]:
                tasks[sender].dead_letters = send.clone()
            send.close()
        return list(tasks.values())

    # -- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        """The node's whole life, in a nursery of its own that the node's
        code may start tasks in (:func:`node_nursery`); they are cancelled
        once the node's teardown has returned."""
        try:
            async with trio.open_nursery() as nursery:
                _current_node_nursery.set(nursery)
                _log_items.set(self.graph_run.graph.log_items)
                try:
                    await self._live()
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            failed, rest = group.split(Exception)
            if failed is not None:
                error = failed
                while isinstance(error, BaseExceptionGroup):
                    error = error.exceptions[0]
                self.stats.state = "failed"
                if isinstance(error, NodeError):
                    self.graph_run._fail(error)
                else:
                    failure = NodeError(self.name, "a task in its nursery", error)
                    failure.__cause__ = error
                    self.graph_run._fail(failure)
            if rest is not None:
                raise rest from None

    async def _live(self) -> None:
        set_up = False
        try:
            await self._call("setup", self.processor.setup)
            set_up = True
            self.graph_run._set_up()
            await self.graph_run._all_set_up.wait()
            self.stats.state = "running"
            if self.node.is_source:
                with trio.CancelScope() as scope:
                    self.graph_run._source_scopes.append(scope)
                    if self.graph_run.stopping:
                        scope.cancel()
                    await self._produce()
            else:
                await self._consume_with_workers()
                await self._finish()
            self.stats.state = "finished"
        except NodeError as error:
            self.stats.state = "failed"
            self.graph_run._fail(error)
        except trio.Cancelled:
            self.stats.state = "cancelled"
            raise
        except BaseExceptionGroup as group:
            if group.split(trio.Cancelled)[1] is None:
                self.stats.state = "cancelled"
            raise
        finally:
            for channel in self._all_outputs():
                channel.close()
            if self.node.is_source:
                if set_up:
                    await self._teardown_after_consumers()
            else:
                self.graph_run._consumer_done()
                if set_up:
                    await self._teardown()

    def _all_outputs(self) -> list[trio.MemorySendChannel]:
        if self.dead_letters is None:
            return self.outputs
        return [*self.outputs, self.dead_letters]

    async def _teardown_after_consumers(self) -> None:
        """A source's teardown, once every other node is done (or the graph
        is cancelled): the items in flight are acknowledged by then, so a
        source that commits at teardown (a Kafka consumer) commits them."""
        try:
            await self.graph_run._consumers_done.wait()
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = min(
                trio.current_time() + TEARDOWN_TIMEOUT, self.graph_run._teardown_deadline
            )
            if self.graph_run._cancelled:
                scope.cancel()
            self.graph_run._teardown_scopes.add(scope)
            try:
                await self._call("teardown", self.processor.teardown)
            except NodeError as error:
                self.graph_run._fail(error)
            finally:
                self.graph_run._teardown_scopes.discard(scope)
        if scope.cancelled_caught:
            logger.warning(
                "node %r: teardown did not finish in time",
                self.name,
                extra={
                    "pipeline": self.graph_run.graph.name,
                    "node": self.name,
                    "event": "teardown_timeout",
                },
            )

    async def _call(self, during: str, hook: Callable[[], Any]) -> Any:
        try:
            return await call_hook(hook)
        except Exception as error:
            raise NodeError(self.name, during, error) from error

    # -- sources -----------------------------------------------------------

    async def _produce(self) -> None:
        processor = self.processor
        max_batch = self.options.max_batch
        if callable(getattr(processor, "generate_batches", None)):
            generate, during = processor.generate_batches, "generate_batches"
        else:
            generate, during = processor.generate, "generate"
        style = call_style(generate)
        try:
            produced = generate()
            if during == "generate_batches":
                if style == "async generator":
                    async with aclosing(produced):
                        async for batch in produced:
                            await self._emit_from_source(list(batch))
                else:
                    for batch in produced:
                        await self._emit_from_source(list(batch))
            elif style == "async generator":
                async with aclosing(produced):
                    async for item in produced:
                        await self._emit_from_source([item])
            elif style == "generator":
                iterator = iter(produced)
                while batch := _take(iterator, max_batch):
                    await self._emit_from_source(batch)
            else:
                raise TypeError(f"{during}() must be a generator or an async generator")
        except (trio.Cancelled, NodeError):
            raise
        except Exception as error:
            raise NodeError(self.name, during, error) from error

    async def _emit_from_source(self, items: list) -> None:
        tickets = None
        kinds = set(map(type, items))
        if NoneType in kinds or WithAck in kinds:  # None is never an item: reject it
            items = [rejected_if_none(item) for item in items]
            kinds = set(map(type, items))
        if Rejected in kinds:
            accepted = []
            for item in items:
                if type(item) is Rejected:
                    await self._reject(item)
                else:
                    accepted.append(item)
            items = accepted
            kinds = set(map(type, items))
        if WithAck in kinds or NoneType in kinds:
            acks = [item.ack for item in items if type(item) is WithAck]
            items = [item.item if type(item) is WithAck else item for item in items]
            items = [item for item in items if item is not None]
            if acks:
                tickets = [Ticket(self.name, acks)]
        await self._emit(items, tickets)
        self.stats.emitted += len(items)

    async def _reject(self, rejected: Rejected) -> None:
        """Apply the source's error policy to input it rejected.

        Retrying cannot change what arrived, so ``retry`` goes straight to
        its fallback.
        """
        options = self.options
        policy = options.retry_fallback if options.on_error == "retry" else options.on_error
        failure = NodeError(self.name, "generate", rejected.error, rejected.raw)
        failure.__cause__ = rejected.error
        self.stats.errors += 1
        self.tickets = None if rejected.ack is None else [Ticket(self.name, [rejected.ack])]
        await self._give_up([rejected.raw], failure, policy)
        await self._emit([], self.tickets)

    # -- processors --------------------------------------------------------

    async def _consume(self) -> None:
        inbox = self.inbox
        assert inbox is not None
        handle = self._batch_handler()
        stats = self.stats
        max_batch = self.options.max_batch
        clock = time.perf_counter
        deadline = getattr(self.processor, "deadline", None)
        timed = callable(deadline) and callable(getattr(self.processor, "on_deadline", None))
        held = None
        while True:
            if held is not None:
                (items, tickets), held = held, None
            else:
                try:
                    if timed:
                        when = deadline()
                        with trio.move_on_at(math.inf if when is None else when) as timer:
                            items, tickets = await inbox.receive()
                        if timer.cancelled_caught:
                            await self._on_deadline()
                            continue
                    else:
                        items, tickets = await inbox.receive()
                except trio.EndOfChannel:
                    return
            if len(items) < max_batch:
                items, tickets, held = _take_waiting(inbox, items, tickets, max_batch)
            elif len(items) > max_batch:
                items, tickets, held = _split(items, tickets, max_batch)
            stats.received += len(items)
            self.tickets = tickets
            started = clock()
            results = await handle(items)
            stats.busy_seconds += clock() - started
            if self.held is not None:
                tickets = self._settle(tickets, len(items))
            await self._emit(results, tickets)
            stats.emitted += len(results)

    async def _consume_with_workers(self) -> None:
        """Run ``workers`` consuming loops on the one input.

        Each worker is a shallow copy of this task: the same processor,
        channels and counters, its own batch in hand.
        """
        if self.options.workers == 1:
            await self._consume()
            return
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.options.workers):
                    nursery.start_soon(copy.copy(self)._consume)
        except* NodeError as failures:
            first, *others = failures.exceptions
            for other in others:
                first.add_note(f"also: {other}")
            raise first from first.__cause__

    async def _on_deadline(self) -> None:
        """Run a holding node's ``on_deadline`` and send on what it lets go."""
        self.tickets = None
        started = time.perf_counter()
        results = await self._results_of(self.processor.on_deadline, "on_deadline")
        self.stats.busy_seconds += time.perf_counter() - started
        tickets = self._settle(None, 0) if self.held is not None else None
        await self._emit(results, tickets)
        self.stats.emitted += len(results)

    async def _finish(self) -> None:
        finish = getattr(self.processor, "finish", None)
        self.tickets = None
        results = await self._results_of(finish, "finish") if callable(finish) else []
        tickets = None
        if self.held:
            # What a node still holds once it has finished, it has dropped.
            for segment_tickets, _ in self.held:
                tickets = combine(tickets, segment_tickets)
            self.held.clear()
        self.stats.emitted += len(results)
        await self._emit(results, tickets)

    def _settle(self, tickets: Tickets, count: int) -> Tickets:
        """The tickets a holding node's emission carries.

        ``count`` items (with ``tickets``) just arrived. The node now holds
        ``holding()`` items, the most recent ones; the batches of the items
        it let go travel on with this emission. A batch it let go of only in
        part is referenced once more, since the rest is still held.
        """
        held = self.held
        assert held is not None
        if count:
            held.append([tickets, count])
            self.held_count += count
        released = None
        excess = self.held_count - self.processor.holding()
        while excess > 0 and held:
            segment = held[0]
            segment_tickets, segment_count = segment
            if segment_count <= excess:
                held.popleft()
                taken = segment_count
            else:
                segment[1] -= excess
                taken = excess
                if segment_tickets is not None:
                    retain(segment_tickets, 1)
            released = combine(released, segment_tickets)
            self.held_count -= taken
            excess -= taken
        return released

    async def _results_of(
        self, function: Callable[..., Any], during: str, *args: Any, style: str | None = None
    ) -> list:
        """Call a user function of any call style; collect what it sends on.

        What a generator yields is sent on in chunks of ``max_batch`` while
        it runs, so a node may yield far more than it could hold; only the
        last chunk is returned.
        """
        try:
            style = style or call_style(function)
            if style in ("async generator", "generator"):
                produced = function(*args)
                if style == "generator":
                    produced = _as_async(produced)
                results: list = []
                async with aclosing(produced):
                    async for result in produced:
                        if result is not None:
                            results.append(result)
                            if len(results) >= self.chunk:
                                await self._send_early(results)
                                results = []
                return results
            result = function(*args)
            if style == "async" or inspect.isawaitable(result):
                result = await result
        except trio.Cancelled:
            raise
        except NodeError:
            raise
        except Exception as error:
            raise NodeError(self.name, during, error) from error
        if during == "process_batch":
            return [] if result is None else [r for r in result if r is not None]
        return [] if result is None else [result]

    async def _send_early(self, results: list) -> None:
        """Send part of a batch's results on before the batch is done.

        The part takes one more reference on the batch's tickets; the
        batch's own reference travels with its last part as usual.
        """
        tickets = self.tickets
        if tickets is not None:
            retain(tickets, 1)
        await self._emit(results, tickets)
        self.stats.emitted += len(results)

    def _batch_handler(self) -> Callable[[list], Awaitable[list]]:
        """The coroutine function that turns one input batch into results.

        Plain ``process_item`` functions get a tight loop with no per-item
        overhead beyond the call itself; errors leave the loop and re-enter
        it after the failed item.
        """
        processor = self.processor
        if callable(getattr(processor, "process_batch", None)):
            process_batch = processor.process_batch

            async def handle_batch(items: list) -> list:
                try:
                    return await self._results_of(process_batch, "process_batch", items)
                except NodeError as failure:
                    if isinstance(failure.error, FailedItems):
                        return await self._recover_failed_items(items, failure.error)
                    return await self._recover(
                        items,
                        failure,
                        partial(self._results_of, process_batch, "process_batch", items),
                    )

            return handle_batch

        process_item = getattr(processor, "process_item", None)
        if not callable(process_item):
            raise NodeError(
                self.name,
                "setup",
                TypeError(f"{type(processor).__name__} defines no process_item()"),
            )
        style = call_style(process_item)
        if style == "generator":
            return self._generator_handler(process_item)
        if style != "plain":

            async def handle_each(items: list) -> list:
                results = []
                for item in items:
                    try:
                        results += await self._results_of(
                            process_item, "process_item", item, style=style
                        )
                    except NodeError as failure:
                        results += await self._recover(
                            [item],
                            failure,
                            partial(self._results_of, process_item, "process_item", item),
                        )
                    if len(results) >= self.chunk:
                        await self._send_early(results)
                        results = []
                return results

            return handle_each

        async def handle_plain(items: list) -> list:
            results: list = []
            append = results.append
            remaining = iter(items)
            while True:
                try:
                    for item in remaining:
                        result = process_item(item)
                        if result is not None:
                            append(result)
                    return results
                except Exception as error:
                    results += await self._recover_item(process_item, item, error)

        return handle_plain

    def _generator_handler(
        self, process_item: Callable[[Any], Any]
    ) -> Callable[[list], Awaitable[list]]:
        """A batch handler for a ``process_item`` that is a plain generator:
        iterated directly, with no async wrapper per item."""
        chunk = self.chunk

        async def handle_generated(items: list) -> list:
            results: list = []
            for item in items:
                kept = len(results)
                try:
                    with closing(process_item(item)) as produced:
                        for result in produced:
                            if result is not None:
                                results.append(result)
                                if len(results) >= chunk:
                                    await self._send_early(results)
                                    results, kept = [], 0
                except NodeError:
                    raise
                except Exception as error:
                    # What the failed item yielded before it failed goes with it.
                    del results[kept:]
                    results += await self._recover_item(process_item, item, error)
            return results

        return handle_generated

    async def _recover_item(
        self, process_item: Callable[[Any], Any], item: Any, error: Exception
    ) -> list:
        """Apply the error policy to ``item``, on which ``process_item`` raised ``error``."""
        failure = NodeError(self.name, "process_item", error, item)
        failure.__cause__ = error
        return await self._recover(
            [item], failure, partial(self._results_of, process_item, "process_item", item)
        )

    async def _recover(
        self, items: list, failure: NodeError, attempt: Callable[[], Awaitable[list]]
    ) -> list:
        """Apply this node's error policy to ``items``, which just failed.

        Returns what a successful retry produced, or nothing once the items
        are given up on.
        """
        options = self.options
        policy = options.on_error
        self.stats.errors += 1
        if policy == "retry":
            delay = options.retry_delay
            for _ in range(options.retries):
                self.stats.retries += 1
                await trio.sleep(delay)
                delay = min(2 * delay, options.retry_max_delay)
                try:
                    return await attempt()
                except NodeError as again:
                    self.stats.errors += 1
                    failure = again
            policy = options.retry_fallback
        await self._give_up(items, failure, policy)
        return []

    async def _recover_failed_items(self, items: list, failed: FailedItems) -> list:
        """Apply the error policy to each item a ``process_batch`` reported
        failed, keeping what it produced for the others. A retry passes the
        one item to ``process_batch`` again."""
        bad = [index for index in failed.errors if not 0 <= index < len(items)]
        if bad:
            why = ValueError(
                f"FailedItems names item {bad[0]} of a batch of {len(items)} (indexes from 0)"
            )
            raise NodeError(self.name, "process_batch", why) from failed
        process_batch = self.processor.process_batch

        async def attempt(item: Any) -> list:
            try:
                return await self._results_of(process_batch, "process_batch", [item])
            except NodeError as again:
                if isinstance(again.error, FailedItems):
                    [error] = again.error.errors.values()
                    raise NodeError(self.name, "process_batch", error, item) from error
                raise

        # As for a batch that returns: None stands for nothing to send.
        results = [result for result in failed.results if result is not None]
        for index in sorted(failed.errors):
            item, error = items[index], failed.errors[index]
            failure = NodeError(self.name, "process_batch", error, item)
            results += await self._recover([item], failure, partial(attempt, item))
        return results

    async def _give_up(self, items: list, failure: NodeError, policy: str) -> None:
        """Raise ``failure`` under ``fail``; under ``skip`` count and log the
        items, and send them to the dead-letter node if there is one."""
        if len(items) == 1 and failure.item is None:
            failure = NodeError(self.name, failure.during, failure.error, items[0])
        if policy == "fail":
            raise failure from failure.error
        self.stats.skipped += len(items)
        self.graph_run._skip_log.warning(self.name, failure)
        if self.dead_letters is not None:
            letters = [DeadLetter(self.name, item, failure.error) for item in items]
            self.stats.dead_lettered += len(letters)
            if self.tickets is not None:
                retain(self.tickets, 1)
            await self.dead_letters.send((letters, self.tickets))

    # -- sending -----------------------------------------------------------

    async def _emit(self, items: list, tickets: Tickets) -> None:
        """Send ``items`` to every child, or release their tickets if this
        is where they end."""
        outputs = self.outputs
        if items and outputs:
            if tickets is not None and len(outputs) > 1:
                retain(tickets, len(outputs) - 1)
            for channel in outputs:
                await channel.send((items, tickets))
        elif tickets is not None:
            self._acknowledge(release(tickets))

    def _acknowledge(self, complete: list[Ticket]) -> None:
        for ticket in complete:
            try:
                for ack in ticket.acks:
                    ack()
            except Exception as error:
                raise NodeError(ticket.source, "acknowledgement", error) from error
            self.graph_run.stats[ticket.source].acknowledged += len(ticket.acks)


def _take(iterator: Any, count: int) -> list:
    """Up to ``count`` items from ``iterator``."""
    batch = []
    append = batch.append
    for item in iterator:
        append(item)
        if len(batch) >= count:
            break
    return batch


async def _as_async(iterator: Any) -> Any:
    """A plain generator as an async one, closed with it."""
    with closing(iterator):
        for item in iterator:
            yield item


def _split(
    items: list, tickets: Tickets, max_batch: int
) -> tuple[list, Tickets, tuple[list, Tickets]]:
    """The first ``max_batch`` of ``items``, and the rest to handle next.

    Both parts carry the batch's tickets, which take one more reference.
    """
    if tickets is not None:
        retain(tickets, 1)
    return items[:max_batch], tickets, (items[max_batch:], tickets)


def _take_waiting(
    inbox: trio.MemoryReceiveChannel, items: list, tickets: Tickets, max_batch: int
) -> tuple[list, Tickets, tuple[list, Tickets] | None]:
    """``items`` merged with the batches already waiting, up to ``max_batch``.

    Returns the merged items, their tickets, and the batch that was received
    but would have taken the merge past ``max_batch`` (or ``None``); the
    caller handles that one next. Received lists may be shared with sibling
    nodes, so they are copied, never extended in place.
    """
    merged = None
    while len(merged if merged is not None else items) < max_batch:
        try:
            more, more_tickets = inbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        if len(merged if merged is not None else items) + len(more) > max_batch:
            return (items if merged is None else merged), tickets, (more, more_tickets)
        if merged is None:
            merged = list(items)
        merged += more
        tickets = combine(tickets, more_tickets)
    return (items if merged is None else merged), tickets, None


class _RateLimitedLog:
    """Logs skipped items, at most ``burst`` per node per ``period`` seconds,
    then one line saying how many more were skipped unlogged (when the next
    period starts, or when the run ends)."""

    def __init__(self, pipeline: str, burst: int = 10, period: float = 10.0) -> None:
        self.pipeline = pipeline
        self.burst = burst
        self.period = period
        self._windows: dict[str, tuple[float, int]] = {}

    def warning(self, node: str, failure: NodeError) -> None:
        now = trio.current_time()
        start, count = self._windows.get(node, (-math.inf, 0))
        if now - start >= self.period:
            self._report_unlogged(node, count)
            start, count = now, 0
        count += 1
        self._windows[node] = (start, count)
        if count <= self.burst:
            logger.warning(
                "skipped: %s",
                failure,
                extra={"pipeline": self.pipeline, "node": node, "event": "skipped"},
            )

    def flush(self) -> None:
        """Report what was skipped unlogged in the periods still open."""
        for node, (_, count) in self._windows.items():
            self._report_unlogged(node, count)
        self._windows.clear()

    def _report_unlogged(self, node: str, count: int) -> None:
        if count > self.burst:
            unlogged = count - self.burst
            logger.warning(
                "node %r: %d more items skipped without a log line",
                node,
                unlogged,
                extra={
                    "pipeline": self.pipeline,
                    "node": node,
                    "event": "skipped_unlogged",
                    "count": unlogged,
                },
            )
