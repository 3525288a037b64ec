"""The Window node: tumbling, sliding and session windows by event time and
processing time, against results computed by hand."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import pickle
import re
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanostream import (
    ChannelSource,
    DeadLetter,
    FailedItems,
    LateItem,
    NanoStreamGraph,
    NanoStreamProcessor,
    NodeError,
    SequenceEmitter,
    WithAck,
    run_graph,
)
from nanostream._runtime._keys import state_of
from nanostream.config import ConfigErrors, check_text, load_text
from nanostream.nodes.window import Window
from nanostream.testing import Collector


def clicks(*pairs):
    """Items ``{"user", "ts", "amount"}`` from ``(user, ts)`` pairs; the
    amount is the time, so sums can be checked by hand."""
    return [{"user": user, "ts": ts, "amount": ts} for user, ts in pairs]


async def run_window(window, items, key="user", **options):
    """items -> window -> collector; returns (emitted, dead letters, stats)."""
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(items))
    graph.add("window", window, ["src"], key=key, **options)
    sink = graph.add("sink", Collector(), ["window"])
    letters = None
    if options.get("dead_letter"):
        letters = graph.add(options["dead_letter"], Collector())
    run = await run_graph(graph)
    return sink.items, (letters.items if letters else []), run


def brief(emitted, *names):
    """Each output as (key, start, end, timing, *aggregates)."""
    return [
        (out["key"], out["start"], out["end"], out["timing"], *(out[n] for n in names))
        for out in emitted
    ]


# ---------------------------------------------------------------- window kinds


async def test_tumbling_windows_count_and_sum_per_key():
    items = clicks(("a", 0), ("b", 1), ("a", 4), ("a", 10), ("b", 12), ("a", 19), ("a", 20))
    window = Window(size=10, time="ts", aggregate={"n": "count", "total": {"sum": "amount"}})
    emitted, _, _ = await run_window(window, items)
    # The watermark passes 10 at a@10 (closing a's and b's [0, 10)), 20 at
    # a@20; the stream's end closes the rest, in the order they opened.
    assert brief(emitted, "n", "total") == [
        ("a", 0.0, 10.0, "on_time", 2, 4),
        ("b", 0.0, 10.0, "on_time", 1, 1),
        ("a", 10.0, 20.0, "on_time", 2, 29),
        ("b", 10.0, 20.0, "on_time", 1, 12),
        ("a", 20.0, 30.0, "on_time", 1, 20),
    ]


async def test_sliding_windows_hold_each_item_in_size_over_slide_windows():
    items = clicks(("a", 1), ("a", 6), ("a", 11))
    window = Window(kind="sliding", size=10, slide=5, time="ts", aggregate={"ts": "collect"})
    emitted, _, _ = await run_window(window, items)
    assert [(o["start"], o["end"], [i["ts"] for i in o["ts"]]) for o in emitted] == [
        (-5.0, 5.0, [1]),
        (0.0, 10.0, [1, 6]),
        (5.0, 15.0, [6, 11]),
        (10.0, 20.0, [11]),
    ]


async def test_an_item_late_for_some_sliding_windows_counts_in_the_others():
    items = clicks(("a", 1), ("a", 12), ("a", 6))
    window = Window(kind="sliding", size=10, slide=5, time="ts")
    emitted, letters, _ = await run_window(window, items, on_error="skip", dead_letter="late")
    # a@12 closed [-5, 5) and [0, 10): a@6 misses [0, 10) but counts in [5, 15).
    assert brief(emitted, "count") == [
        ("a", -5.0, 5.0, "on_time", 1),
        ("a", 0.0, 10.0, "on_time", 1),
        ("a", 5.0, 15.0, "on_time", 2),
        ("a", 10.0, 20.0, "on_time", 1),
    ]
    assert letters == []


async def test_session_windows_end_a_gap_after_the_last_item():
    items = clicks(("a", 0), ("b", 1), ("a", 2), ("a", 10), ("b", 20))
    window = Window(kind="session", gap=3, time="ts", aggregate={"n": "count"})
    emitted, _, _ = await run_window(window, items)
    assert brief(emitted, "n") == [
        ("a", 0.0, 5.0, "on_time", 2),
        ("b", 1.0, 4.0, "on_time", 1),
        ("a", 10.0, 13.0, "on_time", 1),
        ("b", 20.0, 23.0, "on_time", 1),
    ]


async def test_an_item_between_two_sessions_merges_them():
    items = clicks(("a", 0), ("a", 8), ("a", 4))  # 4 is within 5 of both 0 and 8
    window = Window(
        kind="session",
        gap=5,
        time="ts",
        out_of_orderness=10,
        aggregate={"n": "count", "total": {"sum": "amount"}, "ts": {"collect": "ts"}},
    )
    emitted, _, _ = await run_window(window, items)
    assert brief(emitted, "n", "total", "ts") == [("a", 0.0, 13.0, "on_time", 3, 12, [0, 4, 8])]


async def test_without_a_key_all_items_form_one_stream_of_windows():
    items = clicks(("a", 1), ("b", 2), ("c", 12))
    emitted, _, _ = await run_window(Window(size=10, time="ts"), items, key=None)
    assert brief(emitted, "count") == [
        (None, 0.0, 10.0, "on_time", 2),
        (None, 10.0, 20.0, "on_time", 1),
    ]


# ---------------------------------------------------------------- event time


async def test_out_of_order_items_within_out_of_orderness_count():
    items = clicks(("a", 9), ("a", 12), ("a", 3), ("a", 14), ("a", 7), ("a", 15), ("a", 2))
    window = Window(size=10, time="ts", out_of_orderness=5, aggregate={"ts": {"collect": "ts"}})
    emitted, letters, run = await run_window(window, items, on_error="skip", dead_letter="late")
    # The watermark is 15 - 5 = 10 once a@15 arrives: [0, 10) closes with 9, 3, 7
    # in time order; a@2 comes after that and is late.
    assert brief(emitted, "ts") == [
        ("a", 0.0, 10.0, "on_time", [3, 7, 9]),
        ("a", 10.0, 20.0, "on_time", [12, 14, 15]),
    ]
    [letter] = letters
    assert isinstance(letter, DeadLetter)
    assert letter.node == "window"
    assert letter.item == {"user": "a", "ts": 2, "amount": 2}
    assert isinstance(letter.error, LateItem)
    assert (letter.error.time, letter.error.watermark) == (2.0, 10.0)
    assert run.stats["window"].skipped == 1


async def test_a_late_item_fails_the_pipeline_under_the_default_policy():
    items = clicks(("a", 20), ("a", 1))
    with pytest.raises(NodeError) as raised:
        await run_window(Window(size=10, time="ts"), items)
    assert isinstance(raised.value.error, LateItem)
    assert "behind the watermark 1970-01-01T00:00:20+00:00" in str(raised.value)


async def test_allowed_lateness_sends_an_update_then_refuses_later_items():
    items = clicks(("a", 1), ("a", 12), ("a", 5), ("a", 16), ("a", 6))
    window = Window(
        size=10, time="ts", allowed_lateness=5, aggregate={"n": "count", "ts": {"collect": "ts"}}
    )
    emitted, letters, _ = await run_window(window, items, on_error="skip", dead_letter="late")
    # a@12 closes [0, 10) on time; a@5 is late but within 5s: an update;
    # a@16 moves the watermark to 16 >= 10 + 5, and a@6 is refused.
    assert brief(emitted, "n", "ts") == [
        ("a", 0.0, 10.0, "on_time", 1, [1]),
        ("a", 0.0, 10.0, "late", 2, [1, 5]),
        ("a", 10.0, 20.0, "on_time", 2, [12, 16]),
    ]
    assert [letter.item["ts"] for letter in letters] == [6]


async def test_a_late_item_within_lateness_grows_a_closed_session_and_sends_it_again():
    items = clicks(("a", 0), ("a", 20), ("a", 3), ("a", 7), ("a", 16))
    window = Window(kind="session", gap=5, time="ts", allowed_lateness=30)
    emitted, _, _ = await run_window(window, items)
    # a@20 closes [0, 5); a@3 and a@7 extend it (late updates); a@16 joins
    # the open session of a@20, sent when the stream ends.
    assert brief(emitted, "count") == [
        ("a", 0.0, 5.0, "on_time", 1),
        ("a", 0.0, 8.0, "late", 2),
        ("a", 0.0, 12.0, "late", 3),
        ("a", 16.0, 25.0, "on_time", 2),
    ]


async def test_a_window_opened_behind_the_watermark_is_sent_at_once():
    items = clicks(("a", 15), ("a", 3), ("a", 4))
    window = Window(size=10, time="ts", allowed_lateness=10)
    emitted, _, _ = await run_window(window, items)
    # The watermark is 15 when a@3 opens [0, 10): within lateness, sent at
    # once; a@4 then updates it.
    assert brief(emitted, "count") == [
        ("a", 0.0, 10.0, "on_time", 1),
        ("a", 0.0, 10.0, "late", 2),
        ("a", 10.0, 20.0, "on_time", 1),
    ]


async def test_times_may_be_iso_strings_or_datetimes():
    utc = dt.UTC
    items = [
        {"user": "a", "at": "2024-05-01T10:00:05Z"},
        {"user": "a", "at": dt.datetime(2024, 5, 1, 10, 0, 50, tzinfo=utc)},
        {"user": "a", "at": "2024-05-01T12:01:10+02:00"},  # 10:01:10 UTC
        {"user": "a", "at": "2024-05-01T10:01:20"},  # naive: UTC
    ]
    emitted, _, _ = await run_window(Window(size="1m", time="at"), items)
    minute = dt.datetime(2024, 5, 1, 10, 0, tzinfo=utc).timestamp()
    assert brief(emitted, "count") == [
        ("a", minute, minute + 60, "on_time", 2),
        ("a", minute + 60, minute + 120, "on_time", 2),
    ]


async def test_an_item_without_a_usable_time_is_an_error_of_that_item_only():
    items = [
        {"user": "a", "ts": 1},
        {"user": "a"},
        {"user": "a", "ts": "yesterday"},
        {"user": "a", "ts": float("nan")},
        {"user": "a", "ts": 2},
    ]
    emitted, letters, _ = await run_window(
        Window(size=10, time="ts"), items, on_error="skip", dead_letter="bad"
    )
    assert brief(emitted, "count") == [("a", 0.0, 10.0, "on_time", 2)]
    assert [str(letter.error) for letter in letters] == [
        "\"the item has no field 'ts' (the window's time)\"",
        "time 'yesterday' is neither seconds since the epoch nor an ISO-8601 date and time",
        "time nan is not a finite number of seconds",
    ]


def event_time(item):
    return item["t"] * 60


async def test_time_may_be_a_function_by_import_path():
    items = [{"user": "a", "t": 0}, {"user": "a", "t": 1}, {"user": "a", "t": 2}]
    window = Window(size="2m", time="test_window:event_time")
    emitted, _, _ = await run_window(window, items)
    assert brief(emitted, "count") == [
        ("a", 0.0, 120.0, "on_time", 2),
        ("a", 120.0, 240.0, "on_time", 1),
    ]


# ---------------------------------------------------------------- aggregations


async def test_every_aggregation_over_one_window():
    items = [
        {"user": "a", "ts": 3, "amount": 5, "name": "bob"},
        {"user": "a", "ts": 1, "amount": 2, "name": "alexandra"},
        {"user": "a", "ts": 2, "amount": 8, "name": "cy"},
    ]
    window = Window(
        size=10,
        time="ts",
        out_of_orderness=5,
        aggregate={
            "n": "count",
            "total": {"sum": "amount"},
            "least": {"min": "amount"},
            "most": {"max": "amount"},
            "mean": {"mean": "amount"},
            "first": {"first": "name"},
            "last": {"last": "name"},
            "names": {"collect": "name"},
            "earliest": "first",
            "longest": {"reduce": "test_window:longer", "field": "name"},
        },
    )
    [out] = (await run_window(window, items))[0]
    assert out == {
        "key": "a",
        "start": 0.0,
        "end": 10.0,
        "timing": "on_time",
        "n": 3,
        "total": 15,
        "least": 2,
        "most": 8,
        "mean": 5.0,
        "first": "alexandra",  # by time, not by arrival
        "last": "bob",
        "names": ["alexandra", "cy", "bob"],
        "earliest": items[1],
        "longest": "alexandra",
    }


def longer(a, b):
    return a if len(a) >= len(b) else b


async def test_an_item_whose_aggregation_fails_changes_nothing():
    items = [
        {"user": "a", "ts": 1, "amount": 1},
        {"user": "a", "ts": 2, "amount": "x"},  # sum fails: not counted, not collected
        {"user": "a", "ts": 3, "amount": 2},
    ]
    window = Window(
        size=10, time="ts", aggregate={"n": "count", "all": "collect", "total": {"sum": "amount"}}
    )
    emitted, letters, _ = await run_window(window, items, on_error="skip", dead_letter="bad")
    assert brief(emitted, "n", "total") == [("a", 0.0, 10.0, "on_time", 2, 3)]
    assert [item["ts"] for item in emitted[0]["all"]] == [1, 3]
    assert [letter.item["ts"] for letter in letters] == [2]


async def test_sessions_merge_their_aggregates():
    items = clicks(("a", 0), ("a", 1), ("a", 10), ("a", 11), ("a", 5.5))
    window = Window(
        kind="session",
        gap=5,
        time="ts",
        out_of_orderness=20,
        aggregate={
            "n": "count",
            "least": {"min": "amount"},
            "mean": {"mean": "amount"},
            "first": {"first": "ts"},
            "last": {"last": "ts"},
            "ts": {"collect": "ts"},
            "biggest": {"reduce": "builtins:max", "field": "amount"},
        },
    )
    [out] = (await run_window(window, items))[0]
    assert brief([out], "n", "least", "mean", "first", "last", "ts", "biggest") == [
        ("a", 0.0, 16.0, "on_time", 5, 0, 5.5, 0, 11, [0, 1, 5.5, 10, 11], 11)
    ]


# ---------------------------------------------------------------- processing time


class Feed:
    """src (a channel) -> window -> sink, running in a nursery; items are sent
    when the test says, under trio's MockClock."""

    def __init__(self, window, key="user", **options):
        self.send, receive = trio.open_memory_channel(100)
        self.graph = NanoStreamGraph()
        self.graph.add("src", ChannelSource(receive))
        self.graph.add("window", window, ["src"], key=key, **options)
        self.sink = self.graph.add("sink", Collector(), ["window"])

    async def put(self, *items):
        for item in items:
            await self.send.send(item)
        await trio.testing.wait_all_tasks_blocked()


