import functools
import itertools
import logging
import reprlib

import pytest
import trio

from nanostream import (
    DeadLetter,
    FailedItems,
    GraphError,
    NanoStreamGraph,
    NanoStreamProcessor,
    NodeError,
    NodeOptions,
    Rejected,
    SequenceEmitter,
    WithAck,
    run_graph,
)
from nanostream.testing import Collector


class Flaky(NanoStreamProcessor):
    """Fails on ``bad`` items; each item fails ``times`` times, then succeeds."""

    def __init__(self, bad=(), times=None):
        self.bad = list(bad)
        self.times = times
        self.attempts = []

    def process_item(self, message):
        self.attempts.append((message, trio.current_time()))
        if message in self.bad:
            failures = sum(1 for m, _ in self.attempts if m == message)
            if self.times is None or failures <= self.times:
                raise ValueError(f"cannot handle {reprlib.repr(message)}")
        return message


class AsyncFlaky(Flaky):
    async def process_item(self, message):
        await trio.sleep(0)
        return Flaky.process_item(self, message)


class BatchFlaky(NanoStreamProcessor):
    def __init__(self, bad):
        self.bad = bad

    def process_batch(self, messages):
        if self.bad in messages:
            raise ValueError("bad batch")
        return messages


class Tracked(NanoStreamProcessor):
    def __init__(self, events, name):
        self.events = events
        self.name = name

    def process_item(self, message):
        return message

    def teardown(self):
        self.events.append(self.name)


class WaitingSource(NanoStreamProcessor):
    def __init__(self, items, events):
        self.items = items
        self.events = events

    async def generate(self):
        try:
            for item in self.items:
                yield item
            await trio.sleep_forever()
        finally:
            self.events.append("generator closed")

    def teardown(self):
        self.events.append("src")


def chain(processor, items, **options):
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(items)))
    graph.add("proc", processor, ["src"], **options)
    sink = graph.add("sink", Collector(), ["proc"])
    return graph, sink


@pytest.mark.parametrize("processor_class", [Flaky, AsyncFlaky])
async def test_fail_policy_raises_node_error_and_cancels_the_rest(processor_class):
    events = []
    graph = NanoStreamGraph()
    graph.add("src", WaitingSource([{"id": 1}, {"id": 2}, {"id": 3}], events))
    graph.add("boom", processor_class(bad=[{"id": 2}]), ["src"])
    graph.add("other", Tracked(events, "other"), ["src"])
    graph.add("sink", Tracked(events, "sink"), ["boom"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    error = excinfo.value
    assert error.node == "boom"
    assert error.during == "process_item"
    assert isinstance(error.error, ValueError)
    assert error.__cause__ is error.error
    assert error.item == {"id": 2}
    assert str(error) == (
        "node 'boom' failed in process_item: ValueError: cannot handle {'id': 2} (item: {'id': 2})"
    )
    # everything else was cancelled (the source was waiting forever) and torn down
    assert sorted(events) == ["generator closed", "other", "sink", "src"]


async def test_fail_policy_long_item_repr_is_shortened():
    graph, _ = chain(Flaky(bad=["x" * 1000]), ["x" * 1000])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert len(str(excinfo.value)) < 300
    assert "(item: 'xxxx" in str(excinfo.value)


async def test_fail_policy_in_process_batch_names_node():
    graph, _ = chain(BatchFlaky(bad=3), range(5))
    with pytest.raises(NodeError, match="node 'proc' failed in process_batch: ValueError: bad"):
        await run_graph(graph)


@pytest.mark.parametrize("processor_class", [Flaky, AsyncFlaky])
async def test_skip_policy_counts_and_logs(processor_class, caplog):
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(6))))
    name = f"skipper-{processor_class.__name__}"
    graph.add(name, processor_class(bad=[1, 4]), ["src"], on_error="skip")
    sink = graph.add("sink", Collector(), [name])
    with caplog.at_level(logging.WARNING, logger="nanostream"):
        run = await run_graph(graph)
    assert sink.items == [0, 2, 3, 5]
    assert run.stats[name].skipped == 2
    assert run.stats[name].errors == 2
    assert run.stats[name].received == 6
    assert run.stats[name].emitted == 4
    skipped = [r.getMessage() for r in caplog.records if r.name == "nanostream"]
    assert len(skipped) == 2
    assert f"node {name!r} failed in process_item: ValueError" in skipped[0]
    assert "(item: 1)" in skipped[0]
    assert "(item: 4)" in skipped[1]


