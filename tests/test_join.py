"""Join: an interval join of two parents by key, inner and left, in event time."""

import collections
import pickle
import signal
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from inbox_feeder import InboxFeeder, appended
from test_cli import start_nanostream_run, wait_while_running
from test_window import Acked

from nanostream import (
    FromParent,
    NanoStreamGraph,
    NanoStreamProcessor,
    SequenceEmitter,
    run_graph,
)
from nanostream._runtime._keys import KeyedProcessor, state_of
from nanostream.config import check_text, load_pipeline
from nanostream.nodes.join import Join
from nanostream.nodes.memory import ChannelSource
from nanostream.testing import Collector, collect


def keyed(join: Join, key: str = "id") -> KeyedProcessor:
    """``join`` as the runtime calls it with the runtime key ``key``."""
    return KeyedProcessor(join, state_of(join, key, None))


def feed(node: KeyedProcessor, steps) -> list:
    """Every result of ``steps``, ``(parent, item)`` pairs handled in order."""
    results = []
    for parent, item in steps:
        results += list(node.process_item(FromParent(parent, item)))
    return results


def order(id, at, **fields):
    return {"id": id, "at": at, **fields}


def test_items_of_one_key_within_the_bound_join_as_soon_as_the_second_arrives():
    join = Join(left="orders", right="payments", time="at", before=5, after=10)
    node = keyed(join)
    o1, o2 = order("a", 100), order("b", 100)
    # a: 94 is 6 s before (outside), 95 and 110 are on the bounds, 111 is past them.
    _, p95, p110, p111 = (order("a", t, paid=t) for t in (94, 95, 110, 111))
    pb = order("b", 105, paid="b")
    assert feed(node, [("orders", o1), ("orders", o2)]) == []
    assert feed(node, [("payments", p95)]) == [{"left": o1, "right": p95}]
    assert feed(node, [("payments", pb)]) == [{"left": o2, "right": pb}]
    assert feed(node, [("payments", p110), ("payments", p111)]) == [{"left": o1, "right": p110}]
    # A right item that arrives first waits for its left one.
    o3 = order("c", 200)
    p3 = order("c", 196)
    assert feed(node, [("payments", p3), ("orders", o3)]) == [{"left": o3, "right": p3}]
    assert join.late == 0


def test_out_of_order_items_within_out_of_orderness_still_join():
    join = Join(left="l", right="r", time="at", after=5, out_of_orderness=10)
    node = keyed(join)
    steps = [
        ("l", order("k", 100)),
        ("r", order("k", 120)),  # watermark min(100, 120) - 10 = 90
        ("l", order("k", 92)),  # behind the latest left, not behind the watermark
        ("r", order("k", 96)),
        ("r", order("k", 103)),
    ]
    results = feed(node, steps)
    assert [(r["left"]["at"], r["right"]["at"]) for r in results] == [(92, 96), (100, 103)]
    assert join.late == 0


def test_an_item_behind_the_watermark_is_dropped_and_counted(caplog):
    join = Join(left="l", right="r", time="at", after=5)
    node = keyed(join)
    feed(node, [("l", order("k", 100)), ("r", order("k", 150))])  # watermark 100
    caplog.set_level("DEBUG", "nanostream")
    assert feed(node, [("r", order("k", 99)), ("l", order("k", 99.5))]) == []
    assert join.late == 2
    assert "dropped a late right item (time 99" in caplog.text


def test_a_left_join_sends_an_unmatched_left_item_once_the_watermark_passes_its_bound():
    join = Join(left="l", right="r", time="at", after=10, how="left")
    node = keyed(join)
    matched, lonely = order("a", 100), order("b", 100)
    pa = order("a", 105)
    assert feed(node, [("l", matched), ("l", lonely), ("r", pa)]) == [
        {"left": matched, "right": pa}
    ]
    # The watermark (the least of both sides' latest times) is 100 now; 110
    # is the end of both left items' bounds, so 110 itself keeps them.
    assert feed(node, [("r", order("z", 110)), ("l", order("z", 110))]) == [
        {"left": order("z", 110), "right": order("z", 110)}
    ]
    assert feed(node, [("r", order("y", 111)), ("l", order("y", 200))]) == [
        {"left": lonely, "right": None}
    ]


