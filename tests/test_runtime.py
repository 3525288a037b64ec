import itertools
from functools import partial

import pytest
import trio
import trio.testing

import nanostream as ns
from nanostream import (
    ChannelSink,
    ChannelSource,
    GraphError,
    GraphRun,
    NanoStreamGraph,
    NanoStreamProcessor,
    NodeError,
    SequenceEmitter,
    run_graph,
)
from nanostream._runtime import TEARDOWN_GRACE
from nanostream.testing import Collector


class Record(NanoStreamProcessor):
    """A pass-through that logs its lifecycle in a shared list."""

    def __init__(self, name, events, use_async=False):
        self.name = name
        self.events = events
        self.use_async = use_async

    def setup(self):
        if self.use_async:
            return self._async_setup()
        self.events.append(("setup", self.name))

    async def _async_setup(self):
        await trio.sleep(0)
        self.events.append(("setup", self.name))

    def teardown(self):
        if self.use_async:
            return self._async_teardown()
        self.events.append(("teardown", self.name))

    async def _async_teardown(self):
        await trio.sleep(0)
        self.events.append(("teardown", self.name))

    def process_item(self, message):
        return message


class RecordSource(Record):
    def __init__(self, name, events, items, use_async=False, then_wait=False):
        super().__init__(name, events, use_async)
        self.items = items
        self.then_wait = then_wait

    async def generate(self):
        self.events.append(("generate", self.name))
        for item in self.items:
            yield item
        if self.then_wait:
            await trio.sleep_forever()


def linear(*processors, source_items=(), source_batch=512, **options):
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(source_items)), max_batch=source_batch)
    parent = "src"
    for index, processor in enumerate(processors):
        graph.add(f"n{index}", processor, [parent], **options)
        parent = f"n{index}"
    sink = graph.add("sink", Collector(), [parent])
    return graph, sink


class Add(NanoStreamProcessor):
    def __init__(self, amount):
        self.amount = amount

    def process_item(self, message):
        return message + self.amount


async def test_linear_chain():
    graph, sink = linear(Add(1), Add(10), source_items=range(5))
    run = await run_graph(graph)
    assert sink.items == [11, 12, 13, 14, 15]
    assert isinstance(run, GraphRun)
    assert run.drained
    assert run.errors == []
    assert run.stats["src"].emitted == 5
    assert run.stats["n0"].received == run.stats["n0"].emitted == 5
    assert run.stats["sink"].received == 5
    assert {stats.state for stats in run.stats.values()} == {"finished"}


async def test_empty_source():
    graph, sink = linear(Add(1), source_items=[])
    await run_graph(graph)
    assert sink.items == []


async def test_fan_out_each_child_gets_every_item():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(2000))))
    left = graph.add("left", Collector(), ["src"])
    graph.add("middle", Add(0), ["src"])
    right = graph.add("right", Collector(), ["middle"])
    also = graph.add("also", Collector(), ["src"], max_batch=3, buffer_size=1)
    await run_graph(graph)
    for sink in (left, right, also):
        assert sink.items == list(range(2000))


async def test_fan_in_merges_every_item_in_per_path_order():
    graph = NanoStreamGraph()
    count = 10_000
    graph.add("a", SequenceEmitter([("a", i) for i in range(count)]))
    graph.add("b", SequenceEmitter([("b", i) for i in range(count)]), max_batch=7)
    graph.add("merge", Add(()), ["a", "b"])
    sink = graph.add("sink", Collector(), ["merge"])
    await run_graph(graph)
    assert len(sink.items) == 2 * count
    for tag in "ab":
        assert [i for t, i in sink.items if t == tag] == list(range(count))


class BatchSizes(NanoStreamProcessor):
    def __init__(self):
        self.items = []
        self.sizes = []

    def process_batch(self, messages):
        self.sizes.append(len(messages))
        self.items.extend(messages)


async def test_per_path_order_under_batching():
    count = 10_000
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(count))))
    graph.add("a", Add(0), ["src"], max_batch=100, buffer_size=2)
    graph.add("b", Add(0), ["a"])
    sink = graph.add("sink", BatchSizes(), ["b"])
    await run_graph(graph)
    assert sink.items == list(range(count))
    assert max(sink.sizes) > 1  # items really travelled in batches
    assert max(sink.sizes) <= 512


