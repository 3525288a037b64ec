"""Throughput of the built-in function and sampling nodes against hand-written nodes.

Each built-in node runs in a one-stage pipeline beside a hand-written
``process_item`` node doing the same work, in the same run: ``Map`` of
``x + 1``, ``Filter`` of even numbers, ``Sampler(every=2)`` and
``CsvParser`` of one-line items. The ratio says what the built-in node
costs (or saves) per item; each figure is the median of --repeat runs.

    python benchmarks/bench_nodes.py [--items N] [--repeat R]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time

import trio

import nanostream as ns
from nanostream.nodes.csvparse import CsvParser
from nanostream.nodes.functions import Filter, Map
from nanostream.nodes.sampling import Sampler


def increment(x):
    return x + 1


def is_even(x):
    return x % 2 == 0


class Increment(ns.NanoStreamProcessor):
    def process_item(self, message):
        return message + 1


class Evens(ns.NanoStreamProcessor):
    def process_item(self, message):
        return message if message % 2 == 0 else None


class EverySecond(ns.NanoStreamProcessor):
    def __init__(self):
        self.seen = 0

    def process_item(self, message):
        self.seen += 1
        return message if self.seen % 2 == 1 else None


class ParseLine(ns.NanoStreamProcessor):
    def __init__(self):
        self.names = None

    def process_item(self, message):
        row = next(csv.reader([message]))
        if self.names is None:
            self.names = row
            return None
        return dict(zip(self.names, row, strict=True))


class Items(ns.NanoStreamProcessor):
    def __init__(self, items):
        self.items = items

    def generate(self):
        yield from self.items


def throughput(items: list, node: ns.NanoStreamProcessor) -> float:
    graph = ns.NanoStreamGraph("bench")
    graph.add("source", Items(items))
    graph.add("node", node, ["source"])
    graph.add("sink", ns.BlackHole(), ["node"])
    started = time.perf_counter()
    trio.run(ns.run_graph, graph)
    return len(items) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    numbers = list(range(args.items))
    lines = ["a,b,c", *(f"{n},x,{n * 2}" for n in range(args.items // 10))]
    cases = [
        ("Map(x + 1)", numbers, lambda: Map(f"{__name__}:increment"), Increment),
        ("Filter(even)", numbers, lambda: Filter(f"{__name__}:is_even"), Evens),
        ("Sampler(every=2)", numbers, lambda: Sampler(every=2), EverySecond),
        ("CsvParser(lines)", lines, CsvParser, ParseLine),
    ]
    print("| node | hand-written | built-in | built-in / hand-written |\n|---|---:|---:|---:|")
    for name, items, builtin, written in cases:
        rates: dict[str, list[float]] = {"builtin": [], "written": []}
        for _ in range(args.repeat):
            rates["written"].append(throughput(items, written()))
            rates["builtin"].append(throughput(items, builtin()))
        mine = statistics.median(rates["builtin"])
        theirs = statistics.median(rates["written"])
        print(f"| {name} | {theirs:,.0f}/s | {mine:,.0f}/s | {mine / theirs:.2f}x |")


if __name__ == "__main__":
    main()
