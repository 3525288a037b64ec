"""De-duplication: each key's first item goes on, repeats within a time are dropped."""

from __future__ import annotations

import logging
import threading
from typing import Any

import attrs

from .._processor import NanoStreamProcessor

logger = logging.getLogger("nanostream")

#: How many keys are added between two sweeps of expired keys, at least:
#: with the state's size, it keeps sweeping at amortised constant cost per item.
_SWEEP_EVERY = 1000


@attrs.define
class Dedup(NanoStreamProcessor):
    """Sends on the first item of each key and drops the items of that key
    that follow within the state's time-to-live: de-duplication.

    The key is the node's runtime ``key`` (a field such as an event id, or
    a function by import path); the time-to-live is its ``state_ttl``
    (``10m``, ``1d``): a key seen longer ago than that is forgotten, and its
    next item goes on again. Without a ``state_ttl`` a key is remembered
    for ever. The time counts from the first item of the key: repeats do
    not extend it. It is wall-clock time (``time.time``), as for any state
    with a ``state_ttl``, since keys seen are kept across restarts.

    Each item dropped is counted in ``duplicates`` and logged at debug
    level; in the node's counters it is received and not emitted. The keys
    seen are the node's state, so a pipeline with a ``state_dir`` keeps
    them across a restart: an item replayed after a crash whose first copy
    went on before the checkpoint is dropped as the repeat it is.
    """

    needs_key = True

    #: Items dropped as repeats of a key seen within the time-to-live.
    duplicates: int = attrs.field(default=0, init=False)
    _added: int = attrs.field(default=0, init=False, repr=False)
    _swept_size: int = attrs.field(default=0, init=False, repr=False)
    #: Worker threads (``executor: thread``, ``workers: N``) handle different
    #: keys at once; the sweep goes through every key, so it takes turns.
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False, eq=False)

    def process_item(self, message: Any) -> Any:
        state = self.state
        key = state.key
        with self._lock:
            if key in state:
                self.duplicates += 1
                logger.debug("Dedup: dropped a repeat of key %r", key)
                return None
            state[key] = True
            self._added += 1
            if self._added >= max(_SWEEP_EVERY, self._swept_size):
                self._added = 0
                state.expire()
                self._swept_size = len(state)
        return message

    def teardown(self) -> None:
        if self.duplicates:
            logger.info("Dedup: %d repeated items were dropped", self.duplicates)
