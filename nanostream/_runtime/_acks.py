"""Acknowledgements: knowing when everything derived from a source item is handled.

Items travel in batches, and so does their bookkeeping: a source batch with
acknowledgeable items carries one :class:`Ticket` holding their ``ack``
callbacks. A ticket counts the copies of its batch (or of batches derived
from it) still in flight. A node that passes a batch on hands its copy to
the first child and takes one more per extra child; a node that ends a
batch (a sink, a filter that dropped everything) releases its copy. When the
count reaches zero, every item derived from the ticket's items has been
handled, and each ``ack`` is called once.

The cost is per batch, not per item, and nothing at all for pipelines whose
sources attach no acknowledgements (their batches carry ``None``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ._errors import NodeError

if TYPE_CHECKING:
    from ._stats import NodeStats


class Ticket:
    """The acknowledgements of one source batch and its copies in flight."""

    __slots__ = ("acks", "in_flight", "source")

    def __init__(self, source: str, acks: list[Callable[[], None]]) -> None:
        self.source = source
        self.acks = acks
        self.in_flight = 1


Tickets = list[Ticket] | None


def retain(tickets: list[Ticket], copies: int) -> None:
    """Count ``copies`` more batches in flight for each ticket."""
    for ticket in tickets:
        ticket.in_flight += copies


def release(tickets: list[Ticket]) -> list[Ticket]:
    """Count one batch copy as handled; return the tickets now complete,
    whose acknowledgements the caller must run."""
    complete = []
    for ticket in tickets:
        ticket.in_flight -= 1
        if ticket.in_flight == 0:
            complete.append(ticket)
    return complete


def combine(first: Tickets, second: Tickets) -> Tickets:
    """The tickets of two batches merged into one."""
    if first is None:
        return second
    if second is None:
        return first
    return first + second


def acknowledge(complete: list[Ticket], stats: Mapping[str, NodeStats]) -> None:
    """Call the acknowledgements of ``complete`` tickets, counting them on
    their sources' counters.

    Raises :class:`NodeError` naming the source if an ``ack`` raises.
    """
    for ticket in complete:
        try:
            for ack in ticket.acks:
                ack()
        except Exception as error:
            raise NodeError(ticket.source, "acknowledgement", error) from error
        stats[ticket.source].acknowledged += len(ticket.acks)
