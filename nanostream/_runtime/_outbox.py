"""Where a node's results go: its children's inputs, in order or as they finish."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from ._acks import Tickets, acknowledge, release, retain
from ._batches import Batch, Piece
from ._stats import NodeStats


class Outputs:
    """The send ends of a node's children's inputs.

    A batch goes to every child (fan-out); where there is no child, or
    nothing to send, this is where the batch ends, and its tickets are
    released (and acknowledged once complete).
    """

    def __init__(self, all_stats: Mapping[str, NodeStats], stats: NodeStats) -> None:
        self._all_stats = all_stats
        self._stats = stats
        self.children: list[tuple[trio.MemorySendChannel, NodeStats]] = []

    def add_child(self, channel: trio.MemorySendChannel, stats: NodeStats) -> None:
        self.children.append((channel, stats))

    async def send(self, items: list, tickets: Tickets) -> None:
        """Send ``items`` to every child, or release their tickets if this
        is where they end; count them as emitted.

        Either way this is a checkpoint (a channel's send is one; where the
        batch ends, :func:`trio.lowlevel.checkpoint`), so that a node yields
        to the others, and can be cancelled, once per batch it handles,
        though it takes a waiting batch without yielding (see ``Inbox``).
        """
        children = self.children
        if items and children:
            if tickets is not None and len(children) > 1:
                retain(tickets, len(children) - 1)
            batch = Batch(items, tickets)
            for channel, stats in children:
                stats.waiting += len(items)
                await channel.send(batch)
        else:
            if tickets is not None:
                acknowledge(release(tickets), self._all_stats)
            await trio.lowlevel.checkpoint()
        self._stats.emitted += len(items)

    def close(self) -> None:
        for channel, _ in self.children:
            channel.close()


class Outbox:
    """What a node's workers hand their results to.

    Unordered, results leave as soon as their piece is done. Ordered (the
    default), a piece's results leave once those of every earlier piece
    have: a reorder buffer, so a worker that finishes early goes on to its
    next piece rather than waiting.
    """

    def __init__(self, outputs: Outputs, ordered: bool) -> None:
        self.outputs = outputs
        self.ordered = ordered
        self._next = 0
        self._ready: dict[int, tuple[list, Tickets]] = {}
        self._lock = trio.Lock()
        self._advanced = trio.Event()

    async def finish(self, piece: Piece, results: list, tickets: Tickets) -> None:
        """``piece`` is done: send ``results`` on with ``tickets``."""
        if not self.ordered:
            await self.outputs.send(results, tickets)
            return
        self._ready[piece.seq] = (results, tickets)
        async with self._lock:
            while self._next in self._ready:
                results, tickets = self._ready.pop(self._next)
                await self.outputs.send(results, tickets)
                self._next += 1
                self._advanced.set()
                self._advanced = trio.Event()

    async def send_part(self, piece: Piece, results: list) -> None:
        """Send part of ``piece``'s results before it is done (a generator's
        chunk). The part takes one more reference on the piece's tickets;
        the piece's own reference travels with its last part, at
        :meth:`finish`."""
        if piece.tickets is not None:
            retain(piece.tickets, 1)
        if self.ordered:
            while self._next != piece.seq:
                await self._advanced.wait()
            async with self._lock:
                await self.outputs.send(results, piece.tickets)
        else:
            await self.outputs.send(results, piece.tickets)
