"""Keyed state and checkpoints, in one process: durations, KeyedState,
keys, the store, and what the sources save and restore."""

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import attrs
import pytest
import trio

import nanostream as ns
from nanostream import KeyedState, NoKeyError, WithAck, duration
from nanostream._runtime._checkpoints import CheckpointError
from nanostream._runtime._store import StateStore
from nanostream.nodes import SequenceEmitter
from nanostream.nodes.directory import WatchdogDirectoryListener

# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(3, 3.0), (0.5, 0.5), ("250ms", 0.25), ("5s", 5.0), ("1m30s", 90.0), ("2h", 7200.0),
     ("1d", 86400.0), ("1.5m", 90.0)],
)  # fmt: skip
def test_durations(text, seconds) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("bad", ["5x", "s", "", "1s1m", "1m1m", "5 minutes", -1])
def test_what_is_not_a_duration(bad) -> None:
    with pytest.raises(ValueError, match="duration"):
        duration(bad)


@pytest.mark.parametrize("bad", [True, [5], None])
def test_a_duration_is_a_number_or_a_string(bad) -> None:
    with pytest.raises(TypeError, match="expected a duration"):
        duration(bad)


# ---------------------------------------------------------------- KeyedState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_state_is_a_mapping_that_remembers_what_changed() -> None:
    state = KeyedState()
    state["a"] = 1
    state["b"] = 2
    del state["a"]
    written, deleted = state.changes()
    assert {key: value for key, (value, _) in written.items()} == {"b": 2}
    assert deleted == ["a"]
    state.mark_saved()
    assert state.changes() == ({}, [])
    assert dict(state) == {"b": 2} and len(state) == 1 and "b" in state


def test_a_key_past_its_time_to_live_reads_as_absent_and_is_dropped() -> None:
    clock = Clock()
    state = KeyedState(ttl=60, clock=clock)
    state["old"] = 1
    clock.now += 30
    state["new"] = 2
    clock.now += 31
    assert "old" not in state and state.get("old") is None
    assert state["new"] == 2 and list(state) == ["new"] and len(state) == 1
    assert state.expire() == 1
    assert state.changes()[1] == ["old"]
    state.load(iter([("back", 3, clock.now - 61), ("fresh", 4, clock.now)]))
    assert dict(state) == {"fresh": 4}


def test_the_current_key_is_only_known_in_process_item() -> None:
    state = KeyedState(key_function=lambda item: item["user"])
    with pytest.raises(NoKeyError, match="only set in process_item"):
        _ = state.key
    token = state.enter({"user": "ann"})
    assert state.key == "ann"
    state.leave(token)
    assert state.key_of({"user": "bob"}) == "bob"
    with pytest.raises(NoKeyError):
        KeyedState().key_of({})


# ---------------------------------------------------------------- keys in a graph


@attrs.define
class RunningCount(ns.NanoStreamProcessor):
    def process_item(self, item):
        key = self.state.key
        n = self.state.get(key, 0) + 1
        self.state[key] = n
        return (key, n)


@attrs.define
class AsyncRunningCount(ns.NanoStreamProcessor):
    async def process_item(self, item):
        await trio.sleep(0)
        key = self.state.key
        self.state[key] = n = self.state.get(key, 0) + 1
        return (key, n)


@attrs.define
class RunningCountInLists(RunningCount):
    def process_item(self, item):
        yield from next(self.process_item_batches(item))

    def process_item_batches(self, item):
        yield [RunningCount.process_item(self, item)]


def user_of(item):
    return item["user"]


async def collect(graph: ns.NanoStreamGraph, source: str) -> list:
    send, receive = trio.open_memory_channel(float("inf"))
    graph.add("sink", ns.ChannelSink(send), [source])
    await ns.run_graph(graph)
    return [item async for item in receive]


