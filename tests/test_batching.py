"""Nodes that hold items back: the Batcher, and the runtime hooks it uses
(``holding``, ``deadline``/``on_deadline``) to keep acknowledgements with
held items and to send on after a time."""

import pytest
import trio
import trio.testing

from nanostream import ChannelSource, NanoStreamGraph, NanoStreamProcessor, WithAck, run_graph
from nanostream.config import ConfigErrors, load_text
from nanostream.nodes.batching import Batcher
from nanostream.testing import Collector, process_items


async def test_full_lists_then_the_rest_at_the_end():
    assert await process_items(Batcher(count=3), list(range(8))) == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7],
    ]


async def test_large_batches_are_cut_into_lists_of_count():
    send, receive = trio.open_memory_channel(100)
    graph = NanoStreamGraph()
    graph.add("src", ChannelSource(receive))
    graph.add("batch", Batcher(count=4), ["src"])
    sink = graph.add("sink", Collector(), ["batch"])
    for item in range(10):
        send.send_nowait(item)  # all waiting: they travel as one batch of 10
    send.close()
    await run_graph(graph)
    assert sink.items == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("bad", [{"count": 0}, {"seconds": 0}, {"seconds": -1.5}])
def test_parameters_must_be_positive(bad):
    ((key, value),) = bad.items()
    text = f"""\
node_sequence:
  - name: src
    class: SequenceEmitter
  - name: batch
    class: Batcher
    parents: [src]
    {key}: {value}
"""
    with pytest.raises(ConfigErrors) as excinfo:
        load_text(text, "pipeline.yaml")
    message = excinfo.value.errors[0].format()
    assert f"{key} must be more than 0" in message
    assert message.startswith("pipeline.yaml:7:")


class Acked(NanoStreamProcessor):
    """A source fed through a channel whose items carry acknowledgements
    recording, at the moment of each ack, what the sink had received."""

    def __init__(self, receive, acked, sink):
        self.receive = receive
        self.acked = acked
        self.sink = sink

    async def generate(self):
        async for item in self.receive:
            yield WithAck(item, lambda item=item: self.acked.append((item, _flat(self.sink))))


def _flat(collector):
    return [
        item
        for batch in collector.items
        for item in (batch if isinstance(batch, list) else [batch])
    ]


def acked_pipeline(processor, buffer=0):
    """src (acknowledged items fed through ``send``) -> processor -> sink."""
    send, receive = trio.open_memory_channel(buffer)
    acked = []
    sink = Collector()
    graph = NanoStreamGraph()
    graph.add("src", Acked(receive, acked, sink))
    graph.add("node", processor, ["src"])
    graph.add("sink", sink, ["node"])
    return graph, send, acked, sink


async def test_acknowledgements_wait_for_the_list_holding_the_item(autojump_clock):
    """An item is acknowledged only after the list it is in reached the sink."""
    graph, send, acked, sink = acked_pipeline(Batcher(count=3))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        for item in "abcd":
            await send.send(item)
            await trio.testing.wait_all_tasks_blocked()
        # a, b, c went on as one list; d waits in the batcher, unacknowledged.
        assert sink.items == [["a", "b", "c"]]
        assert sorted(item for item, _ in acked) == ["a", "b", "c"]
        assert all(seen == ["a", "b", "c"] for _, seen in acked)
        for item in "ef":
            await send.send(item)
            await trio.testing.wait_all_tasks_blocked()
        assert [item for item, _ in acked] == ["a", "b", "c", "d", "e", "f"]
        await send.send("g")
        await send.aclose()
    assert sink.items == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert [item for item, _ in acked] == list("abcdefg")
    for item, seen in acked:
        assert item in seen


async def test_a_partial_list_goes_after_seconds(autojump_clock):
    graph, send, acked, sink = acked_pipeline(Batcher(count=100, seconds=2.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        start = trio.current_time()
        await send.send("a")
        await trio.sleep(1.5)
        await send.send("b")
        await trio.testing.wait_all_tasks_blocked()
        assert sink.items == [] and acked == []
        await trio.sleep(0.5)  # the oldest, "a", has now waited 2 s
        await trio.testing.wait_all_tasks_blocked()
        assert sink.items == [["a", "b"]]
        assert [item for item, _ in acked] == ["a", "b"]
        sent_at = trio.current_time()
        assert sent_at - start == pytest.approx(2.0)
        # Nothing waits, so no deadline runs until the next item.
        await trio.sleep(10)
        await send.send("c")
        await trio.sleep(2.0)
        await trio.testing.wait_all_tasks_blocked()
        assert sink.items == [["a", "b"], ["c"]]
        await send.aclose()
    assert [item for item, _ in acked] == ["a", "b", "c"]


class Holder(NanoStreamProcessor):
    """Holds everything until the end, and drops every other item there."""

    def __init__(self):
        self.kept = []

    def process_item(self, message):
        self.kept.append(message)

    def holding(self):
        return len(self.kept)

    def finish(self):
        yield from self.kept[::2]
        self.kept = []


async def test_items_a_holding_node_drops_at_finish_are_acknowledged():
    graph, send, acked, sink = acked_pipeline(Holder(), buffer=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        for item in range(5):
            await send.send(item)
        await trio.testing.wait_all_tasks_blocked()
        assert acked == []
        await send.aclose()
    assert sink.items == [0, 2, 4]
    assert sorted(item for item, _ in acked) == [0, 1, 2, 3, 4]


def test_batcher_from_yaml():
    graph = load_text(
        """\
node_sequence:
  - name: src
    class: SequenceEmitter
    sequence: [1, 2, 3, 4, 5]
  - name: batch
    class: Batcher
    parents: [src]
    count: 2
    seconds: 0.5
""",
        "pipeline.yaml",
    )
    batcher = graph.nodes["batch"].processor
    assert (batcher.count, batcher.seconds) == (2, 0.5)


class DueAtZero(Holder):
    """Holds items, due to let them go at clock time 0.0, a deadline already past."""

    def deadline(self):
        return 0.0 if self.kept else None

    def on_deadline(self):
        yield from self.kept
        self.kept = []


async def test_a_deadline_of_zero_is_a_deadline(autojump_clock):
    graph, send, acked, sink = acked_pipeline(DueAtZero(), buffer=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_graph, graph)
        await trio.sleep(1)
        await send.send("late")
        await trio.testing.wait_all_tasks_blocked()
        assert sink.items == ["late"]
        assert [item for item, _ in acked] == ["late"]
        await send.aclose()
