"""Operator chaining: which nodes chain, and that chained nodes behave as unchained ones.

The behaviour tests of the runtime (acks, batching, errors, executors, ...)
also run with chaining on and off (see conftest.py); these tests pin what
chaining itself promises.
"""

import time

import pytest
import trio
import trio.testing

import nanostream as ns
from nanostream import NanoStreamGraph, NanoStreamProcessor, NodeError, SequenceEmitter, run_graph
from nanostream._runtime._chaining import chained_parents
from nanostream.testing import Collector


class Step(NanoStreamProcessor):
    """Adds one, and notes the task it ran in and its lifecycle in ``log``."""

    def __init__(self, name, log):
        self.name = name
        self.log = log
        self.tasks = set()

    def setup(self):
        self.log.append(("setup", self.name))

    def process_item(self, message):
        if message < 1000:  # an item of the source, not one sent by a finish
            self.tasks.add(trio.lowlevel.current_task())
        return message + 1

    def finish(self):
        self.log.append(("finish", self.name))
        return 1000

    def teardown(self):
        self.log.append(("teardown", self.name))


def line(steps, log, **options):
    """numbers -> a -> b -> ... -> sink, every step with ``options``."""
    graph = NanoStreamGraph("line")
    graph.add("numbers", SequenceEmitter(list(range(100))))
    parent = "numbers"
    nodes = {}
    for name in steps:
        nodes[name] = graph.add(name, Step(name, log), [parent], **options)
        parent = name
    sink = graph.add("sink", Collector(), [parent], **options)
    return graph, nodes, sink


def test_a_linear_run_of_loop_nodes_is_chained_from_below_the_source():
    graph, _, _ = line("abc", [])
    assert chained_parents(graph) == {"b": "a", "c": "b", "sink": "c"}


def test_fan_out_fan_in_and_dead_letters_break_a_chain():
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter([1]))
    graph.add("head", Step("head", []), ["numbers"])
    graph.add("left", Step("left", []), ["head"])  # head has two children
    graph.add("right", Step("right", []), ["head"])
    graph.add("joined", Step("joined", []), ["left", "right"])  # two parents: heads a chain
    graph.add("after", Step("after", []), ["joined"], on_error="skip", dead_letter="letters")
    graph.add("end", Collector(), ["after"])
    graph.add("letters", Collector(), ["end"])  # its input takes dead letters too
    assert chained_parents(graph) == {"after": "joined", "end": "after"}


@pytest.mark.parametrize(
    "options",
    [{"chain": False}, {"executor": "thread"}, {"workers": 2}],
    ids=["chain false", "thread executor", "two workers"],
)
def test_a_node_that_cannot_chain_links_neither_to_its_parent_nor_its_child(options):
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter([1]))
    for name, parent in zip("abcde", ["numbers", *"abcd"], strict=True):
        graph.add(name, Step(name, []), [parent], **(options if name == "c" else {}))
    assert chained_parents(graph) == {"b": "a", "e": "d"}


def test_a_node_holding_items_back_is_not_chained():
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter([1]))
    graph.add("a", Step("a", []), ["numbers"])
    graph.add("batches", ns.Batcher(count=2), ["a"])
    graph.add("b", Step("b", []), ["batches"])
    assert chained_parents(graph) == {}


async def test_a_chain_handles_its_items_in_one_task_and_unchained_nodes_each_in_their_own():
    graph, chained, _ = line("abc", [])
    await run_graph(graph)
    assert len(set().union(*(step.tasks for step in chained.values()))) == 1

    graph, unchained, _ = line("abc", [], chain=False)
    await run_graph(graph)
    assert len(set().union(*(step.tasks for step in unchained.values()))) == 3


@pytest.mark.parametrize("chain", [True, False], ids=["chained", "unchained"])
async def test_results_counters_finish_and_teardown_are_the_same_chained_or_not(chain):
    log = []
    graph, _, sink = line("abc", log, chain=chain)
    run = await run_graph(graph)
    # Each finish sends 1000 through the nodes after it, which add one each.
    assert sink.items == [n + 3 for n in range(100)] + [1002, 1001, 1000]
    assert [(s.received, s.emitted, s.state) for s in map(run.stats.get, "abc")] == [
        (100, 101, "finished"),
        (101, 102, "finished"),
        (102, 103, "finished"),
    ]
    assert run.stats["sink"].received == 103
    assert all(stats.in_flight == 0 for stats in run.stats.values())
    ends = [event for event in log if event[0] != "setup"]
    assert ends == [(kind, name) for name in "abc" for kind in ("finish", "teardown")]