class Evens(NanoStreamProcessor):
    def process_item(self, message):
        return message if message % 2 == 0 else None


class AsyncEvens(NanoStreamProcessor):
    async def process_item(self, message):
        await trio.sleep(0)
        return message if message % 2 == 0 else None


@pytest.mark.parametrize("processor", [Evens(), AsyncEvens()], ids=["plain", "async"])
async def test_filters_drop_none(processor):
    graph, sink = linear(processor, source_items=range(10))
    run = await run_graph(graph)
    assert sink.items == [0, 2, 4, 6, 8]
    assert run.stats["n0"].received == 10
    assert run.stats["n0"].emitted == 5


class SendsNone(NanoStreamProcessor):
    def generate(self):
        yield from [1, None, 2]


async def test_a_source_none_is_rejected_under_its_error_policy():
    graph = NanoStreamGraph()
    graph.add("src", SendsNone(), on_error="skip")
    sink = graph.add("sink", Collector(), ["src"])
    run = await run_graph(graph)
    assert sink.items == [1, 2]
    assert (run.stats["src"].emitted, run.stats["src"].skipped) == (2, 1)


async def test_a_source_none_fails_the_run_by_default():
    graph = NanoStreamGraph()
    graph.add("src", SendsNone())
    graph.add("sink", Collector(), ["src"])
    with pytest.raises(ns.NodeError, match="the source sent None, which is never an item"):
        await run_graph(graph)


class Repeat(NanoStreamProcessor):
    def process_item(self, message):
        for index in range(message):
            yield (message, index)
        yield None  # dropped


class AsyncRepeat(NanoStreamProcessor):
    async def process_item(self, message):
        for index in range(message):
            await trio.sleep(0)
            yield (message, index)


@pytest.mark.parametrize("processor", [Repeat(), AsyncRepeat()], ids=["sync", "async"])
async def test_generator_process_item_yields_many(processor):
    graph, sink = linear(processor, source_items=[0, 1, 3, 200])
    await run_graph(graph)
    expected = [(n, i) for n in [0, 1, 3, 200] for i in range(n)]
    assert sink.items == expected


class RepeatUntilThree(NanoStreamProcessor):
    def process_item(self, message):
        for index in range(message):
            if index == 3:
                raise ValueError("too many")
            yield (message, index)


class AsyncRepeatUntilThree(NanoStreamProcessor):
    async def process_item(self, message):
        for item in RepeatUntilThree.process_item(self, message):
            await trio.sleep(0)
            yield item


@pytest.mark.parametrize(
    "processor", [RepeatUntilThree(), AsyncRepeatUntilThree()], ids=["sync", "async"]
)
async def test_what_a_skipped_generator_yielded_before_failing_goes_with_it(processor):
    graph, sink = linear(processor, source_items=[2, 5, 1], on_error="skip")
    run = await run_graph(graph)
    assert sink.items == [(2, 0), (2, 1), (1, 0)]
    assert run.stats["n0"].skipped == 1


class InLists(NanoStreamProcessor):
    """Sends ``message`` copies of each item, in lists of three; fails on 7."""

    def process_item(self, message):
        raise AssertionError("process_item_batches is called in its place")

    def process_item_batches(self, message):
        if message == 7:
            yield [(7, 0), None, (7, 1)]  # None is dropped
            raise ValueError("seven")
        copies = [(message, index) for index in range(message)]
        for start in range(0, message, 3):
            yield copies[start : start + 3]


class AsyncInLists(InLists):
    async def process_item_batches(self, message):
        for chunk in InLists.process_item_batches(self, message):
            await trio.sleep(0)
            yield chunk


@pytest.mark.parametrize("processor", [InLists(), AsyncInLists()], ids=["sync", "async"])
async def test_process_item_batches_sends_the_lists_it_yields(processor):
    graph, sink = linear(processor, source_items=[0, 1, 5, 200])
    run = await run_graph(graph)
    assert sink.items == [(n, i) for n in [0, 1, 5, 200] for i in range(n)]
    assert (run.stats["n0"].received, run.stats["n0"].emitted) == (4, 206)