@pytest.mark.parametrize("node", [RunningCount, AsyncRunningCount, RunningCountInLists])
@pytest.mark.parametrize("key", ["user", "test_state:user_of"])
async def test_a_keyed_node_keeps_state_per_key(node, key) -> None:
    graph = ns.NanoStreamGraph()
    graph.add("src", SequenceEmitter([{"user": u} for u in "abacba"]))
    graph.add("count", node(), ["src"], key=key)
    assert await collect(graph, "count") == [
        ("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)
    ]  # fmt: skip


async def test_an_item_without_its_key_goes_to_the_error_policy() -> None:
    graph = ns.NanoStreamGraph()
    graph.add("src", SequenceEmitter([{"user": "a"}, {"name": "b"}, {"user": "a"}]))
    graph.add("count", RunningCount(), ["src"], key="user", on_error="skip")
    assert await collect(graph, "count") == [("a", 1), ("a", 2)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "process"}, "use executor 'loop' or 'thread'"),
        ({"key": "test_state:nobody"}, "has no function 'nobody'"),
    ],
)
def test_where_a_key_cannot_work(options, message) -> None:
    graph = ns.NanoStreamGraph()
    graph.add("src", SequenceEmitter([]))
    graph.add("count", RunningCount(), ["src"], **{"key": "user", **options})
    with pytest.raises(ns.GraphError, match=message):
        graph.validate()


async def test_several_workers_share_a_keyed_node_by_key() -> None:
    """Each key goes to one worker, in order; different keys run at once."""
    both_keys_at_once = threading.Barrier(2, timeout=10)
    running: set = set()
    overlaps = []

    @attrs.define
    class SlowCount(ns.NanoStreamProcessor):
        def process_item(self, item):
            key = self.state.key
            if key in running:
                overlaps.append(key)
            running.add(key)
            if self.state.get(key) is None:
                both_keys_at_once.wait()  # keys 0 and 1: workers 0 and 1, at once
            time.sleep(0.001)
            self.state[key] = n = self.state.get(key, 0) + 1
            running.discard(key)
            return (key, n)

    graph = ns.NanoStreamGraph()
    graph.add("src", SequenceEmitter([{"k": k} for k in [0, 1, 2, 3] * 25]))
    graph.add("count", SlowCount(), ["src"], key="k", executor="thread", workers=2)
    results = await collect(graph, "count")
    assert overlaps == []
    for key in range(4):
        assert [n for k, n in results if k == key] == list(range(1, 26))


# ---------------------------------------------------------------- checkpoints


@attrs.define
class Replayable(ns.NanoStreamProcessor):
    """A source that can start again from a position: a list and an index."""

    items: list
    position: int = 0
    pause_at: int | None = None

    def snapshot(self):
        return self.position

    def restore(self, position):
        self.position = position

    async def generate(self):
        while self.position < len(self.items):
            if self.position == self.pause_at:
                await trio.sleep_forever()
            item = self.items[self.position]
            self.position += 1
            yield item


def counting_graph(state_dir: Path, source: ns.NanoStreamProcessor) -> ns.NanoStreamGraph:
    graph = ns.NanoStreamGraph("counts", state_dir=state_dir, checkpoint_interval=0.01)
    graph.add("src", source)
    graph.add("count", RunningCount(), ["src"], key="user")
    return graph


def stored(state_dir: Path) -> dict:
    with sqlite3.connect(state_dir / "state.sqlite3") as db:
        import pickle

        rows = db.execute("SELECT node, key, value FROM state").fetchall()
    return {(node, pickle.loads(key)): pickle.loads(value) for node, key, value in rows}