async def test_skip_policy_process_batch_skips_whole_batch():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(10))), max_batch=5)
    graph.add("proc", BatchFlaky(bad=7), ["src"], on_error="skip", max_batch=5)
    sink = graph.add("sink", Collector(), ["proc"])
    run = await run_graph(graph)
    assert sink.items == [0, 1, 2, 3, 4]
    assert run.stats["proc"].skipped == 5


@pytest.mark.parametrize("processor_class", [Flaky, AsyncFlaky])
async def test_retry_with_back_off_then_success(processor_class, autojump_clock):
    processor = processor_class(bad=[2], times=3)
    graph, sink = chain(
        processor, [1, 2, 3], on_error="retry", retries=3, retry_delay=1.0, retry_max_delay=3.0
    )
    run = await run_graph(graph)
    assert sink.items == [1, 2, 3]
    attempts = [time for message, time in processor.attempts if message == 2]
    assert len(attempts) == 4  # first attempt and three retries
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps == pytest.approx([1.0, 2.0, 3.0])  # doubling, capped at retry_max_delay
    assert run.stats["proc"].retries == 3
    assert run.stats["proc"].errors == 3  # the fourth attempt succeeded
    assert run.stats["proc"].skipped == 0


@pytest.mark.parametrize("processor_class", [Flaky, AsyncFlaky])
async def test_retry_then_fallback_fail(processor_class, autojump_clock):
    processor = processor_class(bad=[2])
    graph, _ = chain(processor, [1, 2, 3], on_error="retry", retries=2, retry_delay=0.5)
    start = trio.current_time()
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "proc"
    assert excinfo.value.item == 2
    assert [m for m, _ in processor.attempts].count(2) == 3
    assert trio.current_time() - start == pytest.approx(1.5)


@pytest.mark.parametrize("processor_class", [Flaky, AsyncFlaky])
async def test_retry_then_fallback_skip(processor_class, autojump_clock):
    processor = processor_class(bad=[2])
    graph, sink = chain(processor, [1, 2, 3], on_error="retry", retries=2, retry_fallback="skip")
    run = await run_graph(graph)
    assert sink.items == [1, 3]
    assert [m for m, _ in processor.attempts].count(2) == 3
    assert run.stats["proc"].retries == 2
    assert run.stats["proc"].errors == 3
    assert run.stats["proc"].skipped == 1


async def test_retry_zero_retries(autojump_clock):
    processor = Flaky(bad=[1])
    graph, sink = chain(processor, [1, 2], on_error="retry", retries=0, retry_fallback="skip")
    await run_graph(graph)
    assert sink.items == [2]
    assert len(processor.attempts) == 2


@pytest.mark.parametrize(
    "options",
    [
        {"on_error": "skip"},
        {"on_error": "retry", "retries": 1, "retry_delay": 0, "retry_fallback": "skip"},
    ],
)
async def test_dead_letter_node_receives_dead_letters(options):
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(list(range(5))))
    graph.add("proc", Flaky(bad=[1, 3]), ["src"], dead_letter="dlq", **options)
    sink = graph.add("sink", Collector(), ["proc"])
    dlq = graph.add("dlq", Collector())
    run = await run_graph(graph)
    assert sink.items == [0, 2, 4]
    assert [(letter.node, letter.item) for letter in dlq.items] == [("proc", 1), ("proc", 3)]
    assert all(isinstance(letter, DeadLetter) for letter in dlq.items)
    assert all(isinstance(letter.error, ValueError) for letter in dlq.items)
    assert str(dlq.items[0].error) == "cannot handle 1"
    assert run.stats["proc"].dead_lettered == 2
    assert run.stats["proc"].skipped == 2
    assert run.stats["dlq"].received == 2


