"""The executors against each other and against multiprocessing.Pool.

Four stages, each run in a one-stage pipeline (source -> stage -> sink),
every contender doing the same work on the same items with its output
checked, runs interleaved, figures the median of --repeat runs with the
min..max spread:

* CPU-bound (~50 us of pure Python per item): ``executor: process,
  workers: 2`` against the loop executor, and against
  ``multiprocessing.Pool(2).imap(chunksize=256)`` (pool start included,
  as the pipeline's worker start is).
* Blocking (``time.sleep(0.01)`` per item): ``executor: thread, workers:
  16`` against the loop executor.
* Async (``await trio.sleep(0.01)`` per item): ``workers: 16`` against
  ``workers: 1``, the source at its default ``max_batch``.
* Trivial (``x + 1``): what ``thread`` and ``process`` cost per item over
  ``loop``.

    python benchmarks/bench_executors.py [--repeat R] [--scale S]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import time
from collections.abc import Callable

import trio

import nanostream as ns

#: Iterations of :func:`spin` per item, calibrated to ~50 us at start.
SPINS = 500


def spin(x: int, spins: int) -> int:
    """~50 us of pure Python arithmetic (with the calibrated ``spins``)."""
    h = x
    for _ in range(spins):
        h = (h * 1103515245 + 12345) & 0xFFFFFFFF
    return h


def calibrate(target: float = 50e-6) -> int:
    count = 20_000
    started = time.perf_counter()
    spin(1, count)
    per_spin = (time.perf_counter() - started) / count
    return max(1, round(target / per_spin))


class Spin(ns.NanoStreamProcessor):
    def __init__(self, spins: int) -> None:
        self.spins = spins

    def process_item(self, message):
        return spin(message, self.spins)


class Block(ns.NanoStreamProcessor):
    def process_item(self, message):
        time.sleep(0.01)
        return message


class Await(ns.NanoStreamProcessor):
    async def process_item(self, message):
        await trio.sleep(0.01)
        return message


class Increment(ns.NanoStreamProcessor):
    def process_item(self, message):
        return message + 1


class Sum(ns.NanoStreamProcessor):
    """A sink that adds up what it receives, to check every contender's output."""

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def process_batch(self, messages):
        self.total += sum(messages)
        self.count += len(messages)


def pipeline(items: list, stage: ns.NanoStreamProcessor, **options) -> tuple[float, int]:
    """Seconds to run ``items`` through ``stage``, and the sum of its output."""
    graph = ns.NanoStreamGraph("bench")
    graph.add("source", ns.SequenceEmitter(items))
    graph.add("stage", stage, ["source"], **options)
    sink = Sum()
    graph.add("sink", sink, ["stage"])
    started = time.perf_counter()
    trio.run(ns.run_graph, graph)
    elapsed = time.perf_counter() - started
    assert sink.count == len(items), (sink.count, len(items))
    return elapsed, sink.total


def pool(items: list, spins: int) -> tuple[float, int]:
    started = time.perf_counter()
    with multiprocessing.Pool(2) as workers:
        total = sum(workers.imap(_spin_item, [(x, spins) for x in items], chunksize=256))
    return time.perf_counter() - started, total


def _spin_item(args: tuple[int, int]) -> int:
    return spin(*args)


def race(contenders: dict[str, Callable[[], tuple[float, int]]], repeat: int) -> dict:
    """Each contender ``repeat`` times, interleaved (rotating who goes first);
    their times, after checking that all produced the same total."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    expected = None
    for round_ in range(repeat):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            elapsed, total = contenders[name]()
            if expected is None:
                expected = total
            assert total == expected, f"{name} produced {total}, not {expected}"
            times[name].append(elapsed)
    return times


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}s ({min(values):.3f}..{max(values):.3f})"


def ratio(faster: list[float], slower: list[float]) -> str:
    pairs = sorted(s / f for f, s in zip(faster, slower, strict=True))
    return f"{statistics.median(pairs):.2f}x ({pairs[0]:.2f}..{pairs[-1]:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the item counts")
    args = parser.parse_args()
    # The loop contenders hold the loop on purpose: no warning about it.
    logging.getLogger("nanostream").setLevel(logging.ERROR)
    spins = calibrate()
    cpu_items = list(range(int(40_000 * args.scale)))
    wait_items = list(range(int(400 * args.scale)))
    trivial_items = list(range(int(200_000 * args.scale)))
    print(f"spin: {spins} iterations per item (~50 us); {args.repeat} interleaved runs each\n")

    cpu = race(
        {
            "loop": lambda: pipeline(cpu_items, Spin(spins)),
            "process x2": lambda: pipeline(cpu_items, Spin(spins), executor="process", workers=2),
            "Pool(2).imap": lambda: pool(cpu_items, spins),
        },
        args.repeat,
    )
    blocking = race(
        {
            "loop": lambda: pipeline(wait_items, Block()),
            "thread x16": lambda: pipeline(wait_items, Block(), executor="thread", workers=16),
        },
        args.repeat,
    )
    waiting = race(
        {
            "workers 1": lambda: pipeline(wait_items, Await()),
            "workers 16": lambda: pipeline(wait_items, Await(), workers=16),
        },
        args.repeat,
    )
    trivial = race(
        {
            "loop": lambda: pipeline(trivial_items, Increment()),
            "thread": lambda: pipeline(trivial_items, Increment(), executor="thread"),
            "process": lambda: pipeline(trivial_items, Increment(), executor="process"),
        },
        args.repeat,
    )

    print("| stage | contender | time, median (min..max) | speed-up, median (min..max) |")
    print("|---|---|---:|---:|")
    rows = [
        ("CPU-bound", cpu, "loop", ["process x2", "Pool(2).imap"]),
        ("blocking", blocking, "loop", ["thread x16"]),
        ("async wait", waiting, "workers 1", ["workers 16"]),
    ]
    for stage, times, base, others in rows:
        print(
            f"| {stage} ({len(cpu_items if stage == 'CPU-bound' else wait_items):,} items) "
            f"| {base} | {spread(times[base])} | 1.00x |"
        )
        for other in others:
            print(f"| | {other} | {spread(times[other])} | {ratio(times[other], times[base])} |")
    print(
        "\nprocess x2 against Pool(2).imap: "
        f"{ratio(cpu['process x2'], cpu['Pool(2).imap'])} of the Pool's speed"
    )
    print(f"\ntrivial x + 1 ({len(trivial_items):,} items):")
    loop = statistics.median(trivial["loop"])
    for name in ("thread", "process"):
        extra = (statistics.median(trivial[name]) - loop) / len(trivial_items) * 1e6
        print(
            f"  {name}: {spread(trivial[name])} vs loop {spread(trivial['loop'])}: "
            f"{extra:+.2f} us per item"
        )


if __name__ == "__main__":
    main()