async def test_processing_time_windows_close_by_the_clock(autojump_clock):
    window = Window(size=10, aggregate={"n": "count"})
    feed = Feed(window)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, feed.graph)
        now = window._clock_now()
        # Wait for the start of a window, so that the test reads simply.
        await trio.sleep(10 - now % 10)
        start = window._clock_now()
        await feed.put({"user": "a"}, {"user": "b"})
        await trio.sleep(4)
        await feed.put({"user": "a"})
        await trio.sleep(5.5)
        assert feed.sink.items == []  # 9.5s in: the window is still open
        await trio.sleep(1)
        assert brief(feed.sink.items, "n") == [
            ("a", start, start + 10, "on_time", 2),
            ("b", start, start + 10, "on_time", 1),
        ]
        await feed.put({"user": "a"})
        await feed.send.aclose()
    assert brief(feed.sink.items[2:], "n") == [("a", start + 10, start + 20, "on_time", 1)]


async def test_early_updates_come_every_early_seconds(autojump_clock):
    window = Window(size="1h", early="10s", time="ts", aggregate={"n": "count"})
    feed = Feed(window)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, feed.graph)
        await feed.put(*clicks(("a", 0), ("b", 1)))
        await trio.sleep(9)
        assert feed.sink.items == []
        await trio.sleep(2)
        assert brief(feed.sink.items, "n") == [
            ("a", 0.0, 3600.0, "early", 1),
            ("b", 0.0, 3600.0, "early", 1),
        ]
        await feed.put(*clicks(("a", 2)))
        await trio.sleep(30)  # only a changed: one update, then none
        assert brief(feed.sink.items[2:], "n") == [("a", 0.0, 3600.0, "early", 2)]
        await feed.send.aclose()
    assert brief(feed.sink.items[3:], "n") == [
        ("a", 0.0, 3600.0, "on_time", 2),
        ("b", 0.0, 3600.0, "on_time", 1),
    ]


