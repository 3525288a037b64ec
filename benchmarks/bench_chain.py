"""NanoStream against the fastest ways to run the same chain, in one run.

Three measurements, each interleaved: every round runs every contender once,
in a new random order, and a figure is the median over the rounds with the
min..max beside it. Only ratios within one run mean much on a shared machine,
and the contenders that a ratio compares run one after another, so that
they meet the machine in the same state.

* Throughput of K = 1, 3, 10 stages of ``x + 1`` behind a source of
  ``range(N)``: an inline generator chain (the ceiling for one Python
  thread), a chain calling a function per stage, threads joined by a
  ``queue.Queue`` per edge, hand-written trio and asyncio sending lists of
  256 items per channel operation, bytewax with ``batch_size=256``, and
  NanoStream with operator chaining on and off (``chain: false``). Every
  contender but the inline chain calls a function per item per stage, and
  every sink does the same per-item work (count, sum, order check, one loop
  over what it receives); the result is checked
  against the expected count and sum, in order.
* Idle latency: one item at a time through 10 stages, a millisecond apart;
  the time from the source emitting an item to the sink receiving it,
  p50 and p99 over every sample of every round.
* A CSV -> Filter -> Map -> JSON Lines pipeline (FileReader, Filter, Map,
  FileWriter) against a plain ``csv.DictReader`` loop doing the same; the
  two output files must be byte for byte the same.

bytewax comes with the ``bench`` extra (``pip install -e '.[bench]'``);
without it its rows say so and the rest runs.

    python benchmarks/bench_chain.py [--quick] [--items N] [--rounds R] ...
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import json
import os
import platform
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable

import trio

import nanostream as ns
from nanostream.nodes.files import FileReader, FileWriter
from nanostream.nodes.functions import Filter, Map

try:
    import bytewax.operators as bw_op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import DynamicSource, StatelessSourcePartition
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main
except ImportError:
    bytewax_version = None
else:
    from importlib.metadata import version

    bytewax_version = version("bytewax")

#: Items per channel operation of the hand-written trio and asyncio chains,
#: and bytewax's ``batch_size``.
BATCH = 256
#: Batches a hand-written channel holds, as NanoStream's default ``buffer_size``.
BUFFER = 16
STAGES = (1, 3, 10)
CHAINED, UNCHAINED = "NanoStream, chained", "NanoStream, unchained"


PLAIN_CSV = "plain `csv.DictReader` loop"
LATENCY_STAGES = 10
#: Seconds between two items of the latency runs, so that the pipeline is idle.
LATENCY_GAP = 0.001


def increment(x):
    return x + 1


class Tally:
    """What every sink does with each item it receives: count it, add it up
    and check that it came after the one before."""

    def __init__(self) -> None:
        self.count = self.total = self.disorder = 0
        self.last = -1

    def add_all(self, items: Iterable[int]) -> None:
        count, total, last, disorder = self.count, self.total, self.last, self.disorder
        for x in items:
            count += 1
            total += x
            if x < last:
                disorder += 1
            last = x
        self.count, self.total, self.last, self.disorder = count, total, last, disorder

    def result(self) -> tuple[int, int, int]:
        """(items, their sum, items that came before one sent earlier)."""
        return self.count, self.total, self.disorder


def expected(items: int, stages: int) -> tuple[int, int, int]:
    return items, items * (items - 1) // 2 + items * stages, 0


# -- throughput contenders: each runs `stages` increments over range(items) --


def inline_chain(items: int, stages: int) -> tuple[int, int, int]:
    tally = Tally()
    stream = iter(range(items))
    for _ in range(stages):
        stream = (x + 1 for x in stream)
    tally.add_all(stream)
    return tally.result()


def function_chain(items: int, stages: int) -> tuple[int, int, int]:
    tally = Tally()
    stream = iter(range(items))
    for _ in range(stages):
        stream = (increment(x) for x in stream)
    tally.add_all(stream)
    return tally.result()


def threads_chain(items: int, stages: int) -> tuple[int, int, int]:
    end = object()
    tally = Tally()
    queues = [queue.Queue(maxsize=BUFFER * BATCH) for _ in range(stages + 1)]

    def feed(outbox: queue.Queue) -> None:
        for x in range(items):
            outbox.put(x)
        outbox.put(end)

    def stage(inbox: queue.Queue, outbox: queue.Queue) -> None:
        for x in iter(inbox.get, end):
            outbox.put(increment(x))
        outbox.put(end)

    threads = [threading.Thread(target=feed, args=(queues[0],))]
    threads += [
        threading.Thread(target=stage, args=(queues[i], queues[i + 1])) for i in range(stages)
    ]
    for thread in threads:
        thread.start()
    tally.add_all(iter(queues[-1].get, end))
    for thread in threads:
        thread.join()
    return tally.result()


async def trio_chain(batches, stages: int, receive_all: Callable[[list], None]) -> None:
    """Hand-written trio: a task per stage, a memory channel per edge, a list per send."""

    async def source(outbox: trio.MemorySendChannel) -> None:
        async with outbox:
            async for batch in batches:
                await outbox.send(batch)

    async def stage(inbox: trio.MemoryReceiveChannel, outbox: trio.MemorySendChannel) -> None:
        async with inbox, outbox:
            async for batch in inbox:
                await outbox.send([increment(x) for x in batch])

    async def sink(inbox: trio.MemoryReceiveChannel) -> None:
        async with inbox:
            async for batch in inbox:
                receive_all(batch)

    async with trio.open_nursery() as nursery:
        outbox, inbox = trio.open_memory_channel(BUFFER)
        nursery.start_soon(source, outbox)
        for _ in range(stages):
            outbox, next_inbox = trio.open_memory_channel(BUFFER)
            nursery.start_soon(stage, inbox, outbox)
            inbox = next_inbox
        nursery.start_soon(sink, inbox)


async def asyncio_chain(batches, stages: int, receive_all: Callable[[list], None]) -> None:
    """Hand-written asyncio: a task per stage, a queue per edge, a list per put."""
    end = None

    async def source(outbox: asyncio.Queue) -> None:
        async for batch in batches:
            await outbox.put(batch)
        await outbox.put(end)

    async def stage(inbox: asyncio.Queue, outbox: asyncio.Queue) -> None:
        while (batch := await inbox.get()) is not end:
            await outbox.put([increment(x) for x in batch])
        await outbox.put(end)

    async def sink(inbox: asyncio.Queue) -> None:
        while (batch := await inbox.get()) is not end:
            receive_all(batch)

    queues = [asyncio.Queue(BUFFER) for _ in range(stages + 1)]
    async with asyncio.TaskGroup() as group:
        group.create_task(source(queues[0]))
        for index in range(stages):
            group.create_task(stage(queues[index], queues[index + 1]))
        group.create_task(sink(queues[-1]))


async def lists_of(items: int):
    for start in range(0, items, BATCH):
        yield list(range(start, min(start + BATCH, items)))


def trio_lists(items: int, stages: int) -> tuple[int, int, int]:
    tally = Tally()
    trio.run(trio_chain, lists_of(items), stages, tally.add_all)
    return tally.result()


def asyncio_lists(items: int, stages: int) -> tuple[int, int, int]:
    tally = Tally()
    asyncio.run(asyncio_chain(lists_of(items), stages, tally.add_all))
    return tally.result()


if bytewax_version:

    class _CallSink(DynamicSink):
        """A bytewax sink handing each batch to ``receive_all``."""

        def __init__(self, receive_all: Callable[[list], None]) -> None:
            self.receive_all = receive_all

        def build(self, step_id, worker_index, worker_count):
            receive_all = self.receive_all

            class Partition(StatelessSinkPartition):
                def write_batch(self, items):
                    receive_all(items)

            return Partition()

    def bytewax_flow(source, stages: int, receive_all: Callable[[list], None]) -> None:
        flow = Dataflow("chain")
        stream = bw_op.input("source", flow, source)
        for index in range(stages):
            stream = bw_op.map(f"stage{index}", stream, increment)
        bw_op.output("sink", stream, _CallSink(receive_all))
        run_main(flow)

    def bytewax_chain(items: int, stages: int) -> tuple[int, int, int]:
        tally = Tally()
        bytewax_flow(TestingSource(range(items), batch_size=BATCH), stages, tally.add_all)
        return tally.result()


class Count(ns.NanoStreamProcessor):
    def __init__(self, count: int) -> None:
        self.count = count

    def generate(self):
        yield from range(self.count)


class Increment(ns.NanoStreamProcessor):
    def process_item(self, message):
        return message + 1


class CallSink(ns.NanoStreamProcessor):
    """A sink handing each batch to ``receive_all``."""

    def __init__(self, receive_all: Callable[[list], None]) -> None:
        self.receive_all = receive_all

    def process_batch(self, messages):
        self.receive_all(messages)


def chain_graph(stages: int, source, sink, chain: bool = True) -> ns.NanoStreamGraph:
    graph = ns.NanoStreamGraph(f"chain-{stages}")
    graph.add("source", source)
    previous = "source"
    for index in range(stages):
        graph.add(f"stage{index}", Increment(), [previous], chain=chain)
        previous = f"stage{index}"
    graph.add("sink", sink, [previous], chain=chain)
    return graph


def nanostream_chain(items: int, stages: int, chain: bool = True) -> tuple[int, int, int]:
    tally = Tally()
    graph = chain_graph(stages, Count(items), CallSink(tally.add_all), chain=chain)
    trio.run(ns.run_graph, graph)
    return tally.result()


def nanostream_unchained(items: int, stages: int) -> tuple[int, int, int]:
    return nanostream_chain(items, stages, chain=False)


# -- idle latency: one item at a time through LATENCY_STAGES stages --


class Latencies:
    """Stamps taken as the source emits item i, and the delays measured as the
    sink receives item i + stages."""

    def __init__(self, stages: int) -> None:
        self.stages = stages
        self.sent: list[float] = []
        self.delays: list[float] = []

    def emit(self) -> int:
        self.sent.append(time.perf_counter())
        return len(self.sent) - 1

    def receive_all(self, items: list[int]) -> None:
        now = time.perf_counter()
        for x in items:
            self.delays.append(now - self.sent[x - self.stages])

    def result(self) -> list[float]:
        if len(self.delays) != len(self.sent):
            raise AssertionError(f"{len(self.sent)} items sent, {len(self.delays)} received")
        return self.delays


def nanostream_latency(samples: int, chain: bool = True) -> list[float]:
    latencies = Latencies(LATENCY_STAGES)

    class Ticks(ns.NanoStreamProcessor):
        async def generate(self):
            for _ in range(samples):
                await trio.sleep(LATENCY_GAP)
                yield latencies.emit()

    sink = CallSink(latencies.receive_all)
    trio.run(ns.run_graph, chain_graph(LATENCY_STAGES, Ticks(), sink, chain=chain))
    return latencies.result()


def nanostream_unchained_latency(samples: int) -> list[float]:
    return nanostream_latency(samples, chain=False)


def trio_latency(samples: int) -> list[float]:
    latencies = Latencies(LATENCY_STAGES)

    async def ticks():
        for _ in range(samples):
            await trio.sleep(LATENCY_GAP)
            yield [latencies.emit()]

    trio.run(trio_chain, ticks(), LATENCY_STAGES, latencies.receive_all)
    return latencies.result()


def asyncio_latency(samples: int) -> list[float]:
    latencies = Latencies(LATENCY_STAGES)

    async def ticks():
        for _ in range(samples):
            await asyncio.sleep(LATENCY_GAP)
            yield [latencies.emit()]

    asyncio.run(asyncio_chain(ticks(), LATENCY_STAGES, latencies.receive_all))
    return latencies.result()


if bytewax_version:

    class _Ticks(DynamicSource):
        """A bytewax source emitting one item per LATENCY_GAP, woken by ``next_awake``."""

        def __init__(self, samples: int, latencies: Latencies) -> None:
            self.samples = samples
            self.latencies = latencies

        def build(self, step_id, worker_index, worker_count):
            samples, latencies = self.samples, self.latencies
            gap = datetime.timedelta(seconds=LATENCY_GAP)

            class Partition(StatelessSourcePartition):
                def __init__(self) -> None:
                    self.awake = datetime.datetime.now(datetime.UTC) + gap

                def next_batch(self):
                    if len(latencies.sent) >= samples:
                        raise StopIteration
                    self.awake = datetime.datetime.now(datetime.UTC) + gap
                    return [latencies.emit()]

                def next_awake(self):
                    return self.awake

            return Partition()

    def bytewax_latency(samples: int) -> list[float]:
        latencies = Latencies(LATENCY_STAGES)
        bytewax_flow(_Ticks(samples, latencies), LATENCY_STAGES, latencies.receive_all)
        return latencies.result()


# -- the CSV pipeline --

COUNTRIES = ("NL", "DE", "FR", "BE", "IT", "ES", "PL", "SE")


def write_csv(path: str, rows: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "name", "country", "amount"])
        for n in range(rows):
            writer.writerow(
                [n, f"customer {n % 9973}", COUNTRIES[n % 8], f"{n % 1000}.{n % 100:02}"]
            )


def wanted(row: dict) -> bool:
    """The rows both pipelines keep: three countries of eight."""
    return row["country"] in ("NL", "DE", "BE")


def converted(row: dict) -> dict:
    """What both pipelines write for a row kept."""
    return {
        "id": int(row["id"]),
        "name": row["name"].upper(),
        "cents": round(float(row["amount"]) * 100),
    }


def wanted_record(record) -> bool:
    return wanted(record.data)


def converted_record(record) -> dict:
    return converted(record.data)


def csv_plain(source: str, target: str) -> None:
    with (
        open(source, newline="", encoding="utf-8") as rows,
        open(target, "w", encoding="utf-8") as out,
    ):
        for row in csv.DictReader(rows):
            if wanted(row):
                out.write(json.dumps(converted(row), ensure_ascii=False) + "\n")


def csv_nanostream(source: str, target: str, chain: bool = True) -> None:
    graph = ns.NanoStreamGraph("csv")
    graph.add("files", ns.SequenceEmitter([source]))
    graph.add("rows", FileReader(mode="csv"), ["files"], chain=chain)
    graph.add("wanted", Filter(f"{__name__}:wanted_record"), ["rows"], chain=chain)
    graph.add("converted", Map(f"{__name__}:converted_record"), ["wanted"], chain=chain)
    graph.add("jsonl", FileWriter(path=target, fsync=False), ["converted"], chain=chain)
    trio.run(ns.run_graph, graph)


def csv_nanostream_unchained(source: str, target: str) -> None:
    csv_nanostream(source, target, chain=False)


# -- memory --


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_profile(items: int, stages: int) -> list[tuple[int, int]]:
    """Resident memory (KiB) sampled ten times as ``items`` stream through."""
    samples: list[tuple[int, int]] = []
    step = max(items // 10, 1)
    tally = Tally()

    def receive_all(messages: list[int]) -> None:
        before = tally.count
        tally.add_all(messages)
        if tally.count // step != before // step:
            samples.append((tally.count, resident_kib()))

    trio.run(ns.run_graph, chain_graph(stages, Count(items), CallSink(receive_all)))
    if tally.result() != expected(items, stages):
        raise AssertionError(f"memory run: got {tally.result()}")
    return samples


# -- the harness --


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}..{fmt(max(values))})"


def rate(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def times(ratio: float) -> str:
    return f"{ratio:.2f}x"


def ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """Round by round, ``ours`` over ``theirs``: each pair ran in the same round."""
    return [a / b for a, b in zip(ours, theirs, strict=True)]


def micro(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"bytewax {bytewax_version or 'absent'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items, rounds and samples")
    parser.add_argument("--items", type=int, help="items per throughput run (200,000)")
    parser.add_argument("--thread-items", type=int, help="items per threads run (items / 10)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (7)")
    parser.add_argument("--samples", type=int, help="latency samples per round (300)")
    parser.add_argument("--csv-rows", type=int, help="rows of the CSV file (500,000)")
    parser.add_argument("--memory-items", type=int, help="items of the memory run; 0 skips it")
    parser.add_argument("--seed", type=int, default=None, help="seed of the round order")
    args = parser.parse_args()
    quick = args.quick
    items = args.items or (50_000 if quick else 200_000)
    thread_items = args.thread_items or max(items // 10, 1)
    rounds = args.rounds or (3 if quick else 7)
    samples = args.samples or (100 if quick else 300)
    csv_rows = args.csv_rows or (50_000 if quick else 500_000)
    memory_items = args.memory_items if args.memory_items is not None else (0 if quick else 10**7)
    shuffle = random.Random(args.seed).shuffle

    throughput = {
        "plain chain, `x + 1` inline": inline_chain,
        "plain chain, a function per stage": function_chain,
        "threads + `queue.Queue`": threads_chain,
        f"trio, lists of {BATCH} per send": trio_lists,
        f"asyncio, lists of {BATCH} per put": asyncio_lists,
    }
    if bytewax_version:
        throughput[f"bytewax {bytewax_version}, `batch_size={BATCH}`"] = bytewax_chain
    modes = (CHAINED, UNCHAINED)
    throughput[CHAINED] = nanostream_chain
    throughput[UNCHAINED] = nanostream_unchained
    latency = {
        CHAINED: nanostream_latency,
        UNCHAINED: nanostream_unchained_latency,
        "trio, lists": trio_latency,
        "asyncio, lists": asyncio_latency,
    }
    if bytewax_version:
        latency[f"bytewax {bytewax_version}"] = bytewax_latency
    csv_runs = {
        PLAIN_CSV: csv_plain,
        CHAINED: csv_nanostream,
        UNCHAINED: csv_nanostream_unchained,
    }

    print(f"# bench_chain, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    print(f"command: {' '.join(['python', *sys.argv])}")
    if not bytewax_version:
        print("bytewax is not installed (pip install -e '.[bench]'): its rows are left out")
    print(
        f"{rounds} interleaved rounds; throughput over {items:,} items "
        f"(threads: {thread_items:,}); latency {samples} samples a round; CSV {csv_rows:,} rows"
    )

    rates: dict[tuple[str, int], list[float]] = {}
    delays: dict[str, list[float]] = {name: [] for name in latency}
    csv_rates: dict[str, list[float]] = {name: [] for name in csv_runs}
    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "rows.csv")
        write_csv(source, csv_rows)
        # A group is the runs whose results are compared with each other:
        # the contenders at one K, the latency runs, the CSV runs. A group's
        # runs follow each other, in a new random order every round, so that
        # a ratio compares runs made seconds apart, not minutes; the groups
        # are shuffled too.
        groups: list[list[Callable[[], None]]] = []
        for stages in STAGES:
            group = []
            for name, run in throughput.items():
                n = thread_items if run is threads_chain else items
                group.append(
                    lambda name=name, run=run, n=n, stages=stages: measure(
                        rates.setdefault((name, stages), []), run, n, stages
                    )
                )
            groups.append(group)
        groups.append(
            [
                lambda name=name, run=run: delays[name].extend(run(samples))
                for name, run in latency.items()
            ]
        )
        groups.append(
            [
                lambda name=name, run=run: csv_measure(
                    csv_rates[name], run, source, directory, csv_rows
                )
                for name, run in csv_runs.items()
            ]
        )
        for number in range(rounds):
            shuffle(groups)
            for group in groups:
                shuffle(group)
                for job in group:
                    job()
            print(f"round {number + 1}/{rounds} done", file=sys.stderr)

    print(f"\n## Throughput, items/s, median (min..max) of {rounds} rounds\n")
    print("| | " + " | ".join(f"K={k}" for k in STAGES) + " |")
    print("|---|" + "---:|" * len(STAGES))
    for name in throughput:
        cells = " | ".join(spread(rates[name, k], rate) for k in STAGES)
        print(f"| {name} | {cells} |")

    print(
        "\n## NanoStream's throughput as a ratio of each, median (min..max) of the rounds' ratios\n"
    )
    ours = [(mode, k) for mode in modes for k in STAGES]
    print("| NanoStream / | " + " | ".join(f"{mode[12:]}, K={k}" for mode, k in ours) + " |")
    print("|---|" + "---:|" * len(ours))
    for name in throughput:
        if name not in modes:
            cells = " | ".join(
                spread(ratios(rates[mode, k], rates[name, k]), times) for mode, k in ours
            )
            print(f"| {name} | {cells} |")

    print(f"\n## Idle latency through {LATENCY_STAGES} stages, us ({rounds * samples} samples)\n")
    print("| | p50 | p99 | max |\n|---|---:|---:|---:|")
    for name, values in delays.items():
        centiles = statistics.quantiles(values, n=100, method="inclusive")
        print(f"| {name} | {micro(centiles[49])} | {micro(centiles[98])} | {micro(max(values))} |")

    print(f"\n## CSV -> Filter -> Map -> JSON Lines, {csv_rows:,} rows, rows/s\n")
    print("| | rows/s, median (min..max) | / plain loop, median (min..max) |\n|---|---:|---:|")
    for name, values in csv_rates.items():
        relative = spread(ratios(values, csv_rates[PLAIN_CSV]), times)
        print(f"| {name} | {spread(values, rate)} | {relative} |")

    if memory_items:
        profile = memory_profile(memory_items, LATENCY_STAGES)
        first, last = profile[0], profile[-1]
        print(
            f"\nResident memory while {memory_items:,} items stream through "
            f"{LATENCY_STAGES} stages: {first[1] / 1024:.1f} MiB after {first[0]:,}, "
            f"{last[1] / 1024:.1f} MiB after {last[0]:,} "
            f"(max {max(kib for _, kib in profile) / 1024:.1f} MiB)"
        )


def measure(rates: list[float], run, items: int, stages: int) -> None:
    started = time.perf_counter()
    result = run(items, stages)
    elapsed = time.perf_counter() - started
    if result != expected(items, stages):
        raise AssertionError(
            f"{run.__name__}({items}, {stages}) gave (count, sum, disorder) {result}, "
            f"expected {expected(items, stages)}"
        )
    rates.append(items / elapsed)


def csv_measure(rates: list[float], run, source: str, directory: str, rows: int) -> None:
    target = os.path.join(directory, f"{run.__name__}.jsonl")
    reference = os.path.join(directory, "reference.jsonl")
    if not os.path.exists(reference):
        csv_plain(source, reference)
    if os.path.exists(target):
        os.remove(target)
    started = time.perf_counter()
    run(source, target)
    elapsed = time.perf_counter() - started
    with open(target, "rb") as got, open(reference, "rb") as want:
        if got.read() != want.read():
            raise AssertionError(f"{run.__name__} wrote {target} unlike the plain loop")
    rates.append(rows / elapsed)


if __name__ == "__main__":
    main()
