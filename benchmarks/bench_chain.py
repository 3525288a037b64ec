"""Throughput, latency and memory of a chain of trivial stages.

Runs chains of 1, 3 and 10 ``x + 1`` stages through NanoStream and, in the
same run, through a plain generator chain (the ceiling for one Python
thread) and through threads joined by a ``queue.Queue`` per edge (the
original NanoStream design). Only ratios between figures of the same run
mean anything on a shared machine; each figure is the median of --repeat
runs.

    python benchmarks/bench_chain.py [--items N] [--repeat R] [--memory-items M]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time

import trio

import nanostream as ns


class Increment(ns.NanoStreamProcessor):
    def process_item(self, message):
        return message + 1


class Count(ns.NanoStreamProcessor):
    def generate(self):
        yield from range(self.count)

    def __init__(self, count):
        self.count = count


def increment(x):
    return x + 1


def plain_chain(items: int, stages: int) -> float:
    started = time.perf_counter()
    stream = iter(range(items))
    for _ in range(stages):
        stream = (increment(x) for x in stream)
    for _ in stream:
        pass
    return items / (time.perf_counter() - started)


def threads_chain(items: int, stages: int) -> float:
    end = object()
    queues = [queue.Queue(maxsize=1000) for _ in range(stages + 1)]

    def stage(inbox: queue.Queue, outbox: queue.Queue) -> None:
        while (item := inbox.get()) is not end:
            outbox.put(increment(item))
        outbox.put(end)

    def feed(outbox: queue.Queue) -> None:
        for item in range(items):
            outbox.put(item)
        outbox.put(end)

    threads = [threading.Thread(target=feed, args=(queues[0],))]
    threads += [
        threading.Thread(target=stage, args=(queues[i], queues[i + 1])) for i in range(stages)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while queues[-1].get() is not end:
        pass
    for thread in threads:
        thread.join()
    return items / (time.perf_counter() - started)


def chain_graph(stages: int, source: ns.NanoStreamProcessor, sink: ns.NanoStreamProcessor):
    graph = ns.NanoStreamGraph(f"chain-{stages}")
    graph.add("source", source)
    previous = "source"
    for index in range(stages):
        graph.add(f"stage{index}", Increment(), [previous])
        previous = f"stage{index}"
    graph.add("sink", sink, [previous])
    return graph


def nanostream_chain(items: int, stages: int) -> float:
    graph = chain_graph(stages, Count(items), ns.BlackHole())
    started = time.perf_counter()
    trio.run(ns.run_graph, graph)
    return items / (time.perf_counter() - started)


def idle_latency(stages: int, samples: int) -> float:
    """Median seconds for one item to cross an idle pipeline."""

    async def main() -> float:
        feed, inbox = trio.open_memory_channel(1)
        outbox, results = trio.open_memory_channel(1)
        graph = chain_graph(stages, ns.ChannelSource(inbox), ns.ChannelSink(outbox))
        times = []
        async with trio.open_nursery() as nursery:
            await nursery.start(ns.run_graph, graph)
            for item in range(samples):
                await trio.sleep(0.001)  # let the pipeline go idle
                started = time.perf_counter()
                await feed.send(item)
                await results.receive()
                times.append(time.perf_counter() - started)
            await feed.aclose()
        return statistics.median(times)

    return trio.run(main)


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_profile(items: int, stages: int) -> list[tuple[int, int]]:
    """Resident memory (KiB) sampled as ``items`` stream through."""
    samples: list[tuple[int, int]] = []
    step = max(items // 10, 1)

    class Sample(ns.NanoStreamProcessor):
        def process_batch(self, messages):
            before = self.seen
            self.seen += len(messages)
            if self.seen // step != before // step:
                samples.append((self.seen, resident_kib()))

        seen = 0

    trio.run(ns.run_graph, chain_graph(stages, Count(items), Sample()))
    return samples


def median_of(repeat: int, measure, *args) -> float:
    return statistics.median(measure(*args) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--thread-items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-items", type=int, default=10_000_000)
    args = parser.parse_args()

    print(
        f"items/s, median of {args.repeat} runs ({args.items:,} items; "
        f"threads: {args.thread_items:,} items)"
    )
    print(
        f"{'stages':>6} {'plain':>12} {'threads':>10} {'nanostream':>12} "
        f"{'ns/plain':>9} {'ns/threads':>11}"
    )
    for stages in (1, 3, 10):
        plain = median_of(args.repeat, plain_chain, args.items, stages)
        threads = median_of(args.repeat, threads_chain, args.thread_items, stages)
        nano = median_of(args.repeat, nanostream_chain, args.items, stages)
        print(
            f"{stages:>6} {plain:>12,.0f} {threads:>10,.0f} {nano:>12,.0f} "
            f"{nano / plain:>8.0%} {nano / threads:>10.1f}x"
        )

    latency = idle_latency(10, 300)
    print(f"idle latency, one item through 10 stages: {latency * 1e6:,.0f} us median")

    if args.memory_items:
        profile = memory_profile(args.memory_items, 10)
        first, last = profile[0], profile[-1]
        print(
            f"resident memory over {args.memory_items:,} items through 10 stages: "
            f"{first[1] / 1024:.1f} MiB after {first[0]:,}, "
            f"{last[1] / 1024:.1f} MiB after {last[0]:,} "
            f"(max {max(kib for _, kib in profile) / 1024:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
