"""Joining two streams by key within a time bound: an interval join."""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Hashable, Iterator
from typing import Any, Literal

import attrs
import trio
from attrs import validators as v

from .._durations import Duration, duration, optional_duration
from .._imports import ImportPathError
from .._processor import FromParent, NanoStreamProcessor
from .._state import NoKeyError, key_function
from ._event_time import seconds

logger = logging.getLogger("nanostream")

_LEFT, _RIGHT = 0, 1


def _time_reader(where: str) -> Any:
    """The function giving an item's event time in seconds since the epoch,
    from the field or function ``where`` names (read as the Window node
    reads its ``time``)."""
    read = key_function(where, "the join's time")
    return lambda item: seconds(read(item))


def _time_of_items(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: ``value`` names a field, or a function that imports."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{attribute.name} must be a field name or 'module:function'")
    try:
        _time_reader(value)
    except (ImportPathError, TypeError) as error:
        raise ValueError(str(error), attribute) from None


def _parent_field(side: str) -> Any:
    return attrs.field(
        validator=v.instance_of(str),
        metadata={
            "parent": True,
            "description": f"The parent whose items are the {side} side of the join: one of "
            "the node's two parents.",
        },
    )


@attrs.define
class Join(NanoStreamProcessor):
    """Joins the items of two parents that share a key and lie close in
    event time: an interval join (Flink's ``IntervalJoin``).

    A left item at time ``t`` and a right item at time ``s`` of the same
    key join when ``t - before <= s <= t + after`` (Flink's
    ``between(-before, after)``); each pair is sent on as
    ``{"left": left_item, "right": right_item}``, as soon as its second
    item arrives. The key is the node's runtime ``key`` (a field both
    sides share, or a function by import path that reads either side);
    without one, every left item joins every right item within the bound.
    ``how: left`` also sends each left item that found no match, as
    ``{"left": left_item, "right": None}``, once the watermark has passed
    ``t + after``, when no right item can match it any more.

    The watermark is the event time both sides have reached (the least of
    each side's latest event time) less ``out_of_orderness``; with an
    ``idle_timeout``, a side that has sent nothing for that long (in
    processing time) is idle, and the watermark follows the other side
    alone until it sends again (Flink's ``withIdleness``). Items are
    kept in the node's state, per key, until the watermark passes the end
    of their bound; an item older than the watermark when it arrives is
    late: it is dropped, counted in ``late`` and logged at debug level.
    When both parents have ended, the watermark moves to the end of time:
    every unmatched left item of a left join is sent then.

    The items kept are in ``self.state`` and the watermark in
    :meth:`snapshot`, so a pipeline with a ``state_dir`` saves both at each
    checkpoint; without one, the items kept hold back their sources'
    acknowledgements until they leave the state (see :meth:`holding`).

    Errors: an item whose event time is missing (``KeyError``, naming the
    field) or is not a time (``TypeError``, ``ValueError``) fails under the
    node's ``on_error``.
    """

    left: str = _parent_field("left")
    right: str = _parent_field("right")
    time: str = attrs.field(
        validator=_time_of_items,
        metadata={
            "description": "The event time of an item of either side: a field, or a function "
            "by import path ('module:function'); seconds since the epoch, a datetime or an "
            "ISO-8601 string (naive ones are UTC)."
        },
    )
    before: Duration = attrs.field(
        default=0.0,
        converter=duration,
        metadata={
            "description": "How long before a left item's time a right item may be and "
            "still join it (a duration such as 30s or 5m)."
        },
    )
    after: Duration = attrs.field(
        default=0.0,
        converter=duration,
        metadata={
            "description": "How long after a left item's time a right item may be and "
            "still join it (a duration such as 30s or 5m)."
        },
    )
    how: Literal["inner", "left"] = attrs.field(
        default="inner",
        validator=v.in_(("inner", "left")),
        metadata={
            "description": "inner: only pairs are sent. left: also each left item that "
            'found no match, with "right": null, once no right item can match it.'
        },
    )
    out_of_orderness: Duration = attrs.field(
        default=0.0,
        converter=duration,
        metadata={
            "description": "How far behind the latest event time of its side an item may "
            "arrive and still join; older items are late and dropped (counted)."
        },
    )
    idle_timeout: Duration | None = attrs.field(
        default=None,
        converter=optional_duration,
        metadata={
            "description": "How long a side may send nothing before the watermark follows "
            "the other side alone (a duration such as 1m); empty means the watermark waits "
            "for both sides."
        },
    )
    #: Items dropped because they arrived behind the watermark.
    late: int = attrs.field(default=0, init=False)
    _read_time: Any = attrs.field(default=None, init=False, repr=False)
    _latest: list[float] = attrs.field(
        factory=lambda: [-math.inf, -math.inf], init=False, repr=False
    )
    _watermark: float = attrs.field(default=-math.inf, init=False, repr=False)
    #: ``(end of bound, key)`` for every item kept, the earliest first; built
    #: from the state when first needed (after a restore).
    _expiry: list[tuple[float, Hashable]] | None = attrs.field(default=None, init=False, repr=False)
    _received: int = attrs.field(default=0, init=False, repr=False)
    #: Per side: items received, items received when last looked at, and
    #: when (``trio.current_time()``) an item of it was last seen arriving.
    _arrived: list[int] = attrs.field(factory=lambda: [0, 0], init=False, repr=False)
    _looked: list[int] = attrs.field(factory=lambda: [0, 0], init=False, repr=False)
    _last_arrival: list[float] = attrs.field(
        factory=lambda: [math.nan, math.nan], init=False, repr=False
    )
    _idle: list[bool] = attrs.field(factory=lambda: [False, False], init=False, repr=False)
    _kept: set[int] = attrs.field(factory=set, init=False, repr=False)
    _kept_order: list[int] = attrs.field(factory=list, init=False, repr=False)

    def setup(self) -> None:
        self._read_time = _time_reader(self.time)

    def process_item(self, message: FromParent) -> Iterator[dict[str, Any]]:
        if self._read_time is None:
            self.setup()
        if type(message) is not FromParent:
            raise TypeError(
                f"a Join receives the items of its parents {self.left!r} and {self.right!r} "
                f"only, not {type(message).__name__} (from a dead_letter route?)"
            )
        side = _LEFT if message.parent == self.left else _RIGHT
        item = message.item
        self._arrived[side] += 1
        self._idle[side] = False
        at = self._read_time(item)
        seq = self._received
        self._received += 1
        if at < self._watermark:
            self.late += 1
            logger.debug(
                "Join: dropped a late %s item (time %s, watermark %s)",
                "left" if side == _LEFT else "right",
                at,
                self._watermark,
            )
            return
        expiry = self._expiry_heap()
        try:
            key = self.state.key
        except NoKeyError:
            key = None
        lefts, rights = self.state.get(key) or ([], [])
        before, after = self.before, self.after
        if side == _LEFT:
            matched = False
            for time, _, other in rights:
                if at - before <= time <= at + after:
                    matched = True
                    yield {"left": item, "right": other}
            lefts.append([at, seq, item, matched])
            heapq.heappush(expiry, (at + after, key))
        else:
            for entry in lefts:
                if entry[0] - before <= at <= entry[0] + after:
                    entry[3] = True
                    yield {"left": entry[2], "right": item}
            rights.append((at, seq, item))
            heapq.heappush(expiry, (at + before, key))
        self.state[key] = (lefts, rights)
        if not self.state.durable:
            self._kept.add(seq)
            heapq.heappush(self._kept_order, seq)
        if at > self._latest[side]:
            self._latest[side] = at
            yield from self._advance()

    def _advance(self) -> Iterator[dict[str, Any]]:
        """Move the watermark to the time both sides have reached (the
        side that is not idle, if one is), never back."""
        active = [latest for latest, idle in zip(self._latest, self._idle, strict=True) if not idle]
        watermark = (min(active) if active else max(self._latest)) - self.out_of_orderness
        if watermark > self._watermark:
            self._watermark = watermark
            yield from self._expire()

    def deadline(self) -> float | None:
        """When the side heard from least recently becomes idle, with an
        ``idle_timeout``: the ``trio.current_time()`` of its last item
        (seen arriving when this is called, between batches) plus the timeout."""
        if self.idle_timeout is None:
            return None
        now = trio.current_time()
        for side in (_LEFT, _RIGHT):
            if self._arrived[side] != self._looked[side] or math.isnan(self._last_arrival[side]):
                self._looked[side] = self._arrived[side]
                self._last_arrival[side] = now
        waiting = [
            last + self.idle_timeout
            for last, idle in zip(self._last_arrival, self._idle, strict=True)
            if not idle
        ]
        return min(waiting) if waiting else None

    def on_deadline(self) -> Iterator[dict[str, Any]]:
        """A side sent nothing for ``idle_timeout``: the watermark follows the other."""
        assert self.idle_timeout is not None
        now = trio.current_time()
        for side in (_LEFT, _RIGHT):
            if not self._idle[side] and self._last_arrival[side] + self.idle_timeout <= now:
                self._idle[side] = True
                logger.debug("Join: the %s side is idle", "left" if side == _LEFT else "right")
        yield from self._advance()

    def finish(self) -> Iterator[dict[str, Any]]:
        """Both parents have ended: every item kept is done with, and every
        unmatched left item of a left join is sent."""
        watermark, self._watermark = self._watermark, math.inf
        try:
            yield from self._expire()
        finally:
            # Not the end of time in a snapshot taken now: a restart goes on
            # with more items, and they are not all late.
            self._watermark = watermark

    def _expiry_heap(self) -> list[tuple[float, Hashable]]:
        if self._expiry is None:
            expiry = []
            for key, (lefts, rights) in self.state.items():
                expiry += [(entry[0] + self.after, key) for entry in lefts]
                expiry += [(entry[0] + self.before, key) for entry in rights]
            heapq.heapify(expiry)
            self._expiry = expiry
        return self._expiry

    def _expire(self) -> Iterator[dict[str, Any]]:
        """Drop every item whose bound the watermark has passed, sending the
        unmatched left ones of a left join."""
        expiry = self._expiry_heap()
        watermark = self._watermark
        state = self.state
        swept = set()  # one pass over a key's items serves all its expired entries
        while expiry and expiry[0][0] < watermark:
            _, key = heapq.heappop(expiry)
            if key in swept:
                continue
            swept.add(key)
            kept = state.get(key)
            if kept is None:
                continue
            lefts, rights = kept
            keep_lefts = []
            for entry in lefts:
                if entry[0] + self.after < watermark:
                    self._kept.discard(entry[1])
                    if self.how == "left" and not entry[3]:
                        yield {"left": entry[2], "right": None}
                else:
                    keep_lefts.append(entry)
            keep_rights = []
            for entry in rights:
                if entry[0] + self.before < watermark:
                    self._kept.discard(entry[1])
                else:
                    keep_rights.append(entry)
            if keep_lefts or keep_rights:
                if len(keep_lefts) != len(lefts) or len(keep_rights) != len(rights):
                    state[key] = (keep_lefts, keep_rights)
            else:
                del state[key]

    def holding(self) -> int:
        """How many of the items received are still kept (with every later
        one), so that their sources' acknowledgements wait; none when the
        state is saved at checkpoints, which then stands for them."""
        if self.state.durable:
            return 0
        kept, order = self._kept, self._kept_order
        while order and order[0] not in kept:
            heapq.heappop(order)
        return self._received - order[0] if order else 0

    def snapshot(self) -> dict[str, Any]:
        """The latest event time of each side, from which the watermark follows."""
        return {"latest": list(self._latest), "watermark": self._watermark}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self._latest = list(snapshot["latest"])
        self._watermark = snapshot["watermark"]
        self._expiry = None

    def teardown(self) -> None:
        if self.late:
            logger.info("Join: %d late items were dropped", self.late)
