"""Files per second through a watched folder: NanoStream against a bare script.

Drops --files files of --size bytes into a watched folder and times how long
it takes until every one of them has been read, upper-cased and written into
an out folder. NanoStream runs the watch-read-write pipeline
(WatchdogDirectoryListener -> FileReader -> upper-case -> FileWriter); the
baseline is the script one would write by hand: a watchdog observer whose
close-write handler reads the file, transforms it and writes the result the
way FileWriter does (a temporary file, fsync, rename into place). Both run in
the same process, alternating, and each figure is the median of --repeat
runs; only the ratio between them means anything on a shared machine.

    python benchmarks/bench_files.py [--files N] [--size BYTES] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import attrs
import trio
from watchdog.events import FileClosedEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

import nanostream as ns
from nanostream.nodes.directory import WatchdogDirectoryListener
from nanostream.nodes.files import FileData, FileReader, FileWriter


def drop_files(inbox: Path, files: int, size: int) -> None:
    """Write ``files`` files into ``inbox``, each closed once written."""
    line = b"the quick brown fox jumps over the lazy dog\n"
    body = (line * (size // len(line) + 1))[:size]
    for i in range(files):
        with open(inbox / f"f{i:05}.txt", "wb") as f:
            f.write(body)


def write_atomically(directory: Path, name: str, payload: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, directory / name)


def bare(inbox: Path, outbox: Path, files: int, size: int) -> float:
    """Seconds for a watchdog observer with a hand-written handler."""
    done = threading.Event()
    written = 0

    class Handler(FileSystemEventHandler):
        def on_closed(self, event: FileClosedEvent) -> None:
            nonlocal written
            source = Path(os.fsdecode(event.src_path))
            text = source.read_text(encoding="utf-8")
            write_atomically(outbox, source.name, text.upper().encode("utf-8"))
            written += 1
            if written == files:
                done.set()

    observer = InotifyObserver(generate_full_events=True)
    observer.schedule(Handler(), str(inbox))
    observer.start()
    try:
        started = time.perf_counter()
        drop_files(inbox, files, size)
        if not done.wait(timeout=600):
            raise RuntimeError(f"bare script wrote {written} of {files} files")
        return time.perf_counter() - started
    finally:
        observer.stop()
        observer.join()


class Upper(ns.NanoStreamProcessor):
    def process_item(self, message: FileData) -> FileData:
        return attrs.evolve(message, data=message.data.upper())


class CountingWriter(FileWriter):
    """A FileWriter that says when it has written ``expected`` files."""

    def __init__(self, path: str, expected: int) -> None:
        super().__init__(path=path)
        self.expected = expected
        self.written = 0
        self.all_written = trio.Event()

    async def process_batch(self, messages: list) -> None:
        await super().process_batch(messages)
        self.written += len(messages)
        if self.written >= self.expected:
            self.all_written.set()


async def nanostream(inbox: Path, outbox: Path, files: int, size: int) -> float:
    """Seconds for the watch-read-write pipeline."""
    writer = CountingWriter(str(outbox), files)
    graph = ns.NanoStreamGraph("bench_files")
    graph.add("watch", WatchdogDirectoryListener(watchdog_path=str(inbox)))
    graph.add("read", FileReader(), ["watch"])
    graph.add("upper", Upper(), ["read"])
    graph.add("write", writer, ["upper"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        started = time.perf_counter()
        await trio.to_thread.run_sync(drop_files, inbox, files, size)
        with trio.fail_after(600):
            await writer.all_written.wait()
        elapsed = time.perf_counter() - started
        run.stop()
    return elapsed


def measure(which: str, files: int, size: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        inbox, outbox = Path(root, "inbox"), Path(root, "outbox")
        inbox.mkdir()
        outbox.mkdir()
        if which == "bare":
            seconds = bare(inbox, outbox, files, size)
        else:
            seconds = trio.run(nanostream, inbox, outbox, files, size)
        produced = len(os.listdir(outbox))
        if produced != files:
            raise RuntimeError(f"{which}: {produced} files in the out folder, not {files}")
        return files / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"bare": [], "nanostream": []}
    for _ in range(args.repeat):
        for which in rates:
            rates[which].append(measure(which, args.files, args.size))
    bare_rate = statistics.median(rates["bare"])
    ours = statistics.median(rates["nanostream"])
    print(f"{args.files} files of {args.size} bytes, median of {args.repeat} runs")
    print(f"bare watchdog script: {bare_rate:8.0f} files/s")
    print(f"NanoStream pipeline:  {ours:8.0f} files/s")
    print(f"ratio:                {ours / bare_rate:8.0%}")


if __name__ == "__main__":
    main()
