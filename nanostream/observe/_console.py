"""What a person running a pipeline sees: a live table, or a summary at exit.

Both read :class:`NodeStats` when they draw, never in the hot path. Rates
come from successive samples the view keeps itself.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import NamedTuple

import trio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from .._graph import NanoStreamGraph
from .._runtime import NodeStats
from .._runtime._chaining import chained_parents
from ._holder import RunHolder

logger = logging.getLogger("nanostream.run")

#: Seconds of samples a live rate is computed over.
RATE_WINDOW = 2.0

#: The least share of time in its own code for the busiest node to be
#: called the bottleneck; below it the pipeline is waiting on its sources.
BUSY_THRESHOLD = 0.01


class NodeCounts(NamedTuple):
    """The counts of one node that both the table and the summary show."""

    name: str
    kind: str
    state: str
    received: int
    emitted: int
    skipped: int
    errors: int


def node_counts(graph: NanoStreamGraph, stats: dict[str, NodeStats]) -> list[NodeCounts]:
    return [
        NodeCounts(
            node.name,
            type(node.processor).__name__,
            stats[node.name].state,
            stats[node.name].received,
            stats[node.name].emitted,
            stats[node.name].skipped,
            stats[node.name].errors,
        )
        for node in graph
    ]


def throughput(graph: NanoStreamGraph, name: str, stats: NodeStats) -> int:
    """Items a node has handled: emitted by a source, received by the rest."""
    return stats.emitted if graph.nodes[name].is_source else stats.received


def bottleneck(
    graph: NanoStreamGraph, stats: dict[str, NodeStats], busy: dict[str, float]
) -> tuple[str, str] | None:
    """The node holding the pipeline back, and why; ``None`` if none is.

    A node whose input queue is full while every child's queue has room is
    the one the items wait for. Without one, the node that spent the most
    time in its own code is the likeliest, if it spent a noticeable share
    (:data:`BUSY_THRESHOLD`) of the time there.
    """

    def full(name: str) -> bool:
        return 0 < stats[name].queue_capacity <= stats[name].queued

    blocked = [
        name
        for name in stats
        if full(name) and not any(full(child) for child in graph.children(name))
    ]
    if blocked:
        return max(blocked, key=lambda name: busy.get(name, 0.0)), "input queue full"
    busiest = max(busy, key=busy.__getitem__, default=None)
    if busiest is not None and busy[busiest] >= BUSY_THRESHOLD:
        return busiest, "busiest"
    return None


class StatusView:
    """The live table of one run: a row per node, totals, the bottleneck.

    Each :meth:`render` samples the counters; rates and busy fractions are
    over the last :data:`RATE_WINDOW` seconds while the run goes on, and
    averages over the whole run once it is over.
    """

    def __init__(self, holder: RunHolder) -> None:
        self.holder = holder
        self._samples: deque[tuple[float, dict[str, tuple[int, tuple[float, ...]]]]] = deque()
        #: Each worker's busy share of each node, as of the last render.
        self.worker_busy: dict[str, list[float]] = {}
        # Each column's widest cell so far, by heading: columns only ever
        # widen, so the table does not jitter as numbers grow and shrink.
        self._widths: dict[str, int] = {}

    def _rates(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Items per second and busy fraction of each node (of what its
        workers could do together); each worker's in :attr:`worker_busy`."""
        run = self.holder.run
        assert run is not None
        graph = run.graph
        current = {
            name: (throughput(graph, name, stats), tuple(stats.worker_busy_seconds))
            for name, stats in run.stats.items()
        }
        if self.holder.finished_at is not None:
            then = self.holder.started_at or now
            before = {name: (0, (0.0,) * len(spent)) for name, (_, spent) in current.items()}
            now = self.holder.finished_at
        else:
            self._samples.append((now, current))
            while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
                self._samples.popleft()
            then, before = self._samples[0]
        span = now - then
        if span <= 0:
            return {}, {}
        rates = {name: (count - before[name][0]) / span for name, (count, _) in current.items()}
        self.worker_busy = {
            name: [(a - b) / span for a, b in zip(spent, before[name][1], strict=True)]
            for name, (_, spent) in current.items()
        }
        busy = {name: sum(shares) / len(shares) for name, shares in self.worker_busy.items()}
        return rates, busy

    def _busy(self, name: str, busy: dict[str, float]) -> str:
        """A node's busy share; with several workers, the least and most busy one's too."""
        shares = self.worker_busy.get(name, [])
        if len(shares) < 2:
            return f"{busy[name]:.0%}"
        return f"{busy[name]:.0%} ({min(shares):.0%}..{max(shares):.0%})"

    def render(self, now: float) -> Text:
        """The table as of ``now`` (trio's clock).

        Laid out as aligned lines of text rather than a rich ``Table``: the
        columns are simple, and measuring a ``Table`` four times a second
        costs the pipeline more than all the other watching together.
        """
        holder = self.holder
        graph = holder.graph
        view = Text(no_wrap=True, overflow="ellipsis")
        run = holder.run
        if run is None:
            view.append(f"{graph.name} · {holder.phase()} {len(graph)} nodes", style="bold")
            return view
        rates, busy = self._rates(now)
        expected = expected_items(graph)
        phase = f"{graph.name} · {holder.phase()} · {_duration(holder.elapsed(now))}"
        progress = _progress(graph, run.stats, expected, rates, holder.finished_at is not None)
        view.append(phase + progress + "\n", style="bold")
        found = bottleneck(graph, run.stats, busy)
        counts = node_counts(graph, run.stats)
        # Columns that would only hold zeros are left out, to keep the
        # table narrow; they appear once something happens.
        extra = [
            (heading, field)
            for heading, field in EXTRA_COLUMNS
            if any(getattr(stats, field) for stats in run.stats.values())
        ]
        rows = [
            [
                *("node", "class", "state", "in", "out", "rate/s", "queue", "skip", "err"),
                *(heading for heading, _ in extra),
                "busy",
            ]
        ]
        chained = chained_parents(graph)
        for row in counts:
            stats = run.stats[row.name]
            node = graph.nodes[row.name]
            if node.is_source:
                queue = ""
            elif row.name in chained:
                queue = "chained"  # handled in its parent's task, no queue between
            else:
                queue = f"{stats.queued}/{stats.queue_capacity}"
            out = f"{row.emitted:,}"
            if row.name in expected:
                out += f"/{expected[row.name]:,}"
            rows.append(
                [
                    row.name,
                    row.kind,
                    row.state,
                    "" if node.is_source else f"{row.received:,}",
                    out,
                    _rate(rates.get(row.name)),
                    queue,
                    f"{row.skipped:,}",
                    f"{row.errors:,}",
                    *(f"{getattr(stats, field):,}" for _, field in extra),
                    "" if node.is_source or row.name not in busy else self._busy(row.name, busy),
                ]
            )
        for heading, width in zip(rows[0], column_widths(rows), strict=True):
            self._widths[heading] = max(width, self._widths.get(heading, 0))
        header, *lines = aligned(rows, left=3, widths=[self._widths[h] for h in rows[0]])
        rule = "─" * len(header) + "\n"
        view.append(header + "\n", style="bold")
        view.append(rule, style="dim")
        for row, line in zip(counts, lines, strict=True):
            view.append(line + "\n", style="bold red" if found and found[0] == row.name else None)
        view.append(rule, style="dim")
        window = "averages" if holder.finished_at is not None else f"over the last {RATE_WINDOW:g}s"
        caption = f"rates and busy time {window}"
        if found:
            caption += f"; bottleneck: {found[0]} ({found[1]})"
        view.append(caption, style="dim")
        return view


