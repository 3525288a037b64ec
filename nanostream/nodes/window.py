"""Windows: aggregates of a stream's items per key over spans of time.

The terms are Flink's. A *tumbling* window of ``size`` covers
``[k * size, (k + 1) * size)`` seconds since the epoch; *sliding* (hopping)
windows of ``size`` start every ``slide``, so an item falls in several; a
*session* window of a key grows with each item less than ``gap`` from it
and ends ``gap`` after its last item. Windows are by *event time* (each
item's ``time``), closed by the *watermark*, or by *processing time* (the
clock when the item arrives) when no ``time`` is given.
"""

from __future__ import annotations

import heapq
import math
import time as _clock
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
import trio

from .._durations import Duration, duration, optional_duration
from .._imports import ImportPathError
from .._params import positive
from .._processor import FailedItems, NanoStreamProcessor
from .._state import key_function
from ._aggregations import AggregationSpec, aggregations
from ._event_time import seconds

#: The fields every output item has, which an aggregate may not be called.
OUTPUT_FIELDS = ("key", "start", "end", "timing")

# A window ("pane") is a list, so that the state pickles small and updates in place:
_START, _END, _FIRED, _SEQ, _COUNT, _ACC = range(6)


class LateItem(ValueError):
    """Why an item was not counted: every window it falls in had closed.

    Its ``time`` (seconds since the epoch) was behind the ``watermark`` by
    more than ``allowed_lateness`` seconds when it arrived. A Window node
    raises it for such an item, so that the node's error policy applies:
    with ``on_error: skip`` and a ``dead_letter`` node, the item is counted,
    logged and sent there as a ``DeadLetter``.
    """

    def __init__(self, time: float, watermark: float, allowed_lateness: float) -> None:
        super().__init__(time, watermark, allowed_lateness)
        self.time = time
        self.watermark = watermark
        self.allowed_lateness = allowed_lateness

    def __str__(self) -> str:
        return (
            f"late item: its time {_shown(self.time)} is behind the watermark "
            f"{_shown(self.watermark)} by more than allowed_lateness "
            f"({self.allowed_lateness:g}s), and its windows have closed"
        )