@pytest.mark.parametrize("processor", [InLists(), AsyncInLists()], ids=["sync", "async"])
async def test_process_item_batches_that_fails_keeps_what_it_sent_before(processor):
    # With max_batch 2, each list goes on as it comes: the one before the
    # failure is sent; the item is given up on, and the next one goes on.
    graph, sink = linear(processor, source_items=[2, 7, 1], on_error="skip", max_batch=2)
    run = await run_graph(graph)
    assert sink.items == [(2, 0), (2, 1), (7, 0), (7, 1), (1, 0)]
    assert (run.stats["n0"].skipped, run.stats["n0"].received) == (1, 3)


async def test_process_item_batches_must_be_a_generator():
    class Returns(NanoStreamProcessor):
        def process_item_batches(self, message):
            return [message]

    graph, _ = linear(Returns(), source_items=[1])
    with pytest.raises(NodeError, match="failed in setup: TypeError: process_item_batches"):
        await run_graph(graph)


class Double(NanoStreamProcessor):
    async def process_item(self, message):
        await trio.sleep(0)
        return message * 2


async def test_async_process_item():
    graph, sink = linear(Double(), source_items=range(100))
    await run_graph(graph)
    assert sink.items == [2 * i for i in range(100)]


class SumBatch(NanoStreamProcessor):
    def __init__(self):
        self.batches = []

    def process_batch(self, messages):
        self.batches.append(list(messages))
        return [m * 3 for m in messages] + [None]


class AsyncBatchGen(NanoStreamProcessor):
    async def process_batch(self, messages):
        for message in messages:
            yield message
            yield -message


async def test_process_batch():
    processor = SumBatch()
    graph, sink = linear(processor, source_items=range(1000), source_batch=16, max_batch=64)
    await run_graph(graph)
    assert sink.items == [3 * i for i in range(1000)]
    assert all(1 <= len(batch) <= 64 for batch in processor.batches)
    assert sum(map(len, processor.batches)) == 1000


async def test_async_generator_process_batch():
    graph, sink = linear(AsyncBatchGen(), source_items=[1, 2, 3])
    await run_graph(graph)
    assert sink.items == [1, -1, 2, -2, 3, -3]


class Batches(NanoStreamProcessor):
    def __init__(self, batches, use_async=False):
        self.batches = batches
        self.use_async = use_async

    def generate_batches(self):
        if self.use_async:
            return self._async()
        return iter(self.batches)

    async def _async(self):
        for batch in self.batches:
            await trio.sleep(0)
            yield batch


class SyncBatches(NanoStreamProcessor):
    def __init__(self, batches):
        self.batches = batches

    def generate_batches(self):
        yield from self.batches


class AsyncBatches(NanoStreamProcessor):
    def __init__(self, batches):
        self.batches = batches

    async def generate_batches(self):
        for batch in self.batches:
            await trio.sleep(0)
            yield batch


@pytest.mark.parametrize("source_class", [SyncBatches, AsyncBatches])
async def test_generate_batches_source(source_class):
    batches = [[1, 2, 3], [], [4], (5, 6)]
    graph = NanoStreamGraph()
    graph.add("src", source_class(batches))
    sink = graph.add("sink", BatchSizes(), ["src"])
    run = await run_graph(graph)
    assert sink.items == [1, 2, 3, 4, 5, 6]
    assert run.stats["src"].emitted == 6


class Counter(NanoStreamProcessor):
    def __init__(self, count):
        self.count = count

    async def generate(self):
        for i in range(self.count):
            if i % 100 == 0:
                await trio.sleep(0)
            yield i


async def test_async_generator_source():
    graph = NanoStreamGraph()
    graph.add("src", Counter(1000))
    sink = graph.add("sink", Collector(), ["src"])
    await run_graph(graph)
    assert sink.items == list(range(1000))


class NotAGenerator(NanoStreamProcessor):
    def generate(self):
        return [1, 2, 3]


async def test_generate_must_be_a_generator():
    graph = NanoStreamGraph()
    graph.add("src", NotAGenerator())
    graph.add("sink", Collector(), ["src"])
    with pytest.raises(NodeError, match="node 'src' failed in generate: TypeError"):
        await run_graph(graph)


class Chunker(NanoStreamProcessor):
    def __init__(self, size):
        self.size = size
        self.pending = []

    def process_item(self, message):
        self.pending.append(message)
        if len(self.pending) == self.size:
            chunk, self.pending = self.pending, []
            return chunk
        return None

    def finish(self):
        return self.pending or None


