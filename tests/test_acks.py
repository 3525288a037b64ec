import collections

import pytest
import trio
import trio.testing

from nanostream import (
    DeadLetter,
    NanoStreamGraph,
    NanoStreamProcessor,
    NodeError,
    WithAck,
    run_graph,
)


class AckSource(NanoStreamProcessor):
    """Yields WithAck items; each ack appends ("ack", item) to ``events``."""

    def __init__(self, items, events):
        self.items = items
        self.events = events

    def _with_ack(self, item):
        return WithAck(item, lambda: self.events.append(("ack", item)))


class SyncAckSource(AckSource):
    def generate(self):
        for item in self.items:
            yield self._with_ack(item)


class AsyncAckSource(AckSource):
    async def generate(self):
        for item in self.items:
            await trio.sleep(0)
            yield self._with_ack(item)


class Sink(NanoStreamProcessor):
    def __init__(self, events, tag="sink", key=lambda item: item):
        self.events = events
        self.tag = tag
        self.key = key

    async def process_item(self, message):
        await trio.sleep(0)
        self.events.append((self.tag, self.key(message)))


class Map(NanoStreamProcessor):
    def __init__(self, function):
        self.function = function

    def process_item(self, message):
        return self.function(message)


class Spread(NanoStreamProcessor):
    async def process_item(self, message):
        for index in range(3):
            await trio.sleep(0)
            yield (message, index)


def check_acks(events, items, handled):
    """Each item acked once, after every event in ``handled[item]``."""
    acks = [item for kind, item in events if kind == "ack"]
    assert collections.Counter(acks) == collections.Counter(items)
    for item in items:
        ack_at = events.index(("ack", item))
        for event in handled[item]:
            assert events.index(event) < ack_at, (event, item)


SOURCES = [SyncAckSource, AsyncAckSource]


@pytest.mark.parametrize("source_class", SOURCES)
async def test_ack_after_sink_handled_item(source_class):
    events = []
    items = list(range(50))
    graph = NanoStreamGraph()
    graph.add("src", source_class(items, events), max_batch=4)
    graph.add("inc", Map(lambda x: x + 1000), ["src"])
    graph.add("sink", Sink(events), ["inc"], max_batch=3)
    run = await run_graph(graph)
    check_acks(events, items, {i: [("sink", i + 1000)] for i in items})
    assert run.stats["src"].acknowledged == 50


@pytest.mark.parametrize("source_class", SOURCES)
async def test_ack_with_fan_out_waits_for_both_sinks(source_class):
    events = []
    items = list(range(30))
    graph = NanoStreamGraph()
    graph.add("src", source_class(items, events), max_batch=5)
    graph.add("left", Sink(events, "left"), ["src"])
    graph.add("slow", Map(lambda x: x), ["src"], max_batch=2, buffer_size=1)
    graph.add("right", Sink(events, "right"), ["slow"])
    await run_graph(graph)
    check_acks(events, items, {i: [("left", i), ("right", i)] for i in items})


@pytest.mark.parametrize("source_class", SOURCES)
async def test_ack_fan_out_then_fan_in(source_class):
    events = []
    items = list(range(20))
    graph = NanoStreamGraph()
    graph.add("src", source_class(items, events), max_batch=3)
    graph.add("a", Map(lambda x: ("a", x)), ["src"])
    graph.add("b", Map(lambda x: ("b", x)), ["src"])
    graph.add("sink", Sink(events), ["a", "b"])
    await run_graph(graph)
    check_acks(events, items, {i: [("sink", ("a", i)), ("sink", ("b", i))] for i in items})


@pytest.mark.parametrize("source_class", SOURCES)
async def test_filtered_items_are_acked(source_class):
    events = []
    items = list(range(20))
    graph = NanoStreamGraph()
    graph.add("src", source_class(items, events), max_batch=4)
    graph.add("odd", Map(lambda x: x if x % 2 else None), ["src"])
    graph.add("sink", Sink(events), ["odd"])
    await run_graph(graph)
    check_acks(events, items, {i: [("sink", i)] if i % 2 else [] for i in items})


@pytest.mark.parametrize("source_class", SOURCES)
async def test_ack_after_every_generated_item(source_class):
    events = []
    items = list(range(10))
    graph = NanoStreamGraph()
    graph.add("src", source_class(items, events), max_batch=2)
    graph.add("spread", Spread(), ["src"])
    graph.add("sink", Sink(events), ["spread"], max_batch=1)
    await run_graph(graph)
    check_acks(events, items, {i: [("sink", (i, k)) for k in range(3)] for i in items})


class FailOn(NanoStreamProcessor):
    def __init__(self, bad):
        self.bad = bad

    def process_item(self, message):
        if message in self.bad:
            raise ValueError(f"bad {message}")
        return message


@pytest.mark.parametrize("source_class", SOURCES)
async def test_dead_lettered_items_acked_after_dead_letter_node(source_class):
    events = []
    items = list(range(12))
    graph = NanoStreamGraph()
    graph.add("src", source_class(items, events), max_batch=4)
    graph.add("proc", FailOn({3, 7}), ["src"], on_error="skip", dead_letter="dlq")
    graph.add("sink", Sink(events), ["proc"])
    graph.add("dlq", Sink(events, "dlq", key=lambda letter: letter.item))
    await run_graph(graph)
    handled = {i: [("sink", i)] for i in items}
    handled[3] = [("dlq", 3)]
    handled[7] = [("dlq", 7)]
    check_acks(events, items, handled)