class FailOn(NanoStreamProcessor):
    def __init__(self, bad):
        self.bad = bad

    def process_item(self, message):
        if message == self.bad:
            raise ValueError(f"no {message}")
        return message


@pytest.mark.parametrize("chain", [True, False], ids=["chained", "unchained"])
async def test_a_failing_chained_node_is_the_node_that_fails(chain):
    log = []
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter(list(range(10))))
    graph.add("a", Step("a", log), ["numbers"], chain=chain)
    graph.add("b", FailOn(5), ["a"], chain=chain)
    graph.add("c", Step("c", log), ["b"], chain=chain)
    graph.add("sink", Collector(), ["c"], chain=chain)
    with pytest.raises(NodeError) as caught:
        await run_graph(graph)
    assert caught.value.node == "b"
    assert "no 5" in str(caught.value)
    assert {name for kind, name in log if kind == "teardown"} == {"a", "c"}


async def test_skipped_and_dead_lettered_items_count_on_the_chained_node_that_dropped_them():
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter(list(range(10))))
    graph.add("a", Step("a", []), ["numbers"])
    graph.add("b", FailOn(5), ["a"], on_error="skip", dead_letter="letters")
    sink = graph.add("sink", Collector(), ["b"])
    letters = graph.add("letters", Collector(), [])
    assert chained_parents(graph) == {"b": "a", "sink": "b"}
    run = await run_graph(graph)
    assert sink.items == [n for n in range(1, 11) if n != 5] + [1000]
    assert [(letter.node, letter.item) for letter in letters.items] == [("b", 5)]
    assert (run.stats["b"].skipped, run.stats["b"].dead_lettered) == (1, 1)
    assert (run.stats["b"].received, run.stats["b"].emitted) == (11, 10)


class Gate(NanoStreamProcessor):
    """A sink that takes nothing until ``opened`` is set."""

    def __init__(self):
        self.opened = trio.Event()
        self.items = []

    async def process_item(self, message):
        await self.opened.wait()
        self.items.append(message)


async def test_a_slow_chained_sink_holds_the_source_back():
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter(list(range(100_000))), max_batch=10)
    graph.add("a", Step("a", []), ["numbers"], buffer_size=2, max_batch=10)
    gate = graph.add("gate", Gate(), ["a"])
    assert chained_parents(graph) == {"gate": "a"}
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        await trio.testing.wait_all_tasks_blocked()
        # The chain holds a batch of at most ten in hand, its input two
        # more, and the source waits with a fourth.
        assert run.stats["numbers"].emitted <= 4 * 10
        gate.opened.set()
    assert len(gate.items) == 100_001


class Expand(NanoStreamProcessor):
    """Sends ``range(n)`` for an item ``n``, in lists of ``size`` (one list
    by default), as FileReader sends a file's records."""

    def __init__(self, size=None):
        self.size = size

    def process_item_batches(self, message):
        size = self.size or message
        for start in range(0, message, size):
            yield list(range(start, min(start + size, message)))


class EveryFourth(NanoStreamProcessor):
    """Keeps the multiples of four."""

    def process_item(self, message):
        return message if message % 4 == 0 else None