def _shown(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return repr(seconds)


def _aggregate_specs(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    aggregations(value)
    for name in value:
        if name in OUTPUT_FIELDS:
            raise ValueError(
                f"aggregate {name!r}: every output item has the field {name!r}; "
                "give the aggregate another name"
            )


@attrs.define
class Window(NanoStreamProcessor):
    """Aggregates items per key over tumbling, sliding or session windows,
    by event time with watermarks, or by processing time.

    Each window emits one item when it closes: ``{"key", "start", "end",
    "timing", <aggregates>}``, with ``start`` and ``end`` in seconds since
    the epoch and ``timing`` ``"on_time"``, ``"early"`` (an update before
    the close, with ``early``) or ``"late"`` (an update for a late item
    within ``allowed_lateness``). The key is the node's ``key``; without
    one, all items form one stream of windows. An item that arrives after
    all its windows closed raises :class:`LateItem`: set ``on_error: skip``
    and ``dead_letter`` to send such items to a node. When the stream ends,
    every open window is emitted.
    """

    kind: Literal["tumbling", "sliding", "session"] = attrs.field(
        default="tumbling",
        validator=attrs.validators.in_(("tumbling", "sliding", "session")),
        metadata={
            "description": "'tumbling': back-to-back windows of size; 'sliding': windows of "
            "size starting every slide (hopping); 'session': a key's items less than gap apart."
        },
    )
    size: Duration | None = attrs.field(
        default=None,
        converter=optional_duration,
        validator=positive,
        metadata={"description": "How long a tumbling or sliding window is (a duration: 1m)."},
    )
    slide: Duration | None = attrs.field(
        default=None,
        converter=optional_duration,
        validator=positive,
        metadata={"description": "How far apart sliding windows start (a duration: 10s)."},
    )
    gap: Duration | None = attrs.field(
        default=None,
        converter=optional_duration,
        validator=positive,
        metadata={
            "description": "The silence that ends a session window (a duration: 30m): "
            "a session ends gap after its last item."
        },
    )
    time: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(str)),
        metadata={
            "description": "Event time: the field of each item holding its time, or a function "
            "by import path ('module:function'); seconds since the epoch, a datetime or an "
            "ISO-8601 string (naive ones are UTC). Unset: processing time."
        },
    )
    out_of_orderness: Duration = attrs.field(
        default=0.0,
        converter=duration,
        metadata={
            "description": "How far behind the latest time seen an item may be and still be "
            "on time: the watermark is the largest time seen minus this (a duration)."
        },
    )
    allowed_lateness: Duration = attrs.field(
        default=0.0,
        converter=duration,
        metadata={
            "description": "How long past its end a window, once emitted, still takes late "
            "items, each sending an updated result (timing 'late'); later items are late "
            "and raise LateItem (a duration)."
        },
    )
    idle_timeout: Duration | None = attrs.field(
        default=None,
        converter=optional_duration,
        validator=positive,
        metadata={
            "description": "After this long with no items, the watermark moves on with the "
            "clock, so that the last windows close (a duration); unset, it waits for items."
        },
    )
    early: Duration | None = attrs.field(
        default=None,
        converter=optional_duration,
        validator=positive,
        metadata={
            "description": "Also send the open windows of keys that received items, every "
            "this long (processing time), with timing 'early' (a duration)."
        },
    )
    aggregate: dict[str, AggregationSpec] = attrs.field(
        factory=lambda: {"count": "count"},
        validator=_aggregate_specs,
        metadata={
            "description": "What each window computes: output names mapped to count, sum, "
            "min, max, mean, first, last or collect (of whole items), {operation: field}, "
            "or {reduce: 'module:function', field: name}."
        },
    )

    _time_of: Callable[[Any], Any] | None = attrs.field(init=False, default=None, repr=False)
    _readers: tuple = attrs.field(init=False, factory=tuple, repr=False)
    _starts: tuple = attrs.field(init=False, factory=tuple, repr=False)
    _adds: tuple = attrs.field(init=False, factory=tuple, repr=False)
    _merges: tuple = attrs.field(init=False, factory=tuple, repr=False)
    _collects: tuple = attrs.field(init=False, factory=tuple, repr=False)
    _results: tuple = attrs.field(init=False, factory=tuple, repr=False)
    _watermark: float = attrs.field(init=False, default=-math.inf, repr=False)
    _timers: dict = attrs.field(init=False, factory=dict, repr=False)
    _heap: list = attrs.field(init=False, factory=list, repr=False)
    _next: float = attrs.field(init=False, default=math.inf, repr=False)
    _offset: float | None = attrs.field(init=False, default=None, repr=False)
    _last_arrival: float = attrs.field(init=False, default=0.0, repr=False)
    _idle_base: float = attrs.field(init=False, default=-math.inf, repr=False)
    _early_keys: dict = attrs.field(init=False, factory=dict, repr=False)
    _early_at: float | None = attrs.field(init=False, default=None, repr=False)
    _received: int = attrs.field(init=False, default=0, repr=False)
    _held: dict = attrs.field(init=False, factory=dict, repr=False)
    #: The windows of the keys the batch being processed has reached, by key.
    _touched: dict = attrs.field(init=False, factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        kind = self.kind
        needs = {"tumbling": ("size",), "sliding": ("size", "slide"), "session": ("gap",)}[kind]
        for name in ("size", "slide", "gap"):
            given = getattr(self, name) is not None
            if name in needs and not given:
                raise ValueError(f"kind {kind!r} needs {name}: a duration such as 1m")
            if given and name not in needs:
                raise ValueError(f"{name} is not for {kind} windows (kind {kind!r})")
        if kind == "sliding" and self.slide > self.size:
            raise ValueError(
                f"slide {self.slide:g}s is more than size {self.size:g}s: items between two "
                "windows would be in none (for windows that do not overlap, use kind 'tumbling')"
            )
        if self.time is None:
            for name in ("out_of_orderness", "allowed_lateness", "idle_timeout"):
                if getattr(self, name):
                    raise ValueError(
                        f"{name} is for event time: give time (the field or function of each "
                        "item's time), or leave it out for processing time"
                    )
        else:
            try:
                self._time_of = key_function(self.time, "the window's time")
            except (ImportPathError, TypeError) as error:
                raise ValueError(f"time: {error}") from None
        built = aggregations(self.aggregate)
        # Operations that may fail run first and collect last, so that a failing
        # item changes nothing; count reads the window's own count.
        order = sorted(
            (name for name, agg in built.items() if agg.operation != "count"),
            key=lambda name: built[name].operation == "collect",
        )
        self._readers = tuple(built[name].read for name in order)
        self._starts = tuple(built[name].start for name in order)
        self._adds = tuple(built[name].add for name in order)
        self._merges = tuple(built[name].merge for name in order)
        self._collects = tuple(
            index for index, name in enumerate(order) if built[name].operation == "collect"
        )
        slot = {name: _ACC + index for index, name in enumerate(order)}
        self._results = tuple(
            (name, None, None)
            if built[name].operation == "count"
            else (name, slot[name], built[name].result)
            for name in self.aggregate
        )

    # ---------------------------------------------------------------- the runtime's hooks

    def setup(self) -> None:
        self._clock_now()

    def process_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        state = self.state
        results: list[dict[str, Any]] = []
        failed: dict[int, Exception] = {}
        seq = self._received
        self._received += len(items)
        self._touched.clear()
        if self._time_of is not None and self.kind == "tumbling" and not self._readers:
            self._count_each(items, seq, results, failed)
        else:
            self._place_each(items, seq, results, failed)
        for key, windows in self._touched.items():
            if windows:
                state[key] = windows
            elif key in state:
                del state[key]
        self._touched.clear()
        arrival = _trio_now()
        if self._early_keys and self._early_at is None:
            self._early_at = arrival + self.early
        self._last_arrival = arrival
        self._idle_base = self._watermark
        if failed:
            raise FailedItems(failed, results)
        return results

    def _count_each(self, items: list, seq: int, results: list, failed: dict) -> None:
        """Count ``items`` into tumbling windows of event time: the common
        case, in one loop with no call per item beyond the key and time."""
        state = self.state
        key_of = state.key_function
        time_of = self._time_of
        touched = self._touched
        early = self._early_keys if self.early is not None else None
        size, lateness, out_of_orderness = self.size, self.allowed_lateness, self.out_of_orderness
        track = not state.durable
        watermark, due = self._watermark, self._next
        for index, item in enumerate(items):
            try:
                key = key_of(item) if key_of is not None else None
                when = time_of(item)
                if type(when) is not float or not -math.inf < when < math.inf:
                    when = seconds(when)
                windows = touched.get(key)
            except Exception as error:
                failed[index] = error
                continue
            if windows is None:
                try:
                    windows = state[key]
                except KeyError:
                    windows = state[key] = {}
                touched[key] = windows
            start = when - when % size
            window = windows.get(start)
            if window is None:
                end = start + size
                if end + lateness <= watermark:
                    failed[index] = LateItem(when, watermark, lateness)
                    continue
                window = windows[start] = self._new(start, end, key, seq + index, track)
                due = self._next
            window[_COUNT] += 1
            if window[_FIRED]:
                results.append(self._output(key, window, "late"))
            if early is not None:
                early[key] = None
            # The item first, then the watermark it moves (as Flink's watermarks
            # follow the items they come after); a window opened behind the
            # watermark, within allowed_lateness, is sent at once.
            if when - out_of_orderness > watermark:
                watermark = when - out_of_orderness
            if watermark >= due:
                self._watermark = watermark
                self._fire(watermark, results)
                due = self._next
        self._watermark = watermark

    def _place_each(self, items: list, seq: int, results: list, failed: dict) -> None:
        """Add ``items`` to their windows, of any kind, with any aggregations."""
        state = self.state
        key_of = state.key_function
        time_of = self._time_of
        readers = self._readers
        touched = self._touched
        track = not state.durable
        now = self._clock_now()
        if time_of is None:
            self._advance(now, results)
        assign = self._assign_session if self.kind == "session" else self._assign_spans
        early = self._early_keys if self.early is not None else None
        out_of_orderness = self.out_of_orderness
        for index, item in enumerate(items):
            try:
                key = key_of(item) if key_of is not None else None
                when = seconds(time_of(item)) if time_of is not None else now
                values = [read(item) for read in readers] if readers else None
            except Exception as error:
                failed[index] = error
                continue
            try:
                windows = touched.get(key)
                if windows is None:
                    windows = touched[key] = self._windows_of(key)
                placed = assign(key, windows, when, values, seq + index, track, results)
            except Exception as error:
                failed[index] = error
            else:
                if not placed:
                    failed[index] = LateItem(when, self._watermark, self.allowed_lateness)
                elif early is not None:
                    early[key] = None
            # The item first, then the watermark it moves (as Flink's watermarks
            # follow the items they come after); a window opened behind the
            # watermark, within allowed_lateness, is sent at once.
            if time_of is not None:
                self._advance(when - out_of_orderness, results)

    def _windows_of(self, key: Hashable) -> dict | list:
        """The windows of ``key``, put in the state if they are new."""
        state = self.state
        try:
            return state[key]
        except KeyError:
            windows = state[key] = {} if self.kind != "session" else []
            return windows

    def holding(self) -> int:
        """How many items received are not yet sent on, counted from the
        first item of the oldest open window: none when the state is
        saved at checkpoints (it holds them then, not the acknowledgements)."""
        if self.state.durable or not self._held:
            return 0
        return self._received - next(iter(self._held.values()))

    def deadline(self) -> float | None:
        """When windows are due to close by the clock (processing time, or
        an idle event-time stream), or early updates are due."""
        due = math.inf
        if self._heap:
            if self._time_of is None:
                due = self._next - (self._offset or 0.0)
            elif self.idle_timeout is not None:
                due = self._last_arrival + max(self.idle_timeout, self._next - self._idle_base)
        if self._early_at is not None:
            due = min(due, self._early_at)
        return None if due == math.inf else due

    def on_deadline(self) -> Iterator[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        now = trio.current_time()
        if self._time_of is None:
            self._advance(self._clock_now(), results)
        elif self.idle_timeout is not None and now - self._last_arrival >= self.idle_timeout:
            self._advance(self._idle_base + (now - self._last_arrival), results)
        if self._early_at is not None and now >= self._early_at:
            self._early_at = None
            keys, self._early_keys = self._early_keys, {}
            for key in keys:
                windows = self.state.get(key)
                for window in _each(windows):
                    if not window[_FIRED]:
                        results.append(self._output(key, window, "early"))
        yield from results

    def finish(self) -> Iterator[dict[str, Any]]:
        """The stream ended: every open window is emitted (on time), and the
        windows kept for late items are dropped."""
        results: list[dict[str, Any]] = []
        self._fire(math.inf, results)
        yield from results

    def snapshot(self) -> dict[str, float]:
        return {"watermark": self._watermark}

    def restore(self, snapshot: dict[str, float]) -> None:
        """The watermark back, and the timers of the windows in the state."""
        self._watermark = self._idle_base = snapshot["watermark"]
        self._last_arrival = trio.current_time()
        self._timers.clear()
        self._heap.clear()
        lateness = self.allowed_lateness
        for key, windows in self.state.items():
            for window in _each(windows):
                self._timer(window[_END] + (lateness if window[_FIRED] else 0.0), key)

    # ---------------------------------------------------------------- windows

    def _clock_now(self) -> float:
        """Processing time: the wall clock in seconds since the epoch, read
        through trio's clock so that a test's clock drives it too."""
        current = _trio_now()
        if self._offset is None:
            self._offset = _clock.time() - current
        return current + self._offset

    def _timer(self, when: float, key: Hashable) -> None:
        keys = self._timers.get(when)
        if keys is None:
            keys = self._timers[when] = {}
            heapq.heappush(self._heap, when)
            if when < self._next:
                self._next = when
        keys[key] = None

    def _advance(self, watermark: float, results: list) -> None:
        """Move the watermark up to ``watermark`` (never back), and emit the
        windows it has passed."""
        if watermark > self._watermark:
            self._watermark = watermark
        if self._watermark >= self._next:
            self._fire(self._watermark, results)

    def _fire(self, watermark: float, results: list) -> None:
        """Emit the windows that ``watermark`` closes, and drop those past
        their allowed lateness."""
        heap, timers, state, held = self._heap, self._timers, self.state, self._held
        lateness = self.allowed_lateness
        output = self._output
        while heap and heap[0] <= watermark:
            for key in _in_order(timers.pop(heapq.heappop(heap))):
                windows = state.get(key)
                if not windows:
                    continue
                session = isinstance(windows, list)
                for window in list(_each(windows)):
                    end = window[_END]
                    if end > watermark:
                        continue
                    if not window[_FIRED]:
                        window[_FIRED] = True
                        results.append(output(key, window, "on_time"))
                    if end + lateness <= watermark:
                        if session:
                            windows.remove(window)
                        else:
                            del windows[window[_START]]
                        held.pop(id(window), None)
                    else:
                        self._timer(end + lateness, key)
                if windows:
                    state[key] = windows
                else:
                    del state[key]
                    self._touched.pop(key, None)
        self._next = heap[0] if heap else math.inf

    def _output(self, key: Hashable, window: list, timing: str) -> dict[str, Any]:
        out = {"key": key, "start": window[_START], "end": window[_END], "timing": timing}
        count = window[_COUNT]
        for name, slot, result in self._results:
            out[name] = count if slot is None else result(window[slot], count)
        return out

    def _new(self, start: float, end: float, key: Hashable, seq: int, track: bool) -> list:
        window = [start, end, False, seq, 0]
        self._timer(end, key)
        if track:
            self._held[id(window)] = seq
        return window

    def _assign_spans(
        self,
        key: Hashable,
        windows: dict,
        when: float,
        values: list | None,
        seq: int,
        track: bool,
        results: list,
    ) -> bool:
        """Add an item to its tumbling or sliding windows that are still open."""
        size = self.size
        slide = self.slide or size
        closed = self._watermark - self.allowed_lateness
        start = when - when % slide
        updates = []
        while start + size > when:
            if start + size > closed:
                window = windows.get(start)
                if window is None:
                    accumulators = self._begun(values, when) if values else []
                else:
                    accumulators = self._added(window, values, when) if values else []
                updates.append((start, window, accumulators))
            start -= slide
        if not updates:
            return False
        for start, window, accumulators in reversed(updates):
            if window is None:
                window = windows[start] = self._new(start, start + size, key, seq, track)
                window += accumulators
            else:
                window[_ACC:] = accumulators
            window[_COUNT] += 1
            if window[_FIRED]:
                results.append(self._output(key, window, "late"))
        return True

    def _begun(self, values: list, when: float) -> list:
        """The accumulators of a window whose first item has ``values``."""
        return [begin(value, when) for begin, value in zip(self._starts, values, strict=True)]

    def _added(self, window: list, values: list, when: float) -> list:
        """``window``'s accumulators with an item's ``values`` added; the
        collecting ones (which cannot fail) are appended to in place, last."""
        adds = self._adds
        collects = self._collects
        accumulators = [
            window[_ACC + index] if index in collects else add(window[_ACC + index], value, when)
            for index, (add, value) in enumerate(zip(adds, values, strict=True))
        ]
        for index in collects:
            accumulators[index] = adds[index](accumulators[index], values[index], when)
        return accumulators

    def _assign_session(
        self,
        key: Hashable,
        windows: list,
        when: float,
        values: list | None,
        seq: int,
        track: bool,
        results: list,
    ) -> bool:
        """Add an item to its key's session, merging the sessions it bridges."""
        gap = self.gap
        end = when + gap
        # Windows are half-open, [start, end): the item's [when, when + gap)
        # overlaps a session it is less than gap from.
        hits = [w for w in windows if w[_START] < end and w[_END] > when]
        if max([end, *(w[_END] for w in hits)]) + self.allowed_lateness <= self._watermark:
            return False
        if not hits:
            window = self._new(when, end, key, seq, track)
            if values:
                window += self._begun(values, when)
            window[_COUNT] = 1
            windows.append(window)
            windows.sort(key=lambda w: w[_START])
            return True
        hits.sort(key=lambda w: w[_START])
        merged = hits[0][:_ACC]
        accumulators = hits[0][_ACC:]
        for other in hits[1:]:
            accumulators = [
                merge(mine, theirs)
                for merge, mine, theirs in zip(
                    self._merges, accumulators, other[_ACC:], strict=True
                )
            ]
        if values:
            window = merged + accumulators
            accumulators = self._added(window, values, when)
        # Nothing can fail from here on.
        survivor = min(hits, key=lambda w: w[_SEQ])
        merged[_START] = min(when, merged[_START])
        merged[_END] = max([end, *(w[_END] for w in hits)])
        merged[_FIRED] = any(w[_FIRED] for w in hits)
        merged[_SEQ] = survivor[_SEQ]
        merged[_COUNT] = sum(w[_COUNT] for w in hits) + 1
        survivor[:] = merged + accumulators
        for other in hits:
            if other is not survivor:
                windows.remove(other)
                self._held.pop(id(other), None)
        windows.sort(key=lambda w: w[_START])
        self._timer(survivor[_END] + (self.allowed_lateness if survivor[_FIRED] else 0.0), key)
        if survivor[_FIRED]:
            results.append(self._output(key, survivor, "late"))
        return True


def _trio_now() -> float:
    """``trio.current_time()``, also from a worker thread (executor: thread)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return trio.from_thread.run_sync(trio.current_time)


def _in_order(keys: dict) -> list:
    """The keys whose windows close at one time, sorted when they can be,
    so that a run restarted from a checkpoint sends them in the same order."""
    try:
        return sorted(keys)
    except TypeError:
        return list(keys)


def _each(windows: dict | list | None) -> Any:
    """The windows of one key, however they are kept."""
    if not windows:
        return ()
    return windows.values() if isinstance(windows, dict) else windows
