"""The run being observed, which exists only once every node's setup is done."""

from __future__ import annotations

from .._graph import NanoStreamGraph
from .._runtime import GraphRun


class RunHolder:
    """Where observers find a graph's :class:`GraphRun`.

    ``await nursery.start(run_graph, graph)`` returns the run only after
    setup, but a health check must already answer while setup is under way
    (with "not ready"); so the metrics server and the console are handed
    this holder, which starts empty and is filled with :meth:`started`.
    Times are on trio's clock.
    """

    def __init__(self, graph: NanoStreamGraph) -> None:
        self.restart(graph)

    def restart(self, graph: NanoStreamGraph) -> None:
        """Hold ``graph``, not yet set up: a new version of the pipeline, for
        observers that watch one version after another (``run --watch``)."""
        self.graph = graph
        self.run: GraphRun | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def started(self, run: GraphRun, now: float) -> None:
        """Every node is set up: ``run`` is live from ``now`` on."""
        self.run = run
        self.started_at = now

    def finished(self, now: float) -> None:
        """``run_graph`` has returned (or raised) at ``now``."""
        self.finished_at = now

    def elapsed(self, now: float | None = None) -> float:
        """Seconds from the end of setup to the end of the run, or to ``now``
        while it runs."""
        end = self.finished_at if self.finished_at is not None else now
        if self.started_at is None or end is None:
            return 0.0
        return end - self.started_at

    def phase(self) -> str:
        """Where the run is: setting up, running, stopping, then finished,
        stopped (drained after a signal), cut short (the drain timed out)
        or failed."""
        run = self.run
        if run is None:
            return "setting up" if self.finished_at is None else "failed"
        if self.finished_at is None:
            return "stopping" if run.stopping else "running"
        if run.errors:
            return "failed"
        if not run.drained:
            return "cut short"
        return "stopped" if run.stopping else "finished"