#: Counters shown only once some node's is not zero: (heading, NodeStats field).
EXTRA_COLUMNS = (("retry", "retries"), ("dead", "dead_lettered"), ("acked", "acknowledged"))


def expected_items(graph: NanoStreamGraph) -> dict[str, int]:
    """How many items each source that can tell will emit in all."""
    expected = {}
    for node in graph:
        if node.is_source:
            total = node.processor.expected_items()
            if total is not None:
                expected[node.name] = total
    return expected


def _progress(
    graph: NanoStreamGraph,
    stats: dict[str, NodeStats],
    expected: dict[str, int],
    rates: dict[str, float],
    over: bool,
) -> str:
    """How far the sources are, when every source knows its total (a
    pipeline with an endless source has no end): `` · sources sent 4,000 of
    10,000 items (40%), 3.0s left``. Once they have sent everything, the
    batches still queued say what the rest of the pipeline has left to do."""
    if any(node.is_source and node.name not in expected for node in graph):
        return ""
    total = sum(expected.values())
    sent = sum(min(stats[name].emitted, expected[name]) for name in expected)
    if not total:
        return " · no items"
    if over:
        return f" · sources sent {_items(sent)}"
    if sent < total:
        text = f" · sources sent {sent:,} of {_items(total)} ({sent / total:.0%})"
        rate = sum(rates.get(name, 0.0) for name in expected)
        if rate > 0:
            text += f", {_duration((total - sent) / rate)} left"
        return text
    queued = sum(stats[node.name].queued for node in graph if not node.is_source)
    text = f" · sources sent all {_items(total)}"
    if queued:
        text += f"; {queued:,} batch{'es' if queued != 1 else ''} still queued"
    return text


