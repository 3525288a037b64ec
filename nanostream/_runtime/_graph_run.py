"""A graph while it runs: one nursery, a lifecycle per node, and the means to stop it."""

from __future__ import annotations

import logging
import signal

import trio

from .._graph import NanoStreamGraph
from ._checkpoints import Checkpoints
from ._control import RunControl
from ._errors import NodeError
from ._heap import heap_frozen
from ._node import NodeLifecycle
from ._signals import SignalHandling
from ._stats import NodeStats
from ._wiring import wire

logger = logging.getLogger("nanostream")


class GraphRun:
    """A graph while it runs: its counters, and the means to stop it.

    ``await nursery.start(run_graph, graph)`` returns one once every node's
    setup is done. Once it has ended, ``drained`` says whether it ended
    without cutting anything short, ``abandoned`` how many items were in
    flight when it was cut short, and ``signal`` which signal stopped it.
    """

    def __init__(self, graph: NanoStreamGraph, drain_timeout: float | None) -> None:
        self.graph = graph
        self.drain_timeout = drain_timeout
        self.stats: dict[str, NodeStats] = {node.name: NodeStats() for node in graph}
        self.drained = True
        self.abandoned = 0
        self.signal: signal.Signals | None = None
        #: The run's checkpoints, with a ``state_dir``; ``saved`` counts them.
        self.checkpoints: Checkpoints | None = None
        self._control = RunControl(
            graph.name, len(graph), sum(not node.is_source for node in graph), graph.log_items
        )

    @property
    def errors(self) -> list[NodeError]:
        """The node failures of this run, in the order they happened."""
        return self._control.errors

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` or :meth:`cancel` has been called."""
        return self._control.stopping

    @property
    def set_up(self) -> bool:
        """Whether every node's setup is done (and items may flow)."""
        return self._control.all_set_up.is_set()

    @property
    def in_flight(self) -> int:
        """Items sent to a node and not yet handled by it, across the graph."""
        return sum(stats.in_flight for stats in self.stats.values())

    @property
    def exit_status(self) -> int:
        """The process exit status this run calls for: 0 once drained, else
        128 + the signal number if a signal stopped it (the shell's
        convention), else 1."""
        if self.drained and not self.errors:
            return 0
        return 128 + self.signal if self.signal is not None else 1

    def stop(self) -> None:
        """Stop the sources and let what is in flight drain through.

        Every node then finishes as at a normal end of stream, teardowns
        included, within ``drain_timeout`` seconds; then the rest is
        cancelled. Before every node is set up nothing flows, so there is
        nothing to drain: the run is cancelled.
        """
        if not self.set_up:
            self.cancel()
            return
        self._control.stop(self.drain_timeout)

    def cancel(self) -> None:
        """Stop everything at once; teardowns are cut short too."""
        self._control.cancel()

    async def _run(self, handle_signals: bool, task_status: trio.TaskStatus) -> None:
        control = self._control
        ports = wire(self.graph, self.stats)
        checkpoints = None
        if self.graph.state_dir is not None:
            checkpoints = self.checkpoints = Checkpoints(self.graph, self.stats)
        lifecycles = [
            NodeLifecycle(control, node, self.stats[node.name], ports[node.name], checkpoints)
            for node in self.graph
        ]
        if checkpoints is not None:
            for lifecycle in lifecycles:
                checkpoints.keep(lifecycle.name, lifecycle.state, lifecycle.processor)
        signals = None
        if handle_signals:
            signals = SignalHandling(
                self._on_signal, lambda: self.in_flight, lambda: self.set_up, self.drain_timeout
            )
            signals.install()
        try:
            with control.scope:
                if checkpoints is not None:
                    await checkpoints.open()
                async with trio.open_nursery() as nodes:
                    for lifecycle in lifecycles:
                        nodes.start_soon(lifecycle.run, name=f"nanostream node {lifecycle.name}")
                    await control.all_set_up.wait()
                    if checkpoints is not None:
                        nodes.start_soon(checkpoints.run, control.consumers_done, control.fail)
                    task_status.started(self)
        finally:
            if signals is not None:
                signals.restore()
            if checkpoints is not None:
                with trio.CancelScope(shield=True):
                    await checkpoints.close()
        if not self.set_up and not self.errors:  # stopped while setting up
            task_status.started(self)
        control.skip_log.flush()
        cut_short = control.scope.cancelled_caught or control.teardown_cut_short
        if cut_short and not self.errors:
            self.drained = False
            self.abandoned = self.in_flight
            self._log_cut_short()
        if self.errors:
            first = self.errors[0]
            for other in self.errors[1:]:
                first.add_note(f"also: {other}")
            raise first

    def _log_cut_short(self) -> None:
        extra = {"pipeline": self.graph.name, "count": self.abandoned}
        if not self._control.cancelled:
            logger.warning(
                "pipeline %r: the drain timeout of %ss passed; the rest was cancelled, "
                "with %d items in flight",
                self.graph.name,
                self.drain_timeout,
                self.abandoned,
                extra={**extra, "event": "drain_timeout"},
            )
        else:
            logger.warning(
                "pipeline %r: stopped at once, with %d items in flight",
                self.graph.name,
                self.abandoned,
                extra={**extra, "event": "stopped_at_once"},
            )

    def _on_signal(self, which: signal.Signals, count: int) -> None:
        extra = {"pipeline": self.graph.name, "signal": which.name}
        if count > 1:
            logger.warning(
                "second %s: stopping at once", which.name, extra={**extra, "event": "cancel"}
            )
            self.signal = which
            self.cancel()
        else:
            logger.info("%s: draining", which.name, extra={**extra, "event": "drain"})
            self.signal = which
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
    items in flight drain, teardowns included, for at most
    ``drain_timeout`` seconds; a second signal cancels at once. Each
    signal counts, even one that arrives while user code holds the event
    loop. If the graph has not ended 0.8 s after it was cancelled (by the
    second signal or the drain timeout), because user code blocks or
    ignores cancellation, the process exits with status 128 + the signal
    number. Only the main thread can handle signals.

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
    with heap_frozen():
        await run._run(handle_signals, task_status)
    return run


def run(graph: NanoStreamGraph, *, drain_timeout: float | None = 30.0) -> GraphRun:
    """Run ``graph`` in a new trio event loop, draining on SIGINT/SIGTERM.

    The entry point for a script; inside a trio program use :func:`run_graph`.
    """
    return trio.run(lambda: run_graph(graph, drain_timeout=drain_timeout, handle_signals=True))
