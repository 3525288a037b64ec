"""ChannelSource and ChannelSink: a graph inside a trio program."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

import nanostream as ns
from nanostream.testing import Collector


@attrs.define
class Scale(ns.NanoStreamProcessor):
    factor: int = 10

    def process_item(self, message):
        return message * self.factor


class Explodes(ns.NanoStreamProcessor):
    def process_item(self, message):
        raise ValueError(f"cannot take {message}")


def embedded(processor: ns.NanoStreamProcessor) -> tuple[ns.NanoStreamGraph, tuple, tuple]:
    send, receive = trio.open_memory_channel(0)
    results_in, results = trio.open_memory_channel(100)
    graph = ns.NanoStreamGraph("embedded")
    graph.add("input", ns.ChannelSource(receive))
    graph.add("work", processor, parents=["input"])
    graph.add("output", ns.ChannelSink(results_in), parents=["work"])
    return graph, send, results


async def test_items_go_in_and_come_out():
    graph, send, results = embedded(Scale())
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        await send.send(1)
        assert await results.receive() == 10
        await send.send(2)
        assert await results.receive() == 20
        run.stop()
    assert [item async for item in results] == []
    assert run.stats["work"].received == 2


async def test_after_stop_the_producer_is_refused_not_blocked():
    graph, send, _results = embedded(Scale())
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        await send.send(1)
        run.stop()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BrokenResourceError):
            await send.send(2)


async def test_items_left_in_the_channel_at_stop_are_counted_in_the_log(caplog):
    send, receive = trio.open_memory_channel(10)
    graph = ns.NanoStreamGraph("embedded")
    graph.add("input", ns.ChannelSource(receive))
    graph.add("sink", Collector(), ["input"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        run.stop()
        for item in range(3):
            send.send_nowait(item)
    assert "ChannelSource ended with 3 items still waiting in its channel" in caplog.text


async def test_a_failure_awaited_directly_is_the_node_error():
    send, receive = trio.open_memory_channel(1)
    graph = ns.NanoStreamGraph("embedded")
    graph.add("input", ns.ChannelSource(receive))
    graph.add("work", Explodes(), parents=["input"])
    send.send_nowait(1)
    send.close()
    with pytest.raises(ns.NodeError, match=r"^node 'work' failed in process_item"):
        await ns.run_graph(graph)


async def test_a_failure_under_nursery_start_arrives_grouped_as_trio_groups_it():
    graph, send, _results = embedded(Explodes())
    with pytest.RaisesGroup(
        pytest.RaisesExc(ns.NodeError, match=r"^node 'work' failed in process_item")
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(ns.run_graph, graph)
            await send.send(1)
    # except* catches it in both call styles, as documented.
    try:
        graph, send, _results = embedded(Explodes())
        async with trio.open_nursery() as nursery:
            await nursery.start(ns.run_graph, graph)
            await send.send(1)
    except* ns.NodeError as group:
        caught = group.exceptions
    assert [type(error) for error in caught] == [ns.NodeError]
