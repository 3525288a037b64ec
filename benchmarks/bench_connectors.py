"""Throughput of each connector against a hand-written loop with the same library.

Every pair does the same work on the same input, in the same run, runs
interleaved, and both outputs are checked. Beside throughput, the CPU time
each contender took is compared: on a shared, loaded machine it says what
a connector costs more steadily than the wall clock does.

* stdio: JSON Lines from a file through ``nanostream run`` (StdinReader ->
  StdoutWriter) against a Python script that parses and dumps each line;
  both are processes, started the same way.
* HttpServer: an httpx client in another process POSTs JSON bodies, 16
  requests in flight; against a bare ASGI app on hypercorn that keeps each
  body and answers 200.
* HttpClient: items POSTed as JSON, 16 in flight, to a hypercorn app in
  another process; against a hand-written httpx loop (a nursery and a
  semaphore of 16).
* HttpPoller: every page of a cursor-paginated API (100 items a page) in
  another process; against a hand-written httpx loop following the cursor.
* SqlWriter: rows into a table, in batches; against a hand-written
  SQLAlchemy loop inserting chunks of the same size, one transaction each,
  in a worker thread.
* SqlReader: every row of a table, once; against a hand-written SQLAlchemy
  ``fetchmany`` loop.

SQL runs against SQLite and, when the pgserver package is there, PostgreSQL.

    python benchmarks/bench_connectors.py [--repeat R] [--scale S] [--only NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa
import trio

import nanostream as ns

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from http_testbed import api

from nanostream.nodes.http import HttpClient, HttpPoller, HttpServer
from nanostream.nodes.sql import SqlReader, SqlWriter

IN_FLIGHT = 16
BATCH = 500


class Count(ns.NanoStreamProcessor):
    """A sink that counts what it receives."""

    def __init__(self) -> None:
        self.count = 0

    def process_batch(self, messages):
        self.count += len(messages)


class Items(ns.NanoStreamProcessor):
    def __init__(self, items):
        self.items = items

    def generate(self):
        yield from self.items


# -- HTTP peers, each in a process of its own -----------------------------------
#
# The peer (the API a client calls, the senders a server takes from) runs in
# another process, so that the process measured runs the connector alone.


async def post_all(url: str, count: int) -> None:
    """POST ``count`` JSON bodies, 16 in flight; print the seconds taken and
    how many were answered 200, as JSON."""
    statuses = []
    limit = trio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def post(number):
                async with limit:
                    statuses.append((await client.post(url, json={"n": number})).status_code)

            for number in range(count):
                nursery.start_soon(post, number)
        elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "ok": statuses.count(200)}))


def receiver() -> Callable:
    """An API that takes JSON bodies; ``GET /count`` says how many and their sum of n."""
    taken = {"count": 0, "sum": 0}

    async def handle(method, path, query, body):
        if method == "GET":
            return 200, {}, dict(taken)
        taken["count"] += 1
        taken["sum"] += json.loads(body)["n"]
        return 200, {}, b"{}"

    return handle


def paged_api(total: int) -> Callable:
    """``total`` items, 100 a page, by a cursor sent back as ``after``."""

    async def page(method, path, query, body):
        after = int(query.split("=")[1]) if query else 0
        data = [{"n": n} for n in range(after + 1, min(after + 100, total) + 1)]
        return 200, {}, {"data": data, "next": data[-1]["n"] if data else after}

    return page


async def serve_peer(kind: str, total: int) -> None:
    handler = receiver() if kind == "receiver" else paged_api(total)
    async with api(handler) as base:
        print(base, flush=True)
        await trio.sleep_forever()


@contextlib.contextmanager
def peer(kind: str, total: int = 0) -> Iterator[str]:
    """A peer API in a process of its own; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--peer", kind, str(total)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait()
        process.stdout.close()