async def test_dead_letter_node_can_have_parents_and_children():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter(["a", "b"]))
    graph.add("proc", Flaky(bad=["b"]), ["src"], on_error="skip", dead_letter="both")
    graph.add("both", Tracked([], "both"), ["src"])
    sink = graph.add("sink", Collector(), ["both"])
    await run_graph(graph)
    plain = [item for item in sink.items if not isinstance(item, DeadLetter)]
    letters = [item.item for item in sink.items if isinstance(item, DeadLetter)]
    assert plain == ["a", "b"]
    assert letters == ["b"]


def test_node_options_reject_dead_letter_with_fail():
    with pytest.raises(ValueError, match="dead_letter needs on_error 'skip'"):
        NodeOptions(dead_letter="dlq")
    with pytest.raises(ValueError, match="dead_letter needs"):
        NodeOptions(on_error="retry", dead_letter="dlq")
    assert NodeOptions(on_error="retry", retry_fallback="skip", dead_letter="dlq").dead_letter
    graph = NanoStreamGraph()
    with pytest.raises(GraphError, match="dead_letter needs"):
        graph.add("x", Flaky(), ["src"], dead_letter="dlq")


def test_node_options_validation():
    with pytest.raises(ValueError):
        NodeOptions(retries=-1)
    with pytest.raises(ValueError):
        NodeOptions(retry_delay=-0.1)
    with pytest.raises(ValueError):
        NodeOptions(max_batch=0)
    with pytest.raises(ValueError):
        NodeOptions(retry_fallback="retry")
    assert NodeOptions(retry_delay=1).retry_delay == 1.0
    assert NodeOptions().gives_up_by_failing
    assert not NodeOptions(on_error="skip").gives_up_by_failing
    assert NodeOptions(on_error="retry").gives_up_by_failing


class Hooks(NanoStreamProcessor):
    def __init__(self, fail_in, events):
        self.fail_in = fail_in
        self.events = events

    async def setup(self):
        if self.fail_in == "setup":
            raise RuntimeError("setup broke")

    def teardown(self):
        self.events.append("teardown")
        if self.fail_in == "teardown":
            raise RuntimeError("teardown broke")

    def process_item(self, message):
        return message


class BrokenSource(NanoStreamProcessor):
    def __init__(self, use_batches=False):
        self.use_batches = use_batches

    def generate(self):
        yield 1
        raise KeyError("gone")


class BrokenBatchSource(NanoStreamProcessor):
    async def generate_batches(self):
        yield [1, 2]
        raise KeyError("gone")