async def test_an_idle_stream_moves_the_watermark_with_the_clock(autojump_clock):
    window = Window(size=60, time="ts", out_of_orderness=5, idle_timeout=30)
    feed = Feed(window, on_error="skip", dead_letter="late")
    letters = feed.graph.add("late", Collector())
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, feed.graph)
        await feed.put(*clicks(("a", 10), ("a", 50)))
        # The watermark is 45; [0, 60) closes once it reaches 60: after the
        # idle timeout (30s), when 45 + elapsed >= 60, so 30s after the last item.
        await trio.sleep(29.5)
        assert feed.sink.items == []
        await trio.sleep(1)
        assert brief(feed.sink.items, "count") == [("a", 0.0, 60.0, "on_time", 2)]
        await feed.put(*clicks(("a", 55)))  # now late: the watermark moved on
        await feed.send.aclose()
    assert [letter.item["ts"] for letter in letters.items] == [55]


async def test_without_idle_timeout_an_idle_stream_waits(autojump_clock):
    feed = Feed(Window(size=60, time="ts"))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, feed.graph)
        await feed.put(*clicks(("a", 10)))
        await trio.sleep(3600)
        assert feed.sink.items == []
        await feed.send.aclose()
    assert brief(feed.sink.items, "count") == [("a", 0.0, 60.0, "on_time", 1)]


