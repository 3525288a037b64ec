"""Grouping items into lists, by count and by time."""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio

from .._params import positive
from .._processor import NanoStreamProcessor


@attrs.define
class Batcher(NanoStreamProcessor):
    """Sends items on in lists of ``count``, or fewer once the oldest has
    waited ``seconds``.

    Items keep their order. The last, partial list is sent when the stream
    ends. Acknowledgements wait with the items: a source's item is
    acknowledged only once the list holding it has been handled, so a crash
    while items wait here repeats them rather than losing them.
    """

    count: int = attrs.field(
        default=100,
        validator=positive,
        metadata={"description": "How many items make a full list."},
    )
    seconds: float | None = attrs.field(
        default=None,
        validator=positive,
        metadata={
            "description": "How long the oldest waiting item may wait before a partial list "
            "is sent; empty means only full lists are sent (and the last one at the end)."
        },
    )
    _waiting: list[Any] = attrs.field(factory=list, init=False, repr=False)
    _oldest_since: float = attrs.field(default=math.inf, init=False, repr=False)

    def process_batch(self, messages: list[Any]) -> list[list[Any]]:
        waiting = self._waiting
        if not waiting:
            self._oldest_since = trio.current_time()
        waiting += messages
        if len(waiting) < self.count:
            return []
        count = self.count
        full = [waiting[start : start + count] for start in range(0, len(waiting), count)]
        self._waiting = full.pop() if len(full[-1]) < count else []
        # Whatever still waits arrived in this batch.
        self._oldest_since = trio.current_time()
        return full

    def holding(self) -> int:
        """How many received items have not been sent on yet."""
        return len(self._waiting)

    def deadline(self) -> float | None:
        """When the oldest waiting item has waited long enough."""
        if self.seconds is None or not self._waiting:
            return None
        return self._oldest_since + self.seconds

    def on_deadline(self) -> list[Any] | None:
        return self._take_waiting()

    def finish(self) -> list[Any] | None:
        return self._take_waiting()

    def _take_waiting(self) -> list[Any] | None:
        waiting, self._waiting = self._waiting, []
        return waiting or None
