"""Limiting how fast items go on."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from .._params import positive
from .._processor import NanoStreamProcessor


@attrs.define
class Throttle(NanoStreamProcessor):
    """Sends items on at most ``rate`` per ``per`` seconds, in order; it
    delays items, never drops them.

    A token bucket: it holds ``burst`` tokens and gains ``rate`` every
    ``per`` seconds; each item takes one. In any span of T seconds at most
    ``burst + rate * T / per`` items go out. Items wait here while the
    bucket is empty, and the node takes no new ones meanwhile, so a fast
    parent waits rather than filling memory. Waiting items keep their
    acknowledgements until they have gone on.
    """

    rate: float = attrs.field(
        converter=float,
        validator=positive,
        metadata={"description": "How many items may go on per period."},
    )
    per: float = attrs.field(
        default=1.0,
        converter=float,
        validator=positive,
        metadata={"description": "The period, in seconds."},
    )
    burst: int = attrs.field(
        default=1,
        validator=[attrs.validators.instance_of(int), positive],
        metadata={"description": "How many items may go on at once after a quiet spell."},
    )
    _waiting: deque[Any] = attrs.field(factory=deque, init=False, repr=False, eq=False)
    # The bucket as a "theoretical arrival time": the next item may go at
    # _theoretical - _tolerance. Kept as times rather than a token count so
    # that item times are exact, never the sum of rounded token fractions.
    _theoretical: float = attrs.field(default=-math.inf, init=False, repr=False, eq=False)

    @property
    def _interval(self) -> float:
        return self.per / self.rate

    @property
    def _tolerance(self) -> float:
        return (self.burst - 1) * self._interval

    def _next_time(self) -> float:
        """When the next item may go on."""
        return self._theoretical - self._tolerance

    def _release(self) -> list[Any]:
        """The waiting items whose tokens have come, oldest first."""
        now = trio.current_time()
        released = []
        while self._waiting and now >= self._next_time():
            released.append(self._waiting.popleft())
            self._theoretical = max(self._theoretical, now) + self._interval
        return released

    def process_batch(self, messages: list[Any]) -> list[Any]:
        self._waiting.extend(messages)
        return self._release()

    def holding(self) -> int:
        return len(self._waiting)

    def deadline(self) -> float | None:
        # While items wait, the node takes no new ones: on_deadline is due at
        # once and waits for the next token itself. Input waits upstream
        # (back-pressure), and nothing is left waiting when the stream ends.
        return -math.inf if self._waiting else None

    async def on_deadline(self) -> AsyncIterator[Any]:
        await trio.sleep_until(self._next_time())
        for item in self._release():
            yield item