def taken(base: str, count: int) -> None:
    """Check that the receiver at ``base`` took each of ``count`` bodies once."""
    assert httpx.get(base + "/count").json() == {"count": count, "sum": count * (count - 1) // 2}


async def load(url: str, count: int) -> float:
    """Bodies per second that senders in another process got 200 for."""
    done = await trio.run_process(
        [sys.executable, __file__, "--load", url, str(count)], capture_stdout=True
    )
    outcome = json.loads(done.stdout)
    assert outcome["ok"] == count, outcome
    return count / outcome["seconds"]


async def server_nanostream(count: int) -> float:
    sink = Count()
    server = HttpServer(port=0)
    graph = ns.NanoStreamGraph("bench")
    graph.add("hooks", server)
    graph.add("sink", sink, parents=["hooks"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        rate = await load(f"http://127.0.0.1:{server.bound_port}/", count)
        run.stop()
    assert sink.count == count
    return rate


async def server_bare(count: int) -> float:
    kept = []

    async def keep(method, path, query, body):
        kept.append(json.loads(body))
        return 200, {}, b'{"status": 200}'

    async with api(keep) as base:
        rate = await load(base + "/", count)
    assert len(kept) == count
    return rate


def client_nanostream(count: int) -> float:
    with peer("receiver") as base:
        graph = ns.NanoStreamGraph("bench")
        graph.add("items", Items([{"n": n} for n in range(count)]))
        graph.add("call", HttpClient(url=base + "/", concurrency=IN_FLIGHT), parents=["items"])
        started = time.perf_counter()
        trio.run(ns.run_graph, graph)
        elapsed = time.perf_counter() - started
        taken(base, count)
    return count / elapsed


def client_bare(count: int) -> float:
    async def main(base):
        limit = trio.Semaphore(IN_FLIGHT)
        async with (
            httpx.AsyncClient(limits=httpx.Limits(max_connections=IN_FLIGHT)) as client,
            trio.open_nursery() as nursery,
        ):

            async def post(item):
                async with limit:
                    response = await client.post(base + "/", json=item)
                    response.raise_for_status()

            for n in range(count):
                nursery.start_soon(post, {"n": n})

    with peer("receiver") as base:
        started = time.perf_counter()
        trio.run(main, base)
        elapsed = time.perf_counter() - started
        taken(base, count)
    return count / elapsed


def poller_nanostream(count: int) -> float:
    sink = Count()
    with peer("paged", count) as base:
        graph = ns.NanoStreamGraph("bench")
        poller = HttpPoller(
            url=base + "/",
            pagination="cursor",
            items_field="data",
            next_field="next",
            cursor_param="after",
            once=True,
        )
        graph.add("poll", poller)
        graph.add("sink", sink, parents=["poll"])
        started = time.perf_counter()
        trio.run(ns.run_graph, graph)
        elapsed = time.perf_counter() - started
    assert sink.count == count
    return count / elapsed


def poller_bare(count: int) -> float:
    got = 0

    async def main(base):
        nonlocal got
        async with httpx.AsyncClient() as client:
            cursor = None
            while True:
                params = {"after": cursor} if cursor is not None else None
                document = (await client.get(base + "/", params=params)).json()
                got += len(document["data"])
                if not document["data"]:
                    break
                cursor = document["next"]

    with peer("paged", count) as base:
        started = time.perf_counter()
        trio.run(main, base)
        elapsed = time.perf_counter() - started
    assert got == count
    return count / elapsed


# -- SQL ----------------------------------------------------------------------


def fresh_table(url: str, name: str) -> sa.Engine:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        connection.execute(sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)"))
    return engine


def row_count(engine: sa.Engine, name: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar()


def rows(count: int) -> list[dict]:
    return [{"id": n, "v": f"value {n}"} for n in range(count)]


def writer_nanostream(url: str, count: int) -> float:
    engine = fresh_table(url, "bench_write")
    graph = ns.NanoStreamGraph("bench")
    graph.add("items", Items(rows(count)), max_batch=BATCH)
    graph.add("write", SqlWriter(url=url, table="bench_write"), parents=["items"])
    started = time.perf_counter()
    trio.run(ns.run_graph, graph)
    elapsed = time.perf_counter() - started
    assert row_count(engine, "bench_write") == count
    engine.dispose()
    return count / elapsed


def writer_bare(url: str, count: int) -> float:
    engine = fresh_table(url, "bench_write")
    table = sa.Table("bench_write", sa.MetaData(), autoload_with=engine)
    items = rows(count)

    def write(chunk):
        with engine.begin() as connection:
            connection.execute(table.insert(), chunk)

    async def main():
        for start in range(0, count, BATCH):
            await trio.to_thread.run_sync(write, items[start : start + BATCH])

    started = time.perf_counter()
    trio.run(main)
    elapsed = time.perf_counter() - started
    assert row_count(engine, "bench_write") == count
    engine.dispose()
    return count / elapsed


def filled(url: str, count: int) -> None:
    engine = fresh_table(url, "bench_read")
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO bench_read (id, v) VALUES (:id, :v)"), rows(count))
    engine.dispose()


def reader_nanostream(url: str, count: int) -> float:
    sink = Count()
    graph = ns.NanoStreamGraph("bench")
    graph.add("rows", SqlReader(url=url, table="bench_read", batch_size=BATCH))
    graph.add("sink", sink, parents=["rows"])
    started = time.perf_counter()
    trio.run(ns.run_graph, graph)
    elapsed = time.perf_counter() - started
    assert sink.count == count
    return count / elapsed


def reader_bare(url: str, count: int) -> float:
    engine = sa.create_engine(url)
    got = 0

    async def main():
        nonlocal got
        connection = await trio.to_thread.run_sync(engine.connect)
        result = await trio.to_thread.run_sync(
            lambda: connection.execution_options(stream_results=True).execute(
                sa.text("SELECT * FROM bench_read")
            )
        )
        mappings = result.mappings()
        while chunk := await trio.to_thread.run_sync(mappings.fetchmany, BATCH):
            got += len([dict(row) for row in chunk])
        await trio.to_thread.run_sync(connection.close)

    started = time.perf_counter()
    trio.run(main)
    elapsed = time.perf_counter() - started
    engine.dispose()
    assert got == count
    return count / elapsed


# -- stdio --------------------------------------------------------------------

BARE_STDIO = """\
import json, sys
out = sys.stdout
for line in sys.stdin:
    if line.strip():
        out.write(json.dumps(json.loads(line), ensure_ascii=False) + "\\n")
"""

STDIO_PIPELINE = """\
pipeline_name: bench
node_sequence:
  - name: read
    class: StdinReader
    format: jsonl
  - name: write
    class: StdoutWriter
    format: jsonl
    parents: [read]
"""


def stdio(command: list[str], source: Path, expected: bytes, count: int) -> float:
    with open(source, "rb") as stdin:
        started = time.perf_counter()
        done = subprocess.run(command, stdin=stdin, capture_output=True, check=True)
        elapsed = time.perf_counter() - started
    assert done.stdout == expected
    return count / elapsed


def cpu(contender: Callable[[], float], children: bool) -> tuple[float, float]:
    """The contender's rate, and the CPU seconds it took: this process's, or
    its child processes' with ``children``."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    before = resource.getrusage(who)
    rate = contender()
    after = resource.getrusage(who)
    return rate, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def spread(ratios: list[float]) -> str:
    """The median of ``ratios``, with their range."""
    return f"{statistics.median(ratios):.0%} ({min(ratios):.0%}..{max(ratios):.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every item count")
    parser.add_argument("--only", metavar="TEXT", help="run only the connectors named with TEXT")
    parser.add_argument("--peer", nargs=2, metavar=("KIND", "TOTAL"), help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=2, metavar=("URL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        trio.run(serve_peer, args.peer[0], int(args.peer[1]))
        return
    if args.load:
        trio.run(post_all, args.load[0], int(args.load[1]))
        return

    def n(count: int) -> int:
        return max(1, int(count * args.scale))

    work = tempfile.mkdtemp(prefix="bench-connectors-")
    source = Path(work, "in.jsonl")
    lines = [
        json.dumps({"n": i, "name": f"item {i}", "tags": ["a", "b"]}) for i in range(n(200_000))
    ]
    source.write_text("\n".join(lines) + "\n")
    expected = source.read_bytes()
    (Path(work) / "p.yaml").write_text(STDIO_PIPELINE)
    (Path(work) / "bare.py").write_text(BARE_STDIO)

    pairs: dict[str, tuple[Callable[[], float], Callable[[], float], str]] = {
        "StdinReader -> StdoutWriter (jsonl)": (
            lambda: stdio(
                [sys.executable, "-m", "nanostream", "run", "--quiet", str(Path(work, "p.yaml"))],
                source,
                expected,
                len(lines),
            ),
            lambda: stdio(
                [sys.executable, str(Path(work, "bare.py"))], source, expected, len(lines)
            ),
            "lines/s",
        ),
        "HttpServer": (
            lambda: trio.run(server_nanostream, n(3000)),
            lambda: trio.run(server_bare, n(3000)),
            "requests/s",
        ),
        "HttpClient": (
            lambda: client_nanostream(n(3000)),
            lambda: client_bare(n(3000)),
            "requests/s",
        ),
        "HttpPoller": (
            lambda: poller_nanostream(n(50_000)),
            lambda: poller_bare(n(50_000)),
            "items/s",
        ),
    }
    databases = {"SQLite": f"sqlite:///{work}/bench.db"}
    postgres = None
    try:
        from pg_testbed import postgres_server

        postgres = postgres_server()
        databases["PostgreSQL"] = postgres.__enter__().url
    except ImportError:
        print("pgserver is not installed: PostgreSQL left out", file=sys.stderr)
    for name, url in databases.items():
        pairs[f"SqlWriter, {name}"] = (
            lambda url=url: writer_nanostream(url, n(100_000)),
            lambda url=url: writer_bare(url, n(100_000)),
            "rows/s",
        )
        filled(url, n(100_000))
        pairs[f"SqlReader, {name}"] = (
            lambda url=url: reader_nanostream(url, n(100_000)),
            lambda url=url: reader_bare(url, n(100_000)),
            "rows/s",
        )

    try:
        print(
            f"{args.repeat} interleaved runs each, after a warm-up; medians, min..max",
            file=sys.stderr,
        )
        print(
            "| connector | hand-written | NanoStream | throughput / hand-written "
            "| CPU time / hand-written |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, (ours, bare, unit) in pairs.items():
            if args.only and args.only.lower() not in name.lower():
                continue
            # stdio's contenders are processes of their own: their CPU time is
            # the children's; every other contender runs in this process.
            children = name.startswith("Stdin")
            cpu(bare, children), cpu(ours, children)  # warm up: imports, caches, pages
            rates: dict[str, list[float]] = {"bare": [], "ours": []}
            ratios, cpu_ratios = [], []
            for _ in range(args.repeat):
                b, b_cpu = cpu(bare, children)
                o, o_cpu = cpu(ours, children)
                rates["bare"].append(b)
                rates["ours"].append(o)
                ratios.append(o / b)
                cpu_ratios.append(o_cpu / b_cpu)
            print(
                f"| {name} | {statistics.median(rates['bare']):,.0f} {unit} "
                f"| {statistics.median(rates['ours']):,.0f} {unit} "
                f"| {spread(ratios)} | {spread(cpu_ratios)} |",
                flush=True,
            )
    finally:
        if postgres is not None:
            postgres.__exit__(None, None, None)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
