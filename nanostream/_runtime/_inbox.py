"""A node's input as the pieces of work its workers take."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import trio

from ._acks import combine, retain
from ._batches import Batch, Piece, cut, split
from ._stats import NodeStats


class Inbox:
    """The receive end of a node's input channel, shared by the node's workers.

    A worker that needs work takes the next piece. When none is left, the
    first idle worker receives a batch, merges with it whatever else is
    already waiting (up to ``max_batch`` items, so an idle pipeline moves
    single items at once and a loaded one moves big batches), and cuts that
    into one piece per worker. The other workers wait their turn meanwhile,
    so batches are taken in the order they came, and pieces numbered in it.
    """

    def __init__(
        self,
        channel: trio.MemoryReceiveChannel,
        stats: NodeStats,
        max_batch: int,
        workers: int,
        route: Callable[[Any], int] | None = None,
    ) -> None:
        #: Which worker each item goes to, for a keyed node (see :meth:`take_for`).
        self.route = route
        self._routed: list[deque[Piece]] = [deque() for _ in range(workers)]
        self._taken = trio.Event()
        self._channel = channel
        self._stats = stats
        self._max_batch = max_batch
        self._workers = workers
        self._pieces: deque[Piece] = deque()
        self._carried: Batch | None = None
        self._lock = trio.Lock()
        self._next_seq = 0

    async def take(self, deadline: float = math.inf) -> Piece | None:
        """The next piece of work, or ``None`` if ``deadline`` (a
        :func:`trio.current_time`) comes first.

        Raises ``trio.EndOfChannel`` once every sender has closed and
        nothing is left.
        """
        if self._pieces:
            return self._pieces.popleft()
        if self._workers == 1:
            # No other worker to wait for: no lock, whose uncontended
            # acquire would still cost a trip through the scheduler.
            return await self._refill(deadline)
        async with self._lock:
            if self._pieces:
                return self._pieces.popleft()
            return await self._refill(deadline)

    async def _refill(self, deadline: float) -> Piece | None:
        """Receive, gather and cut the next batch; return its first piece."""
        batch = await self._next_gathered(deadline)
        if batch is None:
            return None
        if self._workers == 1:
            # One piece: the batch as it is.
            self._stats.in_progress += len(batch.items)
            self._next_seq += 1
            return Piece(batch.items, batch.tickets, self._next_seq - 1)
        self._cut(batch)
        return self._pieces.popleft()

    async def _next_gathered(self, deadline: float = math.inf) -> Batch | None:
        """The batch carried over from the last take, or else the next one
        received (``None`` if ``deadline`` comes first), merged with what
        else is waiting (see :meth:`_gather`)."""
        batch = self._carried
        self._carried = None
        if batch is None:
            if deadline == math.inf:
                batch = await self._receive()
            else:
                with trio.move_on_at(deadline):
                    batch = await self._receive(at_once=False)
                if batch is None:
                    return None
        return self._gather(batch)

    async def _receive(self, at_once: bool = True) -> Batch:
        """The next batch.

        ``at_once``: one already waiting is taken with no trip through the
        scheduler. The node still yields once per batch, when it sends its
        results on (see :meth:`Outputs.send`), so a hop between two nodes
        costs one task switch, not two. Not at once, the receive is a
        checkpoint first, so that a deadline already past (a cancel scope's)
        comes before a waiting batch.
        """
        try:
            if not at_once:
                raise trio.WouldBlock  # go through the checkpoint below
            batch = self._channel.receive_nowait()
        except trio.WouldBlock:
            batch = await self._channel.receive()
        self._stats.waiting -= len(batch[0])
        return batch

    def _gather(self, batch: Batch) -> Batch:
        """``batch`` merged with the batches already waiting, up to
        ``max_batch`` items; a batch that would take it past that, or the
        part of a big batch beyond it, is carried to the next take."""
        max_batch = self._max_batch
        items, tickets = batch
        if len(items) > max_batch:
            batch, self._carried = split(batch, max_batch)
            return batch
        merged = None
        while len(items) < max_batch:
            try:
                more = self._channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            self._stats.waiting -= len(more[0])
            if len(items) + len(more[0]) > max_batch:
                self._carried = Batch(*more)
                break
            if merged is None:
                merged = items = list(items)
            merged += more[0]
            tickets = combine(tickets, more[1])
        return Batch(items, tickets)

    def _cut(self, batch: Batch) -> None:
        for part in cut(batch, self._workers):
            self._pieces.append(Piece(part.items, part.tickets, self._next_seq))
            self._next_seq += 1
            self._stats.in_progress += len(part.items)

    # ---------------------------------------------------------------- routed by key

    async def take_for(self, worker: int) -> Piece:
        """The next piece of ``worker``'s own items, with ``route`` saying
        whose each item is: a keyed node's items of one key all go to one
        worker, in the order they came, so that no two workers ever handle
        one key at once.

        The worker that finds its queue empty receives and gathers the next
        batch, as :meth:`take` does, and routes it; it waits first while
        another worker has work queued, so that a slow worker holds its
        node's input back rather than letting its queue grow.

        Raises ``trio.EndOfChannel`` once every sender has closed and
        nothing is left for ``worker``.
        """
        queue = self._routed[worker]
        while not queue:
            async with self._lock:
                if queue:
                    break
                while any(self._routed):
                    taken = self._taken = trio.Event()
                    await taken.wait()
                    if queue:
                        break
                else:
                    batch = await self._next_gathered()
                    assert batch is not None  # no deadline
                    self._route_batch(batch)
        self._taken.set()
        return queue.popleft()

    def _route_batch(self, batch: Batch) -> None:
        route = self.route
        assert route is not None
        parts: list[list] = [[] for _ in self._routed]
        for item in batch.items:
            parts[route(item)].append(item)
        shares = [(worker, part) for worker, part in enumerate(parts) if part]
        if batch.tickets is not None:
            retain(batch.tickets, len(shares) - 1)
        for worker, part in shares:
            self._routed[worker].append(Piece(part, batch.tickets, self._next_seq))
            self._next_seq += 1
            self._stats.in_progress += len(part)


def key_router(key_of: Callable[[Any], Hashable], workers: int) -> Callable[[Any], int]:
    """Which of ``workers`` an item goes to, by the hash of its key. An item
    whose key cannot be found goes to the first worker, whose
    ``process_item`` then fails on it under the node's error policy."""

    def route(item: Any) -> int:
        try:
            return hash(key_of(item)) % workers
        except Exception:
            return 0

    return route