async def test_a_stopped_pipeline_goes_on_from_its_checkpoint(tmp_path: Path) -> None:
    items = [{"user": u} for u in "abab" * 5]
    send, receive = trio.open_memory_channel(float("inf"))
    graph = counting_graph(tmp_path, Replayable(items, pause_at=7))
    graph.add("sink", ns.ChannelSink(send), ["count"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        for _ in range(7):
            await receive.receive()
        while run.checkpoints.saved < 2:
            await trio.sleep(0.01)
        run.stop()
    assert stored(tmp_path) == {("count", "a"): 4, ("count", "b"): 3}

    graph = counting_graph(tmp_path, Replayable(items))
    results = await collect(graph, "count")
    assert results[0] == ("b", 4)  # item 8 of 20: nothing repeated, nothing missed
    assert results[-2:] == [("a", 10), ("b", 10)]
    assert stored(tmp_path) == {("count", "a"): 10, ("count", "b"): 10}


async def test_acknowledgements_run_once_the_state_they_cover_is_saved(tmp_path: Path) -> None:
    seen_at_ack = []

    def ack_for(n: int):
        def ack() -> None:
            seen_at_ack.append((n, stored(tmp_path).get(("count", "a"))))

        return ack

    @attrs.define
    class Acked(ns.NanoStreamProcessor):
        async def generate(self):
            for n in range(1, 6):
                yield WithAck({"user": "a"}, ack_for(n))
                await trio.sleep(0.02)

    await collect(counting_graph(tmp_path, Acked()), "count")
    assert [n for n, _ in seen_at_ack] == [1, 2, 3, 4, 5]
    # When item n is acknowledged, the saved count already includes it.
    assert all(saved is not None and saved >= n for n, saved in seen_at_ack), seen_at_ack


async def test_a_checkpoint_that_cannot_drain_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    @attrs.define
    class Hoarder(ns.NanoStreamProcessor):
        """Holds every item back until the end."""

        held: list = attrs.field(factory=list)

        def process_item(self, item):
            self.held.append(item)

        def holding(self):
            return len(self.held)

        def finish(self):
            yield from self.held

    graph = ns.NanoStreamGraph("hoard", state_dir=tmp_path, checkpoint_interval=0.01)
    graph.add("src", Replayable([{"user": "a"}] * 2, pause_at=1))
    graph.add("hoard", Hoarder(), ["src"])
    graph.add("sink", ns.BlackHole(), ["hoard"])
    with caplog.at_level(logging.WARNING, logger="nanostream"), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(ns.run_graph, graph)
            run.checkpoints.timeout = 0.05
            while "checkpoint skipped" not in caplog.text:
                await trio.sleep(0.01)
            saved = run.checkpoints.saved  # one may come before the item does
            while caplog.text.count("checkpoint skipped") < 2:
                await trio.sleep(0.01)
            assert run.checkpoints.saved == saved  # none while the item is held
            run.stop()
    assert "checkpoint skipped: 1 batches still in flight after 0.05s" in caplog.text
    assert run.checkpoints.saved >= 1  # once everything has drained


@attrs.define
class Remembering(ns.NanoStreamProcessor):
    """Keeps a running total and sends it at the end of its input."""

    def process_item(self, item):
        self.state["total"] = self.state.get("total", 0) + 1

    def finish(self):
        return self.state.get("total")


async def test_a_stopped_node_with_saved_state_is_not_finished_but_resumed(
    tmp_path: Path,
) -> None:
    items = [{"user": "a"}] * 6
    send, receive = trio.open_memory_channel(float("inf"))
    graph = ns.NanoStreamGraph("totals", state_dir=tmp_path, checkpoint_interval=0.01)
    graph.add("src", Replayable(items, pause_at=4))
    graph.add("total", Remembering(), ["src"])
    graph.add("sink", ns.ChannelSink(send), ["total"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        while stored(tmp_path).get(("total", "total")) != 4:
            await trio.sleep(0.01)
        run.stop()
    send.close()
    assert [item async for item in receive] == []  # not finished: it goes on next time

    graph = ns.NanoStreamGraph("totals", state_dir=tmp_path, checkpoint_interval=0.01)
    graph.add("src", Replayable(items))
    graph.add("total", Remembering(), ["src"])
    assert await collect(graph, "total") == [6]  # the end of its input finishes it


async def test_sources_that_cannot_replay_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph = ns.NanoStreamGraph("plain", state_dir=tmp_path)
    graph.add("src", SequenceEmitter([{"user": "a"}]))
    graph.add("count", RunningCount(), ["src"], key="user")
    with caplog.at_level(logging.WARNING, logger="nanostream"):
        await collect(graph, "count")
    assert "source 'src' (SequenceEmitter) saves no position at checkpoints" in caplog.text


# ---------------------------------------------------------------- sources' positions


@pytest.mark.parametrize("when_done", ["keep", "delete"])
async def test_a_folder_restored_from_a_checkpoint_skips_the_files_it_saved(
    tmp_path: Path, when_done: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("seen", "new"):
        (inbox / name).write_text(name)
    first = WatchdogDirectoryListener(watchdog_path=str(inbox), existing=True)
    graph = ns.NanoStreamGraph("first")
    graph.add("watch", first)
    send, receive = trio.open_memory_channel(float("inf"))
    graph.add("sink", ns.ChannelSink(send), ["watch"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        assert len({await receive.receive(), await receive.receive()}) == 2
        snapshot = first.snapshot()
        run.stop()
    assert set(snapshot) == {str(inbox / "seen"), str(inbox / "new")}
    del snapshot[str(inbox / "new")]  # as if saved between the two

    again = WatchdogDirectoryListener(watchdog_path=str(inbox), existing=True, when_done=when_done)
    again.restore(snapshot)
    graph = ns.NanoStreamGraph("again")
    graph.add("watch", again)
    send, receive = trio.open_memory_channel(float("inf"))
    graph.add("sink", ns.ChannelSink(send), ["watch"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        assert await receive.receive() == str(inbox / "new")
        with trio.move_on_after(0.3):
            extra = await receive.receive()
            pytest.fail(f"emitted again: {extra}")
        run.stop()
    left = {path.name for path in inbox.iterdir()}
    assert left == ({"seen", "new"} if when_done == "keep" else set())


def test_a_kafka_consumer_restored_from_a_checkpoint_starts_at_its_offsets(broker: str) -> None:
    from kafka_testbed import create_topic, produce_json, unique_name

    from nanostream.nodes.kafka import KafkaConsumer

    topic = create_topic(broker, 2)
    produce_json(broker, topic, list(range(20)), partitions=2)  # evens on 0, odds on 1
    group = unique_name("restore")

    async def consume(restored, count):
        consumer = KafkaConsumer(
            topics=[topic],
            bootstrap_servers=broker,
            group_id=group,
            auto_offset_reset="earliest",
            consumer_config={"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000},
        )
        if restored is not None:
            consumer.restore(restored)
        graph = ns.NanoStreamGraph("restore")
        graph.add("consume", consumer)
        send, receive = trio.open_memory_channel(float("inf"))
        graph.add("sink", ns.ChannelSink(send), ["consume"])
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                run = await nursery.start(ns.run_graph, graph)
                values = [await receive.receive() for _ in range(count)]
                with trio.move_on_after(0.5):
                    values.append(await receive.receive())
                snapshot = consumer.snapshot()
                run.stop()
        return sorted(values), snapshot

    values, snapshot = trio.run(consume, None, 20)
    assert values == list(range(20))
    assert snapshot == {(topic, 0): 10, (topic, 1): 10}
    # The group has committed everything; the checkpoint says otherwise, and wins.
    values, _ = trio.run(consume, {(topic, 0): 7, (topic, 1): 9}, 4)
    assert values == [14, 16, 18, 19]


# ---------------------------------------------------------------- the store, guarded


@attrs.define
class Weighted(ns.NanoStreamProcessor):
    weight: int = 1

    def process_item(self, item):
        key = self.state.key
        self.state[key] = self.state.get(key, 0) + self.weight
        return (key, self.state[key])


def weighted_graph(state_dir: Path, weight: int, name: str = "sum") -> ns.NanoStreamGraph:
    graph = ns.NanoStreamGraph("weights", state_dir=state_dir)
    graph.add("src", SequenceEmitter([{"user": "a"}] * 3))  # the same three each run
    graph.add(name, Weighted(weight), ["src"], key="user")
    return graph


async def test_a_node_changed_since_its_state_was_saved_is_refused(tmp_path: Path) -> None:
    assert await collect(weighted_graph(tmp_path, 1), "sum") == [("a", 1), ("a", 2), ("a", 3)]
    with pytest.raises(CheckpointError) as raised:
        await collect(weighted_graph(tmp_path, 5), "sum")
    assert "node 'sum' has changed since its state was saved (weight: 1 -> 5)" in str(raised.value)
    assert f"delete {tmp_path / 'state.sqlite3'} to start over" in str(raised.value)
    # The same node again goes on.
    assert await collect(weighted_graph(tmp_path, 1), "sum") == [("a", 4), ("a", 5), ("a", 6)]


async def test_state_that_no_node_takes_up_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await collect(weighted_graph(tmp_path, 1), "sum")
    with caplog.at_level(logging.WARNING, logger="nanostream"):
        assert await collect(weighted_graph(tmp_path, 1, "total"), "total") == [
            ("a", 1), ("a", 2), ("a", 3)
        ]  # fmt: skip
    assert "holds state of node 'sum', which this pipeline does not have" in caplog.text


async def test_one_process_owns_a_state_dir(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    try:
        with pytest.raises(CheckpointError, match=f"in use by process {os.getpid()}"):
            await collect(weighted_graph(tmp_path, 1), "sum")
    finally:
        store.close()
    await collect(weighted_graph(tmp_path, 1), "sum")  # free again


async def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(CheckpointError, match=r"'.*state' is a file, not a folder"):
        await collect(weighted_graph(tmp_path / "state", 1), "sum")