class AsyncChunker(Chunker):
    async def finish(self):
        await trio.sleep(0)
        return self.pending or None


class GenFinish(NanoStreamProcessor):
    def process_item(self, message):
        return message

    async def finish(self):
        yield "end-1"
        yield None
        yield "end-2"


@pytest.mark.parametrize("chunker_class", [Chunker, AsyncChunker])
async def test_finish_emits_final_items(chunker_class):
    graph, sink = linear(chunker_class(3), source_items=range(7))
    await run_graph(graph)
    assert sink.items == [[0, 1, 2], [3, 4, 5], [6]]


async def test_finish_generator_and_downstream_finish():
    graph, sink = linear(GenFinish(), Chunker(2), source_items=[1, 2, 3])
    await run_graph(graph)
    assert sink.items == [[1, 2], [3, "end-1"], ["end-2"]]


def chain_with_records(events, use_async, source_items=(1, 2, 3), then_wait=False):
    graph = NanoStreamGraph()
    graph.add("src", RecordSource("src", events, list(source_items), use_async, then_wait))
    graph.add("mid", Record("mid", events, use_async), ["src"])
    graph.add("sink", Record("sink", events, use_async), ["mid"])
    return graph


def lifecycle(events, kind):
    return sorted(name for event, name in events if event == kind)


@pytest.mark.parametrize("use_async", [False, True])
async def test_setup_and_teardown_on_success(use_async):
    events = []
    await run_graph(chain_with_records(events, use_async))
    assert lifecycle(events, "setup") == ["mid", "sink", "src"]
    assert lifecycle(events, "teardown") == ["mid", "sink", "src"]
    # every setup happens before any item flows, teardown after
    first_generate = events.index(("generate", "src"))
    assert all(events.index(("setup", n)) < first_generate for n in ("src", "mid", "sink"))
    assert events.index(("teardown", "sink")) == len(events) - 1 or events[-1][0] == "teardown"


class FailOn(Record):
    def __init__(self, name, events, bad, use_async=False):
        super().__init__(name, events, use_async)
        self.bad = bad

    def process_item(self, message):
        if message == self.bad:
            raise ValueError("bad item")
        return message


