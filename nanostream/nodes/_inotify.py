"""watchdog's inotify observer, told to report what it otherwise keeps to
itself: a queue overflow (events were lost) and a folder it could not watch.

watchdog's ``InotifyWatchGroup`` rebuilds its watches after an overflow and
logs it, and skips a subfolder it cannot watch (the watch limit reached)
without a word. Its subclass here calls back for both, and walks a tree
without recursion, where ``os.walk`` (Python before 3.12) raises
RecursionError on a tree about a thousand folders deep. Elsewhere than on
Linux, the platform's own watchdog observer runs, without these reports.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from typing import Any


class WatchLimitError(OSError):
    """A folder could not be watched: the inotify watches of this user
    (``fs.inotify.max_user_watches``) are all taken."""

    def __init__(self, folder: str) -> None:
        try:
            with open("/proc/sys/fs/inotify/max_user_watches") as f:
                limit = f"({f.read().strip()})"
        except OSError:
            limit = ""
        super().__init__(
            errno.ENOSPC,
            f"cannot watch {folder}: every inotify watch this user may have"
            f" (fs.inotify.max_user_watches {limit}) is taken; raise it, for example"
            " with `sysctl fs.inotify.max_user_watches=524288`, or watch fewer folders",
        )
        self.folder = folder


def folders_below(root: str | bytes) -> list[Any]:
    """``root`` and every folder below it (not following links), walked
    with a stack rather than recursion; folders that cannot be listed are
    left out."""
    found, stack = [], [root]
    while stack:
        folder = stack.pop()
        found.append(folder)
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            stack.extend(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
    return found


def start_observer(
    handler: Any,
    root: str,
    *,
    recursive: bool,
    event_filter: list[Any],
    on_overflow: Callable[[], None],
    on_unwatched: Callable[[str, OSError], None],
) -> Any:
    """Start an inotify observer that calls ``handler`` for the events of
    ``event_filter`` in ``root`` (and below it if ``recursive``).

    ``on_overflow()`` is called, from the observer's thread, once watchdog
    has rebuilt its watches after the kernel dropped events (so a scan
    made afterwards misses nothing). ``on_unwatched(folder, error)`` is
    called for a subfolder that could not be watched (a path too long, no
    permission, or, once running, the watch limit reached);
    :class:`WatchLimitError` is raised if the limit is reached at start.
    """
    from watchdog.observers.api import BaseObserver

    try:
        from watchdog.observers.inotify import InotifyFullEmitter, InotifyWatchGroup
        from watchdog.observers.inotify_c import InotifyFD
    except ImportError:  # pragma: no cover - not Linux: the platform's own observer
        from watchdog.observers import Observer

        observer = Observer()
        observer.schedule(handler, root, recursive=recursive, event_filter=event_filter)
        observer.start()
        return observer

    class WatchGroup(InotifyWatchGroup):
        def on_queue_overflow(self) -> None:
            super().on_queue_overflow()
            on_overflow()

        def _add_all_callbacks(self, path: bytes) -> None:
            if not (self.is_recursive and os.path.isdir(path)):
                self._add_callback(path)
                return
            for folder in folders_below(path):
                self._add_callback(folder)

        def _add_callback(self, path: bytes) -> None:
            try:
                wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
            except OSError as error:
                if path == self.path:
                    raise
                if error.errno == errno.ENOENT:  # gone since it was listed
                    return
                if error.errno == errno.ENOSPC and not self.is_active:
                    raise WatchLimitError(os.fsdecode(path)) from None  # fails the start
                on_unwatched(os.fsdecode(path), error)
                return
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path

    class Emitter(InotifyFullEmitter):
        # Reports a file moved in from outside the watched tree as a move,
        # not as a creation, so it can be told apart from a file opened for
        # writing (which is emitted when it is closed).
        def on_thread_start(self) -> None:
            self._inotify = WatchGroup(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    class Observer(BaseObserver):
        def __init__(self) -> None:
            self._inotify_fd = InotifyFD()
            self._inotify_fd.start()
            super().__init__(Emitter, inotify_fd=self._inotify_fd)

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self._inotify_fd.stop()
            self._inotify_fd.join()

    observer = Observer()
    # Only the events asked for: the observer then asks inotify for those
    # alone, not for every open, write and attribute change.
    observer.schedule(handler, root, recursive=recursive, event_filter=event_filter)
    try:
        observer.start()
    except BaseException:
        observer.stop()  # and the inotify thread, started with the observer
        raise
    return observer