class BatchSizes(Collector):
    """Collects, and notes the size of each batch it handles."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def process_batch(self, messages):
        self.sizes.append(len(messages))
        self.items += messages


async def test_a_batch_cut_for_a_chained_node_reaches_the_next_node_whole():
    # A node is handed at most max_batch items at a time; what a plain
    # process_item sends on for all of them goes to the next node together.
    graph = NanoStreamGraph()
    graph.add("sizes", SequenceEmitter([4096]))
    graph.add("numbers", Expand(), ["sizes"], max_batch=512)
    graph.add("quarter", EveryFourth(), ["numbers"], max_batch=512)
    sink = graph.add("sink", BatchSizes(), ["quarter"], max_batch=512)
    assert chained_parents(graph) == {"quarter": "numbers", "sink": "quarter"}
    await run_graph(graph)
    assert sink.sizes == [512, 512]
    assert sink.items == list(range(0, 4096, 4))


class MostOf(NanoStreamProcessor):
    """Yields each item but the multiples of 700 (a generator: it sends its
    results on a chunk at a time while it runs)."""

    def process_item(self, message):
        if message % 700:
            yield message


async def test_a_generator_node_cut_into_parts_keeps_the_order_of_its_results():
    graph = NanoStreamGraph()
    graph.add("sizes", SequenceEmitter([5000]))
    graph.add("numbers", Expand(), ["sizes"])
    graph.add("most", MostOf(), ["numbers"], max_batch=100)
    sink = graph.add("sink", BatchSizes(), ["most"])
    assert chained_parents(graph) == {"most": "numbers", "sink": "most"}
    await run_graph(graph)
    assert sink.items == [n for n in range(5000) if n % 700]


class Slow(NanoStreamProcessor):
    """Holds the loop for 50 ms per batch."""

    def process_batch(self, messages):
        time.sleep(0.05)


@pytest.mark.parametrize("chain", [True, False])
async def test_a_generators_busy_time_leaves_out_handing_its_results_on(chain):
    # Chained, the nodes after it run inside its hand-over; unchained, the
    # hand-over waits for room in their full channel. Neither is its work.
    graph = NanoStreamGraph()
    graph.add("sizes", SequenceEmitter([2048]))
    graph.add("numbers", Expand(size=256), ["sizes"], max_batch=256)
    graph.add("slow", Slow(), ["numbers"], max_batch=256, buffer_size=1, chain=chain)
    run = await run_graph(graph)
    assert run.stats["slow"].received == 2048
    assert run.stats["slow"].busy_seconds >= 0.4
    assert run.stats["numbers"].busy_seconds < 0.2


class Gated(NanoStreamProcessor):
    """Sends ``items`` once ``go`` is set."""

    def __init__(self, items):
        self.items = items
        self.go = trio.Event()

    async def generate(self):
        await self.go.wait()
        for item in self.items:
            yield item


class Watch(NanoStreamProcessor):
    """Notes, at each batch, the busy seconds so far of the node whose ``stats`` it is given."""

    def __init__(self):
        self.stats = None
        self.seen = []

    def process_batch(self, messages):
        self.seen.append(self.stats.busy_seconds)


async def test_a_long_items_busy_time_counts_while_it_is_worked_on():
    graph = NanoStreamGraph()
    source = graph.add("sizes", Gated([2048]))
    graph.add("numbers", Expand(size=256), ["sizes"], max_batch=256)
    watch = graph.add("watch", Watch(), ["numbers"], max_batch=256)
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, graph)
        watch.stats = run.stats["numbers"]
        source.go.set()
    assert len(watch.seen) == 8
    # Counted at each hand-over, before the one item (the 2,048) is done.
    assert 0 < watch.seen[1] < watch.seen[-1]
    assert run.stats["numbers"].received == 1


class NurseryOf(NanoStreamProcessor):
    """Notes the node nursery its setup and its items see."""

    def __init__(self):
        self.seen = []

    def setup(self):
        self.seen.append(ns.node_nursery())

    def process_item(self, message):
        self.seen.append(ns.node_nursery())
        return message


async def test_a_chained_nodes_code_sees_its_own_node_nursery():
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter([1, 2]))
    parent = graph.add("parent", NurseryOf(), ["numbers"])
    child = graph.add("child", NurseryOf(), ["parent"])
    assert chained_parents(graph) == {"child": "parent"}
    await run_graph(graph)
    assert len(child.seen) == 3
    assert len(set(child.seen)) == 1
    assert set(child.seen).isdisjoint(parent.seen)


# -- fused stages: consecutive chained nodes with a plain process_item run as one loop --


class Trace(NanoStreamProcessor):
    """Passes items on, noting (its name, the item) in ``log`` as it handles each."""

    def __init__(self, name, log):
        self.name = name
        self.log = log

    def process_item(self, message):
        self.log.append((self.name, message))
        return message


def traced(steps, log, items, **options):
    """items -> head -> each of ``steps`` (a name, or a node) -> sink."""
    graph = NanoStreamGraph("traced")
    graph.add("numbers", SequenceEmitter(list(items)))
    graph.add("head", Trace("head", log), ["numbers"])
    parent = "head"
    for step in steps:
        name, node = (step, Trace(step, log)) if isinstance(step, str) else step
        graph.add(name, node, [parent], **options.get(name, {}))
        parent = name
    sink = graph.add("sink", Collector(), [parent])
    return graph, sink


@pytest.fixture(params=["fused", "node by node"])
def sampling(request, monkeypatch):
    """Every batch of a fused chain run fused, or every batch run node by node
    (as the batches that time the nodes are)."""
    every = 10**9 if request.param == "fused" else 1
    monkeypatch.setattr("nanostream._runtime._chaining.FusedStages.SAMPLE_EVERY", every)
    return request.param


async def test_fused_stages_take_each_item_through_every_node_before_the_next(sampling):
    log = []
    graph, sink = traced("bc", log, range(3))
    await run_graph(graph)
    assert sink.items == [0, 1, 2]
    after_head = [entry for entry in log if entry[0] != "head"]
    if sampling == "fused":
        assert after_head == [("b", 0), ("c", 0), ("b", 1), ("c", 1), ("b", 2), ("c", 2)]
    else:
        assert after_head == [("b", 0), ("b", 1), ("b", 2), ("c", 0), ("c", 1), ("c", 2)]


class Odd(NanoStreamProcessor):
    """Drops the even numbers."""

    def process_item(self, message):
        return message if message % 2 else None


async def test_a_none_in_a_middle_fused_stage_drops_the_item_and_counts_exactly(sampling):
    log = []
    graph, sink = traced(["b", ("odd", Odd()), "c"], log, range(10))
    run = await run_graph(graph)
    assert sink.items == [1, 3, 5, 7, 9]
    assert [message for name, message in log if name == "c"] == [1, 3, 5, 7, 9]
    counts = {name: (run.stats[name].received, run.stats[name].emitted) for name in run.stats}
    assert counts == {
        "numbers": (0, 10),
        "head": (10, 10),
        "b": (10, 10),
        "odd": (10, 5),
        "c": (5, 5),
        "sink": (5, 0),
    }
    assert all(stats.in_flight == 0 for stats in run.stats.values())


async def test_a_fused_stage_failing_under_skip_dead_letters_that_item_and_the_rest_go_on(sampling):
    log = []
    options = {"bad": {"on_error": "skip", "dead_letter": "letters"}}
    graph, sink = traced(["b", ("bad", FailOn(4)), "c"], log, range(8), **options)
    letters = graph.add("letters", Collector(), [])
    run = await run_graph(graph)
    assert sink.items == [0, 1, 2, 3, 5, 6, 7]
    assert [message for name, message in log if name == "c"] == [0, 1, 2, 3, 5, 6, 7]
    assert [(letter.node, letter.item) for letter in letters.items] == [("bad", 4)]
    stats = run.stats["bad"]
    assert (stats.received, stats.emitted, stats.errors, stats.skipped) == (8, 7, 1, 1)
    assert (run.stats["b"].emitted, run.stats["c"].received, run.stats["c"].emitted) == (8, 7, 7)


class FailOnce(NanoStreamProcessor):
    """Fails the first time it sees each of ``bad``, then doubles it; passes the rest."""

    def __init__(self, bad):
        self.bad = set(bad)
        self.failed = set()

    def process_item(self, message):
        if message in self.bad:
            if message not in self.failed:
                self.failed.add(message)
                raise ValueError(f"not yet {message}")
            return message * 10
        return message


async def test_a_fused_stage_retried_sends_its_result_through_the_stages_after_it(
    sampling, autojump_clock
):
    log = []
    options = {"flaky": {"on_error": "retry", "retries": 2, "retry_delay": 1.0}}
    graph, sink = traced(["b", ("flaky", FailOnce({2, 5})), "c"], log, range(7), **options)
    run = await run_graph(graph)
    assert sink.items == [0, 1, 20, 3, 4, 50, 6]
    assert [message for name, message in log if name == "c"] == [0, 1, 20, 3, 4, 50, 6]
    stats = run.stats["flaky"]
    assert (stats.received, stats.emitted, stats.errors, stats.retries) == (7, 7, 2, 2)
    assert stats.skipped == 0


async def test_a_fused_stage_that_fails_under_fail_fails_its_own_node(sampling):
    graph, _ = traced(["b", ("bad", FailOn(3)), "c"], [], range(6))
    with pytest.raises(NodeError) as caught:
        await run_graph(graph)
    assert caught.value.node == "bad"
    assert caught.value.item == 3


async def test_each_fused_node_sees_its_own_node_nursery(sampling):
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter([1, 2, 3]))
    parent = "numbers"
    nodes = []
    for name in ("head", "b", "c", "d"):
        nodes.append(graph.add(name, NurseryOf(), [parent]))
        parent = name
    assert chained_parents(graph) == {"b": "head", "c": "b", "d": "c"}
    await run_graph(graph)
    # Its setup and its three items each saw one nursery, its own.
    assert [(len(node.seen), len(set(node.seen))) for node in nodes] == [(4, 1)] * 4
    assert len(set().union(*(node.seen for node in nodes))) == 4


async def test_busy_time_of_fused_nodes_is_shared_among_them():
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter(list(range(5000))), max_batch=10)
    parent = "numbers"
    for name in ("head", "b", "c", "d"):
        graph.add(name, Trace(name, []), [parent], max_batch=10)
        parent = name
    run = await run_graph(graph)
    for name in "bcd":
        stats = run.stats[name]
        assert stats.received == 5000
        assert stats.busy_seconds > 0
        assert stats.worker_busy_seconds == [stats.busy_seconds]
