"""One node's life: setup, its items, finish, teardown, in a nursery of its own."""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import trio

from .._graph import Node
from .._processor import call_hook
from ._chaining import ChainedInput, FusedStages
from ._checkpoints import Checkpoints
from ._control import TEARDOWN_TIMEOUT, RunControl
from ._dead_letters import DeadLetterRoute
from ._errors import NodeError, log_items
from ._executors import ProcessExecutor, ThreadExecutor
from ._inbox import Inbox, key_router
from ._keys import KeyedProcessor, state_of
from ._outbox import Outbox, Outputs
from ._policy import ErrorPolicy
from ._sources import Source
from ._stats import NodeStats
from ._styles import LoopHoldWatch, LoopStyles, OffLoopStyle, during_of
from ._workers import Workers

logger = logging.getLogger("nanostream")

#: The nursery of the node whose task is running, or the fused stages whose
#: loop is running (which know whose code runs); see :func:`node_nursery`.
_current_node_nursery: contextvars.ContextVar[trio.Nursery | FusedStages] = contextvars.ContextVar(
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
        current = _current_node_nursery.get()
    except LookupError:
        raise RuntimeError("node_nursery() is only available in a node's own code") from None
    if isinstance(current, FusedStages):
        return current.running_node()  # type: ignore[return-value]
    return current


class NodePorts:
    """A node's ends of the graph's channels (see ``_wiring``): its inbox,
    or its chained input if it is chained to its parent (see ``_chaining``)."""

    def __init__(self, all_stats: Mapping[str, NodeStats], stats: NodeStats) -> None:
        self.inbox: trio.MemoryReceiveChannel | None = None
        self.chained: ChainedInput | None = None
        #: The head of a chain: its own link, through which its items go down the chain.
        self.head: ChainedInput | None = None
        self.outputs = Outputs(all_stats, stats)
        self.dead_letters: DeadLetterRoute | None = None

    def close(self) -> None:
        self.outputs.close()
        if self.dead_letters is not None:
            self.dead_letters.channel.close()


class NodeLifecycle:
    """Runs one node from setup to teardown, reporting to the run's control.

    A source's teardown waits until every other node is done (or the graph
    is cancelled): the items in flight are acknowledged by then, so a
    source that commits at teardown (a Kafka consumer) commits them.
    """

    def __init__(
        self,
        control: RunControl,
        node: Node,
        stats: NodeStats,
        ports: NodePorts,
        checkpoints: Checkpoints | None = None,
    ):
        self.control = control
        self.checkpoints = checkpoints
        self.node = node
        self.name = node.name
        self.options = node.options
        #: The node's keyed state, saved at checkpoints (see ``_checkpoints``).
        self.state = state_of(
            node.processor,
            node.options.key,
            node.options.state_ttl,
            attach=node.options.executor != "process",
        )
        self.processor = (
            node.processor
            if node.options.key is None
            else KeyedProcessor(node.processor, self.state)
        )
        self.stats = stats
        self.ports = ports
        self.policy = ErrorPolicy(
            node.name, node.options, stats, control.skip_log, ports.dead_letters
        )
        self._nursery: trio.Nursery | None = None
        self.executor: ThreadExecutor | ProcessExecutor | None = None
        if node.options.executor == "thread":
            self.executor = ThreadExecutor(self.processor, node.options.workers)
        elif node.options.executor == "process":
            self.executor = ProcessExecutor(
                node.name, node.processor, node.options.workers, TEARDOWN_TIMEOUT
            )

    async def run(self) -> None:
        """The node's whole life, in a nursery of its own that the node's
        code may start tasks in (:func:`node_nursery`); they are cancelled
        once the node's teardown has returned."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                _current_node_nursery.set(nursery)
                log_items.set(self.control.log_items)
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
                    self.control.fail(error)
                else:
                    failure = NodeError(self.name, "a task in its nursery", error)
                    failure.__cause__ = error
                    self.control.fail(failure)
            if rest is not None:
                raise rest from None

    async def _live(self) -> None:
        control = self.control
        set_up = False
        try:
            await self._restore()
            await self._setup()
            set_up = True
            workers = None if self.node.is_source else self._workers()
            for link in (self.ports.chained, self.ports.head):
                if link is not None:
                    assert workers is not None
                    link.attach(workers, _current_node_nursery, self._nursery)
            if workers is not None:
                workers.chain = self.ports.head
            control.set_up()
            await control.all_set_up.wait()
            self.stats.state = "running"
            if workers is None:
                source = Source(
                    self.name,
                    self.processor,
                    self.options,
                    self.ports.outputs,
                    self.policy,
                    self.checkpoints,
                )
                with control.source_scope():
                    await source.run()
            else:
                if self.ports.chained is not None:
                    await self.ports.chained.wait_until_ended()
                else:
                    await workers.run()
                if not self._resumes_later():
                    await workers.finish()
            self.stats.state = "finished"
        except NodeError as error:
            self.stats.state = "failed"
            control.fail(error)
        except trio.Cancelled:
            self.stats.state = "cancelled"
            raise
        except BaseExceptionGroup as group:
            if group.split(trio.Cancelled)[1] is None:
                self.stats.state = "cancelled"
            raise
        finally:
            self.ports.close()
            if self.node.is_source:
                if set_up:
                    await self._teardown_after_consumers()
            else:
                control.consumer_done()
                if set_up:
                    await self._teardown()

    def _resumes_later(self) -> bool:
        """Whether this node, stopped with its state saved, is left to go on
        from that state on the next run rather than finished now: a window
        left open is saved open, not emitted half full."""
        if self.checkpoints is None or not self.control.stopping:
            return False
        return bool(len(self.state)) or callable(getattr(self.processor, "snapshot", None))

    async def _restore(self) -> None:
        """Give the node the snapshot the last checkpoint holds, if any, before its setup."""
        if self.checkpoints is None:
            return
        found, snapshot = self.checkpoints.restored_snapshot(self.name)
        restore = getattr(self.processor, "restore", None)
        if found and callable(restore):
            await self._call("restore", lambda: restore(snapshot))

    def _workers(self) -> Workers:
        options = self.options
        inbox = None
        if self.ports.inbox is not None:
            route = None
            if options.key is not None and options.workers > 1:
                route = key_router(self.state.key_of, options.workers)
            inbox = Inbox(self.ports.inbox, self.stats, options.max_batch, options.workers, route)
        outbox = Outbox(self.ports.outputs, ordered=options.ordered and options.workers > 1)
        holding = callable(getattr(self.processor, "holding", None))
        styles = LoopStyles(
            self.name,
            self.processor,
            self.policy,
            outbox,
            math.inf if holding else options.max_batch,
            LoopHoldWatch(self.control.pipeline, self.name),
        )
        if self.executor is None:
            handler = styles.handler()
        else:
            handler = OffLoopStyle(
                self.name, during_of(self.processor), self.executor.run, self.policy
            ).handler()
        return Workers(
            self.name,
            self.processor,
            inbox,
            outbox,
            handler,
            styles,
            self.stats,
            options.workers,
            self.checkpoints,
        )

    async def _setup(self) -> None:
        if isinstance(self.executor, ProcessExecutor):
            error = await self.executor.start()
            if error is not None:
                raise NodeError(self.name, "setup", error) from error
        else:
            await self._call("setup", self.processor.setup)

    async def _teardown_after_consumers(self) -> None:
        try:
            await self.control.consumers_done.wait()
            if self.checkpoints is not None:
                # Its position is saved, and what it covers acknowledged, first.
                await self.checkpoints.final.wait()
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        with self.control.teardown_scope() as scope:
            try:
                if isinstance(self.executor, ProcessExecutor):
                    await self.executor.close()
                else:
                    await self._call("teardown", self.processor.teardown)
            except NodeError as error:
                self.control.fail(error)
        if scope.cancelled_caught:
            logger.warning(
                "node %r: teardown did not finish in time",
                self.name,
                extra={
                    "pipeline": self.control.pipeline,
                    "node": self.name,
                    "event": "teardown_timeout",
                },
            )

    async def _call(self, during: str, hook: Callable[[], Any]) -> Any:
        try:
            return await call_hook(hook)
        except Exception as error:
            raise NodeError(self.name, during, error) from error