@pytest.mark.parametrize("use_async", [False, True])
async def test_setup_and_teardown_on_error(use_async):
    events = []
    graph = NanoStreamGraph()
    graph.add("src", RecordSource("src", events, [1, 2, 3], use_async, then_wait=True))
    graph.add("mid", FailOn("mid", events, 2, use_async), ["src"])
    graph.add("sink", Record("sink", events, use_async), ["mid"])
    graph.add("other", Record("other", events, use_async), ["src"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "mid"
    assert lifecycle(events, "teardown") == ["mid", "other", "sink", "src"]


@pytest.mark.parametrize("use_async", [False, True])
async def test_teardown_on_cancellation_of_surrounding_scope(use_async):
    events = []
    graph = chain_with_records(events, use_async, then_wait=True)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    assert lifecycle(events, "teardown") == ["mid", "sink", "src"]
    assert run.stats["sink"].received == 3
    assert {stats.state for stats in run.stats.values()} == {"cancelled"}


class SlowSetup(Record):
    def __init__(self, name, events, delay):
        super().__init__(name, events)
        self.delay = delay

    async def setup(self):
        await trio.sleep(self.delay)
        self.events.append(("setup", self.name))


async def test_start_returns_only_after_every_setup(autojump_clock):
    events = []
    graph = NanoStreamGraph()
    graph.add("src", RecordSource("src", events, [1, 2], then_wait=True))
    graph.add("slow", SlowSetup("slow", events, 5), ["src"])
    graph.add("slower", SlowSetup("slower", events, 7), ["slow"])
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        run = await nursery.start(run_graph, graph)
        assert trio.current_time() - start == pytest.approx(7)
        assert isinstance(run, GraphRun)
        assert lifecycle(events, "setup") == ["slow", "slower", "src"]
        assert ("generate", "src") not in events[: events.index(("setup", "slower"))]
        await trio.testing.wait_all_tasks_blocked()
        run.stop()
    assert run.stats["slower"].received == 2


async def test_start_raises_setup_error():
    class BadSetup(NanoStreamProcessor):
        def setup(self):
            raise OSError("no such device")

        def process_item(self, message):
            return message

    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("dev", BadSetup(), ["src"])
    async with trio.open_nursery() as nursery:
        with pytest.raises(NodeError, match="node 'dev' failed in setup: OSError: no such device"):
            await nursery.start(run_graph, graph)


class Gate(NanoStreamProcessor):
    """A sink that holds every item until ``gate`` is set."""

    def __init__(self):
        self.gate = trio.Event()
        self.items = []

    async def process_item(self, message):
        await self.gate.wait()
        self.items.append(message)


class Endless(NanoStreamProcessor):
    def __init__(self):
        self.produced = 0

    def generate(self):
        for i in itertools.count():
            self.produced += 1
            yield i


class EndlessAsync(NanoStreamProcessor):
    def __init__(self):
        self.produced = 0

    async def generate(self):
        for i in itertools.count():
            self.produced += 1
            yield i


@pytest.mark.parametrize("source_class", [Endless, EndlessAsync])
async def test_stop_drains_items_in_flight(source_class):
    source = source_class()
    sink = Gate()
    graph = NanoStreamGraph()
    graph.add("src", source, max_batch=4)
    graph.add("mid", Add(0), ["src"], buffer_size=3, max_batch=4)
    graph.add("sink", sink, ["mid"], buffer_size=3, max_batch=4)
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await trio.testing.wait_all_tasks_blocked()
        in_flight = run.stats["src"].emitted
        assert in_flight > 0
        assert sink.items == []
        run.stop()
        assert run.stopping
        await trio.testing.wait_all_tasks_blocked()
        sink.gate.set()
    # everything the source sent on reached the sink, in order
    assert run.stats["src"].emitted == in_flight
    assert sink.items == list(range(in_flight))
    assert run.drained
    assert run.stats["src"].state == "finished"


async def test_stop_drain_timeout_cancels_the_rest(autojump_clock):
    sink = Gate()
    graph = NanoStreamGraph()
    graph.add("src", Endless(), max_batch=2)
    graph.add("sink", sink, ["src"], buffer_size=1, max_batch=2)
    async with trio.open_nursery() as nursery:
        run = await nursery.start(
            lambda task_status: run_graph(graph, drain_timeout=3, task_status=task_status)
        )
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        run.stop()
    assert trio.current_time() - start == pytest.approx(3)
    assert not run.drained
    assert sink.items == []


async def test_channel_source_and_sink():
    in_send, in_receive = trio.open_memory_channel(0)
    out_send, out_receive = trio.open_memory_channel(0)
    graph = NanoStreamGraph()
    graph.add("in", ChannelSource(in_receive))
    graph.add("double", Double(), ["in"])
    graph.add("out", ChannelSink(out_send), ["double"])
    received = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_graph, graph)
        async with in_send:
            for i in range(5):
                await in_send.send(i)
                received.append(await out_receive.receive())
            for i in range(5, 50):
                await in_send.send(i)
                received.append(await out_receive.receive())
        # the sink closes its channel once the input is closed and drained
        async for item in out_receive:
            received.append(item)
    assert received == [2 * i for i in range(50)]


async def test_channel_source_batches_waiting_items():
    in_send, in_receive = trio.open_memory_channel(100)
    out_send, out_receive = trio.open_memory_channel(100)
    for i in range(10):
        in_send.send_nowait(i)
    in_send.close()
    graph = NanoStreamGraph()
    graph.add("in", ChannelSource(in_receive))
    sizes = graph.add("sizes", BatchSizes(), ["in"])
    graph.add("out", ChannelSink(out_send), ["in"])
    await run_graph(graph)
    assert [item async for item in out_receive] == list(range(10))
    assert sizes.sizes == [10]


@pytest.mark.parametrize("edges", [1, 2])
@pytest.mark.parametrize("source_class", [Endless, EndlessAsync])
async def test_back_pressure_bounds_the_source(source_class, edges):
    buffer_size, max_batch = 2, 3
    source = source_class()
    sink = Gate()
    graph = NanoStreamGraph()
    graph.add("src", source, max_batch=max_batch)
    parent = "src"
    if edges == 2:
        graph.add("mid", Add(0), ["src"], buffer_size=buffer_size, max_batch=max_batch)
        parent = "mid"
    graph.add("sink", sink, [parent], buffer_size=buffer_size, max_batch=max_batch)
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await trio.testing.wait_all_tasks_blocked()
        produced = source.produced
        # per edge: the batches buffered, one being handled, one waiting to be sent
        per_edge = (buffer_size + 2) * max_batch
        assert run.stats["sink"].received <= max_batch
        assert 0 < produced <= edges * per_edge
        await trio.testing.wait_all_tasks_blocked()
        assert source.produced == produced  # blocked, not running ahead
        sink.gate.set()
        while len(sink.items) < 5 * per_edge:
            await trio.sleep(0)
        run.stop()
    assert sink.items == list(range(len(sink.items)))
    assert run.stats["src"].emitted == len(sink.items)


async def test_run_graph_validates_first():
    graph = NanoStreamGraph()
    graph.add("sink", Collector(), ["nowhere"])
    with pytest.raises(GraphError):
        await run_graph(graph)


class StuckTeardown(NanoStreamProcessor):
    def process_item(self, message):
        return message

    async def teardown(self):
        await trio.sleep_forever()


async def test_teardown_is_cut_short_after_timeout(autojump_clock, caplog):
    from nanostream._runtime import TEARDOWN_TIMEOUT

    events = []
    graph = NanoStreamGraph()
    graph.add("src", RecordSource("src", events, [1], then_wait=True))
    graph.add("stuck", StuckTeardown(), ["src"])
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_graph, graph)
            start = trio.current_time()
            scope.cancel()
    assert trio.current_time() - start == pytest.approx(TEARDOWN_TIMEOUT)
    assert ("teardown", "src") in events
    assert "node 'stuck': teardown did not finish in time" in caplog.text