async def test_dead_letter_items_are_dead_letters():
    events = []
    seen = []
    graph = NanoStreamGraph()
    graph.add("src", SyncAckSource([1, 2], events))
    graph.add("proc", FailOn({2}), ["src"], on_error="skip", dead_letter="dlq")
    graph.add("dlq", Map(seen.append))
    await run_graph(graph)
    assert [type(letter) for letter in seen] == [DeadLetter]
    assert sorted(item for kind, item in events if kind == "ack") == [1, 2]


@pytest.mark.parametrize("source_class", SOURCES)
async def test_never_acked_when_graph_fails(source_class):
    events = []
    items = list(range(10))
    graph = NanoStreamGraph()
    graph.add("src", source_class(items, events), max_batch=2)
    graph.add("proc", FailOn({5}), ["src"])
    graph.add("sink", Sink(events), ["proc"])
    with pytest.raises(NodeError):
        await run_graph(graph)
    acks = [item for kind, item in events if kind == "ack"]
    assert 5 not in acks
    assert len(acks) == len(set(acks))
    for item in acks:
        assert events.index(("sink", item)) < events.index(("ack", item))


async def test_mixed_acked_and_plain_items():
    events = []

    class Mixed(NanoStreamProcessor):
        def generate(self):
            yield WithAck("a", lambda: events.append(("ack", "a")))
            yield "plain"
            yield WithAck(None, lambda: events.append(("ack", None)))
            yield WithAck("b", lambda: events.append(("ack", "b")))

    graph = NanoStreamGraph()
    # None is never an item: skipped, counted, and its input acknowledged.
    graph.add("src", Mixed(), on_error="skip")
    graph.add("sink", Sink(events), ["src"])
    run = await run_graph(graph)
    assert [item for kind, item in events if kind == "sink"] == ["a", "plain", "b"]
    assert sorted(map(str, (item for kind, item in events if kind == "ack"))) == ["None", "a", "b"]
    assert run.stats["src"].acknowledged == 3
    assert run.stats["src"].skipped == 1


async def test_failing_ack_is_a_node_error_naming_the_source():
    def broken_ack():
        raise RuntimeError("broker gone")

    class Source(NanoStreamProcessor):
        def generate(self):
            yield WithAck(1, broken_ack)

    graph = NanoStreamGraph()
    graph.add("src", Source())
    graph.add("sink", Sink([]), ["src"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "src"
    assert excinfo.value.during == "acknowledgement"
    assert "RuntimeError: broker gone" in str(excinfo.value)


async def test_ack_waits_for_every_chunk_of_a_generator():
    """Output sent on in chunks keeps the item unacknowledged until the
    last chunk is handled."""
    events = []

    class Explode(NanoStreamProcessor):
        async def process_item(self, message):
            for index in range(1000):
                yield index

    class CountingSink(NanoStreamProcessor):
        def process_batch(self, messages):
            events.append(("handled", len(messages)))

    graph = NanoStreamGraph()
    graph.add("src", AsyncAckSource(["x"], events))
    graph.add("explode", Explode(), ["src"], max_batch=64)
    graph.add("sink", CountingSink(), ["explode"], max_batch=64)
    await run_graph(graph)
    assert events[-1] == ("ack", "x")
    assert [kind for kind, _ in events].count("ack") == 1
    assert sum(count for kind, count in events if kind == "handled") == 1000
    assert max(count for kind, count in events if kind == "handled") <= 64


async def test_ack_waits_for_every_part_of_a_split_batch():
    events = []

    class Source(NanoStreamProcessor):
        def generate_batches(self):
            yield [
                WithAck(index, lambda index=index: events.append(("ack", index)))
                for index in range(10)
            ]

    class Sink(NanoStreamProcessor):
        def process_batch(self, messages):
            events.append(("handled", list(messages)))

    graph = NanoStreamGraph()
    graph.add("src", Source())
    graph.add("sink", Sink(), ["src"], max_batch=4)
    await run_graph(graph)
    handled = [items for kind, items in events if kind == "handled"]
    assert handled == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert events[3:] == [("ack", index) for index in range(10)]


class EndlessAckSource(AckSource):
    """Yields its items with acknowledgements, then waits to be stopped;
    its teardown records which items were acknowledged by then."""

    async def generate(self):
        for item in self.items:
            yield self._with_ack(item)
        await trio.sleep_forever()

    def teardown(self):
        self.events.append(("teardown", sorted(i for kind, i in self.events if kind == "ack")))


class Gate(NanoStreamProcessor):
    def __init__(self):
        self.open = trio.Event()

    async def process_item(self, message):
        await self.open.wait()
        return message


async def test_a_stopped_source_is_torn_down_after_what_was_in_flight_is_acknowledged():
    events = []
    graph = NanoStreamGraph()
    graph.add("src", EndlessAckSource([1, 2, 3], events))
    gate = graph.add("gate", Gate(), ["src"])
    graph.add("sink", Sink(events), ["gate"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await trio.testing.wait_all_tasks_blocked()
        assert run.stats["src"].emitted == 3
        run.stop()
        await trio.testing.wait_all_tasks_blocked()
        assert run.stats["src"].state == "finished"
        assert not any(kind == "teardown" for kind, _ in events)
        gate.open.set()
    assert events[-1] == ("teardown", [1, 2, 3])


async def test_a_cancelled_graph_tears_its_sources_down_at_once():
    events = []
    graph = NanoStreamGraph()
    graph.add("src", EndlessAckSource([1], events))
    graph.add("gate", Gate(), ["src"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await trio.testing.wait_all_tasks_blocked()
        run.cancel()
    assert events == [("teardown", [])]