# ---------------------------------------------------------------- acknowledgements and state


class Acked(NanoStreamProcessor):
    """A source of the items sent to ``receive``, each appended to ``acked``
    when it is acknowledged."""

    def __init__(self, receive, acked):
        self.receive = receive
        self.acked = acked

    async def generate(self):
        async for item in self.receive:
            yield WithAck(item, lambda item=item: self.acked.append(item))


async def test_without_a_state_dir_acks_wait_until_the_window_is_sent():
    send, receive = trio.open_memory_channel(0)
    acked = []
    graph = NanoStreamGraph()
    graph.add("src", Acked(receive, acked))
    graph.add("window", Window(size=10, time="ts"), ["src"], key="user")
    sink = graph.add("sink", Collector(), ["window"])
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        for item in clicks(("a", 1), ("b", 2), ("a", 11)):
            await send.send(item)
            await trio.testing.wait_all_tasks_blocked()
        # a@11 closed [0, 10) of a and b; a@11 is held
        assert [item["ts"] for item in acked] == [1, 2]
        assert len(sink.items) == 2
        await send.aclose()
    assert [item["ts"] for item in acked] == [1, 2, 11]


async def test_state_and_snapshot_carry_a_window_across_a_restart():
    """What a checkpoint saves (the keyed state and snapshot()) is all a new
    node needs to go on as if it had not stopped."""
    items = clicks(("a", 1), ("b", 3), ("a", 9), ("a", 12), ("b", 14), ("a", 4), ("b", 25))

    def window():
        node = Window(size=10, time="ts", allowed_lateness=5, aggregate={"n": "count"})
        state_of(node, "user", None)
        return node

    whole, _, _ = await run_window(window(), items)
    assert brief(whole, "n") == [
        ("a", 0.0, 10.0, "on_time", 2),
        ("b", 0.0, 10.0, "on_time", 1),
        ("a", 0.0, 10.0, "late", 3),
        ("a", 10.0, 20.0, "on_time", 1),
        ("b", 10.0, 20.0, "on_time", 1),
        ("b", 20.0, 30.0, "on_time", 1),
    ]

    first = window()
    emitted = first.process_batch(items[:4])
    written, deleted = first.state.changes()
    assert not deleted
    saved = pickle.dumps(([(k, v, at) for k, (v, at) in written.items()], first.snapshot()))

    second = window()
    entries, snapshot = pickle.loads(saved)
    second.state.load(iter(entries))
    second.restore(snapshot)
    rest = second.process_batch(items[4:]) + list(second.finish())
    assert emitted + rest == whole


