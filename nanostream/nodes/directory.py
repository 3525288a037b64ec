"""A source that watches a directory and emits each file once it is complete."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

from .._params import collection
from .._processor import NanoStreamProcessor, WithAck
from .files import _untaken_name

logger = logging.getLogger("nanostream")

#: The most files emitted in one batch when they are deleted or moved once done.
_ACK_BATCH = 100

#: What a file's identity is: device, inode, size, modification and change times.
Identity = tuple[int, ...]


@attrs.define
class WatchdogDirectoryListener(NanoStreamProcessor):
    """Emits the absolute path of each file written (and closed) or moved into a directory.

    A file is never emitted while it is still being written; a file written
    again and closed again is emitted again. With ``existing``, the files
    already there come first, each once even if it is closed while the
    pipeline starts; a file still open for writing then is emitted by the
    scan and again once it is closed.

    With ``when_done`` ``delete`` or ``move``, each file is deleted, or
    moved into ``done_dir``, once the pipeline has handled everything made
    from it (its item is acknowledged), and only if it has not changed
    since it was emitted. With ``existing``, a pipeline killed and started
    again then reads again every file not yet done: some files may be
    processed twice, none is lost."""

    watchdog_path: str = attrs.field(metadata={"description": "The directory to watch."})
    patterns: list[str] = attrs.field(
        factory=lambda: ["*"],
        validator=collection,
        metadata={"description": "Glob patterns of file names to emit."},
    )
    ignore_patterns: list[str] = attrs.field(
        factory=lambda: [".*"],
        validator=collection,
        metadata={
            "description": "Glob patterns of file names never to emit. The default leaves"
            " out hidden files, such as the temporary files FileWriter and editors write."
        },
    )
    recursive: bool = attrs.field(
        default=False, metadata={"description": "Also watch the subdirectories."}
    )
    existing: bool = attrs.field(
        default=False,
        metadata={"description": "First emit the files already there when the pipeline starts."},
    )
    when_done: Literal["keep", "delete", "move"] = attrs.field(
        default="keep",
        validator=attrs.validators.in_(("keep", "delete", "move")),
        metadata={
            "description": "What becomes of a file once everything made from it is handled:"
            " keep it, delete it, or move it into done_dir. With existing, a pipeline"
            " restarted after a crash then reads again every file not yet done."
        },
    )
    done_dir: str | None = attrs.field(
        default=None,
        metadata={
            "description": "With when_done: move, the folder done files go to; made if"
            " missing. On the filesystem of watchdog_path, not inside it when recursive."
        },
    )

    def __attrs_post_init__(self) -> None:
        _check_done_dir(self, os.path.abspath)

    def _wanted(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch(name, p) for p in self.patterns) and not any(
            fnmatch(name, p) for p in self.ignore_patterns
        )

    def _existing_files(self, root: str) -> dict[str, Identity]:
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

    # What runs while the pipeline does; set in setup.
    _watch: _Watch | None = attrs.field(default=None, init=False, repr=False, alias="_watch")

    async def setup(self) -> None:
        from watchdog.events import (
            DirMovedEvent,
            FileClosedEvent,
            FileMovedEvent,
            FileSystemEventHandler,
        )

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
        if self.when_done == "move":
            await trio.to_thread.run_sync(self._make_done_dir, root)
        token = trio.lowlevel.current_trio_token()
        # The observer thread collects paths under a lock and wakes the trio
        # thread only for the first path of a batch: a burst of events costs
        # one trip into the run loop, not one per file. The channel carries
        # the collected lists; unbounded, so handing one over never blocks.
        send, receive = trio.open_memory_channel[list[str]](float("inf"))
        collected: list[str] = []
        lock = threading.Lock()
        wanted, recursive = self._wanted, self.recursive

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

            def on_moved(self, event: FileMovedEvent | DirMovedEvent) -> None:
                path = os.fsdecode(event.dest_path)
                if not path:
                    return
                if not event.is_directory:
                    if wanted(path):
                        hand_over(os.path.abspath(path))
                elif recursive:
                    # A folder moved in brings its files whole, and no event
                    # of their own: they are emitted as files moved in.
                    for folder, _, names in os.walk(path):
                        for name in sorted(names):
                            inner = os.path.join(folder, name)
                            if wanted(inner) and os.path.isfile(inner):
                                hand_over(os.path.abspath(inner))

        observer = make_observer()
        # Only the events handled here: the observer then asks inotify for
        # closes and moves alone, not for every open, write and attribute
        # change, which costs its threads several events per file.
        observer.schedule(
            Handler(),
            root,
            recursive=self.recursive,
            event_filter=[FileClosedEvent, FileMovedEvent, DirMovedEvent],
        )
        await trio.to_thread.run_sync(observer.start)
        self._watch = _Watch(root, observer, send, receive)

    def _make_done_dir(self, root: str) -> None:
        """Make ``done_dir``, and check it again now that links can be followed."""
        assert self.done_dir is not None
        os.makedirs(self.done_dir, exist_ok=True)
        _check_done_dir(self, os.path.realpath)
        if os.stat(self.done_dir).st_dev != os.stat(root).st_dev:
            raise ValueError(
                f"done_dir {self.done_dir!r} is on another filesystem than watchdog_path"
                f" {self.watchdog_path!r}: a done file is moved by a rename, which cannot"
                " cross filesystems"
            )

    async def generate_batches(self) -> AsyncIterator[list[Any]]:
        watch = self._watch
        assert watch is not None
        # The observer runs before the scan, so that no file is missed in
        # between; a file closed meanwhile is then both scanned and reported.
        # Each scanned file stays here, with its identity, until the observer
        # reports it: if it has not changed since the scan, that report is
        # the same file again and is dropped.
        scanned: dict[str, Identity] = {}
        if self.existing:
            scanned = await trio.to_thread.run_sync(self._existing_files, watch.root)
            for items in self._batches(watch, list(scanned.items())):
                yield items
        keep = self.when_done == "keep"
        while True:
            batch = await watch.receive.receive()
            while True:
                try:
                    batch += watch.receive.receive_nowait()
                except trio.WouldBlock:
                    break
            if keep:
                if scanned and not scanned.keys().isdisjoint(batch):
                    found = await trio.to_thread.run_sync(_identified, batch, scanned)
                    batch = [path for path, _ in found]
                if batch:
                    yield batch
            elif batch or watch.finished:
                # One trip for both: the files done with, and the new ones.
                found = await trio.to_thread.run_sync(self._finish_and_identify, batch, scanned)
                for items in self._batches(watch, found):
                    yield items

    def _batches(
        self, watch: _Watch, found: list[tuple[str, Identity | None]]
    ) -> Iterator[list[Any]]:
        """What to emit for ``found``: the paths, or, unless files are kept,
        each path with an acknowledgement that finishes its file, in batches
        of at most ``_ACK_BATCH``: a batch is acknowledged as a whole, so the
        files of a large scan are finished a batch at a time, not all at the
        end. A file gone since it was reported is not emitted then: deleting
        or moving it again would have nothing to do, and reading it would fail."""
        if self.when_done == "keep":
            if found:
                yield [path for path, _ in found]
            return
        items = [watch.with_ack(path, ident) for path, ident in found if ident is not None]
        for start in range(0, len(items), _ACK_BATCH):
            yield items[start : start + _ACK_BATCH]

    def _finish_and_identify(
        self, batch: list[str], scanned: dict[str, Identity]
    ) -> list[tuple[str, Identity | None]]:
        self._finish()
        return _identified(batch, scanned)

    def _finish(self) -> None:
        """Delete or move the files whose items have been acknowledged.

        A file that has changed since it was emitted is left: it was written
        again, and is emitted (and finished) again. One that cannot be
        deleted or moved is left too, and logged: at worst it is read again
        after a restart.
        """
        watch = self._watch
        assert watch is not None
        for path, identity in watch.take_finished():
            try:
                if _identity(os.stat(path)) != identity:
                    continue
                if self.when_done == "delete":
                    os.unlink(path)
                else:
                    self._move_to_done(watch.root, path)
            except FileNotFoundError:
                continue
            except OSError as error:
                logger.warning(
                    "could not %s %s, which stays where it is: %s",
                    self.when_done,
                    path,
                    error,
                    extra={"event": "file_not_done", "path": path},
                )

    def _move_to_done(self, root: str, path: str) -> None:
        """Move ``path`` into ``done_dir``, at its place below ``root``, under
        a name not taken there yet (``report.1.txt``), so no file replaces another."""
        assert self.done_dir is not None
        relative = os.path.relpath(path, root)
        directory = os.path.join(self.done_dir, os.path.dirname(relative))
        os.makedirs(directory, exist_ok=True)
        name, _ = _untaken_name(directory, os.path.basename(relative))
        os.rename(path, os.path.join(directory, name))

    async def teardown(self) -> None:
        watch = self._watch
        if watch is None:
            return
        watch.send.close()
        watch.receive.close()
        watch.observer.stop()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(watch.observer.join)
        # The rest of the pipeline is done by now (a source is torn down
        # last): the files whose items it finished are finished here.
        if watch.finished:
            await trio.to_thread.run_sync(self._finish)
        self._watch = None


@attrs.define
class _Watch:
    """A running listener: its root, observer and channel, and the files
    acknowledged but not yet deleted or moved.

    Acknowledgements come on the trio thread, the deletes and moves are
    made on a worker thread: hence the lock."""

    root: str
    observer: Any
    send: trio.MemorySendChannel[list[str]]
    receive: trio.MemoryReceiveChannel[list[str]]
    finished: list[tuple[str, Identity]] = attrs.field(factory=list)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    # The latest emission of each path in flight, numbered: only its
    # acknowledgement finishes the file (on the trio thread, no lock).
    latest: dict[str, int] = attrs.field(factory=dict)
    numbers: Iterator[int] = attrs.field(factory=itertools.count)

    def with_ack(self, path: str, identity: Identity) -> WithAck:
        """``path`` to emit, with the acknowledgement that finishes its file."""
        number = self.latest[path] = next(self.numbers)
        return WithAck(path, functools.partial(self.done_with, path, identity, number))

    def done_with(self, path: str, identity: Identity, number: int) -> None:
        """The acknowledgement of emission ``number`` of ``path``. An earlier
        emission's is dropped: the file was written again, and the later
        one finishes it. The file is finished at the listener's next trip
        to a worker thread, for which an empty list on the channel wakes it."""
        if self.latest.get(path) != number:
            return
        del self.latest[path]
        with self.lock:
            self.finished.append((path, identity))
            first = len(self.finished) == 1
        if first:
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                self.send.send_nowait([])

    def take_finished(self) -> list[tuple[str, Identity]]:
        with self.lock:
            finished, self.finished = self.finished, []
        return finished


def _check_done_dir(node: WatchdogDirectoryListener, resolve: Callable[[str], str]) -> None:
    """Raise ValueError unless ``done_dir`` goes with ``when_done`` and is a
    folder a done file can leave the watch for."""
    if node.when_done != "move":
        if node.done_dir is not None:
            raise ValueError(
                f"done_dir is only for when_done: move (when_done is {node.when_done!r})"
            )
        return
    if node.done_dir is None:
        raise ValueError("when_done: move needs done_dir, the folder to move done files into")
    watched, done = resolve(node.watchdog_path), resolve(node.done_dir)
    if done == watched:
        raise ValueError(
            f"done_dir {node.done_dir!r} is watchdog_path itself: a done file must leave"
            " the watched folder"
        )
    if node.recursive and os.path.commonpath([watched, done]) == watched:
        raise ValueError(
            f"done_dir {node.done_dir!r} is inside watchdog_path {node.watchdog_path!r},"
            " which is watched recursively: a file moved there would be emitted again"
        )


def _identity(status: os.stat_result) -> Identity:
    """What tells one version of a file from another. The change time is
    set by every write and cannot be set back, as the modification time can."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _identified(
    batch: list[str], scanned: dict[str, Identity]
) -> list[tuple[str, Identity | None]]:
    """Each path of ``batch`` with its identity now (``None`` if it is gone),
    less the scanned files that have not changed since the scan; each
    scanned file is looked at once, on its first report."""
    found = []
    for path in batch:
        try:
            now: Identity | None = _identity(os.stat(path))
        except OSError:
            now = None
        if path in scanned and scanned.pop(path) == now:
            continue
        found.append((path, now))
    return found