async def test_setup_error_is_node_error_and_nothing_runs():
    events = []
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1, 2]))
    graph.add("hooks", Hooks("setup", events), ["src"])
    other = graph.add("other", Hooks(None, events), ["src"])
    sink = graph.add("sink", Collector(), ["other"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "hooks"
    assert excinfo.value.during == "setup"
    assert str(excinfo.value) == "node 'hooks' failed in setup: RuntimeError: setup broke"
    assert isinstance(excinfo.value.__cause__, RuntimeError)
    assert sink.items == []
    assert other is not None
    # the failing node was never set up, so only the other one is torn down
    assert events == ["teardown"]


async def test_teardown_error_is_node_error():
    events = []
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1, 2]))
    graph.add("hooks", Hooks("teardown", events), ["src"])
    sink = graph.add("sink", Collector(), ["hooks"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "hooks"
    assert excinfo.value.during == "teardown"
    assert sink.items == [1, 2]


@pytest.mark.parametrize(
    ("source", "during"),
    [(BrokenSource(), "generate"), (BrokenBatchSource(), "generate_batches")],
)
async def test_generate_error_is_node_error(source, during):
    graph = NanoStreamGraph()
    graph.add("src", source)
    graph.add("sink", Collector(), ["src"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "src"
    assert excinfo.value.during == during
    assert "KeyError: 'gone'" in str(excinfo.value)


class BadFinish(NanoStreamProcessor):
    def process_item(self, message):
        return message

    def finish(self):
        raise ZeroDivisionError("at the end")


async def test_finish_error_is_node_error():
    graph, _ = chain(BadFinish(), [1])
    with pytest.raises(NodeError, match="node 'proc' failed in finish: ZeroDivisionError"):
        await run_graph(graph)


async def test_several_errors_are_reported_together():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("a", Hooks("teardown", []), ["src"])
    graph.add("b", Flaky(bad=[1]), ["src"])
    with pytest.raises(NodeError) as excinfo:
        await run_graph(graph)
    assert excinfo.value.node == "b"
    notes = getattr(excinfo.value, "__notes__", [])
    assert any("node 'a' failed in teardown" in note for note in notes)


async def test_skip_logging_is_rate_limited_and_the_rest_counted(caplog):
    graph = NanoStreamGraph("limits")
    graph.add("src", SequenceEmitter(list(range(25))))
    graph.add("proc", Flaky(bad=list(range(25))), ["src"], on_error="skip")
    graph.add("sink", Collector(), ["proc"])
    with caplog.at_level(logging.WARNING, logger="nanostream"):
        run = await run_graph(graph)
    assert run.stats["proc"].skipped == 25
    records = [r for r in caplog.records if r.name == "nanostream"]
    assert [r.event for r in records] == ["skipped"] * 10 + ["skipped_unlogged"]
    assert all((r.pipeline, r.node) == ("limits", "proc") for r in records)
    assert "(item: 9)" in records[9].getMessage()
    assert records[-1].getMessage() == "node 'proc': 15 more items skipped without a log line"
    assert records[-1].count == 15


async def test_skip_logging_starts_again_after_the_period(caplog, autojump_clock):
    class Pausing(NanoStreamProcessor):
        async def generate(self):
            for item in range(12):
                yield item
            await trio.sleep(10)
            for item in range(12, 15):
                yield item

    graph = NanoStreamGraph()
    graph.add("src", Pausing())
    graph.add("proc", Flaky(bad=list(range(15))), ["src"], on_error="skip")
    graph.add("sink", Collector(), ["proc"])
    with caplog.at_level(logging.WARNING, logger="nanostream"):
        await run_graph(graph)
    records = [r for r in caplog.records if r.name == "nanostream"]
    assert [r.event for r in records] == ["skipped"] * 10 + ["skipped_unlogged"] + ["skipped"] * 3
    assert records[10].count == 2
    assert "(item: 14)" in records[-1].getMessage()


class Decoding(NanoStreamProcessor):
    """A source of texts, decoded as integers; each input is acknowledged
    by appending ("ack", text) to ``events``."""

    def __init__(self, texts, events):
        self.texts = texts
        self.events = events

    def generate_batches(self):
        batch = []
        for text in self.texts:
            ack = functools.partial(self.events.append, ("ack", text))
            try:
                batch.append(WithAck(int(text), ack))
            except ValueError as error:
                batch.append(Rejected(text, error, ack))
        yield batch


class Recording(NanoStreamProcessor):
    def __init__(self, events):
        self.events = events
        self.items = []

    def process_item(self, message):
        self.events.append(("got", message))
        self.items.append(message)


def decoding_graph(events, **options):
    graph = NanoStreamGraph()
    graph.add("decode", Decoding(["1", "two", "3"], events), **options)
    sink = graph.add("sink", Recording(events), ["decode"])
    return graph, sink


async def test_a_rejected_input_fails_the_graph_by_default():
    events = []
    graph, _ = decoding_graph(events)
    with pytest.raises(NodeError) as raised:
        await run_graph(graph)
    error = raised.value
    assert (error.node, error.during, error.item) == ("decode", "generate", "two")
    assert isinstance(error.__cause__, ValueError)
    assert "invalid literal for int()" in str(error)
    assert ("ack", "two") not in events


@pytest.mark.parametrize(
    "options",
    [{"on_error": "skip"}, {"on_error": "retry", "retry_fallback": "skip"}],
)
async def test_a_skipped_rejection_is_logged_counted_and_acknowledged(options, caplog):
    events = []
    graph, sink = decoding_graph(events, **options)
    run = await run_graph(graph)
    assert sink.items == [1, 3]
    assert sorted(events) == [("ack", "1"), ("ack", "3"), ("ack", "two"), ("got", 1), ("got", 3)]
    stats = run.stats["decode"]
    assert (stats.emitted, stats.errors, stats.skipped, stats.retries) == (2, 1, 1, 0)
    assert stats.acknowledged == 3
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "skipped"]
    assert record.node == "decode"
    assert "node 'decode' failed in generate: ValueError" in record.getMessage()
    assert "(item: 'two')" in record.getMessage()


async def test_a_rejection_goes_to_the_dead_letter_node_before_it_is_acknowledged():
    events = []
    graph, sink = decoding_graph(events, on_error="skip", dead_letter="dlq")
    dlq = graph.add("dlq", Recording(events))
    run = await run_graph(graph)
    [letter] = dlq.items
    assert (letter.node, letter.item, type(letter.error)) == ("decode", "two", ValueError)
    assert events.index(("got", letter)) < events.index(("ack", "two"))
    assert run.stats["decode"].dead_lettered == 1
    assert sink.items == [1, 3]


class ItemByItem(NanoStreamProcessor):
    """A batch node that handles its items one by one and reports those
    that failed with FailedItems; ``flaky`` items fail on their first try."""

    def __init__(self, bad=(), flaky=()):
        self.bad, self.flaky = set(bad), set(flaky)
        self.batches = []

    def process_batch(self, messages):
        self.batches.append(list(messages))
        results, errors = [], {}
        for index, message in enumerate(messages):
            if message in self.bad or message in self.flaky:
                self.flaky.discard(message)
                errors[index] = ValueError(f"cannot take {message}")
            else:
                results.append(message * 10)
        if errors:
            raise FailedItems(errors, results)
        return results


async def test_failed_items_are_skipped_alone_and_dead_lettered_alone():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1, 2, 3, 4]), max_batch=4)
    graph.add("proc", ItemByItem(bad=[2, 4]), ["src"], on_error="skip", dead_letter="dlq")
    sink = graph.add("sink", Collector(), ["proc"])
    dlq = graph.add("dlq", Collector())
    run = await run_graph(graph)
    assert sink.items == [10, 30]
    assert [(letter.item, str(letter.error)) for letter in dlq.items] == [
        (2, "cannot take 2"),
        (4, "cannot take 4"),
    ]
    stats = run.stats["proc"]
    assert (stats.received, stats.skipped, stats.errors, stats.dead_lettered) == (4, 2, 2, 2)