async def test_graph_run_cancel_cuts_teardowns_short(autojump_clock):
    graph = NanoStreamGraph()
    graph.add("src", RecordSource("src", [], [1], then_wait=True))
    graph.add("stuck", StuckTeardown(), ["src"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        start = trio.current_time()
        run.cancel()
    assert trio.current_time() - start < 1
    assert run.stopping
    assert not run.drained


def test_run_in_new_event_loop():
    from nanostream import run

    graph, sink = linear(Add(1), source_items=[1, 2])
    result = run(graph)
    assert isinstance(result, GraphRun)
    assert sink.items == [2, 3]


class GatedBatches(BatchSizes):
    def __init__(self):
        super().__init__()
        self.gate = trio.Event()

    async def process_batch(self, messages):
        await self.gate.wait()
        super().process_batch(messages)


@pytest.mark.parametrize(("max_batch", "largest"), [(4, 3), (6, 6), (7, 6)])
async def test_merging_waiting_batches_stays_within_max_batch(max_batch, largest):
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(300))), max_batch=3)
    sink = graph.add("sink", GatedBatches(), ["src"], max_batch=max_batch, buffer_size=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_graph, graph)
        await trio.testing.wait_all_tasks_blocked()
        sink.gate.set()
    assert sink.items == list(range(300))
    assert max(sink.sizes) == largest  # waiting batches merged, never past max_batch


