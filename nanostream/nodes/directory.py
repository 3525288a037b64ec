"""A source that watches a directory and emits each file once it is complete."""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import signal
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from fnmatch import fnmatch
from typing import Any, Literal

import attrs
import trio

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .._params import collection
from .._processor import NanoStreamProcessor, Rejected, WithAck
from ._inotify import WatchLimitError, folders_below, start_observer
from .files import _move_under_free_name

logger = logging.getLogger("nanostream")

#: The most files emitted in one batch when they are deleted or moved once done.
_ACK_BATCH = 100

#: What a file's identity is: device, inode, size, modification and change times.
Identity = tuple[int, ...]

#: The names editors and other tools give the files they write beside the
#: one being saved, never that file itself: hidden files (vim's swap files
#: ``.notes.txt.swp``, emacs' locks ``.#notes.txt``, the temporaries gedit,
#: rsync and FileWriter rename into place), backups (``notes.txt~``), emacs'
#: autosaves (``#notes.txt#``), Office's locks (``~$report.docx``) and the
#: file vim writes to test a folder (``4913``).
DEFAULT_IGNORE_PATTERNS = (".*", "*~", "#*#", "~$*", "4913", "*.swp", "*.swx")

# What the observer thread reports, each with a path: a file closed or moved
# in; a folder to scan (created or moved in, or the root at start); the root
# to scan again after events were lost; a folder the watch limit left unwatched.
_FILE, _FOLDER, _RESCAN, _OVER_LIMIT = "file", "folder", "rescan", "over limit"


