"""A keyed tumbling-window count: NanoStream's Window against bytewax, in one run.

Every contender counts the same items per user per 10-second tumbling
window of event time, and its windows (user, start, count) must equal the
plain loop's:

* a plain Python loop over a dict (the ceiling for one Python thread);
* bytewax's ``count_window`` with an ``EventClock`` and a
  ``TumblingWindower`` (``TestingSource`` with ``batch_size=256``, one
  worker, ``run_main``);
* NanoStream: a source of lists of 256 items, ``Window`` keyed by ``user``
  (``key: user``, ``time: ts``, ``size: 10s``), a sink; with a
  ``state_dir`` on disk, where its state is saved at each checkpoint
  (every ``--checkpoint-interval`` seconds; the header says how many each
  run saved).

Items are ``{"user": "u<k>", "ts": <seconds since the epoch>}``, in time
order, 1,000 per second of event time, users spread evenly. Rounds are
interleaved (every contender once per round, in a new random order); a
figure is the median over the rounds with the min..max beside it, and each
ratio is taken round by round. Only ratios within one run mean much on a
shared machine.

    python benchmarks/bench_state.py [--items N] [--users U] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import trio
from bench_chain import BATCH, bytewax_version, machine, rate, ratios, spread, times

import nanostream as ns

if bytewax_version:
    import bytewax.operators as bw_op
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, count_window
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main

#: The window's length, in seconds of event time.
SIZE = 10
#: When the items' times begin (a whole multiple of SIZE).
EPOCH = 1_700_000_000.0

Windows = set[tuple[str, float, int]]


def make_items(count: int, users: int) -> list[dict]:
    return [{"user": f"u{(i * 7919) % users}", "ts": EPOCH + i / 1000} for i in range(count)]


# -- contenders: each returns the windows it found, as (user, start, count) --


def plain_loop(items: list[dict]) -> Windows:
    counts: dict[tuple[str, float], int] = {}
    for item in items:
        ts = item["ts"]
        window = (item["user"], ts - ts % SIZE)
        counts[window] = counts.get(window, 0) + 1
    return {(user, start, count) for (user, start), count in counts.items()}


if bytewax_version:

    class _ListSink(DynamicSink):
        def __init__(self, found: list) -> None:
            self.found = found

        def build(self, step_id, worker_index, worker_count):
            found = self.found

            class Partition(StatelessSinkPartition):
                def write_batch(self, items):
                    found.extend(items)

            return Partition()

    def event_time(item: dict) -> datetime:
        return datetime.fromtimestamp(item["ts"], UTC)

    def user_of(item: dict) -> str:
        return item["user"]

    def bytewax_count(items: list[dict]) -> Windows:
        found: list = []
        flow = Dataflow("window_count")
        stream = bw_op.input("source", flow, TestingSource(items, batch_size=BATCH))
        clock = EventClock(event_time, wait_for_system_duration=timedelta(0))
        windower = TumblingWindower(
            length=timedelta(seconds=SIZE), align_to=datetime.fromtimestamp(0, UTC)
        )
        counted = count_window("count", stream, clock, windower, user_of)
        bw_op.output("sink", counted.down, _ListSink(found))
        run_main(flow)
        # count_window's window ids count windows from align_to.
        return {(user, float(window * SIZE), count) for user, (window, count) in found}


class Batches(ns.NanoStreamProcessor):
    """The items in lists of BATCH, saving its position at checkpoints as a
    restartable source does."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items
        self.position = 0

    def generate_batches(self):
        items = self.items
        while self.position < len(items):
            start = self.position
            self.position += BATCH
            yield items[start : start + BATCH]

    def snapshot(self) -> int:
        return self.position

    def restore(self, position: int) -> None:
        self.position = position


class Found(ns.NanoStreamProcessor):
    def __init__(self) -> None:
        self.windows: Windows = set()

    def process_batch(self, messages):
        self.windows.update((m["key"], m["start"], m["count"]) for m in messages)


#: Seconds between two checkpoints of the NanoStream runs (--checkpoint-interval).
CHECKPOINT_INTERVAL = [0.1]
#: How many checkpoints each NanoStream run saved.
CHECKPOINTS: list[int] = []


def nanostream_count(items: list[dict]) -> Windows:
    with tempfile.TemporaryDirectory(prefix="bench-state-") as state_dir:
        graph = ns.NanoStreamGraph(
            "window_count", state_dir=state_dir, checkpoint_interval=CHECKPOINT_INTERVAL[0]
        )
        graph.add("source", Batches(items))
        graph.add("count", ns.Window(size=SIZE, time="ts"), ["source"], key="user")
        found = graph.add("sink", Found(), ["count"])
        run = trio.run(ns.run_graph, graph)
        if run.checkpoints is not None:
            CHECKPOINTS.append(run.checkpoints.saved)
    return found.windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items per run (1,000,000)")
    parser.add_argument("--users", type=int, default=1000, help="distinct keys (1000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the round order")
    parser.add_argument(
        "--checkpoint-interval",
        type=float,
        default=0.1,
        help="seconds between NanoStream's checkpoints to its state_dir (0.1)",
    )
    args = parser.parse_args()
    CHECKPOINT_INTERVAL[0] = args.checkpoint_interval
    shuffle = random.Random(args.seed).shuffle
    items = make_items(args.items, args.users)
    contenders: dict[str, Callable[[list[dict]], Windows]] = {
        "plain Python loop over a dict": plain_loop,
        "NanoStream `Window`": nanostream_count,
    }
    if bytewax_version:
        contenders["bytewax `count_window`"] = bytewax_count
    wanted = plain_loop(items)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        order = list(contenders)
        shuffle(order)
        for name in order:
            started = time.perf_counter()
            windows = contenders[name](items)
            seconds[name].append(time.perf_counter() - started)
            if windows != wanted:
                missing, extra = len(wanted - windows), len(windows - wanted)
                raise AssertionError(f"{name}: {missing} windows missing, {extra} unexpected")

    print("# Keyed tumbling-window count\n")
    print(f"{machine()}")
    print(
        f"{args.items:,} items, {args.users:,} keys, {SIZE}s windows: {len(wanted):,} windows "
        f"checked equal for every contender; {args.rounds} interleaved rounds; NanoStream "
        f"with a state_dir on disk, a checkpoint every {args.checkpoint_interval:g}s "
        f"({', '.join(map(str, CHECKPOINTS)) or 'none'} saved per run, the last at the end).\n"
    )
    print("| contender | items/s, median (min..max) | vs bytewax, median (min..max) |")
    print("|---|---|---|")
    baseline = seconds.get("bytewax `count_window`")
    for name, spent in seconds.items():
        per_second = [args.items / s for s in spent]
        versus = "-"
        if baseline is not None:
            versus = spread(ratios(baseline, spent), times)
        print(f"| {name} | {spread(per_second, rate)} | {versus} |")
    if baseline is None:
        print("\nbytewax is absent (pip install -e '.[bench]'): no ratio to it.")
    else:
        print(
            "\nvs bytewax: bytewax's time over the contender's, round by round "
            "(above 1: the contender is faster)."
        )
    print(f"\nmedian seconds per run: {statistics.median(seconds['NanoStream `Window`']):.2f}")


if __name__ == "__main__":
    main()
