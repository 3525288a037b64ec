"""A source that watches a directory and emits each file once it is complete."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import attrs
import trio

from .._processor import NanoStreamProcessor


@attrs.define
class WatchdogDirectoryListener(NanoStreamProcessor):
    """Emits the absolute path of each file written (and closed) or moved into a directory.

    A file is never emitted while it is still being written; a file written
    again and closed again is emitted again. With ``existing``, the files
    already there come first, each once even if it is closed while the
    pipeline starts; a file still open for writing then is emitted by the
    scan and again once it is closed."""

    watchdog_path: str = attrs.field(metadata={"description": "The directory to watch."})
    patterns: list[str] = attrs.field(
        factory=lambda: ["*"],
        metadata={"description": "Glob patterns of file names to emit."},
    )
    ignore_patterns: list[str] = attrs.field(
        factory=list,
        metadata={"description": "Glob patterns of file names never to emit."},
    )
    recursive: bool = attrs.field(
        default=False, metadata={"description": "Also watch the subdirectories."}
    )
    existing: bool = attrs.field(
        default=False,
        metadata={"description": "First emit the files already there when the pipeline starts."},
    )

    def _wanted(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch(name, p) for p in self.patterns) and not any(
            fnmatch(name, p) for p in self.ignore_patterns
        )

    def _existing_files(self, root: str) -> dict[str, tuple[int, ...]]:
        """The wanted files in ``root`` now, in name order, each with its identity."""
        found = Path(root).rglob("*") if self.recursive else Path(root).iterdir()
        present = {}
        for path in sorted(str(p) for p in found):
            if self._wanted(path):
                with contextlib.suppress(OSError):  # gone since it was listed
                    status = os.stat(path)
                    if stat.S_ISREG(status.st_mode):
                        present[path] = _identity(status)
        return present

    # The running observer and the channel it hands paths over on; set in setup.
    _watch: Any = attrs.field(default=None, init=False, repr=False, alias="_watch")

    async def setup(self) -> None:
        from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEventHandler

        try:
            # Reports a file moved in from outside the watched tree as a move,
            # not as a creation, so it can be told apart from a file opened
            # for writing (which is emitted when it is closed).
            from watchdog.observers.inotify import InotifyObserver

            def make_observer() -> Any:
                return InotifyObserver(generate_full_events=True)
        except ImportError:  # pragma: no cover - not Linux
            from watchdog.observers import Observer as make_observer

        root = os.path.abspath(self.watchdog_path)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"watchdog_path {root!r} is not a directory")
        token = trio.lowlevel.current_trio_token()
        # The observer thread collects paths under a lock and wakes the trio
        # thread only for the first path of a batch: a burst of events costs
        # one trip into the run loop, not one per file. The channel carries
        # the collected lists; unbounded, so handing one over never blocks.
        send, receive = trio.open_memory_channel[list[str]](float("inf"))
        collected: list[str] = []
        lock = threading.Lock()
        wanted = self._wanted

        def deliver() -> None:
            with lock:
                paths = collected.copy()
                collected.clear()
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                send.send_nowait(paths)

        def hand_over(path: str) -> None:
            with lock:
                collected.append(path)
                first = len(collected) == 1
            if first:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(deliver)

        class Handler(FileSystemEventHandler):
            def on_closed(self, event: FileClosedEvent) -> None:
                path = os.fsdecode(event.src_path)
                if not event.is_directory and wanted(path):
                    hand_over(os.path.abspath(path))

            def on_moved(self, event: FileMovedEvent) -> None:
                path = os.fsdecode(event.dest_path)
                if path and not event.is_directory and wanted(path):
                    hand_over(os.path.abspath(path))

        observer = make_observer()
        # Only the events handled here: the observer then asks inotify for
        # closes and moves alone, not for every open, write and attribute
        # change, which costs its threads several events per file.
        observer.schedule(
            Handler(),
            root,
            recursive=self.recursive,
            event_filter=[FileClosedEvent, FileMovedEvent],
        )
        await trio.to_thread.run_sync(observer.start)
        self._watch = (root, observer, send, receive)

    async def generate_batches(self) -> AsyncIterator[list[str]]:
        root, _, _, receive = self._watch
        # The observer runs before the scan, so that no file is missed in
        # between; a file closed meanwhile is then both scanned and reported.
        # Each scanned file stays here, with its identity, until the observer
        # reports it: if it has not changed since the scan, that report is
        # the same file again and is dropped.
        scanned: dict[str, tuple[int, ...]] = {}
        if self.existing:
            scanned = await trio.to_thread.run_sync(self._existing_files, root)
            if scanned:
                yield list(scanned)
        while True:
            batch = await receive.receive()
            while True:
                try:
                    batch += receive.receive_nowait()
                except trio.WouldBlock:
                    break
            if scanned and not scanned.keys().isdisjoint(batch):
                batch = await trio.to_thread.run_sync(_without_unchanged, batch, scanned)
            if batch:
                yield batch

    async def teardown(self) -> None:
        if self._watch is None:
            return
        _, observer, send, receive = self._watch
        self._watch = None
        send.close()
        receive.close()
        observer.stop()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(observer.join)


def _identity(status: os.stat_result) -> tuple[int, ...]:
    """What tells one version of a file from another."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _without_unchanged(batch: list[str], scanned: dict[str, tuple[int, ...]]) -> list[str]:
    """``batch`` without the scanned files that have not changed since the scan;
    each scanned file is looked at once, on its first report."""
    kept = []
    for path in batch:
        if path in scanned:
            then = scanned.pop(path)
            try:
                now = _identity(os.stat(path))
            except OSError:
                now = None
            if now == then:
                continue
        kept.append(path)
    return kept