async def test_a_failed_item_is_retried_alone():
    processor = ItemByItem(flaky=[2])
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1, 2, 3]), max_batch=3)
    graph.add("proc", processor, ["src"], on_error="retry", retries=2, retry_delay=0)
    sink = graph.add("sink", Collector(), ["proc"])
    run = await run_graph(graph)
    assert processor.batches == [[1, 2, 3], [2]]
    assert sorted(sink.items) == [10, 20, 30]
    assert (run.stats["proc"].retries, run.stats["proc"].errors) == (1, 1)


async def test_a_failed_item_under_fail_stops_the_pipeline_naming_it():
    graph, _ = chain(ItemByItem(bad=[3]), [1, 2, 3])
    with pytest.raises(NodeError) as caught:
        await run_graph(graph)
    assert str(caught.value) == (
        "node 'proc' failed in process_batch: ValueError: cannot take 3 (item: 3)"
    )


async def test_failed_items_naming_an_item_not_in_the_batch_is_an_error():
    class Confused(NanoStreamProcessor):
        def process_batch(self, messages):
            raise FailedItems({len(messages): ValueError("which?")})

    graph, _ = chain(Confused(), [1], on_error="skip")
    with pytest.raises(NodeError, match="FailedItems names item 1 of a batch of 1"):
        await run_graph(graph)


async def test_none_among_the_results_of_failed_items_is_nothing_to_send():
    class Sink(NanoStreamProcessor):
        def process_batch(self, messages):
            raise FailedItems({1: ValueError("no")}, [None, None])

    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1, 2, 3]), max_batch=3)
    graph.add("proc", Sink(), ["src"], on_error="skip")
    after = graph.add("after", Collector(), ["proc"])
    run = await run_graph(graph)
    assert after.items == []
    assert run.stats["proc"].skipped == 1
