"""Objects older than a pipeline are left out of the garbage collector's scans while it runs."""

import gc
import weakref

import trio

from nanostream import NanoStreamGraph, NanoStreamProcessor, SequenceEmitter, run_graph


class FreezeCount(NanoStreamProcessor):
    """Notes how many objects are frozen while it handles an item."""

    def __init__(self):
        self.seen = []

    def process_item(self, message):
        self.seen.append(gc.get_freeze_count())
        return None


def counting(name="counting", items=(1,)):
    graph = NanoStreamGraph(name)
    graph.add("numbers", SequenceEmitter(list(items)))
    node = graph.add("count", FreezeCount(), ["numbers"])
    return graph, node


async def test_the_heap_is_frozen_while_a_pipeline_runs_and_given_back_after():
    assert gc.get_freeze_count() == 0
    graph, node = counting()
    await run_graph(graph)
    assert node.seen[0] > 1000  # modules, classes and the rest from before
    assert gc.get_freeze_count() == 0


async def test_garbage_from_before_a_run_is_collected_once_it_ends():
    class Cycle:
        pass

    cycle = Cycle()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    del cycle
    graph, _ = counting()
    await run_graph(graph)
    gc.collect()
    assert gone() is None


async def test_the_heap_stays_frozen_until_the_last_of_overlapping_runs_ends():
    first, first_node = counting("first")
    second, second_node = counting("second", items=(1, 2))
    async with trio.open_nursery() as nursery:
        run = await nursery.start(run_graph, first)
        await nursery.start(run_graph, second)
        run.stop()
    assert first_node.seen and second_node.seen
    assert all(count > 0 for count in first_node.seen + second_node.seen)
    assert gc.get_freeze_count() == 0


async def test_a_process_that_froze_objects_itself_is_left_alone():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        made_since = [[] for _ in range(10_000)]
        graph, node = counting()
        await run_graph(graph)
        # Frozen objects may be freed, but none were added, and none given back.
        assert 0 < node.seen[0] <= frozen
        assert 0 < gc.get_freeze_count() <= frozen
        assert len(made_since) == 10_000
    finally:
        gc.unfreeze()
