"""Error policies: what becomes of items a node's code failed on."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from .._options import NodeOptions
from .._processor import FailedItems
from ._acks import Tickets
from ._dead_letters import DeadLetterRoute
from ._errors import NodeError, node_error
from ._stats import NodeStats

logger = logging.getLogger("nanostream")


class ErrorPolicy:
    """One node's ``on_error`` policy, applied to items that just failed.

    ``retry`` calls the failed work again after a back-off that doubles up
    to ``retry_max_delay``, then applies ``retry_fallback``; ``skip``
    counts and logs the items (rate-limited) and sends them to the
    dead-letter node if there is one; ``fail`` raises the
    :class:`NodeError`, which fails the graph.
    """

    def __init__(
        self,
        node: str,
        options: NodeOptions,
        stats: NodeStats,
        skip_log: SkipLog,
        dead_letters: DeadLetterRoute | None,
    ) -> None:
        self.node = node
        self.options = options
        self.stats = stats
        self.skip_log = skip_log
        self.dead_letters = dead_letters

    async def recover(
        self,
        items: list,
        failure: NodeError,
        attempt: Callable[[], Awaitable[list]],
        tickets: Tickets,
    ) -> list:
        """Apply the policy to ``items``, on which ``failure`` just happened.

        ``attempt`` does the work again, raising :class:`NodeError` if it
        fails again. Returns what a successful retry produced, or nothing
        once the items are given up on.
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
        await self.give_up(items, failure, policy, tickets)
        return []

    async def recover_item(
        self,
        item: Any,
        during: str,
        error: Exception,
        attempt: Callable[[], Awaitable[list]],
        tickets: Tickets,
    ) -> list:
        """:meth:`recover` for one item on which the node's code raised ``error``."""
        failure = node_error(self.node, during, error, item)
        return await self.recover([item], failure, attempt, tickets)

    async def recover_failed_items(
        self,
        items: list,
        failed: FailedItems,
        during: str,
        attempt_one: Callable[[Any], Awaitable[list]],
        tickets: Tickets,
    ) -> list:
        """Apply the policy to each item of ``items`` that ``failed`` names,
        keeping what the batch produced for the others. A retry calls
        ``attempt_one(item)`` with the one item."""
        bad = [index for index in failed.errors if not 0 <= index < len(items)]
        if bad:
            why = ValueError(
                f"FailedItems names item {bad[0]} of a batch of {len(items)} (indexes from 0)"
            )
            raise NodeError(self.node, during, why) from failed
        # As for a batch that returns: None stands for nothing to send.
        results = [result for result in failed.results if result is not None]
        for index in sorted(failed.errors):
            item = items[index]
            results += await self.recover_item(
                item, during, failed.errors[index], partial(attempt_one, item), tickets
            )
        return results

    async def reject(self, raw: Any, error: Exception, tickets: Tickets) -> None:
        """Apply a source's policy to input it rejected (see ``Rejected``).

        Retrying cannot change what arrived, so ``retry`` goes straight to
        its fallback.
        """
        options = self.options
        policy = options.retry_fallback if options.on_error == "retry" else options.on_error
        self.stats.errors += 1
        await self.give_up([raw], node_error(self.node, "generate", error, raw), policy, tickets)

    async def give_up(self, items: list, failure: NodeError, policy: str, tickets: Tickets) -> None:
        """Raise ``failure`` under ``fail``; under ``skip`` count and log the
        items, and send them to the dead-letter node if there is one."""
        if len(items) == 1 and failure.item is None:
            failure = node_error(self.node, failure.during, failure.error, items[0])
        if policy == "fail":
            raise failure from failure.error
        self.stats.skipped += len(items)
        self.skip_log.warning(self.node, failure)
        if self.dead_letters is not None:
            await self.dead_letters.send(items, failure.error, tickets)


class SkipLog:
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
