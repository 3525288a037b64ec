"""What watching a pipeline costs: a 10-stage chain with and without observers.

Runs the same 10-stage ``x + 1`` chain as ``bench_chain.py`` with nothing
watching, and with everything ``nanostream run`` can watch with: the
metrics server, a client scraping ``/metrics`` every --scrape-interval
seconds (far more often than Prometheus's usual 15 s), and the live table
redrawn four times a second on a terminal console that writes to
``os.devnull``. The scraper runs in the same process and event loop, so its
cost counts against the pipeline too. The two alternate, run after run;
the figures are medians. The overhead is the median, over pairs of runs
side by side, of the ratio of their times, both in wall-clock time and in
the CPU time of this process: on a shared, loaded machine the other
tenants blur wall-clock time far more than CPU time, and the pipeline is
CPU-bound, so CPU time is the figure to trust there.

    python benchmarks/bench_observe.py [--items N] [--repeat R] [--scrape-interval S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import trio
from bench_chain import Count, chain_graph
from rich.console import Console

import nanostream as ns
from nanostream.observe import RunHolder, serve_observed, show_live

STAGES = 10


Timing = tuple[float, float]


def clocks() -> Timing:
    """Wall-clock and process CPU time now, in seconds."""
    return time.perf_counter(), time.process_time()


def since(started: Timing) -> Timing:
    now = clocks()
    return now[0] - started[0], now[1] - started[1]


def unobserved(items: int, scrape_interval: float) -> Timing:
    """Seconds (wall, CPU) to run the chain with nothing watching."""
    graph = chain_graph(STAGES, Count(items), ns.BlackHole())
    started = clocks()
    trio.run(ns.run_graph, graph)
    return since(started)


async def scrape_forever(port: int, interval: float) -> None:
    """GET /metrics every ``interval`` seconds, reading the whole answer."""
    while True:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
            while await stream.receive_some():
                pass
        await trio.sleep(interval)


def observed(items: int, scrape_interval: float) -> Timing:
    """Seconds (wall, CPU) to run the chain with the server, a scraper and the live table."""
    graph = chain_graph(STAGES, Count(items), ns.BlackHole())
    holder = RunHolder(graph)

    async def main() -> Timing:
        with open(os.devnull, "w") as null:
            console = Console(file=null, force_terminal=True, width=120)
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_observed, holder, 0)

                async def run_then_stop(task_status: trio.TaskStatus) -> None:
                    await ns.run_graph(graph, task_status=task_status)
                    holder.finished(trio.current_time())
                    nursery.cancel_scope.cancel()

                started = clocks()
                holder.started(await nursery.start(run_then_stop), trio.current_time())
                nursery.start_soon(scrape_forever, port, scrape_interval)
                nursery.start_soon(show_live, holder, console)
            return since(started)

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    args = parser.parse_args()

    off: list[Timing] = []
    on: list[Timing] = []
    for _ in range(args.repeat):
        off.append(unobserved(args.items, args.scrape_interval))
        on.append(observed(args.items, args.scrape_interval))
    print(
        f"{STAGES}-stage chain, {args.items:,} items, median of {args.repeat} alternating runs; "
        f"scraped every {args.scrape_interval:g}s, live table to {os.devnull}"
    )
    for label, timings in (("nothing watching", off), ("metrics + scraper + table", on)):
        wall = statistics.median(wall for wall, _ in timings)
        print(f"{label:>28}: {args.items / wall:>12,.0f} items/s")
    for clock, name in ((0, "wall-clock"), (1, "CPU")):
        ratios = [b[clock] / a[clock] for a, b in zip(off, on, strict=True)]
        print(f"{'overhead, ' + name + ' time':>28}: {statistics.median(ratios) - 1:>+12.1%}")


if __name__ == "__main__":
    main()
