"""What the nodes of one run share: setup barrier, end of consumers, stopping."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from ._errors import NodeError
from ._policy import SkipLog

logger = logging.getLogger("nanostream")

#: How long a node's teardown may take once the graph is cancelled.
TEARDOWN_TIMEOUT = 10.0

#: How long past the drain deadline a teardown may still take.
TEARDOWN_GRACE = 0.5


class RunControl:
    """The state one run's nodes share, and the means to stop them.

    :class:`GraphRun` holds one and offers its public side; each node's
    lifecycle reports to it (set up, done, failed) and asks it for the
    scopes its source loop and its teardown run in.
    """

    def __init__(self, pipeline: str, nodes: int, consumers: int, log_items: bool) -> None:
        self.pipeline = pipeline
        self.log_items = log_items
        self.scope = trio.CancelScope()
        self.errors: list[NodeError] = []
        self.stopping = False
        self.cancelled = False
        self.drain_deadline = math.inf
        self.teardown_deadline = math.inf
        #: Whether some teardown was cut short (by the deadline or a cancel).
        self.teardown_cut_short = False
        self.skip_log = SkipLog(pipeline)
        self.all_set_up = trio.Event()
        self.consumers_done = trio.Event()
        self._waiting_for_setup = nodes
        self._consumers_running = consumers
        if not consumers:
            self.consumers_done.set()
        self._source_scopes: list[trio.CancelScope] = []
        self._teardown_scopes: set[trio.CancelScope] = set()

    def stop(self, drain_timeout: float | None) -> None:
        """Stop the sources; cancel the rest ``drain_timeout`` seconds from now."""
        self.stopping = True
        for scope in self._source_scopes:
            scope.cancel()
        if drain_timeout is not None:
            self.drain_deadline = min(self.drain_deadline, trio.current_time() + drain_timeout)
            self.scope.deadline = min(self.scope.deadline, self.drain_deadline)
            self.teardown_deadline = self.drain_deadline + TEARDOWN_GRACE
            for scope in self._teardown_scopes:
                scope.deadline = min(scope.deadline, self.teardown_deadline)

    def cancel(self) -> None:
        """Cancel every node at once, teardowns too."""
        self.stopping = True
        self.cancelled = True
        self.scope.cancel()
        for scope in self._teardown_scopes:
            scope.cancel()

    def fail(self, error: NodeError) -> None:
        self.errors.append(error)
        self.scope.cancel()

    def set_up(self) -> None:
        self._waiting_for_setup -= 1
        if self._waiting_for_setup == 0:
            self.all_set_up.set()

    def consumer_done(self) -> None:
        self._consumers_running -= 1
        if self._consumers_running == 0:
            self.consumers_done.set()

    @contextmanager
    def source_scope(self) -> Iterator[trio.CancelScope]:
        """The scope a source produces in; :meth:`stop` cancels it."""
        with trio.CancelScope() as scope:
            self._source_scopes.append(scope)
            if self.stopping:
                scope.cancel()
            yield scope

    @contextmanager
    def teardown_scope(self) -> Iterator[trio.CancelScope]:
        """A shielded scope for a teardown: it runs even when the graph is
        cancelled, for at most ``TEARDOWN_TIMEOUT`` seconds, and no later
        than ``TEARDOWN_GRACE`` past the drain deadline; :meth:`cancel`
        cuts it short."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = min(trio.current_time() + TEARDOWN_TIMEOUT, self.teardown_deadline)
            if self.cancelled:
                scope.cancel()
            self._teardown_scopes.add(scope)
            try:
                yield scope
            finally:
                self._teardown_scopes.discard(scope)
        if scope.cancelled_caught:
            self.teardown_cut_short = True