# ---------------------------------------------------------------- configuration


def config(**window):
    lines = "\n".join(f"    {key}: {value}" for key, value in window.items())
    return f"""\
node_sequence:
  - name: src
    class: SequenceEmitter
  - name: window
    class: Window
    parents: [src]
{lines}
"""


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"size": "5x"}, "parameter 'size': '5x' is not a duration"),
        ({"size": "-1"}, "parameter 'size': a duration is 0 or more seconds, not -1"),
        ({"size": "0"}, "parameter 'size': size must be more than 0, not 0.0"),
        ({"kind": "sliding", "size": "1m"}, "parameter 'kind': kind 'sliding' needs slide"),
        ({"size": "1m", "gap": "5s"}, "parameter 'gap': gap is not for tumbling windows"),
        (
            {"kind": "sliding", "size": "1m", "slide": "2m"},
            "parameter 'slide': slide 120s is more than size 60s",
        ),
        ({"size": "1m", "allowed_lateness": "5s"}, "allowed_lateness is for event time"),
        ({"size": "1m", "time": "nomodule:f"}, "parameter 'time': time: cannot import"),
        ({"size": "1m", "aggregate": "{n: cont}"}, "unknown aggregation 'cont'"),
        ({"size": "1m", "aggregate": "{key: count}"}, "aggregate 'key': every output item"),
    ],
)
def test_configuration_errors_name_the_parameter(window, message):
    with pytest.raises(ConfigErrors) as raised:
        load_text(config(**window), "pipeline.yaml")
    [error] = raised.value.errors
    assert message in error.format()


