"""The objects that existed before a pipeline started, left out of the
garbage collector's scans while it runs.

Items in flight outlive a young collection or two, so CPython promotes
them, and a stream of promoted objects sets off a full collection every
time they add up to a quarter of the old heap. Each full collection scans
every object of the process, most of them modules, classes and
configuration that were there before the first item and will be there
after the last. ``gc.freeze()`` moves those into the permanent generation,
which no collection scans (the technique the ``gc`` documentation gives
for long-lived objects, from Instagram's servers), so that a full
collection scans only what the pipeline made. ``gc.unfreeze()`` when the
last pipeline of the process ends gives them back to the oldest
generation, so garbage among them is collected as before, only later.

A process that froze objects of its own is left alone.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_running = 0
_froze = False


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """Freeze the heap while the first of the pipelines running at once
    runs, unless the process had frozen objects itself, and unfreeze it
    when the last ends."""
    global _running, _froze
    if _running == 0 and gc.get_freeze_count() == 0:
        gc.freeze()
        _froze = True
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0 and _froze:
            _froze = False
            gc.unfreeze()