def test_the_end_of_both_parents_sends_the_unmatched_left_items_and_empties_the_state():
    join = Join(left="l", right="r", time="at", before=1, after=10, how="left")
    node = keyed(join)
    steps = [("l", order("a", 100)), ("l", order("b", 100)), ("r", order("b", 101))]
    assert feed(node, steps) == [{"left": order("b", 100), "right": order("b", 101)}]
    assert len(join.state) == 2
    assert list(join.finish()) == [{"left": order("a", 100), "right": None}]
    assert len(join.state) == 0


def test_an_inner_join_forgets_what_can_no_longer_match():
    join = Join(left="l", right="r", time="at", before=2, after=3)
    node = keyed(join)
    feed(node, [("l", order(k, 10)) for k in "abc"])
    feed(node, [("r", order("x", 14)), ("l", order("x", 14))])  # watermark 14 > 10 + 3
    assert set(join.state) == {"x"}
    assert join.holding() == 2  # the two items of x, the latest ones
    assert list(join.finish()) == []
    assert join.holding() == 0


def test_items_kept_hold_their_acknowledgements_back_unless_the_state_is_saved():
    join = Join(left="l", right="r", time="at", after=3)
    node = keyed(join)
    feed(node, [("l", order("a", 10)), ("l", order("b", 11)), ("r", order("b", 11))])
    assert join.holding() == 3
    feed(node, [("r", order("b", 13.5))])  # watermark 11: the 10 of a is kept to 13
    assert join.holding() == 4
    feed(node, [("l", order("c", 15)), ("r", order("c", 15))])  # watermark 15: a and b go
    assert join.holding() == 2
    join.state.durable = True
    assert join.holding() == 0


def test_without_a_key_every_left_item_joins_every_right_item_within_the_bound():
    join = Join(left="l", right="r", time="at", after=1)
    results = feed(join, [("l", {"at": 1}), ("l", {"at": 2}), ("r", {"at": 2})])
    assert results == [
        {"left": {"at": 1}, "right": {"at": 2}},
        {"left": {"at": 2}, "right": {"at": 2}},
    ]


def test_event_time_as_iso_8601_text_or_from_a_function():
    join = Join(left="l", right="r", time="at", after=60)
    node = keyed(join)
    left = {"id": 1, "at": "2024-05-01T12:00:00Z"}
    right = {"id": 1, "at": "2024-05-01T12:00:59+00:00"}
    assert feed(node, [("l", left), ("r", right)]) == [{"left": left, "right": right}]
    join = Join(left="l", right="r", time="test_join:stamp_in_ms")
    assert feed(keyed(join), [("l", {"id": 1, "ms": 1500}), ("r", {"id": 1, "ms": 1500})])


def stamp_in_ms(item):
    return item["ms"] / 1000


def test_an_item_without_its_time_fails_naming_the_field():
    join = Join(left="l", right="r", time="at")
    with pytest.raises(KeyError, match="the item has no field 'at' \\(the join's time\\)"):
        feed(keyed(join), [("l", {"id": 1})])
    with pytest.raises(ValueError, match="time 'noon' is neither seconds since the epoch nor"):
        feed(keyed(join), [("l", {"id": 1, "at": "noon"})])
    with pytest.raises(ValueError, match="time nan is not a finite number of seconds"):
        feed(keyed(join), [("l", {"id": 1, "at": float("nan")})])
    with pytest.raises(TypeError, match="time: expected seconds since the epoch"):
        feed(keyed(join), [("l", {"id": 1, "at": [1]})])


def test_a_restart_from_saved_state_and_snapshot_gives_what_an_uninterrupted_run_gives():
    steps = [
        ("l", order("a", 100)),
        ("r", order("b", 101)),
        ("l", order("b", 102)),
        ("r", order("a", 104)),
        ("l", order("c", 105)),
        ("r", order("d", 140)),
        ("l", order("d", 141)),
        ("r", order("c", 109)),  # late by then: dropped both ways
        ("l", order("e", 150)),
        ("r", order("e", 150)),
    ]

    def fresh():
        return Join(left="l", right="r", time="at", before=2, after=5, how="left")

    whole = fresh()
    expected = feed(keyed(whole), steps) + list(whole.finish())

    first = fresh()
    before = feed(keyed(first), steps[:5])
    written, _ = first.state.changes()
    saved = pickle.dumps(([(k, v, at) for k, (v, at) in written.items()], first.snapshot()))

    second = fresh()
    node = keyed(second)
    entries, snapshot = pickle.loads(saved)
    second.state.load(iter(entries))
    second.restore(snapshot)
    after = feed(node, steps[5:]) + list(second.finish())
    assert before + after == expected
    assert {(r["left"]["id"], r["right"] and r["right"]["at"]) for r in expected} == {
        ("a", 104),
        ("b", 101),
        ("c", None),
        ("d", 140),
        ("e", 150),
    }
    assert second.late == whole.late == 1


