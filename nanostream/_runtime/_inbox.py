"""A node's input as the pieces of work its workers take."""

from __future__ import annotations

import math
from collections import deque

import trio

from ._acks import combine
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
        self, channel: trio.MemoryReceiveChannel, stats: NodeStats, max_batch: int, workers: int
    ) -> None:
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
        batch = self._carried
        self._carried = None
        if batch is None:
            if deadline == math.inf:
                batch = await self._channel.receive()
            else:
                with trio.move_on_at(deadline):
                    batch = await self._channel.receive()
                if batch is None:
                    return None
            self._stats.waiting -= len(batch[0])
        batch = self._gather(batch)
        if self._workers == 1:
            # One piece: the batch as it is.
            self._stats.in_progress += len(batch.items)
            self._next_seq += 1
            return Piece(batch.items, batch.tickets, self._next_seq - 1)
        self._cut(batch)
        return self._pieces.popleft()

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
