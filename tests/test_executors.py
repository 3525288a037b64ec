"""Executors (loop, thread, process), workers, order, and what stays the same under each."""

import logging
import os
import textwrap
import threading

import attrs
import pytest
import trio
import trio.testing
from executor_nodes import Dies, FailingSetup, Pid, Square, SquareBatches
from hypothesis import given, settings
from hypothesis import strategies as st

import nanostream as ns
from nanostream.config import check_pipeline, load_pipeline
from nanostream.testing import Collector

EXECUTORS = ["loop", "thread", "process"]


async def run_through(items, node, *, source_batch=512, dead_letters=False, **options):
    """Run ``items`` through ``node``; its outputs, dead letters and the run."""
    graph = ns.NanoStreamGraph("executors")
    graph.add("source", ns.SequenceEmitter(list(items)), max_batch=source_batch)
    sink, letters = Collector(), Collector()
    if dead_letters:
        options["dead_letter"] = "letters"
        graph.add("letters", letters)
    graph.add("node", node, ["source"], **options)
    graph.add("sink", sink, ["node"])
    with trio.fail_after(60):
        run = await ns.run_graph(graph)
    return sink.items, letters.items, run


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_results_leave_in_input_order_under_every_executor(executor):
    items, _, run = await run_through(range(1000), Square(), executor=executor, workers=2)
    assert items == [x * x for x in range(1000)]
    stats = run.stats["node"]
    assert (stats.received, stats.emitted, stats.in_progress) == (1000, 1000, 0)
    assert len(stats.worker_busy_seconds) == 2
    assert stats.busy_seconds == pytest.approx(sum(stats.worker_busy_seconds))


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_skip_and_dead_letters_are_the_same_under_every_executor(executor):
    bad = [3, 50, 999]
    items, letters, run = await run_through(
        range(1000),
        Square(bad=bad),
        executor=executor,
        workers=2,
        on_error="skip",
        dead_letters=True,
    )
    assert items == [x * x for x in range(1000) if x not in bad]
    # Dead letters leave as items are given up on, by whichever worker.
    assert sorted(letter.item for letter in letters) == bad
    assert all(letter.node == "node" for letter in letters)
    assert {str(letter.error) for letter in letters} == {f"bad item {x}" for x in bad}
    stats = run.stats["node"]
    assert (stats.skipped, stats.dead_lettered, stats.errors) == (3, 3, 3)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_retry_succeeds_under_every_executor(executor, tmp_path):
    node = Square(flaky=[7, 400], marks=str(tmp_path))
    items, _, run = await run_through(
        range(500), node, executor=executor, workers=2, on_error="retry", retry_delay=0
    )
    assert sorted(items) == [x * x for x in range(500)]
    stats = run.stats["node"]
    assert (stats.retries, stats.errors, stats.skipped) == (2, 2, 0)


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_failed_items_of_a_batch_are_skipped_alone(executor):
    items, letters, _ = await run_through(
        range(100),
        SquareBatches(bad=[10, 20]),
        executor=executor,
        on_error="skip",
        dead_letters=True,
    )
    assert items == [x * x for x in range(100) if x not in (10, 20)]
    assert [letter.item for letter in letters] == [10, 20]


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_fail_names_the_node_and_the_item(executor):
    with pytest.raises(ns.NodeError) as caught:
        await run_through(range(100), Square(bad=[42]), executor=executor)
    assert caught.value.node == "node"
    assert caught.value.item == 42
    assert "bad item 42" in str(caught.value)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_acks_come_once_everything_is_handled(executor):
    acked = []

    class Acked(ns.NanoStreamProcessor):
        def generate(self):
            for i in range(300):
                yield ns.WithAck(i, lambda i=i: acked.append(i))

    graph = ns.NanoStreamGraph("acks")
    graph.add("source", Acked())
    graph.add("node", Square(bad=[5]), ["source"], executor=executor, workers=3, on_error="skip")
    sink = Collector()
    graph.add("sink", sink, ["node"])
    with trio.fail_after(60):
        run = await ns.run_graph(graph)
    assert sorted(acked) == list(range(300))
    assert run.stats["source"].acknowledged == 300
    assert len(sink.items) == 299


async def test_thread_workers_run_at_once_even_on_one_big_batch():
    """Four workers each wait at a barrier for the other three: the one
    512-item batch the source sends is split so that all four have items."""
    barrier = threading.Barrier(4, timeout=10)

    @attrs.define
    class Meet(ns.NanoStreamProcessor):
        def process_item(self, message):
            if message % 128 == 0:
                barrier.wait()
            return message

    items, _, _ = await run_through(range(512), Meet(), executor="thread", workers=4)
    assert items == list(range(512))