# ---------------------------------------------------------------- in a pipeline


PIPELINE = """\
pipeline_name: orders_and_payments
node_sequence:
  - name: orders
    class: SequenceEmitter
    sequence:
      - {order: 1, at: 100, amount: 30}
      - {order: 2, at: 110, amount: 12}
      - {order: 3, at: 120, amount: 99}
  - name: payments
    class: SequenceEmitter
    sequence:
      - {order: 2, at: 111}
      - {order: 1, at: 130}
      - {order: 3, at: 125}
  - name: paid_orders
    class: Join
    parents: [orders, payments]
    key: order
    left: orders
    right: payments
    time: at
    after: 15s
    how: left
"""


async def test_a_pipeline_joins_its_two_sources_by_key_whatever_their_interleaving(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    assert check_text(PIPELINE) == []
    for _ in range(5):
        results = (await collect(load_pipeline(path)))["paid_orders"]
        pairs = collections.Counter(
            (r["left"]["order"], r["right"] and r["right"]["at"]) for r in results
        )
        # Order 1 was paid 30 s after it was placed: too late to join.
        assert pairs == {(1, None): 1, (2, 111): 1, (3, 125): 1}


@attrs.define
class Tagged(NanoStreamProcessor):
    """Sends on what it receives, to show how it arrives."""

    source: str = attrs.field(metadata={"parent": True})

    def process_item(self, message):
        return message


@pytest.mark.parametrize("chaining", ["chained", "unchained"], indirect=True)
async def test_a_node_naming_its_parent_receives_items_tagged_with_it(chaining):
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter([1, 2]))
    graph.add("double", _Double(), ["numbers"])
    graph.add("tagged", Tagged(source="double"), ["double"])
    results = (await collect(graph))["tagged"]
    assert results == [FromParent("double", 2), FromParent("double", 4)]


class _Double(NanoStreamProcessor):
    def process_item(self, message):
        return message * 2


async def test_a_keyed_node_naming_its_parents_reads_its_key_inside_the_tag():
    graph = NanoStreamGraph()
    graph.add("left", SequenceEmitter([{"id": 1, "at": 0}, {"id": 2, "at": 0}]))
    graph.add("right", SequenceEmitter([{"id": 2, "at": 0}]))
    graph.add("join", Join(left="left", right="right", time="at"), ["left", "right"], key="id")
    with trio.fail_after(10):
        results = (await collect(graph))["join"]
    assert results == [{"left": {"id": 2, "at": 0}, "right": {"id": 2, "at": 0}}]


def test_the_state_guide_shows_the_join_example_pipeline_as_it_is():
    root = Path(__file__).parent.parent
    guide = (root / "docs" / "state.md").read_text()
    example = (root / "examples" / "orders_join" / "pipeline.yaml").read_text()
    body = example.split("\n", 1)[1]  # without the schema comment line
    assert f"```yaml\n{body}```" in guide


async def test_a_source_item_is_acknowledged_once_the_join_has_forgotten_it(autojump_clock):
    acked = []
    send_left, receive_left = trio.open_memory_channel(0)
    send_right, receive_right = trio.open_memory_channel(0)
    sink = Collector()
    graph = NanoStreamGraph()
    graph.add("l", Acked(receive_left, acked))
    graph.add("r", Acked(receive_right, acked))
    graph.add("join", Join(left="l", right="r", time="at", after=5), ["l", "r"], key="id")
    graph.add("sink", sink, ["join"])

    async def send(channel, item):
        await channel.send(item)
        await trio.testing.wait_all_tasks_blocked()

    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        await send(send_left, order("a", 10))
        await send(send_right, order("a", 12))
        assert len(sink.items) == 1
        assert acked == []  # both kept: a right item at 15 would still join the left one
        await send(send_left, order("z", 20))
        await send(send_right, order("z", 20))  # the watermark is 20: both a's are forgotten
        assert acked == [order("a", 10), order("a", 12)]
        await send_left.aclose()
        await send_right.aclose()
    assert sorted(acked, key=str) == sorted(
        [order("a", 10), order("a", 12), order("z", 20), order("z", 20)], key=str
    )


