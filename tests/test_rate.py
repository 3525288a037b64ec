"""Throttle: exact item times on trio's mock clock, back-pressure, acknowledgements."""

import pytest
import trio

from nanostream import (
    ChannelSource,
    NanoStreamGraph,
    NanoStreamProcessor,
    SequenceEmitter,
    WithAck,
    run_graph,
)
from nanostream.config import ConfigErrors, load_text
from nanostream.nodes.rate import Throttle


class Stamped(NanoStreamProcessor):
    """A sink that records each item with the (virtual) time it arrived."""

    def __init__(self) -> None:
        self.start = trio.current_time()
        self.items: list[tuple[float, object]] = []

    def process_batch(self, messages):
        now = trio.current_time() - self.start
        self.items += [(now, message) for message in messages]


async def run_throttled(throttle: Throttle, items: list) -> list[tuple[float, object]]:
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(items))
    graph.add("throttle", throttle, ["src"])
    sink = graph.add("sink", Stamped(), ["throttle"])
    await run_graph(graph)
    return sink.items


async def test_items_are_spaced_evenly(autojump_clock):
    out = await run_throttled(Throttle(rate=4), list(range(6)))
    assert out == [(0.0, 0), (0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4), (1.25, 5)]


async def test_burst_goes_at_once_then_rate_per_period(autojump_clock):
    out = await run_throttled(Throttle(rate=2, per=4, burst=3), list(range(6)))
    assert out == [(0.0, 0), (0.0, 1), (0.0, 2), (2.0, 3), (4.0, 4), (6.0, 5)]


async def test_the_bucket_refills_while_idle_up_to_burst(autojump_clock):
    send, receive = trio.open_memory_channel(10)
    graph = NanoStreamGraph()
    graph.add("src", ChannelSource(receive))
    graph.add("throttle", Throttle(rate=1, burst=2), ["src"])
    sink = graph.add("sink", Stamped(), ["throttle"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_graph, graph)
        for item in "abc":
            await send.send(item)
        await trio.sleep(10)  # idle long enough for many tokens; the bucket keeps 2
        for item in "defg":
            await send.send(item)
        await send.aclose()
    assert sink.items == [
        (0.0, "a"),
        (0.0, "b"),
        (1.0, "c"),
        (10.0, "d"),
        (10.0, "e"),
        (11.0, "f"),
        (12.0, "g"),
    ]


async def test_a_fast_parent_waits_rather_than_filling_memory(autojump_clock):
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(10_000))), max_batch=10)
    graph.add("throttle", Throttle(rate=10), ["src"], buffer_size=2, max_batch=10)
    graph.add("sink", Stamped(), ["throttle"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await trio.sleep(5.05)
        # 51 items have gone out. Beyond those, the source has sent at most
        # the batch in the throttle's hands and the two queued for it.
        assert run.stats["sink"].received == 51
        assert run.stats["src"].emitted <= 60 + 2 * 10
        run.cancel()


async def test_items_are_acknowledged_only_once_they_have_gone_on(autojump_clock):
    acked: list[tuple[float, int]] = []
    start = trio.current_time()

    class Acked(NanoStreamProcessor):
        def generate(self):
            for n in range(4):
                yield WithAck(n, lambda n=n: acked.append((trio.current_time() - start, n)))

    graph = NanoStreamGraph()
    graph.add("src", Acked())
    graph.add("throttle", Throttle(rate=1), ["src"])
    sink = graph.add("sink", Stamped(), ["throttle"])
    await run_graph(graph)
    assert [n for _, n in sink.items] == [0, 1, 2, 3]
    # The four came as one batch: its acknowledgements wait for its last item.
    assert sorted(acked) == [(3.0, 0), (3.0, 1), (3.0, 2), (3.0, 3)]


async def test_yaml_pipeline(autojump_clock):
    graph = load_text(
        """\
node_sequence:
  - name: src
    class: SequenceEmitter
    sequence: [a, b, c]
  - name: slow
    class: Throttle
    parents: [src]
    rate: 1
    per: 0.5
"""
    )
    sink = graph.add("sink", Stamped(), ["slow"])
    await run_graph(graph)
    assert sink.items == [(0.0, "a"), (0.5, "b"), (1.0, "c")]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"rate": 0}, "parameter 'rate': rate must be more than 0, not 0.0"),
        ({"rate": 1, "per": -1}, "parameter 'per': per must be more than 0, not -1.0"),
        ({"rate": 1, "burst": 0}, "parameter 'burst': burst must be more than 0, not 0"),
        ({"rate": 1, "burst": 1.5}, "parameter 'burst': expected an integer, got a number 1.5"),
        ({}, "missing required parameter 'rate' for Throttle"),
    ],
)
def test_yaml_errors(parameters, message):
    lines = "".join(f"\n    {key}: {value}" for key, value in parameters.items())
    text = f"""\
node_sequence:
  - name: src
    class: SequenceEmitter
  - name: slow
    class: Throttle
    parents: [src]{lines}
"""
    with pytest.raises(ConfigErrors) as excinfo:
        load_text(text)
    (error,) = excinfo.value.errors
    assert message in str(error)


async def test_stop_lets_waiting_items_go_on_at_the_rate(autojump_clock):
    send, receive = trio.open_memory_channel(10)
    graph = NanoStreamGraph()
    graph.add("src", ChannelSource(receive))
    graph.add("throttle", Throttle(rate=1), ["src"])
    sink = graph.add("sink", Stamped(), ["throttle"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        for item in range(4):
            send.send_nowait(item)
        await trio.sleep(0.5)
        run.stop()
    assert sink.items == [(0.0, 0), (1.0, 1), (2.0, 2), (3.0, 3)]
    assert run.drained
