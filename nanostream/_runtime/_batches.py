"""Batches: items travelling together with the tickets of their acknowledgements.

A batch is what goes through a node's input channel. A node takes one,
merges what else is already waiting up to ``max_batch`` items, and cuts the
result into pieces, one per worker, so that every worker is busy even when
a parent sends one big batch. Every piece holds a reference on the batch's
tickets (see ``_acks``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice
from typing import Any, NamedTuple

from ._acks import Tickets, retain


class Batch(NamedTuple):
    """Items that travel together, and the tickets of the source items they derive from."""

    items: list
    tickets: Tickets


class Piece(NamedTuple):
    """The part of a node's input one worker handles at a time. ``seq``
    numbers the pieces in the order they came, so that results can leave
    in that order."""

    items: list
    tickets: Tickets
    seq: int


def take(iterator: Any, count: int) -> list:
    """Up to ``count`` items from ``iterator``."""
    return list(islice(iterator, count))


def split(batch: Batch, size: int) -> tuple[Batch, Batch]:
    """The first ``size`` items of ``batch``, and the rest to handle next.

    Both parts carry the batch's tickets, which take one more reference.
    """
    items, tickets = batch
    if tickets is not None:
        retain(tickets, 1)
    return Batch(items[:size], tickets), Batch(items[size:], tickets)


def parts(batch: Batch, size: int) -> Iterator[Batch]:
    """``batch`` in parts of at most ``size`` items, in order, each with its
    own reference on the batch's tickets."""
    while len(batch.items) > size:
        part, batch = split(batch, size)
        yield part
    yield batch


def cut(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` in at most ``parts`` parts of near equal size, in order."""
    items, tickets = batch
    parts = min(parts, len(items))
    if parts <= 1:
        return [batch]
    size = math.ceil(len(items) / parts)
    pieces = [items[start : start + size] for start in range(0, len(items), size)]
    if tickets is not None:
        retain(tickets, len(pieces) - 1)
    return [Batch(piece, tickets) for piece in pieces]
