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

In a pipeline that takes checkpoints, every source batch has a ticket, kept
in the checkpoints' ledger: a complete ticket is handed to it, and its
acknowledgements run only once a checkpoint that covers it is saved (see
``_checkpoints``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from ._errors import NodeError

if TYPE_CHECKING:
    from ._stats import NodeStats


class Ledger(Protocol):
    """What keeps the tickets of a pipeline that takes checkpoints."""

    def complete(self, ticket: Ticket) -> None: ...


class Ticket:
    """The acknowledgements of one source batch and its copies in flight,
    and the ledger that keeps it, if any."""

    __slots__ = ("acks", "in_flight", "ledger", "source")

    def __init__(
        self, source: str, acks: list[Callable[[], None]], ledger: Ledger | None = None
    ) -> None:
        self.source = source
        self.acks = acks
        self.in_flight = 1
        self.ledger = ledger


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
    their sources' counters; a ticket kept in a ledger goes to its ledger,
    which acknowledges it later with :func:`run_acks`.

    Raises :class:`NodeError` naming the source if an ``ack`` raises.
    """
    for ticket in complete:
        if ticket.ledger is not None:
            ticket.ledger.complete(ticket)
        else:
            run_acks(ticket, stats)


def run_acks(ticket: Ticket, stats: Mapping[str, NodeStats]) -> None:
    """Call ``ticket``'s acknowledgements, counting them on its source's counters.

    Raises :class:`NodeError` naming the source if an ``ack`` raises.
    """
    if ticket.acks:
        try:
            for ack in ticket.acks:
                ack()
        except Exception as error:
            raise NodeError(ticket.source, "acknowledgement", error) from error
        stats[ticket.source].acknowledged += len(ticket.acks)