@attrs.define
class WatchdogDirectoryListener(NanoStreamProcessor):
    """Emits the absolute path of each file written (and closed) or moved into a directory.

    A file is never emitted while it is still being written; a file written
    again and closed again is emitted again. The names editors give their
    backups, swap and temporary files are ignored by default
    (``ignore_patterns``). With ``existing``, the files already there come
    first, each once even if it is closed while the pipeline starts; a file
    still open for writing then is emitted once it is closed (told by a
    refused read lease, which only its owner or root may ask for; a file
    of another user is emitted by the scan and again once closed). With
    ``recursive``, the files of a folder created or moved in are emitted
    too, once each, even those written before its watch.

    A file gone before it is emitted is logged at debug level and counted;
    one the pipeline may not read is :class:`Rejected` with a
    PermissionError, under this node's ``on_error``. If the kernel's inotify
    queue overflows (events were lost), the tree is scanned again and the
    files not yet emitted in their present version are emitted, with a
    warning saying how many. A folder that cannot be watched because the
    inotify watch limit is reached fails the start (or, for a folder made
    later, the running pipeline) with an error naming the
    ``fs.inotify.max_user_watches`` sysctl.

    With ``when_done`` ``delete`` or ``move``, each file is deleted, or
    moved into ``done_dir``, once the pipeline has handled everything made
    from it (its item is acknowledged), and only if it has not changed
    since it was emitted. With ``existing``, a pipeline killed and started
    again then reads again every file not yet done: some files may be
    processed twice, none is lost.

    In a pipeline with a ``state_dir``, each checkpoint saves which files
    have been emitted and not yet deleted or moved (or, when kept, every
    file emitted), and files are deleted or moved only once a checkpoint
    covers them. Started again after a crash, with ``existing``, it emits
    exactly the files the saved state has not seen: none twice."""

    watchdog_path: str = attrs.field(metadata={"description": "The directory to watch."})
    patterns: list[str] = attrs.field(
        factory=lambda: ["*"],
        validator=collection,
        metadata={"description": "Glob patterns of file names to emit."},
    )
    ignore_patterns: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_IGNORE_PATTERNS),
        validator=collection,
        metadata={
            "description": "Glob patterns of file names never to emit. The default leaves"
            " out hidden files (the temporary files FileWriter, gedit and rsync rename into"
            " place, vim's swap files) and editors' backups and autosaves: "
            + ", ".join(DEFAULT_IGNORE_PATTERNS)
            + "."
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

    def _files_below(self, folder: str) -> list[str]:
        """The wanted names in ``folder`` (and below it when recursive), in
        name order; whether each is a file is seen when it is looked at."""
        found = []
        for directory in folders_below(folder) if self.recursive else [folder]:
            with contextlib.suppress(OSError):  # gone, or not listable
                found += [e.path for e in os.scandir(directory) if self._wanted(e.path)]
        return sorted(found)

    # What runs while the pipeline does; set in setup.
    _watch: _Watch | None = attrs.field(default=None, init=False, repr=False, alias="_watch")
    # The files the last checkpoint says were emitted, given to restore().
    _restored: dict[str, Identity] = attrs.field(
        factory=dict, init=False, repr=False, alias="_restored"
    )

    def snapshot(self) -> dict[str, Identity]:
        """The files emitted and not yet finished (when kept: every file
        emitted), each with the identity it had: taken at a checkpoint."""
        watch = self._watch
        if watch is None:
            return dict(self._restored)
        with watch.lock:
            return dict(watch.yielded)

    def restore(self, snapshot: dict[str, Identity]) -> None:
        """Start from a checkpoint: its files are not emitted again, and,
        unless kept, are finished first (if still unchanged)."""
        self._restored = dict(snapshot)

    async def setup(self) -> None:
        from watchdog.events import (
            DirCreatedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileMovedEvent,
            FileSystemEventHandler,
        )

        root = os.path.abspath(self.watchdog_path)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"watchdog_path {root!r} is not a directory")
        if self.when_done == "move":
            await trio.to_thread.run_sync(self._make_done_dir, root)
        token = trio.lowlevel.current_trio_token()
        # The observer thread collects reports under a lock and wakes the
        # trio thread only for the first of a batch: a burst of events costs
        # one trip into the run loop, not one per file. The channel carries
        # the collected lists; unbounded, so handing one over never blocks.
        send, receive = trio.open_memory_channel[list[tuple[str, str]]](float("inf"))
        collected: list[tuple[str, str]] = []
        lock = threading.Lock()
        wanted, recursive = self._wanted, self.recursive

        def deliver() -> None:
            with lock:
                reports = collected.copy()
                collected.clear()
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                send.send_nowait(reports)

        def hand_over(kind: str, path: str) -> None:
            with lock:
                collected.append((kind, path))
                first = len(collected) == 1
            if first:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(deliver)

        class Handler(FileSystemEventHandler):
            def on_closed(self, event: FileClosedEvent) -> None:
                path = os.fsdecode(event.src_path)
                if not event.is_directory and wanted(path):
                    hand_over(_FILE, os.path.abspath(path))

            def on_created(self, event: DirCreatedEvent) -> None:
                # A folder made in the tree may have files closed before its
                # watch was added, which no event will report: they are
                # looked for as a scan would.
                if event.is_directory:
                    hand_over(_FOLDER, os.path.abspath(os.fsdecode(event.src_path)))

            def on_moved(self, event: FileMovedEvent | DirMovedEvent) -> None:
                path = os.fsdecode(event.dest_path)
                if not path:
                    return
                if not event.is_directory:
                    if wanted(path):
                        hand_over(_FILE, os.path.abspath(path))
                elif recursive:
                    # A folder moved in brings its files whole, and no event
                    # of their own.
                    hand_over(_FOLDER, os.path.abspath(path))

        events: list[Any] = [FileClosedEvent, FileMovedEvent, DirMovedEvent]
        if self.recursive:
            # Costs no more events: inotify reports creations anyway to
            # watch new folders when recursive.
            events.append(DirCreatedEvent)
        observer = await trio.to_thread.run_sync(
            functools.partial(
                start_observer,
                Handler(),
                root,
                recursive=self.recursive,
                event_filter=events,
                on_overflow=lambda: hand_over(_RESCAN, root),
                on_unwatched=functools.partial(_unwatched, hand_over),
            )
        )
        self._watch = watch = _Watch(root, observer, send, receive)
        if self._restored:
            watch.emitted.update(self._restored)
            watch.yielded.update(self._restored)
            if self.when_done != "keep":
                watch.finished += self._restored.items()

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
        # between; a file closed meanwhile is then both scanned and reported,
        # and emitted once (see _Watch.look_at).
        reports = [(_FOLDER, watch.root)] if self.existing else []
        while True:
            if not reports:
                reports = await watch.receive.receive()
            while True:
                try:
                    reports += watch.receive.receive_nowait()
                except trio.WouldBlock:
                    break
            if not reports and not watch.finished:
                continue
            # One trip for both: the files done with, and the new ones.
            found, unreadable = await trio.to_thread.run_sync(self._examine, reports)
            reports = []
            for items in self._batches(watch, found, unreadable):
                yield items
                # A long scan is finished a batch at a time, as its batches
                # are acknowledged, not once it has all been emitted: a
                # crash then repeats only what was in flight.
                if watch.finished:
                    await trio.to_thread.run_sync(self._finish)

    def _examine(
        self, reports: list[tuple[str, str]]
    ) -> tuple[list[tuple[str, Identity]], list[tuple[str, Identity]]]:
        """Finish the files done with, then look at what ``reports`` name:
        the files to emit, and those that cannot be read. Raises
        WatchLimitError for a folder left unwatched by the watch limit."""
        watch = self._watch
        assert watch is not None
        if self.when_done != "keep":
            self._finish()
        found: list[tuple[str, Identity]] = []
        unreadable: list[tuple[str, Identity]] = []
        # Every event here came before any file is looked at: a file
        # reported twice (written twice, an editor's save) is looked at
        # once, in the version it has now.
        reported: set[str] = set()
        for kind, path in reports:
            if kind == _FILE:
                if path not in reported:
                    reported.add(path)
                    watch.look_at(path, False, found, unreadable)
            elif kind == _OVER_LIMIT:
                raise WatchLimitError(path)
            else:
                before = len(found) + len(unreadable)
                present = self._files_below(path)
                if kind == _RESCAN:
                    watch.forget_all_but(set(present))
                for name in present:
                    watch.look_at(name, True, found, unreadable)
                if kind == _RESCAN:
                    recovered = len(found) + len(unreadable) - before
                    logger.warning(
                        "the inotify queue overflowed and events were lost: %s scanned"
                        " again, %d files found that were not emitted yet",
                        path,
                        recovered,
                        extra={"event": "inotify_overflow", "recovered": recovered},
                    )
        return found, unreadable

    def _batches(
        self,
        watch: _Watch,
        found: list[tuple[str, Identity]],
        unreadable: list[tuple[str, Identity]],
    ) -> Iterator[list[Any]]:
        """What to emit for ``found``: the paths, or, unless files are kept,
        each path with an acknowledgement that finishes its file, in batches
        of at most ``_ACK_BATCH``: a batch is acknowledged as a whole, so the
        files of a large scan are finished a batch at a time, not all at the
        end. An unreadable file is a Rejected, finished like the others once
        the error policy has handled it."""
        keep = self.when_done == "keep"
        items: list[Any] = [
            path if keep else watch.with_ack(path, identity) for path, identity in found
        ]
        for path, identity in unreadable:
            error = PermissionError(errno.EACCES, "this pipeline may not read the file", path)
            ack = None if keep else watch.with_ack(path, identity).ack
            items.append(Rejected(path, error, ack))
        files = found + unreadable
        # With checkpoints, a file a batch: a checkpoint then waits only for
        # the files in flight, not for a hundred of a start-up backlog.
        size = 1 if self.state.durable else max(len(items), 1) if keep else _ACK_BATCH
        for start in range(0, len(items), size):
            # Recorded as it is yielded, for snapshot(): nothing runs in between.
            with watch.lock:
                watch.yielded.update(files[start : start + size])
            yield items[start : start + size]

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
            with watch.lock:
                watch.yielded.pop(path, None)
            try:
                if _identity(os.stat(path)) != identity:
                    continue
                if self.when_done == "delete":
                    os.unlink(path)
                else:
                    self._move_to_done(watch.root, path)
                watch.forget(path)
            except FileNotFoundError:
                watch.forget(path)
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
        _move_under_free_name(path, directory, os.path.basename(relative))

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
        if watch.gone:
            logger.info(
                "%d files in %s were gone before they could be emitted",
                watch.gone,
                watch.root,
                extra={"event": "files_gone", "count": watch.gone},
            )
        self._watch = None