def test_the_python_api_checks_the_same():
    with pytest.raises(ValueError, match="kind 'session' needs gap"):
        Window(kind="session")
    with pytest.raises(ValueError, match="unknown aggregation 'summ' \\(did you mean 'sum'\\?\\)"):
        Window(size=1, aggregate={"t": {"summ": "x"}})
    assert Window(size="1m30s").size == 90.0


def test_the_pipelines_in_the_windows_guide_pass_check():
    guide = (Path(__file__).parent.parent / "docs" / "state.md").read_text()
    section = guide.split("## Windows\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert blocks
    for number, text in enumerate(blocks, 1):
        assert [e.format() for e in check_text(text, f"state.md windows {number}")] == []


# ---------------------------------------------------------------- recovery after kill -9

RECOVERY_PIPELINE = """\
pipeline_name: window_recovery
state_dir: state
checkpoint_interval: 50ms
node_sequence:
  - name: inbox
    class: WatchdogDirectoryListener
    watchdog_path: inbox
    existing: true
    when_done: delete
  - name: lines
    class: FileReader
    mode: jsonl
    parents: [inbox]
  - name: clicks
    class: Map
    function: recovery_clicks:record
    parents: [lines]
  - name: per_window
    class: Window
    parents: [clicks]
    key: user
    time: ts
    size: 10
    aggregate: {n: count, total: {sum: amount}}
  - name: encode
    class: Map
    function: json:dumps
    kwargs: {sort_keys: true}
    parents: [per_window]
  - name: out
    class: FileWriter
    path: out.jsonl
    fsync: false
    parents: [encode]
"""


def test_after_kill_9_and_restarts_every_window_is_as_computed_by_hand(tmp_path):
    """folder -> Window -> file, killed at random points and started again:
    each window reaches the file with the count and sum of an uninterrupted
    run, computed here by hand, and no other result (a window written again
    after a restart is written the same)."""
    import random
    import signal

    from test_cli import wait_while_running
    from test_files import running

    (tmp_path / "pipeline.yaml").write_text(RECOVERY_PIPELINE)
    (tmp_path / "recovery_clicks.py").write_text("def record(line):\n    return line.data\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    expected: dict[tuple[str, float], list[int]] = {}
    files, per_file = 60, 100
    for number in range(files):
        lines = []
        for index in range(per_file):
            ts = number * 4 + index * 4 / per_file  # in time order across files
            user = f"u{(number * per_file + index) % 7}"
            amount = (number * per_file + index) % 13
            lines.append(json.dumps({"user": user, "ts": ts, "amount": amount}))
            window = expected.setdefault((user, ts - ts % 10), [0, 0])
            window[0] += 1
            window[1] += amount
        (inbox / f"f{number:03}.jsonl").write_text("\n".join(lines) + "\n")
    # A last item far ahead moves the watermark past every window above.
    (inbox / "z.jsonl").write_text(json.dumps({"user": "end", "ts": 1e6, "amount": 0}) + "\n")

    output = tmp_path / "out.jsonl"

    def results() -> dict[tuple[str, float], set[tuple[int, int]]]:
        found: dict[tuple[str, float], set[tuple[int, int]]] = {}
        lines = output.read_text().splitlines() if output.exists() else []
        for line in lines:
            window = json.loads(line)
            found.setdefault((window["key"], window["start"]), set()).add(
                (window["n"], window["total"])
            )
        return found

    chooser = random.Random()
    kills = 0
    while kills < 3 and len(list(inbox.iterdir())) > 2:
        with running(tmp_path) as process:
            left = chooser.randint(1, len(list(inbox.iterdir())) - 1)
            wait_while_running(
                process, lambda left=left: len(list(inbox.iterdir())) <= left, "some files done"
            )
        kills += 1
    assert kills, "the files were all done before a kill"
    with running(tmp_path) as process:
        # A file written now is read by this run: it closes the window of 'end'.
        end = json.dumps({"user": "end", "ts": 2e6, "amount": 0})
        (inbox / "zz.jsonl").write_text(end + "\n")
        expected[("end", 1e6)] = [1, 0]
        wait_while_running(
            process,
            lambda: results().keys() == expected.keys() and not any(inbox.iterdir()),
            "every window",
        )
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
    assert results() == {window: {tuple(value)} for window, value in expected.items()}


KAFKA_WINDOW_PIPELINE = """\
pipeline_name: kafka-windows
state_dir: state
checkpoint_interval: 50ms
node_sequence:
  - name: consume
    class: KafkaConsumer
    topics: [{source}]
    bootstrap_servers: {broker}
    group_id: {group}
    auto_offset_reset: earliest
    records: false
    max_batch: 50
    consumer_config:
      session_timeout_ms: 3000
      heartbeat_interval_ms: 1000
  - name: slow
    class: Throttle
    parents: [consume]
    rate: 3000
  - name: per_window
    class: Window
    parents: [slow]
    key: user
    time: ts
    size: 10
    aggregate: {{n: count, total: {{sum: amount}}}}
  - name: produce
    class: KafkaProducer
    parents: [per_window]
    topic: {sink}
    bootstrap_servers: {broker}
"""


def test_a_kafka_window_pipeline_killed_at_random_points_gives_each_window_once(tmp_path, broker):
    """Kafka -> Window -> Kafka, killed with SIGKILL twice at random points:
    every window on the output topic has the count and sum computed by hand,
    and no other value (a window sent again after a restart is the same)."""
    import random

    from kafka_testbed import TopicReader, create_topic, produce_json, unique_name
    from test_recovery import kill_and_restart

    rng = random.Random(11)
    source = create_topic(broker, 1, "windows-in")  # one partition: one order of event time
    sink = create_topic(broker, 1, "windows-out")
    rows = [
        {"user": rng.choice("abcde"), "ts": index / 10, "amount": rng.randrange(10)}
        for index in range(3000)
    ]
    rows.append({"user": "end", "ts": 1e6, "amount": 0})  # closes every window above
    expected: dict[tuple[str, float], tuple[int, int]] = {}
    for row in rows[:-1]:
        n, total = expected.get((row["user"], row["ts"] - row["ts"] % 10), (0, 0))
        expected[(row["user"], row["ts"] - row["ts"] % 10)] = (n + 1, total + row["amount"])
    produce_json(broker, source, rows)
    (tmp_path / "pipeline.yaml").write_text(
        KAFKA_WINDOW_PIPELINE.format(
            source=source, sink=sink, broker=broker, group=unique_name("windows")
        )
    )
    reader = TopicReader(broker, sink)

    def found() -> dict[tuple[str, float], set[tuple[int, int]]]:
        reader._read()
        windows: dict[tuple[str, float], set[tuple[int, int]]] = {}
        for value in reader.values:
            windows.setdefault((value["key"], value["start"]), set()).add(
                (value["n"], value["total"])
            )
        return windows

    try:
        kills = sorted(rng.sample(range(10, len(expected) - 10), 2))
        kill_and_restart(
            tmp_path,
            lambda: len(found()),
            kills,
            lambda: found().keys() >= expected.keys(),
        )
        assert found() == {window: {value} for window, value in expected.items()}
    finally:
        reader.close()


# ---------------------------------------------------------------- against a brute-force count


def brute_force(kind, size, slide, gap, events):
    """{(key, start, end): count} of ``events`` ((key, time) pairs), by definition."""
    counts: dict[tuple, int] = {}
    if kind == "session":
        for key in {key for key, _ in events}:
            times = sorted(time for k, time in events if k == key)
            first = last = times[0]
            count = 0
            for time in times:
                if time - last >= gap:
                    counts[(key, first, last + gap)] = count
                    first, count = time, 0
                last, count = time, count + 1
            counts[(key, first, last + gap)] = count
        return counts
    step = slide if kind == "sliding" else size
    for key, time in events:
        start = time - time % step
        while start + size > time:
            counts[(key, start, start + size)] = counts.get((key, start, start + size), 0) + 1
            start -= step
    return counts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["tumbling", "sliding", "session"]),
    events=st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 60).map(float)), min_size=1, max_size=40
    ),
    in_order=st.booleans(),
    cuts=st.lists(st.integers(1, 40), max_size=5),
)
def test_any_stream_in_any_batches_gives_the_windows_of_their_definition(
    kind, events, in_order, cuts
):
    """Items in time order (windows close as the watermark passes them), or
    in any order with out_of_orderness covering it (they close at the end),
    cut into batches anywhere: the final result of every window is its count
    by definition, and nothing is late."""
    if in_order:
        events = sorted(events, key=lambda event: event[1])
    size, slide, gap = 10.0, 5.0, 4.0
    node = Window(
        kind=kind,
        size=None if kind == "session" else size,
        slide=slide if kind == "sliding" else None,
        gap=gap if kind == "session" else None,
        time="ts",
        out_of_orderness=0 if in_order else 100,
    )
    state_of(node, "user", None)
    items = [{"user": key, "ts": time} for key, time in events]
    bounds = sorted({0, *(cut for cut in cuts if cut < len(items)), len(items)})

    async def feed():
        emitted = []
        for start, end in itertools.pairwise(bounds):
            emitted += node.process_batch(items[start:end])
        return emitted + list(node.finish())

    emitted = trio.run(feed)
    final = {(o["key"], o["start"], o["end"]): o["count"] for o in emitted}
    assert final == brute_force(kind, size, slide, gap, events)
    assert all(o["timing"] == "on_time" for o in emitted)
    assert len(emitted) == len(final)  # each window once


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sliding=st.booleans(),
    times=st.lists(st.integers(0, 60).map(float), min_size=1, max_size=40),
    out_of_orderness=st.sampled_from([0, 3, 8]),
    allowed_lateness=st.sampled_from([0, 4, 12]),
    cuts=st.lists(st.integers(1, 40), max_size=5),
)
def test_out_of_order_streams_count_what_is_on_time_and_refuse_the_rest(
    sliding, times, out_of_orderness, allowed_lateness, cuts
):
    """Any order, any batching: an item is late for a window when the
    watermark before it (the largest time so far minus out_of_orderness)
    has passed the window's end plus allowed_lateness; it counts in its
    other windows, and is refused (FailedItems) only when late for all.
    The last result sent of each window is its count of items not late."""
    size, slide = 10.0, 5.0
    step = slide if sliding else size
    expected: dict[tuple, int] = {}
    refused = []
    largest = -math.inf
    for index, time in enumerate(times):
        watermark = largest - out_of_orderness
        start, placed = time - time % step, False
        while start + size > time:
            if start + size + allowed_lateness > watermark:
                window = ("a", start, start + size)
                expected[window] = expected.get(window, 0) + 1
                placed = True
            start -= step
        if not placed:
            refused.append(index)
        largest = max(largest, time)

    node = Window(
        kind="sliding" if sliding else "tumbling",
        size=size,
        slide=slide if sliding else None,
        time="ts",
        out_of_orderness=out_of_orderness,
        allowed_lateness=allowed_lateness,
    )
    items = [{"ts": time} for time in times]
    bounds = sorted({0, *(cut for cut in cuts if cut < len(items)), len(items)})

    async def feed():
        emitted, failed = [], []
        for start, end in itertools.pairwise(bounds):
            try:
                emitted += node.process_batch(items[start:end])
            except FailedItems as failure:
                emitted += failure.results
                failed += [start + index for index in failure.errors]
                assert all(isinstance(e, LateItem) for e in failure.errors.values())
        return emitted + list(node.finish()), failed

    emitted, failed = trio.run(feed)
    last = {("a" if o["key"] is None else o["key"], o["start"], o["end"]): o for o in emitted}
    assert {window: out["count"] for window, out in last.items()} == expected
    assert failed == refused
    first_sent = {}
    for out in emitted:
        first_sent.setdefault((out["start"], out["end"]), out["timing"])
    assert set(first_sent.values()) == {"on_time"}