def _items(count: int) -> str:
    """``1 item``, ``1,200 items``."""
    return f"{count:,} item{'s' if count != 1 else ''}"


def column_widths(rows: list[list[str]]) -> list[int]:
    """The widest cell of each column."""
    return [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]


def aligned(rows: list[list[str]], left: int, widths: list[int] | None = None) -> list[str]:
    """Rows of cells as lines with aligned columns: the first ``left``
    columns flush left (names), the others flush right (numbers). Columns
    are as wide as their widest cell, or as ``widths`` if given."""
    widths = widths or column_widths(rows)
    return [
        "  ".join(
            cell.ljust(width) if column < left else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _rate(rate: float | None) -> str:
    if rate is None:
        return ""
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


async def show_live(
    holder: RunHolder,
    console: Console,
    *,
    interval: float = 0.25,
    redirect_stdout: bool = False,
    redirect_stderr: bool = False,
) -> None:
    """Redraw the run's table on ``console`` every ``interval`` seconds until
    cancelled, then draw it a last time and leave it on screen.

    With ``redirect_stdout`` or ``redirect_stderr``, what the program
    writes there while the table shows is printed above it instead of
    through it; only redirect a stream that goes to the same terminal.

    Cancellation: the expected way to stop it; the final table is drawn
    then. Should drawing fail, the error is logged and the view ends,
    leaving the run alone.
    """
    view = StatusView(holder)
    with Live(
        console=console,
        auto_refresh=False,
        redirect_stdout=redirect_stdout,
        redirect_stderr=redirect_stderr,
    ) as live:
        failed = False
        try:
            while True:
                live.update(view.render(trio.current_time()), refresh=True)
                await trio.sleep(interval)
        except Exception:
            # Watching must never stop what is watched (a source's
            # expected_items() may raise, say): the pipeline goes on.
            failed = True
            logger.exception(
                "the live table failed and is no longer drawn; the pipeline goes on",
                extra={"pipeline": holder.graph.name, "event": "live_table_failed"},
            )
        finally:
            if not failed:
                live.update(view.render(trio.current_time()), refresh=True)


def summary_text(holder: RunHolder) -> str:
    """The block printed at exit without a live table: what each node did,
    with its average rate over the run (items emitted by a source, received
    by the others, per second)."""
    run = holder.run
    graph = holder.graph
    elapsed = holder.elapsed()
    if run is None:
        return f"pipeline {graph.name!r} {holder.phase()} during setup"
    produced = sum(
        stats.emitted for name, stats in run.stats.items() if graph.nodes[name].is_source
    )
    lines = [
        f"pipeline {graph.name!r} {holder.phase()} after {_duration(elapsed)}: "
        f"{_items(produced)} from the sources"
    ]
    rows = [["node", "class", "state", "in", "out", "rate/s", "skipped", "errors"]]
    for row in node_counts(graph, run.stats):
        handled = throughput(graph, row.name, run.stats[row.name])
        rate = _rate(handled / elapsed) if elapsed > 0 else ""
        rows.append(
            [
                *row[:3],
                f"{row.received:,}",
                f"{row.emitted:,}",
                rate,
                f"{row.skipped:,}",
                f"{row.errors:,}",
            ]
        )
    lines += aligned(rows, left=3)
    if run.checkpoints is not None:
        saved = run.checkpoints.saved
        lines.append(
            f"state: {saved} checkpoint{'' if saved == 1 else 's'} saved to {run.checkpoints.path}"
        )
    return "\n".join(lines)