async def test_stats_show_queue_depth_and_capacity():
    """A blocked node's input queue fills to its capacity, in batches."""
    release = trio.Event()

    class Stuck(NanoStreamProcessor):
        async def process_item(self, message):
            await release.wait()
            return message

    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(100))), max_batch=1)
    graph.add("stuck", Stuck(), ["src"], buffer_size=4)
    graph.add("sink", Collector(), ["stuck"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await trio.testing.wait_all_tasks_blocked()
        assert run.stats["src"].queue_capacity == 0
        assert run.stats["src"].queued == 0
        assert run.stats["stuck"].queue_capacity == 4
        assert run.stats["stuck"].queued == 4
        assert run.stats["sink"].queued == 0
        release.set()
    assert run.stats["stuck"].queued == 0
    assert run.stats["sink"].received == 100


class Exploder(NanoStreamProcessor):
    """Yields ``per_item`` results for each item; notes how many the sink
    had received when it was half-way through."""

    def __init__(self, per_item, sink, asynchronous):
        self.per_item = per_item
        self.sink = sink
        self.seen_half_way = None
        self.process_batch = self._async_batch if asynchronous else self._sync_batch

    async def _async_batch(self, messages):
        for message in messages:
            for index in range(self.per_item):
                if index == self.per_item // 2:
                    await trio.testing.wait_all_tasks_blocked()
                    self.seen_half_way = len(self.sink.items)
                yield (message, index)

    def _sync_batch(self, messages):
        for message in messages:
            for index in range(self.per_item):
                if index == self.per_item // 2:
                    self.seen_half_way = len(self.sink.items)
                yield (message, index)


async def test_generator_output_is_sent_on_in_chunks_while_it_runs():
    sink = Collector()
    exploder = Exploder(1000, sink, asynchronous=True)
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(["x"]))
    graph.add("explode", exploder, ["src"], max_batch=100)
    graph.add("sink", sink, ["explode"])
    run = await run_graph(graph)
    assert exploder.seen_half_way == 500  # five chunks of 100 already handled
    assert sink.items == [("x", index) for index in range(1000)]
    assert run.stats["explode"].emitted == 1000


async def test_plain_generator_output_is_sent_on_in_chunks_while_it_runs():
    """With room for one batch in the sink's queue, a plain generator that
    yields 2,000 results can only get half-way if its chunks are handled
    as it goes."""
    sink = Collector()
    exploder = Exploder(2000, sink, asynchronous=False)
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(["x"]))
    graph.add("explode", exploder, ["src"], max_batch=100)
    graph.add("sink", sink, ["explode"], buffer_size=1)
    await run_graph(graph)
    assert exploder.seen_half_way >= 800
    assert sink.items == [("x", index) for index in range(2000)]


async def test_a_batch_larger_than_max_batch_is_handled_in_parts():
    class Big(NanoStreamProcessor):
        def generate_batches(self):
            yield list(range(1000))

    class Sizes(NanoStreamProcessor):
        def __init__(self):
            self.sizes = []

        def process_batch(self, messages):
            self.sizes.append(len(messages))
            return messages

    sizes = Sizes()
    graph = NanoStreamGraph()
    graph.add("src", Big())
    graph.add("sizes", sizes, ["src"], max_batch=300)
    sink = graph.add("sink", Collector(), ["sizes"])
    await run_graph(graph)
    assert sizes.sizes == [300, 300, 300, 100]
    assert sink.items == list(range(1000))


async def test_a_plain_finish_may_return_an_awaitable():
    class Flusher(NanoStreamProcessor):
        def process_item(self, message):
            return None

        def finish(self):
            return self._flush()

        async def _flush(self):
            await trio.sleep(0)
            return "flushed"

    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("flush", Flusher(), ["src"])
    sink = graph.add("sink", Collector(), ["flush"])
    await run_graph(graph)
    assert sink.items == ["flushed"]


class Waits(NanoStreamProcessor):
    """Takes one second per item; records how many were in hand at once."""

    def __init__(self, fail_on=None):
        self.active = 0
        self.most_active = 0
        self.fail_on = fail_on

    async def process_item(self, message):
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        await trio.sleep(1)
        self.active -= 1
        if message == self.fail_on:
            raise ValueError(f"bad item {message}")
        return message


async def test_workers_handle_batches_at_once(autojump_clock):
    waits = Waits()
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(8))), max_batch=1)
    graph.add("waits", waits, ["src"], workers=4, max_batch=1)
    sink = graph.add("sink", Collector(), ["waits"])
    start = trio.current_time()
    run = await run_graph(graph)
    assert trio.current_time() - start == pytest.approx(2.0)
    assert waits.most_active == 4
    assert sorted(sink.items) == list(range(8))
    assert run.stats["waits"].received == run.stats["waits"].emitted == 8
    assert run.stats["waits"].state == "finished"


async def test_a_failing_worker_fails_the_graph_with_a_node_error(autojump_clock):
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(8))), max_batch=1)
    graph.add("waits", Waits(fail_on=5), ["src"], workers=3, max_batch=1)
    graph.add("sink", Collector(), ["waits"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "waits"
    assert excinfo.value.item == 5


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("src", "SequenceEmitter is a source and runs as one worker"),
        ("batch", "Batcher is a node that holds items back and runs as one worker"),
    ],
)
def test_sources_and_holding_nodes_take_one_worker(node, message):
    from nanostream.nodes.batching import Batcher

    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]), workers=2 if node == "src" else 1)
    graph.add("batch", Batcher(), ["src"], workers=2 if node == "batch" else 1)
    with pytest.raises(GraphError) as excinfo:
        graph.validate()
    assert message in str(excinfo.value)


