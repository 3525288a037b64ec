"""The objects that existed before a pipeline started, left out of the
garbage collector's scans while it runs.

Items in flight outlive a young collection or two, so CPython promotes
them, and a stream of promoted objects sets off a full collection every
time they add up to a quarter of the old heap. Each full collection scans
every object of the process, most of them modules, classes and
configuration that were there before the first item and will be there
after the last. ``gc.freeze()`` (CPython 3.7 and later) moves those into
the permanent generation, which no collection scans, so that a full
collection scans only what the pipeline made. ``gc.unfreeze()`` when the
last pipeline of the process ends gives them back to the oldest generation,
so garbage among them is collected as before, only later.

A process that froze objects of its own before the first pipeline started
is left alone.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

#: Graphs may run in event loops of several threads at once.
_lock = threading.Lock()
_running = 0
_froze = False


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """Freeze the heap while the first of the pipelines running at once
    runs, unless the process had frozen objects itself, and unfreeze it
    when the last ends.

    Objects the process freezes while a pipeline runs are unfrozen with the
    rest: telling them apart would take ``gc.get_freeze_count()``, which
    walks every frozen object, a cost each run would pay twice."""
    global _running, _froze
    with _lock:
        if _running == 0 and gc.get_freeze_count() == 0:  # walks what is frozen: nothing, as a rule
            gc.freeze()
            _froze = True
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _froze:
                _froze = False
                gc.unfreeze()