async def test_async_workers_share_one_big_batch():
    """Sixteen workers of an async node are all busy on one batch."""
    busy = 0
    most = 0
    everyone = trio.Event()

    class Wait(ns.NanoStreamProcessor):
        async def process_item(self, message):
            nonlocal busy, most
            busy += 1
            most = max(most, busy)
            if most == 16:
                everyone.set()
            with trio.fail_after(10):
                await everyone.wait()
            busy -= 1
            return message

    items, _, _ = await run_through(range(512), Wait(), workers=16)
    assert items == list(range(512))
    assert most == 16


@pytest.mark.parametrize("ordered", [True, False])
async def test_unordered_results_leave_as_they_finish(ordered):
    """The first piece waits for the last to be done."""
    last_done = trio.Event()

    class FirstWaits(ns.NanoStreamProcessor):
        async def process_item(self, message):
            if message == 0:
                with trio.fail_after(10):
                    await last_done.wait()
            if message == 99:
                last_done.set()
            return message

    items, _, _ = await run_through(range(100), FirstWaits(), workers=4, ordered=ordered)
    assert sorted(items) == list(range(100))
    if ordered:
        assert items == list(range(100))
    else:
        assert items.index(99) < items.index(0)


async def test_an_async_node_counts_each_item_as_it_is_done(nursery):
    """A slow node's counters move while it works through a batch, not once at its end."""
    gates = [trio.Event() for _ in range(10)]

    class Gated(ns.NanoStreamProcessor):
        async def process_item(self, message):
            await gates[message].wait()
            return message

    graph = ns.NanoStreamGraph("counted")
    graph.add("source", ns.SequenceEmitter(list(range(10))))
    graph.add("node", Gated(), ["source"])
    graph.add("sink", ns.BlackHole(), ["node"])
    run = await nursery.start(ns.run_graph, graph)
    for done in range(3):
        gates[done].set()
    await trio.testing.wait_all_tasks_blocked()
    stats = run.stats["node"]
    assert (stats.received, stats.in_progress, stats.emitted) == (3, 7, 0)
    assert stats.busy_seconds > 0
    for gate in gates:
        gate.set()


async def test_a_sync_node_holding_the_loop_is_logged_once(caplog):
    class Blocks(ns.NanoStreamProcessor):
        def process_item(self, message):
            import time

            time.sleep(0.15)
            return message

    with caplog.at_level(logging.WARNING, logger="nanostream"):
        await run_through(range(3), Blocks(), source_batch=1, max_batch=1)
    held = [r for r in caplog.records if getattr(r, "event", None) == "loop_held"]
    assert len(held) == 1
    assert "executor: thread" in held[0].getMessage()
    assert held[0].node == "node"


async def test_process_workers_set_up_and_tear_down_once_each(tmp_path):
    items, _, _ = await run_through(range(2000), Pid(str(tmp_path)), executor="process", workers=2)
    assert [item for item, _ in items] == list(range(2000))
    pids = {pid for _, pid in items}
    set_up = {int(p.name.split("-")[1]) for p in tmp_path.glob("setup-*")}
    torn_down = {int(p.name.split("-")[1]) for p in tmp_path.glob("teardown-*")}
    assert len(set_up) == 2
    assert pids <= set_up
    assert torn_down == set_up
    assert os.getpid() not in set_up


@pytest.mark.parametrize(
    "how, says",
    [("exit", "exited with status 3"), ("segfault", "SIGSEGV"), ("kill", "SIGKILL")],
)
async def test_a_worker_process_that_dies_fails_its_items_and_is_replaced(how, says):
    items, letters, run = await run_through(
        range(1000),
        Dies(fatal=10, how=how),
        source_batch=100,
        executor="process",
        workers=2,
        on_error="skip",
        dead_letters=True,
    )
    # The items of the piece the worker died on go again one by one, so
    # only the one that kills its worker is given up on; workers replace it.
    assert [letter.item for letter in letters] == [10]
    assert items == [x for x in range(1000) if x != 10]
    assert says in str(letters[0].error)
    assert run.stats["node"].skipped == 1


async def test_a_worker_process_that_dies_under_fail_fails_the_graph():
    with pytest.raises(ns.NodeError, match="worker process exited with status 3"):
        await run_through(range(100), Dies(fatal=3), executor="process")


async def test_a_setup_that_fails_in_a_worker_process_fails_the_node():
    with pytest.raises(ns.NodeError, match="failed in setup: RuntimeError: no licence"):
        await run_through(range(10), FailingSetup(), executor="process")


async def test_items_that_cannot_be_pickled_are_handled_by_the_policy():
    lock = threading.Lock()
    _, letters, _ = await run_through(
        [lock], Square(), executor="process", on_error="skip", dead_letters=True
    )
    assert [letter.item for letter in letters] == [lock]
    assert "could not be passed to or from a worker process" in str(letters[0].error)