async def test_with_an_idle_timeout_a_quiet_side_no_longer_holds_the_watermark(autojump_clock):
    send_left, receive_left = trio.open_memory_channel(0)
    send_right, receive_right = trio.open_memory_channel(0)
    sink = Collector()
    graph = NanoStreamGraph()
    graph.add("l", ChannelSource(receive_left))
    graph.add("r", ChannelSource(receive_right))
    join = Join(left="l", right="r", time="at", after=5, how="left", idle_timeout=60)
    graph.add("join", join, ["l", "r"], key="id")
    graph.add("sink", sink, ["join"])
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        await send_left.send(order("a", 10))
        await send_right.send(order("z", 12))
        for seconds in range(0, 100, 10):  # the left side goes on; the right is quiet
            await send_left.send(order("b", 100 + seconds))
            await trio.sleep(10)
            await trio.testing.wait_all_tasks_blocked()
            if seconds < 50:
                # The right side's 12 holds the watermark below a's bound, 15.
                assert sink.items == [], seconds
        # 60 s after its last item the right side was idle: the watermark
        # followed the left side, and every left item but the latest, 190,
        # came out unmatched.
        assert [item["left"]["at"] for item in sink.items] == [10, *range(100, 190, 10)]
        assert all(item["right"] is None for item in sink.items)
        await send_right.send(order("b", 200))  # the right side is back: too late for 190
        await trio.testing.wait_all_tasks_blocked()
        assert len(sink.items) == 10
        await send_left.aclose()
        await send_right.aclose()
    assert sink.items[-1] == {"left": order("b", 190), "right": None}
    assert len(sink.items) == 11


def test_an_item_that_came_from_no_parent_is_refused():
    join = Join(left="l", right="r", time="at")
    with pytest.raises(TypeError, match="a Join receives the items of its parents 'l' and 'r'"):
        list(join.process_item({"at": 1}))


def _join_graph(state_dir, receive_left, receive_right, sink):
    graph = NanoStreamGraph(state_dir=state_dir, checkpoint_interval=1)
    graph.add("l", ChannelSource(receive_left))
    graph.add("r", ChannelSource(receive_right))
    join = Join(left="l", right="r", time="at", after=5, how="left")
    graph.add("join", join, ["l", "r"], key="id")
    graph.add("sink", sink, ["join"])
    return graph, join


@pytest.mark.parametrize("end", ["crash", "stop"])
async def test_with_a_state_dir_the_items_kept_and_the_watermark_survive_a_restart(
    tmp_path, autojump_clock, end
):
    # The first run keeps a's left item and checkpoints it; then it is
    # cancelled, as a crash would end it, or stopped cleanly (which saves
    # the state, and does not finish the join's waiting items).
    send_left, receive_left = trio.open_memory_channel(0)
    send_right, receive_right = trio.open_memory_channel(0)
    sink = Collector()
    graph, join = _join_graph(tmp_path, receive_left, receive_right, sink)
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await send_left.send(order("a", 10))
        await send_right.send(order("z", 11))
        await send_left.send(order("z", 11))
        await trio.testing.wait_all_tasks_blocked()
        assert join.state.durable and join.holding() == 0
        if end == "crash":
            saved = run.checkpoints.saved
            while run.checkpoints.saved == saved:
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        else:
            run.stop()
    assert [r["left"]["id"] for r in sink.items] == ["z"]
    # The second run starts from that checkpoint: a's left item is still
    # there to join, and the watermark (11) still makes a right item at 9 late.
    send_left, receive_left = trio.open_memory_channel(0)
    send_right, receive_right = trio.open_memory_channel(0)
    sink = Collector()
    graph, join = _join_graph(tmp_path, receive_left, receive_right, sink)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        await send_right.send(order("a", 9))
        await send_right.send(order("a", 14))
        await send_left.aclose()
        await send_right.aclose()
    assert sink.items == [{"left": order("a", 10), "right": order("a", 14)}]
    assert join.late == 1


