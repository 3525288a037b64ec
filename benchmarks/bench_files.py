"""Files per second through a watched folder: NanoStream against a bare script.

Drops --files files of --size bytes into a watched folder and times how long
it takes until every one of them has been read, upper-cased and written into
an out folder. NanoStream runs the watch-read-write pipeline
(WatchdogDirectoryListener -> FileReader -> upper-case -> FileWriter); the
baseline is the script one would write by hand: a watchdog observer whose
close-write handler reads the file, transforms it and writes the result.

The script is measured twice: as usually written, its observer reporting
every event (opens, writes, closes, ...), and with watchdog's event_filter
asking for closes only, as WatchdogDirectoryListener asks for closes and
moves only. The second is the stricter baseline: both then get the same
events from inotify, and the difference is what the pipeline costs.

Two kinds of writes are measured. "synced": the script writes the way
FileWriter does by default (a temporary file, fsync, rename into place).
"unsynced": the script just writes the file, and FileWriter runs with fsync
off (it still writes a temporary file and renames it). All run in the same
process, alternating, and each figure is the median of --repeat runs; only
the ratios mean anything on a shared machine.

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
    content = body(size)
    for i in range(files):
        with open(inbox / f"f{i:05}.txt", "wb") as f:
            f.write(content)


def body(size: int) -> bytes:
    """What each dropped file holds: ``size`` bytes of text."""
    line = b"the quick brown fox jumps over the lazy dog\n"
    return (line * (size // len(line) + 1))[:size]


def write_synced(directory: Path, name: str, payload: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, directory / name)


def write_plainly(directory: Path, name: str, payload: bytes) -> None:
    (directory / name).write_bytes(payload)


def bare(
    inbox: Path, outbox: Path, files: int, size: int, synced: bool, closes_only: bool
) -> float:
    """Seconds for a watchdog observer with a hand-written handler."""
    write = write_synced if synced else write_plainly
    done = threading.Event()
    written = 0

    class Handler(FileSystemEventHandler):
        def on_closed(self, event: FileClosedEvent) -> None:
            nonlocal written
            source = Path(os.fsdecode(event.src_path))
            text = source.read_text(encoding="utf-8")
            write(outbox, source.name, text.upper().encode("utf-8"))
            written += 1
            if written == files:
                done.set()

    observer = InotifyObserver(generate_full_events=True)
    event_filter = [FileClosedEvent] if closes_only else None
    observer.schedule(Handler(), str(inbox), event_filter=event_filter)
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

    def __init__(self, path: str, expected: int, fsync: bool) -> None:
        super().__init__(path=path, fsync=fsync)
        self.expected = expected
        self.written = 0
        self.all_written = trio.Event()

    async def process_batch(self, messages: list) -> None:
        await super().process_batch(messages)
        self.written += len(messages)
        if self.written >= self.expected:
            self.all_written.set()


async def nanostream(inbox: Path, outbox: Path, files: int, size: int, synced: bool) -> float:
    """Seconds for the watch-read-write pipeline."""
    writer = CountingWriter(str(outbox), files, fsync=synced)
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


#: What is measured: the script as usually written, the script asking for
#: closes only, and the pipeline.
CONTENDERS = ("script", "script, closes only", "NanoStream")


def measure(which: str, synced: bool, files: int, size: int) -> float:
    """Files per second for one run of ``which``, one of CONTENDERS."""
    with tempfile.TemporaryDirectory() as root:
        inbox, outbox = Path(root, "inbox"), Path(root, "outbox")
        inbox.mkdir()
        outbox.mkdir()
        if which == "NanoStream":
            seconds = trio.run(nanostream, inbox, outbox, files, size, synced)
        else:
            seconds = bare(inbox, outbox, files, size, synced, closes_only=which != "script")
        check_output(which, outbox, files, size)
        return files / seconds


def check_output(which: str, outbox: Path, files: int, size: int) -> None:
    """Raise unless ``outbox`` holds each file dropped, upper-cased, once."""
    expected = body(size).upper()
    names = sorted(os.listdir(outbox))
    if names != [f"f{i:05}.txt" for i in range(files)]:
        raise RuntimeError(f"{which}: {len(names)} files in the out folder, not {files}")
    wrong = [name for name in names if (outbox / name).read_bytes() != expected]
    if wrong:
        raise RuntimeError(f"{which}: {len(wrong)} files with wrong content, such as {wrong[0]}")


def spread(ours: list[float], theirs: list[float]) -> str:
    """The median and range of the ratios ``ours / theirs`` of each round."""
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    return f"{statistics.median(ratios):.0%} [{ratios[0]:.0%}..{ratios[-1]:.0%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pairs = {"synced": True, "unsynced": False}
    rates: dict[tuple[str, str], list[float]] = {
        (pair, which): [] for pair in pairs for which in CONTENDERS
    }
    for _ in range(args.repeat):
        for pair, which in rates:
            rates[pair, which].append(measure(which, pairs[pair], args.files, args.size))
    print(
        f"{args.files} files of {args.size} bytes, files/s, median of {args.repeat} runs;"
        " ratios: median [min..max] of the ratios within each round"
    )
    print(
        f"{'':10} {'script':>8} {'script*':>8} {'NanoStream':>11}"
        f" {'vs script':>18} {'vs script*':>18}"
    )
    for pair in pairs:
        script, strict, ours = (rates[pair, which] for which in CONTENDERS)
        medians = (f"{statistics.median(r):8.0f}" for r in (script, strict))
        print(
            f"{pair:10} {' '.join(medians)} {statistics.median(ours):11.0f}"
            f" {spread(ours, script):>18} {spread(ours, strict):>18}"
        )
    print("script*: the script with watchdog's event_filter, asking inotify for closes only")


if __name__ == "__main__":
    main()