def test_a_node_that_cannot_be_pickled_is_reported_before_it_runs():
    @attrs.define
    class Locked(ns.NanoStreamProcessor):
        guard: object = attrs.field(factory=threading.Lock)

        def process_item(self, message):
            return message

    graph = ns.NanoStreamGraph()
    graph.add("source", ns.SequenceEmitter([1]))
    graph.add("node", Locked(), ["source"], executor="process")
    [problem] = graph.problems()
    assert problem.key == "executor"
    assert "attribute 'guard' of Locked cannot be pickled" in problem.message


def test_async_code_is_refused_off_the_loop():
    class Async(ns.NanoStreamProcessor):
        async def process_item(self, message):
            return message

    graph = ns.NanoStreamGraph()
    graph.add("source", ns.SequenceEmitter([1]))
    graph.add("node", Async(), ["source"], executor="thread")
    [problem] = graph.problems()
    assert "Async.process_item is async" in problem.message


def test_check_names_the_attribute_that_cannot_be_pickled(tmp_path):
    (tmp_path / "guarded.py").write_text(
        textwrap.dedent("""\
            import threading

            import attrs

            import nanostream as ns


            @attrs.define
            class Guarded(ns.NanoStreamProcessor):
                guard: object = attrs.field(factory=threading.Lock, init=False)

                def process_item(self, message):
                    return message
            """)
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent("""\
            pipeline_name: guarded
            node_sequence:
              - name: numbers
                class: SequenceEmitter
                sequence: [1, 2]
              - name: guarded
                class: guarded:Guarded
                parents: [numbers]
                executor: process
            """)
    )
    [error] = check_pipeline(config)
    assert (error.line, error.col) == (9, 15)
    assert "attribute 'guard' of Guarded cannot be pickled for executor 'process'" in str(
        error.format()
    )


async def test_a_process_node_from_the_pipeline_folder_runs(tmp_path):
    """The worker processes import the node's class from where the pipeline found it."""
    (tmp_path / "local_nodes.py").write_text(
        textwrap.dedent("""\
            import nanostream as ns


            class Twice(ns.NanoStreamProcessor):
                def process_item(self, message):
                    return 2 * message
            """)
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent("""\
            pipeline_name: local
            node_sequence:
              - name: numbers
                class: SequenceEmitter
                sequence: [1, 2, 3]
              - name: twice
                class: local_nodes:Twice
                parents: [numbers]
                executor: process
              - name: sink
                class: nanostream.testing:Collector
                parents: [twice]
            """)
    )
    graph = load_pipeline(config)
    with trio.fail_after(60):
        await ns.run_graph(graph)
    assert graph.nodes["sink"].processor.items == [2, 4, 6]


async def test_parts_sent_early_keep_their_order_across_workers():
    """Generators send parts of a piece before it is done; with several
    workers those parts still leave in input order."""

    class Triple(ns.NanoStreamProcessor):
        async def process_item(self, message):
            for copy in range(3):
                await trio.sleep(0.001 * (message % 3))
                yield (message, copy)

    items, _, _ = await run_through(range(60), Triple(), workers=3, max_batch=4)
    assert items == [(x, copy) for x in range(60) for copy in range(3)]


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_unordered_off_the_loop_delivers_everything(executor):
    items, _, run = await run_through(
        range(3000), Square(), executor=executor, workers=3, ordered=False
    )
    assert sorted(items) == sorted(x * x for x in range(3000))
    assert len(run.stats["node"].worker_busy_seconds) == 3


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    workers=st.integers(1, 6),
    max_batch=st.integers(1, 50),
    delays=st.lists(st.integers(0, 3), min_size=1, max_size=7),
    fan_out=st.booleans(),
)
def test_any_batches_on_any_workers_keep_order_and_ack_once(
    batches, workers, max_batch, delays, fan_out
):
    """Batches of any size, split and merged for any number of workers,
    leave in order, and every source item is acknowledged exactly once."""
    acked: list[int] = []
    total = sum(batches)

    class Batches(ns.NanoStreamProcessor):
        def generate_batches(self):
            start = 0
            for size in batches:
                yield [
                    ns.WithAck(i, lambda i=i: acked.append(i)) for i in range(start, start + size)
                ]
                start += size

    class Delayed(ns.NanoStreamProcessor):
        async def process_item(self, message):
            await trio.sleep(delays[message % len(delays)])
            return message

    async def main():
        graph = ns.NanoStreamGraph("property")
        graph.add("source", Batches())
        graph.add("node", Delayed(), ["source"], workers=workers, max_batch=max_batch)
        sinks = [Collector() for _ in range(2 if fan_out else 1)]
        for index, sink in enumerate(sinks):
            graph.add(f"sink{index}", sink, ["node"])
        run = await ns.run_graph(graph)
        return sinks, run

    sinks, run = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for sink in sinks:
        assert sink.items == list(range(total))
    assert sorted(acked) == list(range(total))
    assert run.stats["node"].received == total
    assert run.stats["node"].in_progress == 0
