"""The tickets of items a node keeps back (a batching or windowing node)."""

from __future__ import annotations

from collections import deque

from ._acks import Tickets, combine, retain


class HeldTickets:
    """The tickets of the items a node holds, kept back with them.

    A node that defines ``holding()`` lets items go in the order they came;
    one ``[tickets, count]`` segment per batch still (partly) held, in
    arrival order, says which tickets travel with what it lets go.
    """

    def __init__(self) -> None:
        self._segments: deque[list] = deque()
        self._count = 0

    def settle(self, tickets: Tickets, count: int, holding: int) -> Tickets:
        """The tickets an emission carries.

        ``count`` items (with ``tickets``) just arrived, and the node now
        holds ``holding`` items, the most recent ones; the batches of the
        items it let go travel on with this emission. A batch let go of
        only in part is referenced once more, since the rest is still held.
        """
        segments = self._segments
        if count:
            segments.append([tickets, count])
            self._count += count
        released = None
        excess = self._count - holding
        while excess > 0 and segments:
            segment = segments[0]
            segment_tickets, segment_count = segment
            if segment_count <= excess:
                segments.popleft()
                taken = segment_count
            else:
                segment[1] -= excess
                taken = excess
                if segment_tickets is not None:
                    retain(segment_tickets, 1)
            released = combine(released, segment_tickets)
            self._count -= taken
            excess -= taken
        return released

    def release_all(self) -> Tickets:
        """Every ticket still held: what a node holds once it has finished,
        it has dropped."""
        tickets = None
        for segment_tickets, _ in self._segments:
            tickets = combine(tickets, segment_tickets)
        self._segments.clear()
        self._count = 0
        return tickets
