"""The counters of one node, read live by whatever watches the run."""

from __future__ import annotations

import time

import attrs
import trio


@attrs.define
class NodeStats:
    """What one node has done so far; read them live from :class:`GraphRun`.

    Counts are of items, counted as each item is done (not when its batch
    ends), so rates read live are right for slow nodes too. ``received``
    counts the items this node has taken from its input and handled;
    ``in_progress`` those taken and not yet handled; ``waiting`` those
    sent to it and not yet taken. ``errors`` counts every exception the
    node's code raised, including those a retry then overcame; ``skipped``
    the items given up on under ``skip`` (or a retry's ``skip`` fallback),
    of which ``dead_lettered`` were sent to a dead-letter node.
    ``busy_seconds`` is the time spent in the node's own code, summed over
    its workers; ``worker_busy_seconds`` is the same for each worker (one
    entry per worker of the node). For nodes run fused in a chain, busy time
    is an estimate: the time of the fused loop, shared among them by what a
    sampled batch run node by node costs each (see "Operator chaining" in
    docs/runtime.md). The input queue is counted in batches: ``queued`` of
    ``queue_capacity`` (both 0 for a source). ``state`` goes starting,
    running, then finished, failed or cancelled.
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
    in_progress: int = 0
    waiting: int = 0
    worker_busy_seconds: list[float] = attrs.field(factory=lambda: [0.0])
    _inbox: trio.MemoryReceiveChannel | None = attrs.field(default=None, repr=False, eq=False)

    def watch_input(self, inbox: trio.MemoryReceiveChannel, capacity: int) -> None:
        """Report the fill of ``inbox``, which holds ``capacity`` batches, as :attr:`queued`."""
        self._inbox = inbox
        self.queue_capacity = capacity

    @property
    def queued(self) -> int:
        """Batches waiting in this node's input queue right now."""
        if self._inbox is None:
            return 0
        return self._inbox.statistics().current_buffer_used

    @property
    def in_flight(self) -> int:
        """Items sent to this node that it has not yet handled."""
        return self.waiting + self.in_progress


class WorkerCounter:
    """One worker's share of its node's counters: items done and time spent."""

    __slots__ = ("credited", "handed_over", "index", "started", "stats")

    def __init__(self, stats: NodeStats, index: int) -> None:
        self.stats = stats
        self.index = index
        #: When the work under way began, for work that may hand results
        #: on before it is done (a generator's chunks).
        self.started = 0.0
        #: Up to when that work has been counted as busy: the end of its
        #: last hand-over.
        self.credited = 0.0
        #: Seconds that work has spent handing results on.
        self.handed_over = 0.0

    def done(self, count: int, started: float) -> None:
        """``count`` items are handled, in work that began at ``started``
        (a :func:`time.perf_counter` reading): the time since it began, or
        since it last handed results on, counts as busy."""
        spent = time.perf_counter() - max(started, self.credited)
        self.handed_over = 0.0
        stats = self.stats
        stats.received += count
        stats.in_progress -= count
        stats.busy_seconds += spent
        stats.worker_busy_seconds[self.index] += spent

    def handed_on(self, began: float) -> None:
        """The work under way, begun at :attr:`started`, handed results on
        from ``began`` until now. What it did before counts as busy now, so
        that a node's busy share moves while it works through a long item
        (a file read record by record); the hand-over does not count: it
        is the nodes chained after it, or a wait for room in a full queue."""
        now = time.perf_counter()
        spent = began - max(self.started, self.credited)
        self.stats.busy_seconds += spent
        self.stats.worker_busy_seconds[self.index] += spent
        self.credited = now
        self.handed_over += now - began