@attrs.define
class _Watch:
    """A running listener: its root, observer and channel; what it has
    emitted; and the files acknowledged but not yet deleted or moved.

    ``emitted`` holds the identity each file had when it was last emitted,
    ``scanned`` those emitted by a scan (at start, in a new folder, after an
    overflow) and not reported by an event since. Both are used on one
    worker thread at a time. Acknowledgements come on the trio thread, the
    deletes and moves are made on a worker thread: hence the lock."""

    root: str
    observer: Any
    send: trio.MemorySendChannel[list[tuple[str, str]]]
    receive: trio.MemoryReceiveChannel[list[tuple[str, str]]]
    finished: list[tuple[str, Identity]] = attrs.field(factory=list)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    # The latest emission of each path in flight, numbered: only its
    # acknowledgement finishes the file (on the trio thread, no lock).
    latest: dict[str, int] = attrs.field(factory=dict)
    numbers: Iterator[int] = attrs.field(factory=itertools.count)
    emitted: dict[str, Identity] = attrs.field(factory=dict)
    scanned: dict[str, Identity] = attrs.field(factory=dict)
    # What has been yielded and not yet finished (every file yielded, when
    # kept): what a checkpoint saves. Under the lock.
    yielded: dict[str, Identity] = attrs.field(factory=dict)
    gone: int = 0

    def look_at(
        self,
        path: str,
        from_scan: bool,
        found: list[tuple[str, Identity]],
        unreadable: list[tuple[str, Identity]],
    ) -> None:
        """Add ``path`` to ``found`` (or ``unreadable``) unless it is not a
        file now, or is a version already emitted.

        A scan skips a file emitted in the version it has now, and one still
        open for writing: the watch is in place before any scan, so its
        close will be reported, and it is emitted then. An event
        always stands for a new version (a close, a move in), except for
        the first event of a file a scan emitted, which may be the close
        the scan already saw: it is dropped if the file has not changed."""
        try:
            status = os.stat(path)
        except FileNotFoundError:
            self.gone += 1
            self.forget(path)
            logger.debug(
                "%s is gone before it was emitted",
                path,
                extra={"event": "file_gone", "path": path},
            )
            return
        except OSError:
            unreadable.append((path, ()))
            return
        if not stat.S_ISREG(status.st_mode):
            return
        identity = _identity(status)
        readable = os.access(path, os.R_OK)
        if from_scan:
            if self.emitted.get(path) == identity or (readable and _being_written(path)):
                return
            if not _unchanged(path, identity):
                # Written and closed between the stat and the lease: after
                # the watch was in place, so its close is reported, and the
                # file is emitted then, in the version it has.
                return
            self.scanned[path] = identity
        elif self.scanned.pop(path, None) == identity:
            return
        self.emitted[path] = identity
        if readable:
            found.append((path, identity))
        else:
            unreadable.append((path, identity))

    def forget(self, path: str) -> None:
        self.emitted.pop(path, None)
        self.scanned.pop(path, None)

    def forget_all_but(self, present: set[str]) -> None:
        """Forget the files no longer in the tree."""
        for path in [path for path in self.emitted if path not in present]:
            self.forget(path)

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