def test_a_join_cannot_take_dead_letters():
    graph = NanoStreamGraph()
    graph.add("l", SequenceEmitter([1]))
    graph.add("r", SequenceEmitter([1]))
    graph.add("join", Join(left="l", right="r", time="at"), ["l", "r"])
    graph.add("other", _Double(), ["l"], on_error="skip", dead_letter="join")
    [problem] = graph.problems()
    assert (problem.node, problem.key) == ("other", "dead_letter")
    assert problem.message == (
        "dead_letter: 'join' is a Join, which receives items from the parents it names only"
    )


KILLED_PIPELINE = """\
pipeline_name: paid_orders
state_dir: state
checkpoint_interval: 200ms
node_sequence:
  - name: order_files
    class: WatchdogDirectoryListener
    watchdog_path: orders
    existing: true
    when_done: delete
  - name: order_lines
    class: FileReader
    parents: [order_files]
    mode: jsonl
  - name: orders
    class: Map
    parents: [order_lines]
    function: records:record
  - name: payment_files
    class: WatchdogDirectoryListener
    watchdog_path: payments
    existing: true
    when_done: delete
  - name: payment_lines
    class: FileReader
    parents: [payment_files]
    mode: jsonl
  - name: payments
    class: Map
    parents: [payment_lines]
    function: records:record
  - name: paid
    class: Join
    parents: [orders, payments]
    key: id
    left: orders
    right: payments
    time: at
    after: 5s
    how: left
    out_of_orderness: 30s
  - name: write
    class: FileWriter
    parents: [paid]
    path: out.jsonl
"""


def test_killed_and_restarted_with_a_state_dir_a_join_gives_what_an_uninterrupted_run_gives(
    tmp_path,
):
    """Orders and payments dropped into two watched folders, a left join
    by order id, kill -9 part way and a restart: the results are those of
    a run never interrupted (some written twice: sinks are at-least-once)."""
    (tmp_path / "pipeline.yaml").write_text(KILLED_PIPELINE)
    (tmp_path / "records.py").write_text("def record(item):\n    return item.data\n")
    count = 200
    orders, payments = {}, {}
    for file in range(count // 5):
        numbers = range(file * 5, file * 5 + 5)
        orders[f"{file:03}.jsonl"] = [{"id": f"o{n}", "at": n} for n in numbers]
        # Every fourth order is never paid; a payment 6 to 8 s late misses the bound.
        payments[f"{file:03}.jsonl"] = [
            {"id": f"o{n}", "at": n + n % 9, "payment": f"p{n}"} for n in numbers if n % 4 != 3
        ]
    paid = {n: f"p{n}" for n in range(count) if n % 4 != 3 and n % 9 <= 5}
    last_payment = max(p["at"] for records in payments.values() for p in records)
    watermark = min(count - 1, last_payment) - 30
    expected = {(f"o{n}", paid.get(n)) for n in range(count) if n in paid or n + 5 < watermark}
    feeders = [
        InboxFeeder(tmp_path / "orders", orders),
        InboxFeeder(tmp_path / "payments", payments),
    ]
    out = tmp_path / "out.jsonl"

    def fed_until(done):
        for feeder in feeders:
            feeder.keep_fed()
        return all(len(feeder.done()) >= done for feeder in feeders)

    def results():
        return [
            (record["left"]["id"], record["right"] and record["right"]["payment"])
            for record in appended(out)
        ]

    process = start_nanostream_run(tmp_path)
    try:
        wait_while_running(process, lambda: fed_until(10), "files done")
    finally:
        process.kill()  # SIGKILL
        process.communicate()
    before_kill = set(results())
    assert all(len(feeder.done()) < count // 5 for feeder in feeders)
    process = start_nanostream_run(tmp_path)
    try:
        wait_while_running(process, lambda: fed_until(count // 5), "every file done", 60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    counts = collections.Counter(results())
    assert set(counts) == expected
    assert {result for result, times in counts.items() if times > 1} <= before_kill
    assert max(counts.values()) <= 2