class Ticking(ns.NanoStreamProcessor):
    """A source fed by a task it starts in its node's nursery at setup."""

    def __init__(self, count, events):
        self.count, self.events = count, events

    async def setup(self):
        self.send, self.receive = trio.open_memory_channel(0)
        ns.node_nursery().start_soon(self.tick)

    async def tick(self):
        try:
            for n in range(self.count):
                await self.send.send(n)
            await trio.sleep_forever()
        except trio.Cancelled:
            self.events.append("tick cancelled")
            raise

    async def generate(self):
        for _ in range(self.count):
            yield await self.receive.receive()

    def teardown(self):
        self.events.append("teardown")


async def test_a_node_nursery_task_lives_until_the_node_has_torn_down():
    events = []
    graph = ns.NanoStreamGraph()
    graph.add("ticks", Ticking(3, events))
    sink = graph.add("sink", Collector(), ["ticks"])
    await ns.run_graph(graph)
    assert sink.items == [0, 1, 2]
    assert events == ["teardown", "tick cancelled"]


class FailsInTheBackground(ns.NanoStreamProcessor):
    async def setup(self):
        ns.node_nursery().start_soon(self.fail)

    async def fail(self):
        raise OSError("connection lost")

    async def process_item(self, message):
        await trio.sleep_forever()


async def test_a_failing_node_nursery_task_fails_the_node():
    graph = ns.NanoStreamGraph()
    graph.add("numbers", ns.SequenceEmitter([1]))
    graph.add("watcher", FailsInTheBackground(), ["numbers"])
    with trio.fail_after(30), pytest.raises(ns.NodeError) as failed:
        await ns.run_graph(graph)
    assert str(failed.value) == (
        "node 'watcher' failed in a task in its nursery: OSError: connection lost"
    )
    assert isinstance(failed.value.__cause__, OSError)


def test_node_nursery_outside_a_node_is_an_error():
    with pytest.raises(RuntimeError, match="only available in a node's own code"):
        ns.node_nursery()


async def test_a_drain_ends_teardowns_included_within_the_drain_timeout(autojump_clock):
    graph = NanoStreamGraph()
    graph.add("src", RecordSource("src", [], [1], then_wait=True))
    graph.add("stuck", StuckTeardown(), ["src"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(partial(run_graph, graph, drain_timeout=3))
        start = trio.current_time()
        run.stop()
    # Teardowns may take a short grace past the drain deadline, no more.
    assert trio.current_time() - start == pytest.approx(3 + TEARDOWN_GRACE)
    assert not run.drained
    assert run.exit_status == 1


async def test_a_clean_drain_has_exit_status_0(autojump_clock):
    graph = NanoStreamGraph()
    graph.add("src", RecordSource("src", [], [1, 2], then_wait=True))
    graph.add("sink", ns.BlackHole(), ["src"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(partial(run_graph, graph, drain_timeout=3))
        run.stop()
    assert run.drained
    assert (run.exit_status, run.abandoned) == (0, 0)


class TicksSeen(NanoStreamProcessor):
    """A sink noting, for each item, how many times ``ticker`` has run."""

    def __init__(self, ticker):
        self.ticker = ticker
        self.seen = []

    def process_item(self, message):
        self.seen.append(self.ticker.ticks)


class Ticker:
    """Counts its turns: another task, that runs only when the nodes yield."""

    def __init__(self):
        self.ticks = 0

    async def run(self):
        while True:
            self.ticks += 1
            await trio.lowlevel.checkpoint()


async def test_every_node_yields_to_other_tasks_once_per_batch_it_handles():
    ticker = Ticker()
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter(list(range(200))), max_batch=1)
    graph.add("a", Record("a", []), ["numbers"], max_batch=1)
    sink = graph.add("sink", TicksSeen(ticker), ["a"], max_batch=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        await run_graph(graph)
        nursery.cancel_scope.cancel()
    assert len(sink.seen) == 200
    # Each batch (of one item here) in a turn of the scheduler of its own:
    # the ticker ran in the turn between any batch and the one after next.
    assert all(before < after for before, after in zip(sink.seen, sink.seen[2:], strict=False))