def _unwatched(hand_over: Callable[[str, str], None], folder: str, error: OSError) -> None:
    """A folder the observer could not watch: past the watch limit, an error
    of the running listener; otherwise (no permission, a path too long) a
    warning, from the observer's thread."""
    if error.errno == errno.ENOSPC:
        hand_over(_OVER_LIMIT, folder)
        return
    logger.warning(
        "cannot watch %s, whose files are not emitted: %s",
        folder,
        error,
        extra={"event": "folder_not_watched", "path": folder},
    )


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


def _being_written(path: str) -> bool:
    """Whether some process has ``path`` open for writing now.

    Told by a read lease (``fcntl(F_SETLEASE, F_RDLCK)``), which Linux
    refuses with EAGAIN while the file is open for writing anywhere. Only
    the file's owner (or a process with CAP_LEASE) may take one; where it
    cannot be taken, or the filesystem has no leases, the answer is no.

    The lease is let go at once. A process opening the file for writing
    in between waits for that, and breaks the lease: Linux then signals
    the holder, with SIGIO unless ``F_SETSIG`` says otherwise, and SIGIO
    ends a process that does not handle it. SIGURG, which is ignored
    unless handled (and Python handles it only if told to), is asked for
    instead."""
    if getattr(fcntl, "F_SETLEASE", None) is None:  # pragma: no cover - not Linux
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as error:
        return error.errno == errno.EAGAIN
    finally:
        os.close(fd)


def _unchanged(path: str, identity: Identity) -> bool:
    """Whether ``path`` is still the version ``identity`` names."""
    try:
        return _identity(os.stat(path)) == identity
    except OSError:
        return False


def _identity(status: os.stat_result) -> Identity:
    """What tells one version of a file from another. The change time is
    set by every write and cannot be set back, as the modification time can."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
